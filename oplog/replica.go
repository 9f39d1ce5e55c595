package oplog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/plcdir/plc/internal/defaults"
)

// ReadRouter is a PostgresStore whose reads of the log (Head, Heads, Ops, Op,
// Export, ExportByTime, and the transparency log's ReadHashes: tiles and
// proofs) may be answered by PostgreSQL streaming replicas of its
// primary. Everything else — Append and the rest of the write
// path, Record (which the write path reads), LatestSeq, Ping, the
// transparency log's tree size and checkpoint, cursors, rejections and the
// capabilities of the PostgresStore — goes to the primary. Callers cannot
// tell who answered: a replica answers only what the primary would have
// answered when the read began.
//
// # Consistency
//
// A read needs the seq that was latest on the primary when it began (the
// fence), and a replica answers it only when that replica has replayed at
// least that seq; otherwise the primary answers. This one rule gives:
//   - read-your-writes, across processes too: a POST answered 200 by any
//     process sharing the primary was committed before a later read began,
//     so its seq is at most the fence;
//   - /export?after= pages that never end early: a replica at or past the
//     fence holds every op the primary held when the page was asked for,
//     so a short page means what it means on the primary.
//
// The fence costs one query of the primary (SELECT max(seq), an index
// lookup) per round, not per read: reads that arrive while a round is
// running wait for the next one and share it, so the primary answers at
// most one fence query per round trip however many reads there are.
//
// A replica's progress is the largest seq it shows (SELECT max(seq) on the
// replica). Seqs are assigned and committed in order under the append
// lock, and a hot standby replays commits in WAL order, so a replica that
// shows seq N shows every op, nullification and DID record committed with
// or before it; unlike comparing WAL positions (pg_last_wal_replay_lsn
// against pg_current_wal_lsn) it is in the unit reads need, and needs no
// privileges. The progress known is a lower bound that only grows; a
// round queries the replicas that are behind its fence again.
//
// # Rotation
//
// A replica whose read or progress query fails, or takes longer than
// ReadTimeout (Timeout), is taken out of rotation at once (the read is
// answered by the primary: clients see no error), as is one more than
// MaxLag ops behind the primary. Check, which Run calls
// every interval, measures every replica again and puts back those that
// answer and are within MaxLag.
type ReadRouter struct {
	*PostgresStore
	replicas []*replica
	opts     ReplicaOptions
	metrics  *ReplicaMetrics
	fence    fence
	next     atomic.Uint64 // round-robin start
	// primaryID is the primary cluster's system identifier (0: the role
	// may not read it, and replicas are not checked).
	primaryID int64
}

// ReplicaOptions configure a ReadRouter.
type ReplicaOptions struct {
	// MaxLag is how many ops a replica may be behind the primary and stay
	// in rotation (default DefaultReplicaMaxLag).
	MaxLag int64
	// Timeout bounds each query of progress (the fence on the primary, a
	// replica's max(seq)); default 2s.
	Timeout time.Duration
	// ReadTimeout bounds a read on a replica (default 5s): past it the
	// replica is taken out of rotation and the primary answers, so a
	// replica that hangs costs a client that much time at most.
	ReadTimeout time.Duration
	// Registry receives the replicas' metrics (nil: kept, not registered).
	Registry prometheus.Registerer
	// Now is the clock of the health report (default time.Now).
	Now func() time.Time
}

// DefaultReplicaMaxLag is ReplicaOptions.MaxLag's default.
const DefaultReplicaMaxLag = 10000

// ReplicaState is a replica's state in rotation.
type ReplicaState string

const (
	// ReplicaUp: in rotation.
	ReplicaUp ReplicaState = "up"
	// ReplicaBehind: answers, but more than MaxLag ops behind.
	ReplicaBehind ReplicaState = "behind"
	// ReplicaDown: its last query failed.
	ReplicaDown ReplicaState = "down"
)

