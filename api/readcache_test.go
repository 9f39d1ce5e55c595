package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/plcdir/plc/internal/pgtest"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/storetest"
	"github.com/plcdir/plc/validate"
)

// readCountingStore counts the reads of the /:did routes and can stop a Head
// read after it read (hold).
type readCountingStore struct {
	oplog.Store
	heads, ops atomic.Int64
	// hold, if set, is called after each Head read, before it returns.
	hold func()
}

func (s *readCountingStore) Head(ctx context.Context, did string) (oplog.Entry, error) {
	s.heads.Add(1)
	e, err := s.Store.Head(ctx, did)
	if s.hold != nil {
		s.hold()
	}
	return e, err
}

func (s *readCountingStore) Ops(ctx context.Context, did string) ([]oplog.Entry, error) {
	s.ops.Add(1)
	return s.Store.Ops(ctx, did)
}

// ChangeToken passes the counted store's probe through (the cache finds
// it by a type assertion, which the embedded interface would hide).
func (s *readCountingStore) ChangeToken() (oplog.ChangeToken, bool) {
	if p, ok := s.Store.(oplog.ChangeProbe); ok {
		return p.ChangeToken()
	}
	return oplog.ChangeToken{}, false
}

// sharedStores opens two stores on one new database of backend b: as two
// processes sharing it would.
func sharedStores(t *testing.T, b backend) (oplog.Store, oplog.Store) {
	t.Helper()
	if b.name == "sqlite" {
		first, path := storetest.SQLite(t)
		second, err := oplog.OpenSQLite(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { second.Close() })
		return first, second
	}
	url := pgtest.URL(t)
	if _, err := oplog.MigrateUp(url); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	if b.name == routedBackend.name {
		return openRouted(t, url), openPG(t, url)
	}
	return openPG(t, url), openPG(t, url)
}

// routedBackend is PostgreSQL with this process's reads routed to the
// test cluster's streaming replica (plc serve --read-db): the cache must
// stay exact when a replica answers its reads.
var routedBackend = backend{name: "postgres-replica"}

// cacheBackends are the backends of the cache's exactness tests.
var cacheBackends = append(append([]backend{}, backends...), routedBackend)

// openRouted opens a ReadRouter over the database url and its replica,
// in rotation (checked until it is, for at most a minute).
func openRouted(t *testing.T, url string) oplog.Store {
	t.Helper()
	ru := pgtest.ReplicaURL(t, url)
	primary := openPG(t, url).(*oplog.PostgresStore)
	ctx := context.Background()
	rr, err := oplog.OpenReadRouter(ctx, primary, []string{ru}, oplog.ReplicaOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rr.Close() })
	deadline := time.Now().Add(time.Minute)
	for rr.Check(ctx); rr.Health()[0].State != oplog.ReplicaUp; rr.Check(ctx) {
		if time.Now().After(deadline) {
			t.Fatalf("the replica is not in rotation after a minute: %+v", rr.Health()[0])
		}
		time.Sleep(10 * time.Millisecond)
	}
	return rr
}

// cachedEnv is an apiEnv with a cache of max bytes whose store is counted,
// and another Log (another process) on the same database.
type cachedEnv struct {
	*apiEnv
	counted *readCountingStore
	other   *oplog.Log
}

func newCachedEnv(t *testing.T, b backend, max int64) *cachedEnv {
	t.Helper()
	first, second := sharedStores(t, b)
	ce := &cachedEnv{}
	ce.apiEnv = newAPIEnv(t, backend{b.name, func(*testing.T) oplog.Store { return first }}, envOptions{
		noRateLimit: true,
		wrap: func(s oplog.Store) oplog.Store {
			ce.counted = &readCountingStore{Store: s}
			return ce.counted
		},
		config: func(c *Config) { c.ReadCacheBytes = max },
	})
	ce.other = oplog.NewLog(second, oplog.Options{Now: ce.clock.Now, NoRateLimit: true})
	t.Cleanup(ce.other.Close)
	return ce
}

func (e *cachedEnv) submitOther(did string, op *validate.Op) {
	e.t.Helper()
	if _, err := e.other.Submit(context.Background(), did, op); err != nil {
		e.t.Fatalf("submit through the other process: %v", err)
	}
}

