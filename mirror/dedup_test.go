package mirror_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/plcdir/plc/mirror"
	"github.com/plcdir/plc/oplog"
)

// TestRepeatedBadResponseRecordedOnce: an upstream that answers the same
// bad page on every retry is recorded once — by this process and by the
// next one on the same database — while a different bad answer is recorded
// again, once.
func TestRepeatedBadResponseRecordedOnce(t *testing.T) {
	for _, b := range []backend{sqliteBackend, pgBackend} {
		t.Run(b.name, func(t *testing.T) { testRepeatedBadResponse(t, b) })
	}
}

func testRepeatedBadResponse(t *testing.T, b backend) {
	f := newFixture(t)
	ctx := ctxFor(t)
	var (
		mu     sync.Mutex
		status int
		body   []byte
	)
	answer := func(st int, b string) {
		mu.Lock()
		status, body = st, []byte(b)
		mu.Unlock()
	}
	answer(http.StatusInternalServerError, `{"message":"Internal Server Error"}`)
	s := &script{lines: numbered(f.ops), ops: f.ops, fault: func(w http.ResponseWriter, after int64, count, call int) bool {
		mu.Lock()
		defer mu.Unlock()
		if after != hostilePage || status == 0 {
			return false
		}
		w.WriteHeader(status)
		w.Write(body)
		return true
	}}
	url := newScript(t, s)
	dsn := b.dsn(t)
	// start is a mirror process on the database: a new store, log and
	// mirror each time.
	start := func() *mirror.Mirror {
		cfg := mirror.Config{PageSize: hostilePage, Now: func() time.Time { return hostileNow }}
		return newMirror(t, url, newLog(t, openStore(t, dsn)), cfg)
	}
	syncFails := func(m *mirror.Mirror, times int) {
		t.Helper()
		for range times {
			if err := m.Sync(ctx); err == nil {
				t.Fatal("Sync through a bad page succeeded")
			}
		}
	}
	check := func(m *mirror.Mirror, want ...string) []divergence {
		t.Helper()
		ds := divergences(t, m)
		if len(ds) != len(want) {
			t.Fatalf("divergences:%s\nwant %d", describe(ds), len(want))
		}
		for i, d := range ds {
			checkDivergence(t, d, oplog.KindBadResponse, "", "", "status", []byte(want[i]))
		}
		return ds
	}
	e500 := `{"message":"Internal Server Error"}`
	e500b := `{"message":"Internal Server Error","requestId":"b"}`
	e502 := `<html>Bad Gateway</html>`

	m := start()
	syncFails(m, 3)
	check(m, e500)

	// A restart on the same database: the same answer is not recorded
	// again.
	m = start()
	syncFails(m, 2)
	check(m, e500)

	// The same status with another body, then another status: each is a
	// different answer, recorded once.
	answer(http.StatusInternalServerError, e500b)
	syncFails(m, 2)
	answer(http.StatusBadGateway, e502)
	syncFails(m, 2)
	ds := check(m, e500, e500b, e502)
	if ds[0].Reason != ds[1].Reason || ds[1].Reason == ds[2].Reason {
		t.Errorf("reasons %q, %q, %q: want the first two alike (status 500), the third not", ds[0].Reason, ds[1].Reason, ds[2].Reason)
	}

	// Restarted again, the upstream goes back to an answer recorded by
	// the first process: nothing new.
	m = start()
	answer(http.StatusInternalServerError, e500)
	syncFails(m, 2)
	check(m, e500, e500b, e502)

	// It recovers: the mirror catches up, and there is nothing more.
	answer(0, "")
	if err := m.Sync(ctx); err != nil {
		t.Fatalf("Sync after the upstream recovered: %v", err)
	}
	checkStoreHolds(t, openStore(t, dsn), f.ops)
	check(m, e500, e500b, e502)
}