// ReplicaHealth is one replica as GET /_health reports it.
type ReplicaHealth struct {
	// DB is the replica's URL, its password redacted.
	DB    string       `json:"db"`
	State ReplicaState `json:"state"`
	// Seq is the latest seq the replica was seen to have.
	Seq int64 `json:"seq"`
	// LagOps is how many ops it was behind the primary when last checked.
	LagOps int64 `json:"lagOps"`
	// Error is its last failure (when down).
	Error string `json:"error,omitempty"`
	// CheckedAt is when it was last measured.
	CheckedAt time.Time `json:"checkedAt"`
}

type replica struct {
	label   string // its index: a bounded metric label
	db      string // redacted URL
	pool    *pgxpool.Pool
	r       reads
	applied atomic.Int64 // largest seq seen on it
	up      atomic.Bool  // in rotation
	// verified: it was found to be a replica of the primary's cluster.
	verified atomic.Bool
	// tree is the last seq its transparency-log tree was seen to cover.
	tree atomic.Int64

	mu        sync.Mutex
	state     ReplicaState
	lag       int64
	lastErr   string
	checkedAt time.Time
}

// OpenReadRouter opens the replicas at urls for reads of primary. Each
// must be a replica of primary's cluster: a server with another system
// identifier is refused (when the role may read it: pg_control_system),
// at start with an error, later by never being put in rotation. A replica
// that does not answer at start is out of rotation until it does; the
// others start in rotation if they are within MaxLag. Check and Run keep
// their state.
func OpenReadRouter(ctx context.Context, primary *PostgresStore, urls []string, opts ReplicaOptions) (*ReadRouter, error) {
	defaults.Positive(&opts.MaxLag, DefaultReplicaMaxLag)
	defaults.Positive(&opts.Timeout, 2*time.Second)
	defaults.Positive(&opts.ReadTimeout, 5*time.Second)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	rr := &ReadRouter{PostgresStore: primary, opts: opts, metrics: newReplicaMetrics(opts.Registry)}
	rr.fence.query = rr.round
	var err error
	if rr.primaryID, err = systemID(ctx, primary.pool); err != nil {
		return nil, fmt.Errorf("read the primary's system identifier: %w", err)
	}
	for i, u := range urls {
		cfg, err := pgxpool.ParseConfig(u)
		if err != nil {
			rr.closeReplicas()
			return nil, fmt.Errorf("read db %d: %w", i+1, err)
		}
		if _, ok := cfg.ConnConfig.RuntimeParams[noParallel]; !ok {
			cfg.ConnConfig.RuntimeParams[noParallel] = "0"
		}
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			rr.closeReplicas()
			return nil, fmt.Errorf("read db %s: %w", RedactURL(u), err)
		}
		rep := &replica{label: fmt.Sprint(i), db: RedactURL(u), pool: pool, r: reads{pgDB{pool}}, state: ReplicaDown}
		rr.replicas = append(rr.replicas, rep)
		// A replica that does not answer yet starts out of rotation, and
		// is identified when it does (see verify).
		vctx, cancel := context.WithTimeout(ctx, rr.opts.Timeout)
		err = rr.verify(vctx, rep)
		cancel()
		if errors.Is(err, errNotAReplica) {
			rr.closeReplicas()
			return nil, err
		}
	}
	rr.Check(ctx)
	return rr, nil
}

// errNotAReplica: a read db is another cluster than the primary.
var errNotAReplica = errors.New("not a replica of the primary")

// verify checks, once, that r is a replica of the primary's cluster. A
// replica not verified is never put in rotation.
func (rr *ReadRouter) verify(ctx context.Context, r *replica) error {
	if r.verified.Load() {
		return nil
	}
	if rr.primaryID != 0 {
		id, err := systemID(ctx, r.pool)
		if err != nil {
			rr.down(r, err)
			return err
		}
		if id != 0 && id != rr.primaryID {
			err := fmt.Errorf("read db %s is %w (system identifier %d, the primary's %d)", r.db, errNotAReplica, id, rr.primaryID)
			rr.down(r, err)
			return err
		}
	}
	r.verified.Store(true)
	return nil
}

// systemID returns the cluster's system identifier, or 0 when the role
// may not read it.
func systemID(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	var id int64
	err := pool.QueryRow(ctx, `SELECT system_identifier FROM pg_control_system()`).Scan(&id)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42501" { // insufficient_privilege
		return 0, nil
	}
	return id, err
}