func (e *cachedEnv) reads() int64 { return e.counted.heads.Load() + e.counted.ops.Load() }

func docOf(did string, op *validate.Op) string {
	data, _ := op.Data()
	return string(validate.AppendDocumentJSON(nil, did, data))
}

func TestReadCacheAnswersRepeatsWithoutReadingTheDID(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		env := newCachedEnv(t, b, 1<<20)
		ks := keys(t, 1)
		g := genesisOp(t, "alice.test", ks[0], ks[0])
		did := g.GenesisDID()
		env.mustSubmit(did, g)
		for _, p := range readPaths {
			first := env.get("/" + did + p)
			n := env.reads()
			for range 3 {
				again := env.get("/" + did + p)
				if again.status != http.StatusOK || string(again.body) != string(first.body) || again.header.Get("ETag") != first.header.Get("ETag") {
					t.Errorf("%s: a cached answer differs from the first", p)
				}
				r := env.do(http.MethodGet, "/"+did+p, nil, "If-None-Match", first.header.Get("ETag"))
				if r.status != http.StatusNotModified {
					t.Errorf("%s: cached 304: %d", p, r.status)
				}
			}
			if got := env.reads(); got != n {
				t.Errorf("%s: %d reads of the DID for repeated requests, want none", p, got-n)
			}
		}
		m := env.srv.cache.m
		if hits, misses := metricValue(m.hits), metricValue(m.misses); hits != 30 || misses != 5 {
			t.Errorf("hits %v misses %v, want 30 and 5", hits, misses)
		}
		if got := testutilCounter(t, env.reg, "plc_read_cache_hits_total"); got != 30 {
			t.Errorf("plc_read_cache_hits_total = %v in the registry, want 30", got)
		}
	})
}

// TestReadCacheAnswersWithoutAQueryWhileTheLogStandsStill: on SQLite,
// whose WAL-index header tells that nothing was committed, repeated reads
// cost no latest-seq query; a commit by another process is still seen by
// the next read.
func TestReadCacheAnswersWithoutAQueryWhileTheLogStandsStill(t *testing.T) {
	env := newCachedEnv(t, backends[0], 1<<20)
	if backends[0].name != "sqlite" {
		t.Fatalf("backends[0] is %s, want sqlite", backends[0].name)
	}
	ks := keys(t, 1)
	g := genesisOp(t, "alice.test", ks[0], ks[0])
	did := g.GenesisDID()
	env.mustSubmit(did, g)
	env.get("/"+did).expect(t, http.StatusOK, ctDIDDoc, docOf(did, g))
	env.get("/" + did)
	m := env.srv.cache.m
	rounds, still := metricValue(m.rounds), metricValue(m.still)
	for range 20 {
		env.get("/"+did).expect(t, http.StatusOK, ctDIDDoc, docOf(did, g))
	}
	if got := metricValue(m.rounds); got != rounds {
		t.Errorf("%v latest-seq rounds for 20 reads of a log that stood still, want none", got-rounds)
	}
	if got := metricValue(m.still); got != still+20 {
		t.Errorf("still_total grew by %v, want 20", got-still)
	}

	env.clock.Advance(time.Minute)
	u := updateOp(t, g, "bob.test", ks[0], ks[0])
	env.submitOther(did, u)
	env.get("/"+did).expect(t, http.StatusOK, ctDIDDoc, docOf(did, u))
	if got := metricValue(m.rounds); got <= rounds {
		t.Error("no round after another process's commit")
	}
}

