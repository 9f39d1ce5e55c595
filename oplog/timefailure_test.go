package oplog_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/plcdir/plc/internal/testclock"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/storetest"
	"github.com/plcdir/plc/validate"
)

// The conformance cases of acceptance times (an op is dated strictly
// after its prev, time moves on while the clock is behind the log, no op
// dated in the future) and of a failing database (every op of a failed
// batch is told so; failures are logged at a bounded rate).
func testTimeAndFailures(t *testing.T, migrated func(t *testing.T) (oplog.Store, string)) {
	ctx := context.Background()
	k := keys(t, 3)
	const src = "export:test"

	t.Run("ImportRejectsUpdateDatedBeforeItsParent", func(t *testing.T) {
		// An export whose update is dated before its parent (and another
		// at its parent's millisecond): both are rejected at their line,
		// and the log that results exports, in seq and in timestamp mode,
		// lines that a fresh log accepts whole.
		s, _ := migrated(t)
		l := oplog.NewLog(s, oplog.Options{Now: testclock.New(at(time.Hour)).Now})
		t.Cleanup(l.Close)
		gA := genesis(t, "a.test", k[0], k[1])
		a := gA.GenesisDID()
		gB := genesis(t, "b.test", k[1])
		lines := []histOp{
			{a, gA, at(10 * time.Second)},
			{a, update(t, gA, k[1], "back.test", k[0], k[1]), at(5 * time.Second)},
			{gB.GenesisDID(), gB, at(6 * time.Second)},
			{a, update(t, gA, k[0], "same.test", k[0], k[1]), at(10 * time.Second)},
			{a, update(t, gA, k[1], "later.test", k[0], k[1]), at(10*time.Second + time.Millisecond)},
		}
		st, err := oplog.Import(ctx, l, strings.NewReader((&history{ops: lines}).export(t)), oplog.ImportOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if st.Imported != 3 || st.Rejected != 2 {
			t.Fatalf("import: %+v; want 3 imported, 2 rejected", st)
		}
		rej, err := s.Rejections(ctx, "", 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(rej) != 2 || rej[0].Line != 2 || rej[1].Line != 4 {
			t.Fatalf("rejections %+v, want lines 2 and 4", rej)
		}
		for _, r := range rej {
			if !strings.Contains(r.Reason, "timestamp order") || !strings.Contains(r.Reason, gA.CID()) {
				t.Errorf("line %d rejected for %q, want the timestamp order against %s", r.Line, r.Reason, gA.CID())
			}
		}

		seqMode, err := s.Export(ctx, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		byTime, err := s.ExportByTime(ctx, time.Time{}, 100)
		if err != nil {
			t.Fatal(err)
		}
		var seqLines, timeLines [][]byte
		for _, e := range seqMode {
			seqLines = append(seqLines, validate.AppendSequencedJSON(nil, e.DID, e.Decoded, e.CreatedAt, e.Seq))
		}
		for _, e := range byTime {
			timeLines = append(timeLines, validate.AppendAuditEntryJSON(nil, e.DID, e.Decoded, e.Nullified, e.CreatedAt))
		}
		for name, ls := range map[string][][]byte{"seq-mode": seqLines, "timestamp": timeLines} {
			// Replayed whole into a fresh log, under the same rules as
			// verify-export's (package validate): every line is accepted.
			fresh, _ := migrated(t)
			fl := oplog.NewLog(fresh, oplog.Options{})
			st, err := oplog.Import(ctx, fl, bytes.NewReader(bytes.Join(ls, []byte("\n"))), oplog.ImportOptions{Workers: 1})
			fl.Close()
			if err != nil {
				t.Fatalf("%s export: %v", name, err)
			}
			if st.Imported != 3 || st.Rejected != 0 {
				t.Errorf("%s export of the imported log is not accepted whole: %d imported, %d rejected", name, st.Imported, st.Rejected)
			}
		}
	})

	t.Run("SubmitWhileClockIsBehindTheLogStillMovesTimeOn", func(t *testing.T) {
		// The log's latest op is 10s ahead of the clock (a clock stepped
		// back, a replayed op): new ops are dated after it, each commit
		// later than the one before, and an update after its prev.
		s, _ := migrated(t)
		c := testclock.New(at(10 * time.Second))
		l := oplog.NewLog(s, oplog.Options{Now: c.Now})
		t.Cleanup(l.Close)
		gA := genesis(t, "a.test", k[0], k[1])
		a := gA.GenesisDID()
		if res, err := l.Ingest(ctx, src, []oplog.IngestItem{ingestItem(1, 0, a, gA, at(20*time.Second))}); err != nil || len(res.Entries) != 1 {
			t.Fatalf("ingest: %+v, %v", res, err)
		}
		u1 := update(t, gA, k[1], "a1.test", k[0], k[1])
		gB := genesis(t, "b.test", k[2])
		u2 := update(t, u1, k[1], "a2.test", k[0], k[1])
		var es []oplog.Entry
		for _, sub := range []struct {
			did string
			op  *validate.Op
		}{{a, u1}, {gB.GenesisDID(), gB}, {a, u2}} {
			e, err := l.Submit(ctx, sub.did, sub.op)
			if err != nil {
				t.Fatalf("Submit %s with the clock behind the log: %v", sub.op.CID(), err)
			}
			es = append(es, e)
		}
		prev := at(20 * time.Second)
		for _, e := range es {
			if !e.CreatedAt.After(prev) {
				t.Fatalf("op %d dated %s, not after %s: time stood still", e.Seq, e.CreatedAt, prev)
			}
			prev = e.CreatedAt
		}
		if want := at(20*time.Second + 3*time.Millisecond); !prev.Equal(want) {
			t.Fatalf("last op dated %s, want %s (1 ms per commit)", prev, want)
		}
		verifyLog(t, s)
	})

	t.Run("SubmitWhileClockIsFarBehindTheLogIsClockBehind", func(t *testing.T) {
		s, _ := migrated(t)
		c := testclock.New(at(0))
		l := oplog.NewLog(s, oplog.Options{Now: c.Now}) // the default skew: 30s
		t.Cleanup(l.Close)
		gA := genesis(t, "a.test", k[0], k[1])
		a := gA.GenesisDID()
		appendOps(t, s, gen(gA, at(2*time.Minute)))
		gB := genesis(t, "b.test", k[2])
		for _, sub := range []struct {
			did string
			op  *validate.Op
		}{{gB.GenesisDID(), gB}, {a, update(t, gA, k[1], "a1.test", k[0], k[1])}} {
			_, err := l.Submit(ctx, sub.did, sub.op)
			var behind *oplog.ClockBehindError
			if !errors.As(err, &behind) {
				t.Fatalf("Submit with the clock 2 min behind the log: %v, want a *ClockBehindError", err)
			}
			if behind.Ahead != 2*time.Minute+time.Millisecond || behind.RetryAfter() != 90*time.Second+time.Millisecond {
				t.Fatalf("ClockBehindError %+v, retry after %s", behind, behind.RetryAfter())
			}
			if got := oplog.RejectReason(err); got != "clock_behind" {
				t.Errorf("metric reason %q", got)
			}
		}
		if n, err := s.LatestSeq(ctx); err != nil || n != 1 {
			t.Fatalf("LatestSeq %d, %v: an op was dated in the future", n, err)
		}
		// Within the skew again: accepted, 1 ms after the latest op.
		c.Advance(90*time.Second + time.Millisecond)
		e, err := l.Submit(ctx, a, update(t, gA, k[1], "a1.test", k[0], k[1]))
		if err != nil || !e.CreatedAt.Equal(at(2*time.Minute+time.Millisecond)) {
			t.Fatalf("Submit within the skew: %+v, %v", e, err)
		}
	})

	t.Run("IngestRejectsOpsDatedInTheFuture", func(t *testing.T) {
		s, _ := migrated(t)
		now := at(time.Hour)
		l := oplog.NewLog(s, oplog.Options{Now: testclock.New(now).Now})
		t.Cleanup(l.Close)
		g1, g2 := genesis(t, "a.test", k[0]), genesis(t, "b.test", k[1])
		items := []oplog.IngestItem{
			ingestItem(1, 1, g1.GenesisDID(), g1, now.Add(oplog.DefaultMaxClockSkew)),
			ingestItem(2, 2, g2.GenesisDID(), g2, now.Add(oplog.DefaultMaxClockSkew+time.Millisecond)),
		}
		res, err := l.Ingest(ctx, src, items)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Entries) != 1 || res.Entries[0].CID != g1.CID() || len(res.Rejected) != 1 || res.Rejected[0].Line != 2 {
			t.Fatalf("ingest: %d entries, rejected %+v; want line 1 applied, line 2 rejected", len(res.Entries), res.Rejected)
		}
		if r := res.Rejected[0].Reason; !strings.Contains(r, "in the future") || !strings.Contains(r, "after this directory's clock") {
			t.Fatalf("reason %q", r)
		}
		if got := oplog.RejectReason(fmt.Errorf("x: %w", oplog.ErrFutureOp)); got != "future" {
			t.Errorf("metric reason %q", got)
		}
		// The skew is settable.
		s2, _ := migrated(t)
		l2 := oplog.NewLog(s2, oplog.Options{Now: testclock.New(now).Now, MaxClockSkew: time.Minute})
		t.Cleanup(l2.Close)
		if res, err := l2.Ingest(ctx, src, items); err != nil || len(res.Entries) != 2 {
			t.Fatalf("ingest with a 1 min skew: %+v, %v", res, err)
		}
	})

	t.Run("SubmitDuringDatabaseOutageIsStorageFailure", func(t *testing.T) {
		s, _ := migrated(t)
		fs := &failStore{Store: s}
		l := oplog.NewLog(fs, oplog.Options{Now: testclock.New(at(time.Second)).Now})
		t.Cleanup(l.Close)
		g := genesis(t, "a.test", k[0])
		for _, tc := range []struct {
			name        string
			read, write error
			kind        string
		}{
			{"ConnectionRefused", nil, errors.New("dial tcp 127.0.0.1:5432: connect: connection refused"), oplog.StorageUnavailable},
			{"ReadFails", errors.New("driver: bad connection"), nil, oplog.StorageUnavailable},
			{"SQLiteFull", nil, fmt.Errorf("commit: %w", sqliteError(13)), oplog.StorageFull},
			{"SQLiteFullExtended", nil, sqliteError(13 | 3<<8), oplog.StorageFull},
			{"PostgresDiskFull", nil, fmt.Errorf("insert: %w", &pgconn.PgError{Code: "53100", Message: "could not extend file: No space left on device"}), oplog.StorageFull},
			{"PostgresTooManyConnections", &pgconn.PgError{Code: "53300"}, nil, oplog.StorageUnavailable},
			{"ENOSPC", nil, fmt.Errorf("write wal: %w", syscall.ENOSPC), oplog.StorageFull},
		} {
			t.Run(tc.name, func(t *testing.T) {
				fs.set(tc.read, tc.write)
				_, err := l.Submit(ctx, g.GenesisDID(), g)
				var se *oplog.StorageError
				if !errors.Is(err, oplog.ErrStorage) || !errors.As(err, &se) || se.Kind != tc.kind {
					t.Fatalf("Submit: %v (%T), want a %q *StorageError", err, err, tc.kind)
				}
				if cause := tc.read; cause == nil && !errors.Is(err, tc.write) || cause != nil && !errors.Is(err, cause) {
					t.Fatalf("Submit: %v does not wrap the database's error", err)
				}
				if got := oplog.RejectReason(err); got != "storage" {
					t.Errorf("metric reason %q", got)
				}
			})
		}
		fs.set(nil, nil)
		if _, err := l.Submit(ctx, g.GenesisDID(), g); err != nil {
			t.Fatalf("Submit once the database is back: %v", err)
		}
	})

	t.Run("SubmitAfterTheDatabaseIsGoneIsStorageFailure", func(t *testing.T) {
		// A real failure, not a wrapper's: the store's connections are
		// closed under the log.
		_, dsn := migrated(t)
		gone := reopen(t, dsn)
		l := oplog.NewLog(gone, oplog.Options{Now: testclock.New(at(time.Second)).Now})
		t.Cleanup(l.Close)
		g := genesis(t, "a.test", k[0])
		if _, err := l.Submit(ctx, g.GenesisDID(), g); err != nil {
			t.Fatal(err)
		}
		gone.Close()
		u := update(t, g, k[0], "a2.test", k[0])
		if _, err := l.Submit(ctx, g.GenesisDID(), u); !errors.Is(err, oplog.ErrStorage) {
			t.Fatalf("Submit on a closed database: %v (%T), want ErrStorage", err, err)
		}
	})

	t.Run("FailedBatchTellsEveryOpTheStorageFailure", func(t *testing.T) {
		// Twenty ops wait in one batch: ten updates on the same prev (all
		// but one would lose with a conflict) and ten creates. The
		// transaction fails after the chain rules have judged them: every
		// op is told the storage failure, none a verdict against a state
		// that was never committed.
		s, _ := migrated(t)
		fs := &failStore{Store: s, gate: make(chan struct{}), entered: make(chan struct{}, 1)}
		l := oplog.NewLog(fs, oplog.Options{Now: testclock.New(at(time.Second)).Now})
		t.Cleanup(l.Close)
		gA := genesis(t, "a.test", k[0], k[1])
		a := gA.GenesisDID()
		appendOps(t, s, gen(gA, at(0)))

		var queued sync.WaitGroup
		oplog.SetQueuedHook(func() { queued.Done() })
		t.Cleanup(func() { oplog.SetQueuedHook(nil) })

		// A first op holds the sequencer inside Append until the gate opens.
		plug := genesis(t, "plug.test", k[2])
		queued.Add(1)
		plugErr := make(chan error, 1)
		go func() { _, err := l.Submit(ctx, plug.GenesisDID(), plug); plugErr <- err }()
		<-fs.entered

		type sub struct {
			did string
			op  *validate.Op
		}
		var subs []sub
		for i := range 10 {
			subs = append(subs, sub{a, update(t, gA, k[0], fmt.Sprintf("u%d.test", i), k[0], k[1])})
			g := genesis(t, fmt.Sprintf("n%d.test", i), k[i%2])
			subs = append(subs, sub{g.GenesisDID(), g})
		}
		errs := make([]error, len(subs))
		var done sync.WaitGroup
		queued.Add(len(subs))
		for i, sb := range subs {
			done.Go(func() { _, errs[i] = l.Submit(ctx, sb.did, sb.op) })
		}
		queued.Wait() // all twenty are queued behind the plug: one batch
		oplog.SetQueuedHook(nil)
		fs.set(nil, errors.New("server closed the connection unexpectedly"))
		close(fs.gate)
		done.Wait()
		for i, err := range append(errs, <-plugErr) {
			var conflict *oplog.ConflictError
			var verdict *validate.Error
			if !errors.Is(err, oplog.ErrStorage) || errors.As(err, &conflict) || errors.As(err, &verdict) {
				t.Errorf("op %d of the failed batch: %v (%T), want only the storage failure", i, err, err)
			}
		}
		if n, err := s.LatestSeq(ctx); err != nil || n != 1 {
			t.Fatalf("LatestSeq %d, %v after the failed batch", n, err)
		}
		// Once the database is back, the same ops get their real verdicts:
		// one update wins, the other nine are refused.
		fs.set(nil, nil)
		wins := 0
		for _, sb := range subs {
			if _, err := l.Submit(ctx, sb.did, sb.op); err == nil {
				wins++
			} else if !errors.Is(err, validate.ErrInvalidSignature) && !errors.Is(err, validate.ErrMisordered) {
				t.Errorf("resubmitted %s: %v", sb.op.CID(), err)
			}
		}
		if wins != 11 {
			t.Fatalf("%d ops accepted once the database is back, want 11", wins)
		}
		verifyLog(t, s)
	})

	t.Run("StorageFailuresAreLoggedAtABoundedRate", func(t *testing.T) {
		s, _ := migrated(t)
		fs := &failStore{Store: s}
		c := testclock.New(at(time.Second))
		var logs storetest.Buffer
		reg := prometheus.NewRegistry()
		l := oplog.NewLog(fs, oplog.Options{
			Now:                c.Now,
			Logger:             slog.New(slog.NewTextHandler(&logs, nil)),
			Metrics:            oplog.NewMetrics(reg),
			FailureLogInterval: 10 * time.Second,
		})
		t.Cleanup(l.Close)
		fs.set(nil, errors.New("connection refused"))
		submitNew := func(i int) error {
			g := genesis(t, "n"+strconv.Itoa(i)+".test", k[i%3])
			_, err := l.Submit(ctx, g.GenesisDID(), g)
			return err
		}
		for i := range 100 {
			if err := submitNew(i); !errors.Is(err, oplog.ErrStorage) {
				t.Fatalf("submit %d: %v", i, err)
			}
		}
		if n := strings.Count(logs.String(), "storage failure"); n != 1 {
			t.Fatalf("%d log lines for 100 failures in one interval, want 1:\n%s", n, logs.String())
		}
		c.Advance(10 * time.Second)
		if err := submitNew(100); !errors.Is(err, oplog.ErrStorage) {
			t.Fatal(err)
		}
		out := logs.String()
		if n := strings.Count(out, "storage failure"); n != 2 || !strings.Contains(out, "failures=100") {
			t.Fatalf("after one interval: %d lines, want 2, the second counting 100 failures:\n%s", n, out)
		}
		fs.set(nil, nil)
		if err := submitNew(101); err != nil {
			t.Fatal(err)
		}
		if out := logs.String(); !strings.Contains(out, "storage works again") || !strings.Contains(out, "failures=101") {
			t.Fatalf("no recovery line:\n%s", out)
		}
		if got := counterSum(t, reg, "plc_storage_failures_total"); got != 101 {
			t.Fatalf("plc_storage_failures_total = %v, want 101", got)
		}
	})
}

// TestSQLiteFullDatabaseIsStorageFull: a real SQLITE_FULL (the database
// may not grow past max_page_count) is a StorageFull failure for the op
// that hits it, and nothing of its batch is written.
func TestSQLiteFullDatabaseIsStorageFull(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "plc.db")
	if _, err := oplog.MigrateUp(path); err != nil {
		t.Fatal(err)
	}
	s, err := oplog.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	db := s.WriteDB() // the pragma is per connection: the writes' one
	var pages int64
	if err := db.QueryRowContext(ctx, `PRAGMA page_count`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, fmt.Sprintf(`PRAGMA max_page_count = %d`, pages+8)); err != nil {
		t.Fatal(err)
	}
	l := oplog.NewLog(s, oplog.Options{Now: testclock.New(at(time.Second)).Now})
	t.Cleanup(l.Close)
	k := keys(t, 3)
	var accepted int64
	for i := range 2000 {
		g := genesis(t, "full"+strconv.Itoa(i)+".test", k[i%3])
		_, err := l.Submit(ctx, g.GenesisDID(), g)
		if err == nil {
			accepted++
			continue
		}
		var se *oplog.StorageError
		if !errors.As(err, &se) || se.Kind != oplog.StorageFull {
			t.Fatalf("submit %d on a full database: %v (%T), want a full *StorageError", i, err, err)
		}
		t.Logf("after %d ops: %v", accepted, err)
		if n, err := s.LatestSeq(ctx); err != nil || n != accepted {
			t.Fatalf("LatestSeq %d, %v; want the %d accepted ops", n, err, accepted)
		}
		return
	}
	t.Fatal("the database never filled up")
}

// failStore is a Store whose database can be made to fail: reads of
// records (Record) with read, append transactions with write (after
// decide has run, as a failed commit). With gate set, Append first
// signals entered and waits for the gate to open.
type failStore struct {
	oplog.Store
	gate    chan struct{}
	entered chan struct{}
	errs    atomic.Pointer[[2]error]
}

func (s *failStore) set(read, write error) { s.errs.Store(&[2]error{read, write}) }

func (s *failStore) failing() (read, write error) {
	if e := s.errs.Load(); e != nil {
		return e[0], e[1]
	}
	return nil, nil
}

func (s *failStore) Record(ctx context.Context, did string) (*oplog.DIDRecord, error) {
	if err, _ := s.failing(); err != nil {
		return nil, err
	}
	return s.Store.Record(ctx, did)
}

func (s *failStore) Append(ctx context.Context, source string, dids []string, decide oplog.DecideFunc) error {
	if source != "" {
		// Replayed history: the store fails before the transaction.
		if _, fail := s.failing(); fail != nil {
			return fail
		}
		return s.Store.Append(ctx, source, dids, decide)
	}
	if s.gate != nil {
		select {
		case s.entered <- struct{}{}:
		default:
		}
		<-s.gate
	}
	return s.Store.Append(ctx, "", dids, func(v oplog.View) (oplog.Batch, error) {
		b, err := decide(v)
		if _, fail := s.failing(); fail != nil {
			return oplog.Batch{}, fail
		}
		return b, err
	})
}

// sqliteError has the shape of modernc.org/sqlite's errors: a result code.
type sqliteError int

func (e sqliteError) Error() string { return "sqlite error " + strconv.Itoa(int(e)) }
func (e sqliteError) Code() int     { return int(e) }

// counterSum returns the sum of the counters registered in reg under
// name.
func counterSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var sum float64
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