func (rr *ReadRouter) closeReplicas() {
	for _, r := range rr.replicas {
		r.pool.Close()
	}
}

// Close closes the replicas' pools and the primary's.
func (rr *ReadRouter) Close() error {
	rr.closeReplicas()
	return rr.PostgresStore.Close()
}

// Check measures every replica against the primary's latest seq: those
// that answer within MaxLag are put in rotation, the others taken out.
func (rr *ReadRouter) Check(ctx context.Context) {
	qctx, cancel := context.WithTimeout(ctx, rr.opts.Timeout)
	defer cancel()
	latest, err := rr.PostgresStore.LatestSeq(qctx)
	if err != nil {
		// Without the primary's seq no lag can be measured: the states
		// stay as they are.
		return
	}
	rr.measure(qctx, latest, rr.replicas)
}

// Run calls Check every interval until ctx ends.
func (rr *ReadRouter) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			rr.Check(ctx)
		}
	}
}

// measure queries the progress of reps in parallel and sets their states
// against latest.
func (rr *ReadRouter) measure(ctx context.Context, latest int64, reps []*replica) {
	var wg sync.WaitGroup
	for _, r := range reps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if rr.verify(ctx, r) != nil {
				return
			}
			seq, err := r.r.LatestSeq(ctx)
			if err != nil {
				rr.down(r, err)
				return
			}
			r.seen(seq)
			applied := r.applied.Load()
			lag := max(latest-applied, 0)
			r.mu.Lock()
			r.lag, r.lastErr, r.checkedAt = lag, "", rr.opts.Now()
			if lag > rr.opts.MaxLag {
				r.state = ReplicaBehind
			} else {
				r.state = ReplicaUp
			}
			up := r.state == ReplicaUp
			r.up.Store(up)
			r.mu.Unlock()
			rr.metrics.Lag.WithLabelValues(r.label).Set(float64(lag))
			rr.metrics.setUp(r.label, up)
		}()
	}
	wg.Wait()
}

// seen raises the replica's known progress to seq.
func (r *replica) seen(seq int64) {
	for {
		cur := r.applied.Load()
		if seq <= cur || r.applied.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// down takes r out of rotation after err.
func (rr *ReadRouter) down(r *replica, err error) {
	rr.metrics.Errors.WithLabelValues(r.label).Inc()
	r.mu.Lock()
	r.state, r.lastErr, r.checkedAt = ReplicaDown, err.Error(), rr.opts.Now()
	r.up.Store(false)
	// What answers at its address next is identified again.
	r.verified.Store(false)
	r.mu.Unlock()
	rr.metrics.setUp(r.label, false)
}

// Health reports every replica, in the order they were given.
func (rr *ReadRouter) Health() []ReplicaHealth {
	out := make([]ReplicaHealth, len(rr.replicas))
	for i, r := range rr.replicas {
		r.mu.Lock()
		out[i] = ReplicaHealth{DB: r.db, State: r.state, Seq: r.applied.Load(), LagOps: r.lag, Error: r.lastErr, CheckedAt: r.checkedAt}
		r.mu.Unlock()
	}
	return out
}

// round is the fence's query: the primary's latest seq, and the progress
// of the replicas in rotation that are behind it.
func (rr *ReadRouter) round() (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), rr.opts.Timeout)
	defer cancel()
	latest, err := rr.PostgresStore.LatestSeq(ctx)
	if err != nil {
		return 0, err
	}
	var behind []*replica
	for _, r := range rr.replicas {
		if r.up.Load() && r.applied.Load() < latest {
			behind = append(behind, r)
		}
	}
	if len(behind) > 0 {
		rr.measure(ctx, latest, behind)
	}
	return latest, nil
}

