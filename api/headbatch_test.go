package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/plcdir/plc/oplog"
)

// testFlights is the batcher's flights in these tests: more than one, to
// show that each flight reads its own DIDs.
const testFlights = 3

// fakeHeads is a Heads that blocks each call until the test releases it,
// and records the DIDs of each call.
type fakeHeads struct {
	mu      sync.Mutex
	calls   [][]string
	entered chan []string
	release chan error
}

func newFakeHeads() *fakeHeads {
	return &fakeHeads{entered: make(chan []string, 64), release: make(chan error)}
}

func (f *fakeHeads) heads(ctx context.Context, dids []string) (map[string]oplog.Entry, error) {
	f.mu.Lock()
	f.calls = append(f.calls, slices.Clone(dids))
	f.mu.Unlock()
	f.entered <- dids
	if err := <-f.release; err != nil {
		return nil, err
	}
	out := map[string]oplog.Entry{}
	for i, d := range dids {
		if d == "did:plc:absent" {
			continue
		}
		out[d] = oplog.Entry{DID: d, Seq: int64(100 + i)}
	}
	return out, nil
}

// waitQueued returns once n requests wait for a flight.
func waitQueued(b *headBatcher, n int) {
	for {
		b.mu.Lock()
		w := len(b.waiting)
		b.mu.Unlock()
		if w == n {
			return
		}
		runtime.Gosched()
	}
}

// waitFlightsLanded yields until no flight of b is reading, for at most
// a million yields: a flight answers its requests before it takes the
// lock again to find the queue empty and end, so the last answer can
// arrive before the last flight has ended.
func waitFlightsLanded(b *headBatcher) {
	for range 1_000_000 {
		b.mu.Lock()
		f := b.flights
		b.mu.Unlock()
		if f == 0 {
			return
		}
		runtime.Gosched()
	}
}

type headResult struct {
	did string
	e   oplog.Entry
	err error
}

func startHead(b *headBatcher, ctx context.Context, did string, out chan<- headResult) {
	go func() {
		e, err := b.head(ctx, did)
		out <- headResult{did, e, err}
	}()
}

// TestHeadReadsGatherWhileEveryFlightIsBusy: requests that arrive while
// all flights are reading wait and are then read together, in one query,
// each answered with its own DID's head, a DID that is not registered
// with ErrNotFound alone.
func TestHeadReadsGatherWhileEveryFlightIsBusy(t *testing.T) {
	f := newFakeHeads()
	reg := prometheus.NewRegistry()
	b := newHeadBatcher(f.heads, reg)
	b.flightsMax = testFlights
	out := make(chan headResult, 100)
	ctx := context.Background()

	// Fill every flight with a read of one DID, held inside the store.
	for i := range testFlights {
		startHead(b, ctx, fmt.Sprintf("did:plc:first%d", i), out)
		if got := <-f.entered; len(got) != 1 {
			t.Fatalf("flight %d read %v, want one DID", i, got)
		}
	}
	// These wait: no flight is free.
	waiting := []string{"did:plc:w1", "did:plc:w2", "did:plc:absent", "did:plc:w3", "did:plc:w1"}
	for _, d := range waiting {
		startHead(b, ctx, d, out)
	}
	// All of them queued before a flight comes back.
	waitQueued(b, len(waiting))
	// One flight returns, and reads every waiting request in one call.
	f.release <- nil
	batch := slices.Sorted(slices.Values(<-f.entered))
	if !slices.Equal(batch, slices.Sorted(slices.Values(waiting))) {
		t.Fatalf("the second read was of %v, want the %d waiting DIDs %v", batch, len(waiting), waiting)
	}
	for range testFlights - 1 {
		f.release <- nil
	}
	f.release <- nil
	got := map[string][]headResult{}
	for range testFlights + len(waiting) {
		r := <-out
		got[r.did] = append(got[r.did], r)
	}
	for _, d := range waiting {
		for _, r := range got[d] {
			if d == "did:plc:absent" {
				if !errors.Is(r.err, oplog.ErrNotFound) {
					t.Errorf("%s: err %v, want ErrNotFound", d, r.err)
				}
				continue
			}
			if r.err != nil || r.e.DID != d {
				t.Errorf("%s: got entry of %q, err %v", d, r.e.DID, r.err)
			}
		}
	}
	if n := len(got["did:plc:w1"]); n != 2 {
		t.Errorf("the DID asked twice was answered %d times", n)
	}
	// The metric saw testFlights reads of one DID and one of five.
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(families) != 1 || families[0].GetName() != "plc_read_head_batch_dids" || len(families[0].GetMetric()) != 1 {
		t.Fatalf("registered %v, want the one histogram plc_read_head_batch_dids", families)
	}
	h := families[0].GetMetric()[0].GetHistogram()
	if c, sum := h.GetSampleCount(), h.GetSampleSum(); c != testFlights+1 || sum != float64(testFlights+len(waiting)) {
		t.Errorf("batch sizes: %d batches of %v DIDs in all, want %d of %d", c, sum, testFlights+1, testFlights+len(waiting))
	}
	waitFlightsLanded(b)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.flights != 0 || len(b.waiting) != 0 {
		t.Errorf("after the reads: %d flights, %d waiting, want none", b.flights, len(b.waiting))
	}
}

