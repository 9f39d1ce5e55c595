package oplog_test

import (
	"context"
	"errors"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/plcdir/plc/internal/pgtest"
	"github.com/plcdir/plc/oplog"
)

// Tests of ReadRouter against a real primary and a real streaming replica
// (scripts/with-postgres.sh makes one with pg_basebackup -R).

// routerEnv is a migrated database on the primary, its replica, and a
// ReadRouter over both.
type routerEnv struct {
	primary    *oplog.PostgresStore
	rr         *oplog.ReadRouter
	reg        *prometheus.Registry
	replicaURL string
	opts       oplog.ReplicaOptions
}

// openRouter migrates a fresh database, opens a router on it and on
// replicaURL(url) (nil: the test cluster's replica), and waits until the
// replica is in rotation.
func openRouter(t *testing.T, opts oplog.ReplicaOptions, replicaURL func(primary, replica string) string) *routerEnv {
	t.Helper()
	u := pgtest.URL(t)
	ru := pgtest.ReplicaURL(t, u)
	if _, err := oplog.Prepare(u); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	primary, err := oplog.OpenPostgres(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { primary.Close() })
	if replicaURL != nil {
		ru = replicaURL(u, ru)
	}
	reg := prometheus.NewRegistry()
	opts.Registry = reg
	rr, err := oplog.OpenReadRouter(ctx, primary, []string{ru}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rr.Close() })
	e := &routerEnv{primary: primary, rr: rr, reg: reg, replicaURL: ru, opts: opts}
	e.waitState(t, oplog.ReplicaUp, 0)
	return e
}

// waitState checks the replica until it is in state and has seq at least
// minSeq, failing after a bounded time.
func (e *routerEnv) waitState(t *testing.T, state oplog.ReplicaState, minSeq int64) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		e.rr.Check(context.Background())
		h := e.rr.Health()[0]
		if h.State == state && h.Seq >= minSeq {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica not %s at seq %d after a minute: %+v", state, minSeq, h)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *routerEnv) replicaReads() float64 {
	return metricValue(e.rr.Metrics().Reads.WithLabelValues("0"))
}

func (e *routerEnv) fallbacks(reason string) float64 {
	return metricValue(e.rr.Metrics().Fallbacks.WithLabelValues(reason))
}