// pick returns a replica in rotation that has every op committed on the
// primary before the call, or nil (and why) when there is none.
func (rr *ReadRouter) pick(ctx context.Context) (*replica, string) {
	n := len(rr.replicas)
	anyUp := false
	for _, r := range rr.replicas {
		anyUp = anyUp || r.up.Load()
	}
	if !anyUp {
		return nil, fallbackUnavailable
	}
	need, err := rr.fence.wait(ctx)
	if err != nil {
		return nil, fallbackFence
	}
	start := int(rr.next.Add(1) % uint64(n))
	for i := range n {
		r := rr.replicas[(start+i)%n]
		if r.up.Load() && r.applied.Load() >= need {
			return r, ""
		}
	}
	return nil, fallbackBehind
}

// Reasons a read went to the primary (the values of the metric's label).
const (
	fallbackUnavailable = "unavailable" // no replica in rotation
	fallbackBehind      = "behind"      // none had replayed the fence
	fallbackFence       = "fence"       // the primary's seq was not read
	fallbackError       = "error"       // the replica's read failed
)

// routed runs read on a replica that may answer it, else on the primary.
func routed[T any](ctx context.Context, rr *ReadRouter, read func(context.Context, reads) (T, error)) (T, error) {
	r, why := rr.pick(ctx)
	if r != nil {
		rctx, cancel := context.WithTimeout(ctx, rr.opts.ReadTimeout)
		v, err := read(rctx, r.r)
		cancel()
		if err == nil || errors.Is(err, ErrNotFound) {
			rr.metrics.Reads.WithLabelValues(r.label).Inc()
			return v, err
		}
		if ctx.Err() != nil {
			return v, err
		}
		rr.down(r, err)
		why = fallbackError
	}
	rr.metrics.Fallbacks.WithLabelValues(why).Inc()
	return read(ctx, rr.PostgresStore.reads)
}

func (rr *ReadRouter) Head(ctx context.Context, did string) (Entry, error) {
	return routed(ctx, rr, func(ctx context.Context, r reads) (Entry, error) { return r.Head(ctx, did) })
}

func (rr *ReadRouter) Heads(ctx context.Context, dids []string) (map[string]Entry, error) {
	return routed(ctx, rr, func(ctx context.Context, r reads) (map[string]Entry, error) { return r.Heads(ctx, dids) })
}

func (rr *ReadRouter) Ops(ctx context.Context, did string) ([]Entry, error) {
	return routed(ctx, rr, func(ctx context.Context, r reads) ([]Entry, error) { return r.Ops(ctx, did) })
}

func (rr *ReadRouter) Op(ctx context.Context, seq int64) (Entry, error) {
	return routed(ctx, rr, func(ctx context.Context, r reads) (Entry, error) { return r.Op(ctx, seq) })
}

func (rr *ReadRouter) Export(ctx context.Context, after int64, limit int) ([]Entry, error) {
	return routed(ctx, rr, func(ctx context.Context, r reads) ([]Entry, error) { return r.Export(ctx, after, limit) })
}

func (rr *ReadRouter) ExportByTime(ctx context.Context, after time.Time, limit int) ([]Entry, error) {
	return routed(ctx, rr, func(ctx context.Context, r reads) ([]Entry, error) { return r.ExportByTime(ctx, after, limit) })
}

// ReadHashes reads the transparency log's hashes (tiles, proofs) from a
// replica whose stored tree covers every one of them, else from the
// primary. Stored hashes never change, so no fence is needed: only that
// the replica has them. The tree's chunks are committed in order, so a
// replica whose tree ends at or after the seq of the record holding a
// hash has it.
func (rr *ReadRouter) ReadHashes(ctx context.Context, idx []int64) ([]tlog.Hash, error) {
	var need int64
	for _, x := range idx {
		if x < 0 {
			return rr.PostgresStore.ReadHashes(ctx, idx) // its error
		}
		need = max(need, recordOf(x))
	}
	why := fallbackUnavailable
	n := len(rr.replicas)
	start := int(rr.next.Add(1) % uint64(max(n, 1)))
	for i := range n {
		r := rr.replicas[(start+i)%n]
		if !r.up.Load() {
			continue
		}
		if r.tree.Load() < need {
			qctx, cancel := context.WithTimeout(ctx, rr.opts.Timeout)
			end, err := r.r.TreeSize(qctx)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				rr.down(r, err)
				why = fallbackError
				continue
			}
			for cur := r.tree.Load(); end > cur && !r.tree.CompareAndSwap(cur, end); cur = r.tree.Load() {
			}
			if end < need {
				why = fallbackBehind
				continue
			}
		}
		rctx, cancel := context.WithTimeout(ctx, rr.opts.ReadTimeout)
		h, err := r.r.ReadHashes(rctx, idx)
		cancel()
		if err == nil {
			rr.metrics.Reads.WithLabelValues(r.label).Inc()
			return h, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		rr.down(r, err)
		why = fallbackError
	}
	rr.metrics.Fallbacks.WithLabelValues(why).Inc()
	return rr.PostgresStore.ReadHashes(ctx, idx)
}