// TestReadCacheNotifiedOnPostgresAnswersWithoutAQuery: with the listener
// of plc serve --read-cache-notify, repeated reads on PostgreSQL cost no
// latest-seq query, this process's writes show at once, and another
// process's once its notice has arrived.
func TestReadCacheNotifiedOnPostgresAnswersWithoutAQuery(t *testing.T) {
	env := newCachedEnv(t, backends[1], 1<<20)
	pg, ok := env.counted.Store.(*oplog.PostgresStore)
	if !ok {
		t.Fatalf("the store is a %T", env.counted.Store)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := pg.ListenForChanges(ctx); err != nil {
		t.Fatal(err)
	}
	ks := keys(t, 1)
	g := genesisOp(t, "alice.test", ks[0], ks[0])
	did := g.GenesisDID()
	env.mustSubmit(did, g)
	env.get("/"+did).expect(t, http.StatusOK, ctDIDDoc, docOf(did, g))
	m := env.srv.cache.m
	// The notice of the genesis may still come: wait until the reads stop
	// needing rounds, within a bound.
	for i := 0; ; i++ {
		rounds := metricValue(m.rounds)
		env.get("/" + did)
		if metricValue(m.rounds) == rounds {
			break
		}
		if i == 1000 {
			t.Fatal("every read still needs a round")
		}
	}
	rounds := metricValue(m.rounds)
	for range 20 {
		env.get("/"+did).expect(t, http.StatusOK, ctDIDDoc, docOf(did, g))
	}
	if got := metricValue(m.rounds); got != rounds {
		t.Errorf("%v latest-seq rounds for 20 reads of a log that stood still, want none", got-rounds)
	}

	// This process's own write: seen by the next read.
	env.clock.Advance(time.Minute)
	u := updateOp(t, g, "bob.test", ks[0], ks[0])
	env.mustSubmit(did, u)
	env.get("/"+did).expect(t, http.StatusOK, ctDIDDoc, docOf(did, u))

	// Another process's: seen once its notice has come.
	env.clock.Advance(time.Minute)
	u2 := updateOp(t, u, "carol.test", ks[0], ks[0])
	noticed := pg.TokenChanged()
	env.submitOther(did, u2)
	select {
	case <-noticed:
	case <-time.After(30 * time.Second):
		t.Fatal("no notice of the other process's commit within 30 s")
	}
	env.get("/"+did).expect(t, http.StatusOK, ctDIDDoc, docOf(did, u2))
}

func TestReadCacheOffReadsEveryTime(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		env := newCachedEnv(t, b, 0)
		if env.srv.cache != nil {
			t.Fatal("ReadCacheBytes 0 made a cache")
		}
		ks := keys(t, 1)
		g := genesisOp(t, "alice.test", ks[0], ks[0])
		did := g.GenesisDID()
		env.mustSubmit(did, g)
		for range 3 {
			env.get("/" + did)
		}
		if got := env.counted.heads.Load(); got != 3 {
			t.Errorf("%d Head reads for 3 requests without a cache, want 3", got)
		}
	})
}

// TestReadCacheSeesWritesOfEveryProcess: a cached answer is replaced
// after an append by this process (POST) and by another process on the
// same database, nullifications included.
func TestReadCacheSeesWritesOfEveryProcess(t *testing.T) {
	forBackends(t, cacheBackends, func(t *testing.T, b backend) {
		env := newCachedEnv(t, b, 1<<20)
		did, g, u1, ks := recoverySetup(t, env.apiEnv)
		warm := func() {
			for _, p := range readPaths {
				env.get("/" + did + p)
			}
		}
		warm()
		env.get("/"+did).expect(t, http.StatusOK, ctDIDDoc, docOf(did, u1))

		// Another process nullifies u1.
		env.clock.Advance(time.Hour)
		r := updateOp(t, g, "alice.test", ks[0], ks[0])
		env.submitOther(did, r)
		env.get("/"+did).expect(t, http.StatusOK, ctDIDDoc, docOf(did, r))
		env.get("/"+did+"/log/last").expect(t, http.StatusOK, ctJSON, opJSON(r))
		env.get("/"+did+"/log").expect(t, http.StatusOK, ctJSON, "["+opJSON(g)+","+opJSON(r)+"]")
		env.get("/"+did+"/log/audit").expect(t, http.StatusOK, ctJSON, "["+
			auditJSON(did, g, t0, false)+","+
			auditJSON(did, u1, t0.Add(time.Hour), true)+","+
			auditJSON(did, r, t0.Add(2*time.Hour), false)+"]")

		// This process updates; then another process tombstones.
		warm()
		env.clock.Advance(time.Minute)
		u2 := updateOp(t, r, "carol.test", ks[0], ks[0])
		env.mustSubmit(did, u2)
		env.get("/"+did).expect(t, http.StatusOK, ctDIDDoc, docOf(did, u2))
		warm()
		env.clock.Advance(time.Minute)
		ts := tombstoneOp(t, u2, ks[0])
		env.submitOther(did, ts)
		env.get("/"+did).expectMessage(t, http.StatusNotFound, "DID not available: "+did)
		env.get("/"+did+"/log/last").expect(t, http.StatusOK, ctJSON, opJSON(ts))

		// A DID another process creates after this one found it missing.
		g2 := genesisOp(t, "bob.test", ks[0], ks[0])
		env.get("/"+g2.GenesisDID()).expectMessage(t, http.StatusNotFound, "DID not registered: "+g2.GenesisDID())
		env.submitOther(g2.GenesisDID(), g2)
		env.get("/"+g2.GenesisDID()).expect(t, http.StatusOK, ctDIDDoc, docOf(g2.GenesisDID(), g2))
	})
}