// TestAFailedHeadReadFailsEveryRequestOfItsBatchAndNoOther: a store
// error reaches each request read in that query (as an error, not as
// "not found"), and the next request is read afresh.
func TestAFailedHeadReadFailsEveryRequestOfItsBatchAndNoOther(t *testing.T) {
	f := newFakeHeads()
	b := newHeadBatcher(f.heads, nil)
	b.flightsMax = testFlights
	out := make(chan headResult, 10)
	broken := errors.New("database is down")

	startHead(b, context.Background(), "did:plc:a", out)
	<-f.entered
	f.release <- broken
	if r := <-out; !errors.Is(r.err, broken) {
		t.Fatalf("got err %v, want the store's", r.err)
	}
	readsAfresh(t, b, f, out, "did:plc:b")
}

// TestACanceledRequestStopsWaitingForItsBatch: a client that goes away
// while its DID's read is held is answered with its context's error at
// once; the read itself completes for the others.
func TestACanceledRequestStopsWaitingForItsBatch(t *testing.T) {
	f := newFakeHeads()
	b := newHeadBatcher(f.heads, nil)
	b.flightsMax = testFlights
	out := make(chan headResult, 10)
	ctx, cancel := context.WithCancel(context.Background())

	startHead(b, ctx, "did:plc:gone", out)
	<-f.entered
	cancel()
	if r := <-out; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("got err %v, want context.Canceled", r.err)
	}
	f.release <- nil
	readsAfresh(t, b, f, out, "did:plc:next")
}

// readsAfresh checks that a request for did, after earlier ones ended, is
// read (in a call of its own) and answered with its head.
func readsAfresh(t *testing.T, b *headBatcher, f *fakeHeads, out chan headResult, did string) {
	t.Helper()
	startHead(b, context.Background(), did, out)
	if got := <-f.entered; !slices.Equal(got, []string{did}) {
		t.Fatalf("the next read was of %v, want [%s]", got, did)
	}
	f.release <- nil
	if r := <-out; r.err != nil || r.e.DID != did {
		t.Fatalf("the next read: entry of %q, err %v", r.e.DID, r.err)
	}
}

// TestBatchesHoldAtMostOneQueryOfDIDs: however many requests wait, one
// read takes at most headBatchMax of them.
func TestBatchesHoldAtMostOneQueryOfDIDs(t *testing.T) {
	f := newFakeHeads()
	b := newHeadBatcher(f.heads, nil)
	b.flightsMax = testFlights
	n := headBatchMax + 10
	out := make(chan headResult, n+testFlights)
	for i := range testFlights {
		startHead(b, context.Background(), fmt.Sprintf("did:plc:hold%d", i), out)
		<-f.entered
	}
	for i := range n {
		startHead(b, context.Background(), fmt.Sprintf("did:plc:many%d", i), out)
	}
	waitQueued(b, n)
	// Every read from now on returns at once.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-f.entered:
				f.release <- nil
			case <-stop:
				return
			}
		}
	}()
	for range testFlights {
		f.release <- nil
	}
	for range n + testFlights {
		if r := <-out; r.err != nil {
			t.Fatal(r.err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	total := 0
	for _, c := range f.calls {
		if len(c) > headBatchMax {
			t.Fatalf("a read of %d DIDs, want at most %d", len(c), headBatchMax)
		}
		total += len(c)
	}
	if want := headBatchMax + 10 + testFlights; total != want {
		t.Fatalf("%d DIDs read in all, want %d", total, want)
	}
}

// TestConcurrentResolutionsEachGetTheirOwnDIDsDocument: many clients
// resolving different DIDs at once, with no cache (every request reads
// the store), each get the document of the DID they asked for, on both
// backends; on PostgreSQL every one of those reads went through the
// gathered reads, and on SQLite none did.
func TestConcurrentResolutionsEachGetTheirOwnDIDsDocument(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		env := newAPIEnv(t, b, envOptions{noRateLimit: true})
		ks := keys(t, 1)
		const nDIDs, clients, each = 24, 16, 30
		dids := make([]string, nDIDs)
		handles := make([]string, nDIDs)
		for i := range dids {
			handles[i] = fmt.Sprintf("user%d.test", i)
			g := genesisOp(t, handles[i], ks[0], ks[0])
			dids[i] = g.GenesisDID()
			env.mustSubmit(dids[i], g)
		}
		errs := make(chan error, clients*each)
		var wg sync.WaitGroup
		for c := range clients {
			wg.Go(func() {
				client := env.http.Client()
				for j := range each {
					i := (c*7 + j*5) % nDIDs
					resp, err := client.Get(env.http.URL + "/" + dids[i])
					if err != nil {
						errs <- err
						continue
					}
					body, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					switch {
					case err != nil:
						errs <- err
					case resp.StatusCode != 200:
						errs <- fmt.Errorf("GET /%s: %d %s", dids[i], resp.StatusCode, body)
					case !bytes.Contains(body, []byte(`"id":"`+dids[i]+`"`)) || !bytes.Contains(body, []byte(`"at://`+handles[i]+`"`)):
						errs <- fmt.Errorf("GET /%s answered another document: %s", dids[i], body)
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		families, err := env.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var read float64
		found := false
		for _, f := range families {
			if f.GetName() == "plc_read_head_batch_dids" {
				found = true
				read = f.GetMetric()[0].GetHistogram().GetSampleSum()
			}
		}
		switch {
		case b.name == "postgres" && read != clients*each:
			t.Errorf("the gathered reads read %v DIDs, want the %d requests'", read, clients*each)
		case b.name == "sqlite" && found:
			t.Error("SQLite's heads went through the gathered reads")
		}
	})
}
