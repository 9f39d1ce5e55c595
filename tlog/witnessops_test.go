package tlog_test

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	sumdb "golang.org/x/mod/sumdb/tlog"

	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/storetest"
	"github.com/plcdir/plc/tlog"
)

// runner runs tl.Run in the background, one round at a time: Run reports
// each round's end on idle and waits for tick (its Interval wait). The
// quorum timer (Options.QuorumTimeout, an hour here) runs out only when
// the test closes timeout.
type runner struct {
	idle    chan struct{}
	tick    chan struct{}
	timeout chan struct{}
	timers  atomic.Int32 // quorum timers started
	stop    context.CancelFunc
	done    chan struct{}
}

const testQuorumTimeout = time.Hour

func newRunner(t *testing.T) *runner {
	r := &runner{idle: make(chan struct{}), tick: make(chan struct{}), timeout: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(func() {
		select {
		case <-r.timeout:
		default:
			close(r.timeout)
		}
	})
	return r
}

func (r *runner) wait(ctx context.Context, d time.Duration) error {
	if d == testQuorumTimeout {
		r.timers.Add(1)
		<-r.timeout
		return nil
	}
	select {
	case r.idle <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-r.tick:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// start runs tl.Run until the test ends, and returns after its first round.
func (r *runner) start(t *testing.T, tl *tlog.TLog) {
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	go func() {
		defer close(r.done)
		tl.Run(ctx, nil)
	}()
	t.Cleanup(func() { cancel(); <-r.done })
	<-r.idle
}

// round lets Run go round once more.
func (r *runner) round() {
	r.tick <- struct{}{}
	<-r.idle
}

func witnessLog(t *testing.T, s oplog.Store, key *tlog.Key, r *runner, quorum int, ws ...*tlog.Witness) (*tlog.TLog, *storetest.Buffer) {
	var logs storetest.Buffer
	tl := tlog.New(s, key, tlog.Options{
		Logger:        slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Interval:      time.Nanosecond,
		Wait:          r.wait,
		Witnesses:     ws,
		Quorum:        quorum,
		QuorumTimeout: testQuorumTimeout,
	})
	return tl, &logs
}

// TestCheckpointSignedOnTheRequestPathIsCosigned: a proof request that
// needs a checkpoint newer than the latest signs it; that checkpoint must
// reach the witnesses like those the background loop signs, and the proof
// must come with their cosignatures.
func TestCheckpointSignedOnTheRequestPathIsCosigned(t *testing.T) {
	lines := storetest.Corpus(t, 21, 300)
	s, _ := storetest.SQLite(t)
	key := newKey(t, "plc.test")
	w1 := newTestWitness(t, "w1.example/witness", key.VKey)
	w2 := newTestWitness(t, "w2.example/witness", key.VKey)
	storetest.Load(t, s, lines[:100])
	r := newRunner(t)
	tl, logs := witnessLog(t, s, key, r, 0, w1.witness(t), w2.witness(t))
	r.start(t, tl) // signs 100

	storetest.Load(t, s, lines[100:])
	cp, proofs, err := tl.InclusionProofs(context.Background(), []int64{250})
	if err != nil || cp.Size != 300 || proofs[250] == nil {
		t.Fatalf("InclusionProofs: size %d, %v", cp.Size, err)
	}
	r.round()
	r.round()
	stored, names := wtCosigners(t, s, key, w1, w2)
	if stored.Size != 300 || len(names) != 2 {
		t.Fatalf("the checkpoint signed on the request path (size %d) is cosigned by %v, want both\n%s", stored.Size, names, logs.String())
	}
	if string(cp.Note) != string(stored.Note) {
		t.Fatalf("the proof's checkpoint lacks the cosignatures:\n%s\nstored:\n%s", cp.Note, stored.Note)
	}
	if have, need := tl.Cosignatures(cp.Note); have != 2 || need != 2 {
		t.Fatalf("Cosignatures = %d/%d, want 2/2", have, need)
	}
}

// TestCheckpointSignedByAnotherProcessIsCosigned: a process sharing the
// store signs; this one's witnesses cosign it before it is served.
func TestCheckpointSignedByAnotherProcessIsCosigned(t *testing.T) {
	lines := storetest.Corpus(t, 21, 200)
	s, path := storetest.SQLite(t)
	key := newKey(t, "plc.test")
	w := newTestWitness(t, "w.example/witness", key.VKey)
	storetest.Load(t, s, lines[:50])
	r := newRunner(t)
	tl, logs := witnessLog(t, s, key, r, 0, w.witness(t))
	r.start(t, tl)

	other, err := oplog.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	storetest.Load(t, other, lines[50:])
	if _, signed, err := tlog.New(other, key, tlog.Options{Interval: time.Nanosecond}).Sign(context.Background()); err != nil || !signed {
		t.Fatalf("the other process's Sign: %v %v", signed, err)
	}
	r.round() // the loop finds it
	cp, witnessed, err := tl.WitnessedCheckpoint(context.Background())
	if err != nil || !witnessed || cp.Size != 200 {
		t.Fatalf("WitnessedCheckpoint: size %d, witnessed %v, %v\n%s", cp.Size, witnessed, err, logs.String())
	}
	if _, names := wtCosigners(t, s, key, w); len(names) != 1 {
		t.Fatalf("stored checkpoint cosigned by %v", names)
	}
}

// TestQuorumWaitIsBoundedAndShared: with a witness down, requests for the
// checkpoint wait for the quorum on one shared timer, then answer with the
// best checkpoint and say that the quorum is missing; a quorum the
// witnesses up can meet is met.
func TestQuorumWaitIsBoundedAndShared(t *testing.T) {
	s, _ := storetest.SQLite(t)
	key := newKey(t, "plc.test")
	up := newTestWitness(t, "up.example/witness", key.VKey)
	down := newTestWitness(t, "down.example/witness", key.VKey)
	down.srv.Close()
	storetest.Load(t, s, storetest.Corpus(t, 21, 40))
	// The witness up cosigns the checkpoint first.
	first, _ := roundLog(t, s, key, time.Now, up.witness(t))
	witnessRound(t, first)

	t.Run("Missing", func(t *testing.T) {
		r := newRunner(t)
		tl, logs := witnessLog(t, s, key, r, 0, up.witness(t), down.witness(t))
		reg := prometheus.NewRegistry()
		if err := tl.RegisterMetrics(reg); err != nil {
			t.Fatal(err)
		}
		r.start(t, tl)
		const n = 20
		var wg sync.WaitGroup
		results := make(chan bool, n)
		for range n {
			wg.Go(func() {
				cp, witnessed, err := tl.WitnessedCheckpoint(context.Background())
				if err != nil || cp.Size != 40 {
					t.Errorf("WitnessedCheckpoint: size %d, %v", cp.Size, err)
				}
				results <- witnessed
			})
		}
		close(r.timeout) // the quorum timer runs out
		wg.Wait()
		close(results)
		for w := range results {
			if w {
				t.Fatal("a checkpoint without the down witness's cosignature was reported witnessed")
			}
		}
		if got := r.timers.Load(); got != 1 {
			t.Fatalf("%d quorum timers for one checkpoint, want 1", got)
		}
		// The HTTP answer says so.
		srv := httptest.NewServer(tl)
		defer srv.Close()
		resp, err := http.Get(srv.URL + "/tlog/checkpoint")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if q, c := resp.Header.Get(tlog.HeaderWitnessQuorum), resp.Header.Get(tlog.HeaderWitnessCosignatures); q != "missing" || c != "1/2" {
			t.Fatalf("headers %s: %q, %s: %q; want missing, 1/2\n%s", tlog.HeaderWitnessQuorum, q, tlog.HeaderWitnessCosignatures, c, logs.String())
		}
		if got := metricValue(t, reg, "plc_tlog_quorum_missing_total", ""); got < n {
			t.Fatalf("plc_tlog_quorum_missing_total = %v, want at least %d", got, n)
		}
	})
	t.Run("MetByTheWitnessesUp", func(t *testing.T) {
		r := newRunner(t)
		tl, _ := witnessLog(t, s, key, r, 1, up.witness(t), down.witness(t))
		r.start(t, tl)
		cp, witnessed, err := tl.WitnessedCheckpoint(context.Background())
		if err != nil || !witnessed {
			t.Fatalf("WitnessedCheckpoint with a quorum of 1: %v %v", witnessed, err)
		}
		if have, need := tl.Cosignatures(cp.Note); have != 1 || need != 1 {
			t.Fatalf("Cosignatures = %d/%d, want 1/1", have, need)
		}
		if r.timers.Load() != 0 {
			t.Fatal("waited for a quorum already met")
		}
	})
	t.Run("TheRuleDecidesOverTheCount", func(t *testing.T) {
		// A policy's rule: the down witness is needed, whatever the count.
		r := newRunner(t)
		tl := tlog.New(s, key, tlog.Options{
			Interval: time.Nanosecond, Wait: r.wait, QuorumTimeout: testQuorumTimeout,
			Witnesses: []*tlog.Witness{up.witness(t), down.witness(t)}, Quorum: 1,
			QuorumMet: func(keys []string) bool { return slices.Contains(keys, down.vkey) },
		})
		r.start(t, tl)
		close(r.timeout)
		cp, witnessed, err := tl.WitnessedCheckpoint(context.Background())
		if err != nil || witnessed {
			t.Fatalf("WitnessedCheckpoint: witnessed %v, %v", witnessed, err)
		}
		h := http.Header{}
		tl.SetWitnessHeaders(h, cp.Note)
		if h.Get(tlog.HeaderWitnessQuorum) != "missing" || h.Get(tlog.HeaderWitnessCosignatures) != "1/1" {
			t.Fatalf("headers %v", h)
		}
	})
}

// witnessRound runs one round of Run (sign, ask the witnesses, wait for
// their answers) on a log that keeps its witnesses' state across rounds.
func witnessRound(t *testing.T, tl *tlog.TLog) {
	t.Helper()
	tl.Run(context.Background(), nil)
}

func roundLog(t *testing.T, s oplog.Store, key *tlog.Key, now func() time.Time, ws ...*tlog.Witness) (*tlog.TLog, *storetest.Buffer) {
	var logs storetest.Buffer
	stop := errors.New("stop")
	tl := tlog.New(s, key, tlog.Options{
		Logger:    slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:       now,
		Interval:  time.Nanosecond,
		Wait:      func(context.Context, time.Duration) error { return stop },
		Witnesses: ws,
	})
	return tl, &logs
}

// TestWitnessHealthAndMetrics: each witness's last cosigned size, last
// success and failures, in WitnessStatus (GET /_health) and the metrics;
// a failed witness is asked again after WitnessRetry.
func TestWitnessHealthAndMetrics(t *testing.T) {
	lines := storetest.Corpus(t, 21, 80)
	s, _ := storetest.SQLite(t)
	key := newKey(t, "plc.test")
	up := newTestWitness(t, "up.example/witness", key.VKey)
	down := newTestWitness(t, "down.example/witness", key.VKey)
	down.srv.Close()
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	tl, logs := roundLog(t, s, key, c.Now, up.witness(t), down.witness(t))
	reg := prometheus.NewRegistry()
	if err := tl.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	storetest.Load(t, s, lines[:60])
	witnessRound(t, tl)

	st := tl.WitnessStatus()
	if len(st) != 2 || st[0].Name != "up.example/witness" || st[0].CosignedSize != 60 || st[0].LastSuccess == nil ||
		!st[0].LastSuccess.Equal(c.Now()) || st[0].ConsecutiveFailures != 0 || st[0].FailuresTotal != 0 {
		t.Fatalf("status of the witness up: %+v\n%s", st, logs.String())
	}
	if st[1].Name != "down.example/witness" || st[1].CosignedSize != -1 || st[1].LastSuccess != nil ||
		st[1].ConsecutiveFailures != 1 || st[1].FailuresTotal != 1 {
		t.Fatalf("status of the witness down: %+v", st[1])
	}
	// Not asked again about the same checkpoint before WitnessRetry.
	witnessRound(t, tl)
	if st := tl.WitnessStatus(); st[1].FailuresTotal != 1 {
		t.Fatalf("the witness down was asked again at once: %+v", st[1])
	}
	c.Add(tlog.WitnessRetry)
	witnessRound(t, tl)
	if st := tl.WitnessStatus(); st[1].ConsecutiveFailures != 2 || st[1].FailuresTotal != 2 {
		t.Fatalf("the witness down was not asked again after WitnessRetry: %+v", st[1])
	}
	h := tl.Health()
	if cp, ok := h["checkpoint"].(map[string]any); !ok || cp["size"] != int64(60) || cp["cosignatures"] != 1 || cp["quorum"] != 2 {
		t.Fatalf("health: %+v", h)
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if problems, err := promlint.NewWithMetricFamilies(mfs).Lint(); err != nil || len(problems) != 0 {
		t.Errorf("the metrics do not lint: %+v %v", problems, err)
	}
	for _, tc := range []struct {
		metric, witness string
		want            float64
	}{
		{"plc_tlog_witness_cosigned_size", "up.example/witness", 60},
		{"plc_tlog_witness_cosigned_size", "down.example/witness", -1},
		{"plc_tlog_witness_last_success_timestamp_seconds", "up.example/witness", float64(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Unix())},
		{"plc_tlog_witness_consecutive_failures", "down.example/witness", 2},
		{"plc_tlog_witness_consecutive_failures", "up.example/witness", 0},
		{"plc_tlog_witness_failures_total", "down.example/witness", 2},
	} {
		if got := metricValue(t, reg, tc.metric, tc.witness); got != tc.want {
			t.Errorf("%s{witness=%q} = %v, want %v", tc.metric, tc.witness, got, tc.want)
		}
	}
}

func metricValue(t *testing.T, reg *prometheus.Registry, name, witness string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if witness == "" && len(m.GetLabel()) == 0 {
				return m.GetCounter().GetValue()
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == "witness" && l.GetValue() == witness {
					if g := m.GetGauge(); g != nil {
						return g.GetValue()
					}
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no metric %s{witness=%q}", name, witness)
	return 0
}

// TestWitnessBehindIsBroughtForwardWithAProof: a witness that restarted
// with an older state answers 409 with its size; the log sends it a
// consistency proof from that size and gets its cosignature.
func TestWitnessBehindIsBroughtForwardWithAProof(t *testing.T) {
	lines := storetest.Corpus(t, 21, 450)
	s, _ := storetest.SQLite(t)
	key := newKey(t, "plc.test")
	w := newTestWitness(t, "w.example/witness", key.VKey)
	tl, logs := roundLog(t, s, key, time.Now, w.witness(t))
	storetest.Load(t, s, lines[:100])
	witnessRound(t, tl)
	root100, err := sumdb.TreeHash(100, oplog.HashReader(context.Background(), s))
	if err != nil {
		t.Fatal(err)
	}
	storetest.Load(t, s, lines[100:300])
	witnessRound(t, tl)
	// The witness restarts from a backup: it holds size 100 again.
	w.mu.Lock()
	w.state["plc.test"] = wtState{100, root100}
	w.mu.Unlock()
	storetest.Load(t, s, lines[300:])
	witnessRound(t, tl)

	got := w.reqs()
	if len(got) != 4 || got[2].old != 300 || got[2].size != 450 || got[2].status != 409 ||
		got[3].old != 100 || got[3].size != 450 || got[3].proof == 0 || got[3].status != 200 {
		t.Fatalf("the witness saw %+v\n%s", got, logs.String())
	}
	if cp, names := wtCosigners(t, s, key, w); cp.Size != 450 || len(names) != 1 {
		t.Fatalf("checkpoint of size %d cosigned by %v", cp.Size, names)
	}
	if st := tl.WitnessStatus(); st[0].CosignedSize != 450 || st[0].ConsecutiveFailures != 0 {
		t.Fatalf("status %+v", st[0])
	}
}

// TestWitnessClaimingALargerTreeIsReportedNotTrusted: a witness that
// answers 409 with a size larger than any checkpoint the log signed (it
// saw a fork, or the log's database was rolled back) is reported in the
// log and its status, and its size is not used for the next request.
func TestWitnessClaimingALargerTreeIsReportedNotTrusted(t *testing.T) {
	lines := storetest.Corpus(t, 21, 120)
	s, _ := storetest.SQLite(t)
	key := newKey(t, "plc.test")
	w := newTestWitness(t, "w.example/witness", key.VKey)
	var forged sumdb.Hash
	rand.Read(forged[:])
	tl, logs := roundLog(t, s, key, time.Now, w.witness(t))
	storetest.Load(t, s, lines[:100])
	witnessRound(t, tl)
	w.mu.Lock()
	w.state["plc.test"] = wtState{1_000_000, forged}
	w.mu.Unlock()
	storetest.Load(t, s, lines[100:])
	witnessRound(t, tl)

	if l := logs.String(); !strings.Contains(l, "not trusted") || !strings.Contains(l, "1000000") {
		t.Fatalf("the claim was not reported:\n%s", l)
	}
	st := tl.WitnessStatus()[0]
	if st.ClaimedSize != 1_000_000 || st.CosignedSize != 100 || st.ConsecutiveFailures != 1 {
		t.Fatalf("status %+v", st)
	}
	if cp, names := wtCosigners(t, s, key, w); cp.Size != 120 || len(names) != 0 {
		t.Fatalf("checkpoint of size %d cosigned by %v", cp.Size, names)
	}
	// The next request starts from the size the witness really cosigned
	// for this log, not from the claim.
	got := w.reqs()
	if len(got) != 2 || got[1].old != 100 || got[1].status != 409 {
		t.Fatalf("the witness saw %+v", got)
	}
}

// TestASlowWitnessHoldsBackNoOther: while one witness takes its time, the
// other cosigns every new checkpoint and the quorum it makes is met; the
// slow one has one request in flight at a time and is then asked about
// the latest checkpoint only, with a proof from the size it cosigned.
func TestASlowWitnessHoldsBackNoOther(t *testing.T) {
	lines := storetest.Corpus(t, 21, 150)
	s, _ := storetest.SQLite(t)
	key := newKey(t, "plc.test")
	fast := newTestWitness(t, "fast.example/witness", key.VKey)
	slow := newTestWitness(t, "slow.example/witness", key.VKey)
	release, answered := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	slow.mu.Lock()
	slow.before = func() { <-release }
	slow.mu.Unlock()
	storetest.Load(t, s, lines[:50])
	r := newRunner(t)
	tl, logs := witnessLog(t, s, key, r, 1, fast.witness(t), slow.witness(t))
	r.start(t, tl) // signs 50

	ctx := context.Background()
	for _, n := range []int{50, 100, 150} {
		if n > 50 {
			storetest.Load(t, s, lines[n-50:n])
		}
		cp, proofs, err := tl.InclusionProofs(ctx, []int64{int64(n)})
		if err != nil || cp.Size != int64(n) || proofs[int64(n)] == nil {
			t.Fatalf("InclusionProofs(%d): size %d, %v", n, cp.Size, err)
		}
		if have, need := tl.Cosignatures(cp.Note); have != 1 || need != 1 {
			t.Fatalf("checkpoint %d: %d/%d cosignatures\n%s", n, have, need, logs.String())
		}
	}
	if got := slow.reqs(); len(got) != 1 || got[0].size != 50 {
		t.Fatalf("the slow witness saw %+v, want one request (size 50) in flight", got)
	}
	slow.mu.Lock()
	slow.before = func() { close(answered) }
	slow.mu.Unlock()
	releaseOnce.Do(func() { close(release) })
	<-answered
	got := slow.reqs()
	if len(got) != 2 || got[1].old != 50 || got[1].size != 150 || got[1].proof == 0 || got[1].status != 200 {
		t.Fatalf("the slow witness saw %+v, want then the latest checkpoint (150) from 50\n%s", got, logs.String())
	}
	if got := fast.reqs(); len(got) != 3 {
		t.Fatalf("the fast witness saw %+v, want each checkpoint", got)
	}
}

// TestCheckpointOfAFreshLogIsServedCosigned: GET /tlog/checkpoint on a log
// with no ops serves its first checkpoint with the witness's cosignature.
func TestCheckpointOfAFreshLogIsServedCosigned(t *testing.T) {
	s, _ := storetest.SQLite(t)
	key := newKey(t, "plc.test")
	w := newTestWitness(t, "w.example/witness", key.VKey)
	r := newRunner(t)
	tl, logs := witnessLog(t, s, key, r, 0, w.witness(t))
	srv := httptest.NewServer(tl)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for { // let Run's rounds pass
			select {
			case <-r.idle:
			case <-ctx.Done():
				return
			}
		}
	}()
	done := make(chan struct{})
	go func() { defer close(done); tl.Run(ctx, nil) }()
	defer func() { cancel(); <-done }()

	resp, err := http.Get(srv.URL + "/tlog/checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if q, c := resp.Header.Get(tlog.HeaderWitnessQuorum), resp.Header.Get(tlog.HeaderWitnessCosignatures); resp.StatusCode != 200 || q != "met" || c != "1/1" {
		t.Fatalf("GET /tlog/checkpoint: %d, %q %q\n%s", resp.StatusCode, q, c, logs.String())
	}
	if cp, names := wtCosigners(t, s, key, w); cp.Size != 0 || len(names) != 1 {
		t.Fatalf("checkpoint of size %d cosigned by %v", cp.Size, names)
	}
}

// TestCosignaturesFromTwoProcessesAreMergedNotDropped: two processes
// sharing the store, each with its witness, cosign the same checkpoint at
// the same time; the one whose compare-and-swap loses adds its
// cosignature to the other's note instead of dropping it.
func TestCosignaturesFromTwoProcessesAreMergedNotDropped(t *testing.T) {
	s, _ := storetest.SQLite(t)
	key := newKey(t, "plc.test")
	w1 := newTestWitness(t, "w1.example/witness", key.VKey)
	w2 := newTestWitness(t, "w2.example/witness", key.VKey)
	storetest.Load(t, s, storetest.Corpus(t, 21, 30))
	if _, _, err := tlog.New(s, key, tlog.Options{}).Sign(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, _ := roundLog(t, s, key, time.Now, w2.witness(t))
	hooked := &swapHook{Store: s, before: func() { witnessRound(t, b) }}
	a, logs := roundLog(t, hooked, key, time.Now, w1.witness(t))
	witnessRound(t, a)
	if cp, names := wtCosigners(t, s, key, w1, w2); cp.Size != 30 || len(names) != 2 {
		t.Fatalf("checkpoint of size %d cosigned by %v, want both\n%s", cp.Size, names, logs.String())
	}
}