// TestReadCacheForgetsEverythingWhenTooManyOpsCameAtOnce: past its scan
// bound the cache starts again instead of reading every op.
func TestReadCacheForgetsEverythingWhenTooManyOpsCameAtOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		env := newCachedEnv(t, b, 1<<20)
		env.srv.cache.maxScan = 2
		ks := keys(t, 1)
		g := genesisOp(t, "alice.test", ks[0], ks[0])
		did := g.GenesisDID()
		env.mustSubmit(did, g)
		env.get("/" + did)
		resets := metricValue(env.srv.cache.m.resets)
		prev := g
		for i := range 3 {
			env.clock.Advance(time.Minute)
			prev = updateOp(t, prev, fmt.Sprintf("h%d.test", i), ks[0], ks[0])
			env.submitOther(did, prev)
		}
		env.get("/"+did).expect(t, http.StatusOK, ctDIDDoc, docOf(did, prev))
		if got := metricValue(env.srv.cache.m.resets); got != resets+1 {
			t.Errorf("resets %v, want %v", got, resets+1)
		}
		// Within the bound it forgets only the DIDs that changed.
		g2 := genesisOp(t, "bob.test", ks[0], ks[0])
		env.mustSubmit(g2.GenesisDID(), g2)
		env.get("/" + g2.GenesisDID())
		env.clock.Advance(time.Minute)
		next := updateOp(t, prev, "last.test", ks[0], ks[0])
		env.submitOther(did, next)
		n := env.reads()
		env.get("/"+did).expect(t, http.StatusOK, ctDIDDoc, docOf(did, next))
		env.get("/"+g2.GenesisDID()).expect(t, http.StatusOK, ctDIDDoc, docOf(g2.GenesisDID(), g2))
		if got := env.reads() - n; got != 1 {
			t.Errorf("%d reads, want 1 (the changed DID only)", got)
		}
		if got := metricValue(env.srv.cache.m.invalidations); got < 1 {
			t.Errorf("invalidations %v", got)
		}
	})
}

// TestReadCacheDoesNotKeepAnAnswerReadBeforeAnAppendItMissed: a read that
// started before an append and ends after another request's round saw
// that append must not be stored as current.
func TestReadCacheDoesNotKeepAnAnswerReadBeforeAnAppendItMissed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		env := newCachedEnv(t, b, 1<<20)
		ks := keys(t, 1)
		g := genesisOp(t, "alice.test", ks[0], ks[0])
		did := g.GenesisDID()
		env.mustSubmit(did, g)

		read, release := make(chan struct{}), make(chan struct{})
		var once sync.Once
		env.counted.hold = func() {
			once.Do(func() {
				close(read)
				<-release
			})
		}
		slow := make(chan reply)
		go func() {
			req, _ := http.NewRequest(http.MethodGet, env.http.URL+"/"+did, nil)
			resp, err := env.http.Client().Do(req)
			if err != nil {
				slow <- reply{}
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			slow <- reply{status: resp.StatusCode, body: body}
		}()
		<-read // the slow request has read g
		env.clock.Advance(time.Minute)
		u := updateOp(t, g, "bob.test", ks[0], ks[0])
		env.submitOther(did, u)
		env.get("/" + did + "/log") // a round sees u
		close(release)
		if r := <-slow; string(r.body) != docOf(did, g) {
			t.Errorf("the slow read: %d %s, want the document it read", r.status, r.body)
		}
		env.get("/"+did).expect(t, http.StatusOK, ctDIDDoc, docOf(did, u))
	})
}