// pauseReplay pauses the replica's replay of the primary's WAL until the
// test ends (or resume is called).
func (e *routerEnv) pauseReplay(t *testing.T) (resume func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.replicaURL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_wal_replay_pause()`); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	resume = func() {
		once.Do(func() {
			if _, err := conn.Exec(ctx, `SELECT pg_wal_replay_resume()`); err != nil {
				t.Errorf("resume replay: %v", err)
			}
			conn.Close(ctx)
		})
	}
	t.Cleanup(resume)
	return resume
}

// ops appends n new DIDs' genesis ops through s and returns their entries.
func newDIDs(t *testing.T, s oplog.Store, n int, from int) []oplog.Entry {
	t.Helper()
	k := keys(t, 1)
	var items []item
	for i := range n {
		items = append(items, gen(genesis(t, "u"+strconv.Itoa(from+i)+".test", k[0]), at(time.Duration(from+i)*time.Second)))
	}
	return appendOps(t, s, items...)
}

func TestReadRouterReadsFromTheReplicaAndWritesToThePrimary(t *testing.T) {
	e := openRouter(t, oplog.ReplicaOptions{}, nil)
	ctx := context.Background()
	// Appends through the router reach the primary (the replica is read
	// only: a write there would fail).
	es := newDIDs(t, e.rr, 3, 0)
	if n, err := e.primary.LatestSeq(ctx); err != nil || n != 3 {
		t.Fatalf("primary LatestSeq = %d, %v; want 3", n, err)
	}
	e.waitState(t, oplog.ReplicaUp, 3)
	before := e.replicaReads()
	head, err := e.rr.Head(ctx, es[1].DID)
	if err != nil || head.CID != es[1].CID {
		t.Fatalf("Head = %+v, %v; want %s", head, err, es[1].CID)
	}
	page, err := e.rr.Export(ctx, 0, 10)
	if err != nil || len(page) != 3 {
		t.Fatalf("Export = %d entries, %v; want 3", len(page), err)
	}
	if _, err := e.rr.Head(ctx, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"); !errors.Is(err, oplog.ErrNotFound) {
		t.Fatalf("Head of an unknown DID: %v, want ErrNotFound", err)
	}
	heads, err := e.rr.Heads(ctx, []string{es[0].DID, es[2].DID, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"})
	if err != nil || len(heads) != 2 || heads[es[2].DID].CID != es[2].CID {
		t.Fatalf("Heads = %v, %v; want the heads of 2 DIDs", heads, err)
	}
	if got := e.replicaReads() - before; got != 4 {
		t.Fatalf("the replica answered %v reads, want 4 (fallbacks behind=%v unavailable=%v)", got, e.fallbacks("behind"), e.fallbacks("unavailable"))
	}
}

func TestReadYourWriteUnderReplicaLag(t *testing.T) {
	e := openRouter(t, oplog.ReplicaOptions{}, nil)
	ctx := context.Background()
	log := oplog.NewLog(e.rr, oplog.Options{Now: func() time.Time { return at(time.Hour) }})
	defer log.Close()
	k := keys(t, 1)
	g := genesis(t, "before.test", k[0])
	if _, err := log.Submit(ctx, g.GenesisDID(), g); err != nil {
		t.Fatal(err)
	}
	e.waitState(t, oplog.ReplicaUp, 1)
	resume := e.pauseReplay(t)

	// What a POST answered 200 does: the op is committed on the primary,
	// the replica has not replayed it.
	u := update(t, g, k[0], "after.test", k[0])
	entry, err := log.Submit(ctx, g.GenesisDID(), u)
	if err != nil {
		t.Fatal(err)
	}
	replicaOnly, err := oplog.OpenPostgres(ctx, e.replicaURL)
	if err != nil {
		t.Fatal(err)
	}
	defer replicaOnly.Close()
	if stale, err := replicaOnly.Head(ctx, g.GenesisDID()); err != nil || stale.CID == entry.CID {
		t.Fatalf("the replica alone answers %s, %v: replay was not paused", stale.CID, err)
	}

	before, behind := e.replicaReads(), e.fallbacks("behind")
	head, err := log.Store().Head(ctx, g.GenesisDID())
	if err != nil || head.CID != entry.CID {
		t.Fatalf("Head after the write = %s, %v; want the written op %s", head.CID, err, entry.CID)
	}
	ops, err := log.Store().Ops(ctx, g.GenesisDID())
	if err != nil || len(ops) != 2 {
		t.Fatalf("Ops after the write = %d ops, %v; want 2", len(ops), err)
	}
	if e.replicaReads() != before || e.fallbacks("behind")-behind != 2 {
		t.Fatalf("replica reads %v→%v, behind fallbacks %v→%v: want both reads from the primary", before, e.replicaReads(), behind, e.fallbacks("behind"))
	}

	// Replayed, the replica answers again.
	resume()
	e.waitState(t, oplog.ReplicaUp, entry.Seq)
	if head, err := log.Store().Head(ctx, g.GenesisDID()); err != nil || head.CID != entry.CID {
		t.Fatalf("Head after replay = %s, %v", head.CID, err)
	}
	if e.replicaReads() != before+1 {
		t.Fatal("the caught-up replica did not answer")
	}
}

func TestExportUnderReplicaLagDoesNotEndEarly(t *testing.T) {
	e := openRouter(t, oplog.ReplicaOptions{}, nil)
	ctx := context.Background()
	newDIDs(t, e.rr, 3, 0)
	e.waitState(t, oplog.ReplicaUp, 3)
	e.pauseReplay(t)
	newDIDs(t, e.rr, 3, 3)

	replicaOnly, err := oplog.OpenPostgres(ctx, e.replicaURL)
	if err != nil {
		t.Fatal(err)
	}
	defer replicaOnly.Close()
	if short, err := replicaOnly.Export(ctx, 0, 100); err != nil || len(short) != 3 {
		t.Fatalf("the replica alone exports %d ops, %v; want 3 (replay paused)", len(short), err)
	}
	// A client paging through the export sees every op once, and its last
	// (short) page only at the primary's end.
	var seqs []int64
	after := int64(0)
	for {
		page, err := e.rr.Export(ctx, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range page {
			seqs = append(seqs, p.Seq)
		}
		if len(page) < 2 {
			break
		}
		after = page[len(page)-1].Seq
	}
	want := []int64{1, 2, 3, 4, 5, 6}
	if len(seqs) != len(want) {
		t.Fatalf("paged export = %v, want %v", seqs, want)
	}
	for i := range want {
		if seqs[i] != want[i] {
			t.Fatalf("paged export = %v, want %v", seqs, want)
		}
	}
	byTime, err := e.rr.ExportByTime(ctx, time.Time{}, 100)
	if err != nil || len(byTime) != 6 {
		t.Fatalf("ExportByTime = %d ops, %v; want 6", len(byTime), err)
	}
}

func TestReplicaTooFarBehindLeavesRotationAndComesBack(t *testing.T) {
	e := openRouter(t, oplog.ReplicaOptions{MaxLag: 2}, nil)
	ctx := context.Background()
	resume := e.pauseReplay(t)
	newDIDs(t, e.rr, 3, 0)
	e.rr.Check(ctx)
	h := e.rr.Health()[0]
	if h.State != oplog.ReplicaBehind || h.LagOps != 3 {
		t.Fatalf("health of a replica 3 ops behind with MaxLag 2: %+v", h)
	}
	if got := metricValue(e.rr.Metrics().Up.WithLabelValues("0")); got != 0 {
		t.Fatalf("plc_replica_up = %v, want 0", got)
	}
	before := e.fallbacks("unavailable")
	if _, err := e.rr.Export(ctx, 0, 10); err != nil {
		t.Fatal(err)
	}
	if e.fallbacks("unavailable") != before+1 {
		t.Fatal("a read with the replica out of rotation was not counted as a fallback")
	}
	resume()
	e.waitState(t, oplog.ReplicaUp, 3)
	if h := e.rr.Health()[0]; h.LagOps != 0 || h.Error != "" {
		t.Fatalf("health after catching up: %+v", h)
	}
}

// TestReplicaStoppedMidLoadCausesNoClientErrors cuts the replica off in
// the middle of a read load: its connections are closed and new ones
// refused (a proxy in front of it stops), as when its server stops. Every
// read still succeeds, from the primary; once it answers again, Check puts
// it back.
func TestReplicaStoppedMidLoadCausesNoClientErrors(t *testing.T) {
	var p *proxy
	e := openRouter(t, oplog.ReplicaOptions{}, func(primary, replica string) string {
		p = startProxy(t, replica)
		return p.url(t, replica)
	})
	ctx := context.Background()
	es := newDIDs(t, e.rr, 4, 0)
	e.waitState(t, oplog.ReplicaUp, 4)

	var (
		stop   = make(chan struct{})
		wg     sync.WaitGroup
		done   atomic.Int64
		failed atomic.Value
	)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				if (w+i)%2 == 0 {
					var h oplog.Entry
					h, err = e.rr.Head(ctx, es[i%len(es)].DID)
					if err == nil && h.CID != es[i%len(es)].CID {
						err = errors.New("wrong head " + h.CID)
					}
				} else {
					var page []oplog.Entry
					page, err = e.rr.Export(ctx, 0, 10)
					if err == nil && len(page) != 4 {
						err = errors.New("export of " + strconv.Itoa(len(page)) + " ops")
					}
				}
				if err != nil {
					failed.CompareAndSwap(nil, err)
				}
				done.Add(1)
			}
		}()
	}
	until := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for !cond() {
			if time.Now().After(deadline) {
				close(stop)
				wg.Wait()
				t.Fatalf("no %s after a minute", what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	until("replica reads", func() bool { return e.replicaReads() >= 20 })
	p.stop()
	cut := done.Load()
	until("fallback after the cut", func() bool { return e.fallbacks("error") >= 1 })
	until("reads after the cut", func() bool { return done.Load() >= cut+200 })
	close(stop)
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatalf("a read failed while the replica went away: %v", err)
	}
	h := e.rr.Health()[0]
	if h.State != oplog.ReplicaDown || h.Error == "" {
		t.Fatalf("health of the cut replica: %+v", h)
	}
	if metricValue(e.rr.Metrics().Errors.WithLabelValues("0")) < 1 {
		t.Fatal("plc_replica_errors_total not counted")
	}

	p.start(t)
	e.waitState(t, oplog.ReplicaUp, 4)
	before := e.replicaReads()
	if _, err := e.rr.Head(ctx, es[0].DID); err != nil {
		t.Fatal(err)
	}
	if e.replicaReads() != before+1 {
		t.Fatal("the replica back in rotation did not answer")
	}
}

// proxy forwards TCP connections to a PostgreSQL server's unix socket and
// can be stopped (every connection closed, new ones refused) and started
// again on the same address.
type proxy struct {
	target string // socket path
	addr   string
	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
	// hang: bytes are read and dropped, never forwarded (a replica that
	// hangs).
	hang atomic.Bool
}

func startProxy(t *testing.T, replica string) *proxy {
	t.Helper()
	u, err := url.Parse(replica)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if q.Get("host") == "" {
		t.Skip("the replica is not on a unix socket: no proxy")
	}
	p := &proxy{target: filepath.Join(q.Get("host"), ".s.PGSQL."+q.Get("port")), addr: "127.0.0.1:0"}
	p.start(t)
	t.Cleanup(p.stop)
	return p
}

func (p *proxy) url(t *testing.T, replica string) string {
	u, _ := url.Parse(replica)
	q := u.Query()
	host, port, _ := net.SplitHostPort(p.addr)
	q.Set("host", host)
	q.Set("port", port)
	q.Set("sslmode", "disable")
	u.RawQuery = q.Encode()
	return u.String()
}

func (p *proxy) start(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.ln, p.addr, p.conns = ln, ln.Addr().String(), map[net.Conn]struct{}{}
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("unix", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			if p.conns == nil {
				p.mu.Unlock()
				c.Close()
				s.Close()
				return
			}
			p.conns[c], p.conns[s] = struct{}{}, struct{}{}
			p.mu.Unlock()
			go func() { p.copy(s, c); s.Close(); c.Close() }()
			go func() { p.copy(c, s); s.Close(); c.Close() }()
		}
	}()
}

// copy forwards src to dst, dropping what comes while p hangs.
func (p *proxy) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.hang.Load() {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *proxy) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
	}
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// The conformance suite, with reads routed to the replica when it has
// replayed what they need.
func TestReadRouterConformance(t *testing.T) {
	pgtest.ReplicaURL(t, pgtest.URL(t))
	testStore(t, func(t *testing.T) (oplog.Store, string) {
		u := pgtest.URL(t)
		ru := pgtest.ReplicaURL(t, u)
		ctx := context.Background()
		primary, err := oplog.OpenPostgres(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		rr, err := oplog.OpenReadRouter(ctx, primary, []string{ru}, oplog.ReplicaOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// Check puts the replica in rotation once it has the schema.
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { rr.Run(runCtx, 5*time.Millisecond); close(done) }()
		t.Cleanup(func() { stop(); <-done; rr.Close() })
		return rr, u
	})
}

// metricValue returns the value of a counter or gauge.
func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

// TestReadDBOfAnotherClusterNeverAnswers: a read db whose system
// identifier is not the primary's (a server that is not its replica, a
// wrong URL) is taken out of rotation and stays out.
func TestReadDBOfAnotherClusterNeverAnswers(t *testing.T) {
	e := openRouter(t, oplog.ReplicaOptions{}, nil)
	ctx := context.Background()
	oplog.PretendPrimaryIs(e.rr, 12345)
	e.rr.Check(ctx)
	h := e.rr.Health()[0]
	if h.State != oplog.ReplicaDown || !strings.Contains(h.Error, "not a replica of the primary") {
		t.Fatalf("health of a read db of another cluster: %+v", h)
	}
	before := e.replicaReads()
	if _, err := e.rr.Export(ctx, 0, 10); err != nil {
		t.Fatal(err)
	}
	e.rr.Check(ctx)
	if _, err := e.rr.Export(ctx, 0, 10); err != nil {
		t.Fatal(err)
	}
	if e.replicaReads() != before {
		t.Fatal("a read db of another cluster answered")
	}
}

// TestReplicaDownAtStartJoinsWhenItAnswers: a replica that does not answer
// when the router opens does not stop it; it is out of rotation until a
// Check finds it answering.
func TestReplicaDownAtStartJoinsWhenItAnswers(t *testing.T) {
	u := pgtest.URL(t)
	ru := pgtest.ReplicaURL(t, u)
	if _, err := oplog.Prepare(u); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	primary, err := oplog.OpenPostgres(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { primary.Close() })
	p := startProxy(t, ru)
	p.stop()
	rr, err := oplog.OpenReadRouter(ctx, primary, []string{p.url(t, ru)}, oplog.ReplicaOptions{})
	if err != nil {
		t.Fatalf("a replica down at start stops the router: %v", err)
	}
	t.Cleanup(func() { rr.Close() })
	if h := rr.Health()[0]; h.State != oplog.ReplicaDown || h.Error == "" {
		t.Fatalf("health of a replica down at start: %+v", h)
	}
	if _, err := rr.Export(ctx, 0, 10); err != nil {
		t.Fatalf("read with the replica down: %v", err)
	}
	p.start(t)
	e := &routerEnv{primary: primary, rr: rr}
	e.waitState(t, oplog.ReplicaUp, 0)
}

// TestHungReplicaCostsAReadAtMostReadTimeout: a replica that stops
// answering without closing its connections (a network black hole) is
// given ReadTimeout, then the primary answers and it leaves rotation.
func TestHungReplicaCostsAReadAtMostReadTimeout(t *testing.T) {
	var p *proxy
	e := openRouter(t, oplog.ReplicaOptions{ReadTimeout: 100 * time.Millisecond, Timeout: 100 * time.Millisecond}, func(primary, replica string) string {
		p = startProxy(t, replica)
		return p.url(t, replica)
	})
	ctx := context.Background()
	es := newDIDs(t, e.rr, 2, 0)
	e.waitState(t, oplog.ReplicaUp, 2)
	p.hang.Store(true)
	t.Cleanup(p.stop) // before the router closes: its hung connections end
	head, err := e.rr.Head(ctx, es[0].DID)
	if err != nil || head.CID != es[0].CID {
		t.Fatalf("Head with the replica hung = %s, %v", head.CID, err)
	}
	if h := e.rr.Health()[0]; h.State != oplog.ReplicaDown {
		t.Fatalf("health of a hung replica: %+v", h)
	}
	if e.fallbacks("error") != 1 {
		t.Fatalf("fallbacks(error) = %v, want 1", e.fallbacks("error"))
	}
}

// TestReadHashesFromAReplicaOnlyWhenItHasThem: tiles and proofs read the
// transparency log's hashes from a replica whose tree covers them, and
// from the primary those it has not replayed.
func TestReadHashesFromAReplicaOnlyWhenItHasThem(t *testing.T) {
	e := openRouter(t, oplog.ReplicaOptions{}, nil)
	ctx := context.Background()
	newDIDs(t, e.rr, 4, 0)
	if n, err := e.primary.TreeSize(ctx); err != nil || n != 4 {
		t.Fatalf("primary TreeSize = %d, %v; want 4", n, err)
	}
	e.waitState(t, oplog.ReplicaUp, 4)
	check := func(idx []int64, fromReplica bool) {
		t.Helper()
		want, err := e.primary.ReadHashes(ctx, idx)
		if err != nil {
			t.Fatal(err)
		}
		before := e.replicaReads()
		got, err := e.rr.ReadHashes(ctx, idx)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("ReadHashes(%v) = %v, %v; want %v", idx, got, err, want)
		}
		if answered := e.replicaReads() > before; answered != fromReplica {
			t.Fatalf("ReadHashes(%v): answered by the replica %v, want %v", idx, answered, fromReplica)
		}
	}
	check([]int64{tlog.StoredHashIndex(0, 0), tlog.StoredHashIndex(0, 3), tlog.StoredHashIndex(2, 0)}, true)
	e.pauseReplay(t)
	newDIDs(t, e.rr, 2, 4)
	behind := e.fallbacks("behind")
	check([]int64{tlog.StoredHashIndex(0, 1), tlog.StoredHashIndex(0, 5)}, false)
	if e.fallbacks("behind") != behind+1 {
		t.Fatal("the primary's answer was not counted as a fallback")
	}
	check([]int64{tlog.StoredHashIndex(1, 1)}, true)
}