var _ Store = (*ReadRouter)(nil)

// fence gives each caller a value of query that was read after the call
// began, sharing one query among the callers that arrive while another
// runs (they wait for the next one).
type fence struct {
	query   func() (int64, error)
	mu      sync.Mutex
	running bool
	next    *fenceRound // the round callers join; starts when the running one ends
}

type fenceRound struct {
	done    chan struct{}
	seq     int64
	err     error
	waiters int // callers that joined it
}

func (f *fence) wait(ctx context.Context) (int64, error) {
	f.mu.Lock()
	if f.next == nil {
		f.next = &fenceRound{done: make(chan struct{})}
	}
	r := f.next
	r.waiters++
	if !f.running {
		f.running = true
		f.next = nil
		go f.run(r)
	}
	f.mu.Unlock()
	select {
	case <-r.done:
		return r.seq, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// run runs r, then the rounds callers joined meanwhile, until none is
// waiting.
func (f *fence) run(r *fenceRound) {
	for r != nil {
		r.seq, r.err = f.query()
		close(r.done)
		f.mu.Lock()
		r, f.next = f.next, nil
		if r == nil {
			f.running = false
		}
		f.mu.Unlock()
	}
}

// ReplicaMetrics count where a ReadRouter's reads went.
type ReplicaMetrics struct {
	// Reads counts reads a replica answered, by replica (its index).
	Reads *prometheus.CounterVec
	// Fallbacks counts reads the primary answered, by reason:
	// "unavailable" (no replica in rotation), "behind" (none had replayed
	// the fence), "fence" (the primary's seq could not be read), "error"
	// (the replica's read failed).
	Fallbacks *prometheus.CounterVec
	// Errors counts failed queries of a replica, by replica.
	Errors *prometheus.CounterVec
	// Lag is each replica's lag in ops when last measured.
	Lag *prometheus.GaugeVec
	// Up is 1 for a replica in rotation.
	Up *prometheus.GaugeVec
}

// Metrics returns the router's metrics.
func (rr *ReadRouter) Metrics() *ReplicaMetrics { return rr.metrics }

func newReplicaMetrics(reg prometheus.Registerer) *ReplicaMetrics {
	m := &ReplicaMetrics{
		Reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plc_replica_reads_total", Help: "Reads answered by a read replica, by replica (its index in --read-db).",
		}, []string{"replica"}),
		Fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plc_replica_fallbacks_total", Help: "Reads answered by the primary although replicas are configured, by reason (unavailable, behind, fence, error).",
		}, []string{"reason"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plc_replica_errors_total", Help: "Failed queries of a read replica (each takes it out of rotation), by replica.",
		}, []string{"replica"}),
		Lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "plc_replica_lag_ops", Help: "Ops a read replica was behind the primary when last measured, by replica.",
		}, []string{"replica"}),
		Up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "plc_replica_up", Help: "1 when a read replica is in rotation, by replica.",
		}, []string{"replica"}),
	}
	if reg != nil {
		reg.MustRegister(m.Reads, m.Fallbacks, m.Errors, m.Lag, m.Up)
	}
	return m
}

func (m *ReplicaMetrics) setUp(label string, up bool) {
	v := 0.0
	if up {
		v = 1
	}
	m.Up.WithLabelValues(label).Set(v)
}