func TestReadCacheStaysWithinItsBytes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		const max = 8 << 10
		env := newCachedEnv(t, b, max)
		ks := keys(t, 1)
		var dids []string
		var ops []*validate.Op
		for i := range 40 {
			g := genesisOp(t, fmt.Sprintf("u%d.test", i), ks[0], ks[0])
			env.mustSubmit(g.GenesisDID(), g)
			dids, ops = append(dids, g.GenesisDID()), append(ops, g)
		}
		for round := range 2 {
			for i, did := range dids {
				env.get("/"+did).expect(t, http.StatusOK, ctDIDDoc, docOf(did, ops[i]))
				env.get("/"+did+"/log/last").expect(t, http.StatusOK, ctJSON, opJSON(ops[i]))
				c := env.srv.cache
				c.mu.Lock()
				used, n, listed := c.bytes, int64(0), 0
				for i := c.slots[0].next; i != 0; i = c.slots[i].next {
					n += c.costLocked(i)
					listed++
				}
				entries := len(c.index)
				c.mu.Unlock()
				if used > max || used != n || entries != listed {
					t.Fatalf("round %d: %d bytes counted (%d in entries, %d entries), max %d", round, used, n, entries, max)
				}
			}
		}
		m := env.srv.cache.m
		if metricValue(m.evictions) == 0 || metricValue(m.bytes) > max {
			t.Errorf("evictions %v bytes %v", metricValue(m.evictions), metricValue(m.bytes))
		}
		// An answer larger than an eighth of the cache is not kept.
		c := newReadCache(nil, 800, nil)
		c.at = 5
		c.put(cacheKey{routeDoc, "did:plc:x"}, 5, &answer{body: make([]byte, 100)})
		if len(c.index) != 0 {
			t.Errorf("an answer over max/8 was kept")
		}
	})
}

// TestReadCacheAnswersAreNeverOlderThanTheLastAcknowledgedWrite: writers
// (this process, or another on the same database) update DIDs while
// readers resolve them; every answer is the DID's state at some seq no
// older than the last write acknowledged before the read began.
func TestReadCacheAnswersAreNeverOlderThanTheLastAcknowledgedWrite(t *testing.T) {
	forBackends(t, cacheBackends, func(t *testing.T, b backend) {
		for _, writer := range []string{"this", "other"} {
			t.Run(writer, func(t *testing.T) {
				env := newCachedEnv(t, b, 1<<20)
				wlog := env.log
				if writer == "other" {
					wlog = env.other
				}
				const nDIDs, nUpdates = 3, 12
				ks := keys(t, 1)
				type chain struct {
					did   string
					ops   []*validate.Op
					index map[string]int // rendered answer → op index
					acked atomic.Int64
				}
				chains := make([]*chain, nDIDs)
				for d := range chains {
					c := &chain{index: map[string]int{}}
					g := genesisOp(t, fmt.Sprintf("d%d-0.test", d), ks[0], ks[0])
					c.did, c.ops = g.GenesisDID(), []*validate.Op{g}
					for i := 1; i <= nUpdates; i++ {
						c.ops = append(c.ops, updateOp(t, c.ops[i-1], fmt.Sprintf("d%d-%d.test", d, i), ks[0], ks[0]))
					}
					for i, op := range c.ops {
						c.index["doc "+docOf(c.did, op)] = i
						c.index["last "+opJSON(op)] = i
					}
					env.mustSubmit(c.did, g)
					chains[d] = c
				}
				var (
					errMu sync.Mutex
					errs  []string
				)
				fail := func(format string, args ...any) {
					errMu.Lock()
					errs = append(errs, fmt.Sprintf(format, args...))
					errMu.Unlock()
				}
				var writers, readers sync.WaitGroup
				done := make(chan struct{})
				for _, c := range chains {
					writers.Go(func() {
						for i := 1; i <= nUpdates; i++ {
							if _, err := wlog.Submit(context.Background(), c.did, c.ops[i]); err != nil {
								fail("submit %s #%d: %v", c.did, i, err)
								return
							}
							c.acked.Store(int64(i))
						}
					})
				}
				client := env.http.Client()
				for r := range 2 {
					readers.Go(func() {
						for n := 0; ; n++ {
							select {
							case <-done:
								return
							default:
							}
							c := chains[(n+r)%nDIDs]
							route, path := "doc ", "/"+c.did
							if n%2 == 1 {
								route, path = "last ", "/"+c.did+"/log/last"
							}
							low := c.acked.Load()
							resp, err := client.Get(env.http.URL + path)
							if err != nil {
								fail("GET %s: %v", path, err)
								return
							}
							body, _ := io.ReadAll(resp.Body)
							resp.Body.Close()
							i, ok := c.index[route+string(body)]
							if resp.StatusCode != http.StatusOK || !ok {
								fail("GET %s: %d %s: not a state of the DID", path, resp.StatusCode, body)
								return
							}
							if int64(i) < low {
								fail("GET %s: the state after op %d, but op %d was acknowledged before the read", path, i, low)
								return
							}
						}
					})
				}
				writers.Wait()
				close(done)
				readers.Wait()
				for _, e := range errs {
					t.Error(e)
				}
				for _, c := range chains {
					env.get("/"+c.did).expect(t, http.StatusOK, ctDIDDoc, docOf(c.did, c.ops[nUpdates]))
				}
			})
		}
	})
}