// TestConcurrentRecordsOfOneDivergence: the audit loop and the backfill
// may find the same divergence at once; it is recorded once.
func TestConcurrentRecordsOfOneDivergence(t *testing.T) {
	f := newFixture(t)
	op := f.byID
	ctx := ctxFor(t)
	s := &script{lines: numbered(f.ops), ops: f.ops}
	m, l := newHostileMirror(t, newScript(t, s), mirror.Config{})
	if err := m.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	body := auditLog(f.ops, op["A0"].did, func(es []auditEntry) []auditEntry { return es[:2] })
	s.set(func(s *script) {
		s.audit[op["A0"].did] = func(w http.ResponseWriter) { w.Write(body) }
	})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := m.CheckDID(ctx, op["A0"].did); err != nil {
				t.Errorf("CheckDID: %v", err)
			}
		})
	}
	wg.Wait()
	ds := divergences(t, m)
	if len(ds) != 1 {
		t.Fatalf("divergences:%s\nwant one", describe(ds))
	}
	checkDivergence(t, ds[0], oplog.KindHistoryRewrite, op["A0"].did, op["A2"].op.CID(), "gone", body)
	checkStoreHolds(t, l.Store(), f.ops)
}

// recordFails is a store whose transactions that would only add
// rejections fail while down is set: the store refuses the mirror's
// divergence records, and nothing else.
type recordFails struct {
	oplog.Store
	down atomic.Bool
}

func (s *recordFails) Append(ctx context.Context, source string, dids []string, decide oplog.DecideFunc) error {
	return s.Store.Append(ctx, source, dids, func(v oplog.View) (oplog.Batch, error) {
		b, err := decide(v)
		if err == nil && s.down.Load() && len(b.Writes) == 0 && len(b.Rejections) > 0 {
			return oplog.Batch{}, errors.New("disk I/O error")
		}
		return b, err
	})
}

// TestDivergenceRecordFailureIsAStorageFailure: a divergence record the
// database refuses is a storage failure of the log (counted in
// plc_storage_failures_total like any failed write), is not taken for
// recorded, and is recorded once the database works again.
func TestDivergenceRecordFailureIsAStorageFailure(t *testing.T) {
	f := newFixture(t)
	ctx := ctxFor(t)
	const e500 = `{"message":"Internal Server Error"}`
	s := &script{lines: numbered(f.ops), ops: f.ops, fault: func(w http.ResponseWriter, after int64, count, call int) bool {
		if after != hostilePage {
			return false
		}
		w.WriteHeader(http.StatusInternalServerError)
		w.Write([]byte(e500))
		return true
	}}
	url := newScript(t, s)
	store := &recordFails{Store: openStore(t, sqliteBackend.dsn(t))}
	store.down.Store(true)
	reg := prometheus.NewRegistry()
	l := oplog.NewLog(store, oplog.Options{NoRateLimit: true, Metrics: oplog.NewMetrics(reg)})
	t.Cleanup(l.Close)
	m := newMirror(t, url, l, mirror.Config{PageSize: hostilePage, Now: func() time.Time { return hostileNow }})
	failures := func() float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var n float64
		for _, mf := range mfs {
			if mf.GetName() == "plc_storage_failures_total" {
				for _, c := range mf.GetMetric() {
					n += c.GetCounter().GetValue()
				}
			}
		}
		return n
	}
	if err := m.Sync(ctx); err == nil {
		t.Fatal("Sync through a bad page succeeded")
	}
	if ds := divergences(t, m); len(ds) != 0 {
		t.Fatalf("divergences recorded while the database refused them:%s", describe(ds))
	}
	if n := failures(); n != 1 {
		t.Fatalf("plc_storage_failures_total = %v, want 1", n)
	}
	store.down.Store(false)
	if err := m.Sync(ctx); err == nil {
		t.Fatal("Sync through a bad page succeeded")
	}
	ds := divergences(t, m)
	if len(ds) != 1 {
		t.Fatalf("divergences:%s\nwant the bad page, once", describe(ds))
	}
	checkDivergence(t, ds[0], oplog.KindBadResponse, "", "", "status", []byte(e500))
}