// metricValue returns the value of a counter or gauge.
func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if c := d.GetCounter(); c != nil {
		return c.GetValue()
	}
	return d.GetGauge().GetValue()
}

// seqOutageStore also fails LatestSeq.
type seqOutageStore struct{ readOutageStore }

func (s *seqOutageStore) LatestSeq(ctx context.Context) (int64, error) {
	if err := s.failing(); err != nil {
		return 0, err
	}
	return s.Store.LatestSeq(ctx)
}

// TestReadCacheServesNothingUncheckedWhileTheDatabaseIsDown: when the
// latest seq cannot be read, a cached answer may be stale: the request
// reads the database (and gets its 503), it is not answered from memory.
func TestReadCacheServesNothingUncheckedWhileTheDatabaseIsDown(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		down := &seqOutageStore{}
		env := newAPIEnv(t, b, envOptions{
			wrap:   func(s oplog.Store) oplog.Store { down.Store = s; return down },
			config: func(c *Config) { c.ReadCacheBytes = 1 << 20 },
		})
		k := keys(t, 1)
		g := genesisOp(t, "alice.test", k[0], k[0])
		did := g.GenesisDID()
		env.mustSubmit(did, g)
		for _, p := range readPaths {
			env.get("/" + did + p)
		}
		down.fail(fmt.Errorf("query: %w", &pgconn.PgError{Code: "08006", Message: "connection failure"}))
		for _, p := range readPaths {
			r := env.get("/" + did + p)
			r.expectMessage(t, http.StatusServiceUnavailable, "Database unavailable, retry later")
			if r.header.Get("ETag") != "" || r.header.Get("Cache-Control") != "no-cache" {
				t.Errorf("GET %s while down: ETag %q Cache-Control %q", p, r.header.Get("ETag"), r.header.Get("Cache-Control"))
			}
		}
		if got := metricValue(env.srv.cache.m.bypass); got != float64(len(readPaths)) {
			t.Errorf("bypass %v, want %d", got, len(readPaths))
		}
		down.fail(nil)
		env.get("/"+did).expect(t, http.StatusOK, ctDIDDoc, docOf(did, g))
	})
}

// forBackends runs f as a subtest per backend of bs.
func forBackends(t *testing.T, bs []backend, f func(t *testing.T, b backend)) {
	for _, b := range bs {
		t.Run(b.name, func(t *testing.T) { f(t, b) })
	}
}
