package oplog

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/plcdir/plc/internal/defaults"
	"github.com/plcdir/plc/validate"
)

var (
	// ErrClosed: the log is shutting down and takes no more ops.
	ErrClosed = errors.New("log is closed")
	// ErrOverloaded: the sequencer's queue is full; retry later.
	ErrOverloaded = errors.New("sequencer queue is full")
)

// ConflictError: the op was valid against the state it was checked
// against, but a concurrent write to the same DID committed first and the
// op is no longer valid (the HTTP API answers 409).
type ConflictError struct {
	Err *validate.Error
}

func (e *ConflictError) Error() string { return e.Err.Message }
func (e *ConflictError) Unwrap() error { return e.Err }

// Options configure a Log.
type Options struct {
	// Now is the clock for acceptance times (default time.Now).
	Now func() time.Time
	// MaxBatch bounds the ops committed in one transaction (default 256:
	// below the stream's default send buffer of 500, so one commit can never
	// overflow a live stream client that keeps up).
	MaxBatch int
	// QueueSize bounds the ops waiting for the sequencer (default 4096);
	// past it, Submit fails fast with ErrOverloaded.
	QueueSize int
	// NoRateLimit turns the per-DID rate limit off.
	NoRateLimit bool
	// Metrics, if set, receives the log's measurements.
	Metrics *Metrics
	// RecordCache is the memory, in bytes, of the DID records the log keeps
	// between append transactions (default DefaultRecordCache; negative:
	// none).
	RecordCache int64
	// MaxClockSkew bounds how far ahead of the clock an acceptance time
	// may be (default DefaultMaxClockSkew). Every commit is dated at least
	// 1 ms after the log's latest op, so while the clock is behind that op
	// (a clock stepped back, another process's clock ahead) new ops are
	// dated from the log's time instead; when that would be more than
	// MaxClockSkew ahead of the clock, Submit fails with a
	// *ClockBehindError. Replayed ops (Ingest) dated more than MaxClockSkew
	// after the clock are rejected (ErrFutureOp).
	MaxClockSkew time.Duration
	// Logger, if set, receives storage failures, at most one line per
	// FailureLogInterval (default DefaultFailureLogInterval) while they
	// last; the metrics count every one.
	Logger             *slog.Logger
	FailureLogInterval time.Duration
}

// Log is the single write path: every op is checked, sequenced and
// committed through it. Ops of one DID are applied strictly in order; ops
// queue up and are committed in batches (group commit); Submit returns only
// after its op is durable.
type Log struct {
	store   Store
	opts    Options
	cache   *recordCache // nil: none
	queue   chan *request
	mu      sync.RWMutex // guards closed against sends on queue
	closed  bool
	done    chan struct{}
	last    time.Time // latest acceptance time handed out (sequencer only)
	failed  failureLog
	changed struct {
		sync.Mutex
		ch chan struct{}
	}
}

type request struct {
	did  string
	op   *validate.Op
	head int64 // the DID's head seq when the op was pre-checked
	res  chan result
}

type result struct {
	entry Entry
	err   error
}

// NewLog starts the sequencer over store.
func NewLog(store Store, opts Options) *Log {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	defaults.Positive(&opts.MaxBatch, 256)
	defaults.Positive(&opts.QueueSize, 4096)
	defaults.Positive(&opts.MaxClockSkew, DefaultMaxClockSkew)
	defaults.Positive(&opts.FailureLogInterval, DefaultFailureLogInterval)
	l := &Log{
		store: store,
		opts:  opts,
		queue: make(chan *request, opts.QueueSize),
		done:  make(chan struct{}),
		failed: failureLog{
			logger: opts.Logger, metrics: opts.Metrics, now: opts.Now, interval: opts.FailureLogInterval,
		},
	}
	opts.RecordCache = cmp.Or(opts.RecordCache, DefaultRecordCache)
	if opts.RecordCache > 0 {
		l.cache = newRecordCache(opts.RecordCache)
	}
	l.changed.ch = make(chan struct{})
	go l.sequence()
	return l
}

// Store returns the log's store, for reads.
func (l *Log) Store() Store { return l.store }

// Changed returns a channel that is closed at the next commit.
func (l *Log) Changed() <-chan struct{} {
	l.changed.Lock()
	defer l.changed.Unlock()
	return l.changed.ch
}

func (l *Log) notify() {
	l.changed.Lock()
	close(l.changed.ch)
	l.changed.ch = make(chan struct{})
	l.changed.Unlock()
}

// Submit appends a newly submitted op for did: submission limits are the
// caller's (validate.CheckSubmission); the chain rules and the per-DID rate
// limit are applied here, first against the current state (so invalid ops
// are turned away without queueing, and signatures are checked in the
// caller's goroutine), then again under the append lock. It returns the
// committed entry once it is durable. A failure of the database is an
// ErrStorage (*StorageError) for every op it concerns, whatever else was
// wrong with the op.
func (l *Log) Submit(ctx context.Context, did string, op *validate.Op) (Entry, error) {
	rec, err := l.store.Record(ctx, did)
	if err != nil && !errors.Is(err, ErrNotFound) {
		err = storageError(ctx, err)
		l.failed.failed("read", err)
		return Entry{}, err
	}
	st, head := validate.State{DID: did}, int64(0)
	if rec != nil {
		st, head = rec.State, rec.HeadSeq
	}
	now, err := l.submitTime(&st)
	if err == nil {
		err = l.check(&st, op, now)
	}
	if err != nil {
		l.opts.Metrics.rejected(err)
		return Entry{}, err
	}

	req := &request{did: did, op: op, head: head, res: make(chan result, 1)}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return Entry{}, ErrClosed
	}
	select {
	case l.queue <- req:
		l.mu.RUnlock()
		if testHookQueued != nil {
			testHookQueued()
		}
	default:
		l.mu.RUnlock()
		return Entry{}, ErrOverloaded
	}
	select {
	case r := <-req.res:
		if r.err != nil {
			l.opts.Metrics.rejected(r.err)
		} else {
			l.opts.Metrics.accepted()
		}
		return r.entry, r.err
	case <-ctx.Done():
		return Entry{}, ctx.Err()
	}
}

// submitTime is the time a submission is checked at before it is queued:
// the clock, or just after the DID's latest op while the clock is behind
// it (the sequencer dates the op the same way, see acceptanceTime).
func (l *Log) submitTime(st *validate.State) (time.Time, error) {
	now := l.opts.Now().UTC().Truncate(time.Millisecond)
	if h, ok := st.Head(); ok {
		return l.notBefore(now, h.CreatedAt.Add(time.Millisecond))
	}
	return now, nil
}

// notBefore returns now, or floor when now is before it and floor is at
// most MaxClockSkew ahead of now; else a *ClockBehindError.
func (l *Log) notBefore(now, floor time.Time) (time.Time, error) {
	if !now.Before(floor) {
		return now, nil
	}
	if ahead := floor.Sub(now); ahead > l.opts.MaxClockSkew {
		return time.Time{}, &ClockBehindError{Ahead: ahead, Skew: l.opts.MaxClockSkew}
	}
	return floor, nil
}

// testHookQueued, when set (by tests), is called after Submit has queued
// an op.
var testHookQueued func()

// check applies the chain rules and the rate limit to op at now.
func (l *Log) check(st *validate.State, op *validate.Op, now time.Time) error {
	_, applied, err := st.Next(op, now)
	if err != nil {
		return err
	}
	if limit := l.rateLimit(now); limit != nil && len(applied.Nullified) == 0 {
		return limit(st)
	}
	return nil
}

// rateLimit returns the per-DID rate limit for a submission at now (nil
// when it is off), given the DID's state before the op. It applies to ops
// that nullify nothing: recovery ops that nullify something are exempt.
func (l *Log) rateLimit(now time.Time) func(before *validate.State) error {
	if l.opts.NoRateLimit {
		return nil
	}
	return func(st *validate.State) error { return validate.CheckRateLimit(st, now) }
}

// Close stops intake, commits what is queued, and stops the sequencer.
func (l *Log) Close() {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.queue)
	}
	l.mu.Unlock()
	<-l.done
}

func (l *Log) sequence() {
	defer close(l.done)
	for req := range l.queue {
		batch := []*request{req}
	drain:
		for len(batch) < l.opts.MaxBatch {
			select {
			case r, ok := <-l.queue:
				if !ok {
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		l.commit(batch)
	}
}

// acceptanceTime is the batch's createdAt: the clock, in milliseconds,
// never earlier than a time already handed out, and at least 1 ms after
// the createdAt of the last committed op (lastCommitted, read under the
// append lock), which another process with a clock ahead of ours, or a
// clock stepped back, may have left ahead of the clock. So createdAt
// never decreases along seq and never stands still from one commit to the
// next (a millisecond holds at most one batch: a timestamp export page can
// always move past it). When the clock is more than MaxClockSkew behind,
// it is a *ClockBehindError. An op of a DID whose latest op is in the same
// batch is dated after it (commit moves the time on for it).
func (l *Log) acceptanceTime(lastCommitted time.Time) (time.Time, error) {
	now := l.opts.Now().UTC().Truncate(time.Millisecond)
	floor := l.last
	if !lastCommitted.IsZero() {
		floor = later(floor, lastCommitted.Add(time.Millisecond))
	}
	now, err := l.notBefore(now, floor)
	if err != nil {
		return time.Time{}, err
	}
	l.last = now
	return now, nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (l *Log) commit(batch []*request) {
	dids := make([]string, len(batch))
	for i, r := range batch {
		dids[i] = r.did
	}
	results := make([]result, len(batch))
	err := l.transact(context.Background(), "append", "", dids, func(view View, c *chain) (Batch, error) {
		now, clockErr := l.acceptanceTime(view.LastCreatedAt)
		for i, r := range batch {
			results[i] = result{}
			if clockErr != nil {
				results[i].err = clockErr
				continue
			}
			if t, ok := c.latest(r.did); ok && !now.After(t) {
				// The DID's latest op is earlier in this batch (or, from
				// replayed history, dated after the log's last op).
				bumped, err := l.notBefore(l.opts.Now().UTC().Truncate(time.Millisecond), t.Add(time.Millisecond))
				if err != nil {
					results[i].err = err
					continue
				}
				now, l.last = bumped, bumped
			}
			entry, head, err := c.apply(r.did, r.op, now, l.rateLimit(now))
			if err != nil {
				var ve *validate.Error
				if head != r.head && errors.As(err, &ve) {
					err = &ConflictError{Err: ve}
				}
				results[i].err = err
				continue
			}
			results[i].entry = entry
		}
		return Batch{}, nil
	})
	for i, r := range batch {
		res := results[i]
		if err != nil {
			// Nothing of the batch was written: every op is told so,
			// including those decide had turned away, whose verdicts (a
			// conflict with an op of the batch, say) were against a
			// state that never came to be.
			res = result{err: err}
		}
		r.res <- res
	}
}

// transact runs one append transaction of the log: a batch of
// submissions (source ""), replayed history, or a rejection recorded for a
// source. Once the log is closed it refuses replayed history and records
// (ErrClosed); submissions were admitted when they were queued, and the
// sequencer commits them while it drains. decide sees the view, completed
// from the record cache, and a chain over it: the chain's writes are the
// batch's ops, decide returns the rest (rejections, cursor). A failure of
// the store is typed (*StorageError), reported to the failure log as a
// failure of what, and drops the record cache; a commit settles it, and
// one that appended ops is measured and wakes Changed.
func (l *Log) transact(ctx context.Context, what, source string, dids []string, decide func(View, *chain) (Batch, error)) error {
	if source != "" {
		l.mu.RLock()
		closed := l.closed
		l.mu.RUnlock()
		if closed {
			return ErrClosed
		}
	}
	start := time.Now()
	var (
		seen   View
		writes []Write
	)
	requested := l.cache.missing(dids)
	err := l.store.Append(ctx, source, requested, func(view View) (Batch, error) {
		if err := l.cache.complete(&view, dids, requested); err != nil {
			return Batch{}, err
		}
		seen = view
		c := newChain(view)
		b, err := decide(view, c)
		b.Writes, writes = c.writes, c.writes
		return b, err
	})
	err = storageError(ctx, err)
	l.settle(seen, writes, err)
	if err != nil {
		l.failed.failed(what, err)
		return err
	}
	l.failed.succeeded()
	if n := len(writes); n > 0 {
		l.opts.Metrics.committed(n, time.Since(start), writes[n-1].Entry.Seq)
		l.notify()
	}
	return nil
}

// Reject records rj as a rejection of its source, in a transaction of its
// own that leaves the source's cursor where it is: evidence found outside
// replayed history's lines (a mirror's divergence). The store assigns its
// ID.
func (l *Log) Reject(ctx context.Context, rj Rejection) error {
	if rj.Source == "" {
		return errors.New("oplog: a rejection without a source")
	}
	return l.transact(ctx, "reject", rj.Source, nil, func(v View, _ *chain) (Batch, error) {
		return Batch{Cursor: v.Cursor, Rejections: []Rejection{rj}}, nil
	})
}

// settle tells the record cache how an append transaction that read view
// and chose writes ended.
func (l *Log) settle(view View, writes []Write, err error) {
	switch {
	case l.cache == nil || view.Records == nil:
		// decide did not run: the cache is as it was.
	case err != nil:
		l.cache.drop()
	default:
		l.cache.committed(view, writes)
	}
}

// chain is the one place where the chain rules decide what is appended:
// every op of an append transaction, submitted or replayed, goes through
// apply, in order, against the DIDs' records as the transaction sees them.
//
// The memory of a transaction is its ops and one record per DID: the
// first op of a DID copies the view's record, and the DID's later ops in
// the transaction change that copy in place (validate.State.Apply). So a
// batch of n ops of one DID with a history of h ops costs O(n + h), not
// O(n·h), in time and memory; the view's records are never changed.
type chain struct {
	view   map[string]*DIDRecord // the view's records
	own    map[string]*DIDRecord // the chain's copies, changed as ops apply
	seq    int64                 // the seq of the last write
	writes []Write
}

func newChain(view View) *chain {
	return &chain{view: view.Records, own: map[string]*DIDRecord{}, seq: view.LastSeq}
}

// record returns the chain's record of did, copying the view's (or
// starting an empty one) the first time.
func (c *chain) record(did string) *DIDRecord {
	if rec := c.own[did]; rec != nil {
		return rec
	}
	rec := &DIDRecord{DID: did, State: validate.State{DID: did}}
	if v := c.view[did]; v != nil {
		rec.HeadSeq, rec.Head = v.HeadSeq, v.Head
		rec.State.Ops = slices.Clone(v.State.Ops)
		rec.Seqs = slices.Clone(v.Seqs)
	}
	c.own[did] = rec
	return rec
}

// latest returns the createdAt of did's latest op as the chain sees it.
func (c *chain) latest(did string) (time.Time, bool) {
	rec := c.own[did]
	if rec == nil {
		rec = c.view[did]
	}
	if rec != nil {
		if h, ok := rec.State.Head(); ok {
			return h.CreatedAt, true
		}
	}
	return time.Time{}, false
}

// apply judges op as the next op of did, accepted at createdAt, against
// the DID's current record (the view's, or the one an earlier op of the
// transaction left). If the chain rules accept it, and then check (when
// set) accepts the DID's state before op for an op that nullifies nothing,
// the op's Write is queued with the next seq and its entry returned. head
// is the DID's head seq before op (0 for a new DID).
func (c *chain) apply(did string, op *validate.Op, createdAt time.Time, check func(before *validate.State) error) (entry Entry, head int64, err error) {
	rec := c.record(did)
	head = rec.HeadSeq
	n := len(rec.State.Ops)
	applied, err := rec.State.Apply(op, createdAt)
	if err != nil {
		return Entry{}, head, err
	}
	if check != nil && len(applied.Nullified) == 0 {
		// op was appended: the state before it is intact.
		before := validate.State{DID: did, Ops: rec.State.Ops[:n]}
		if err := check(&before); err != nil {
			rec.State.Ops = before.Ops
			return Entry{}, head, err
		}
	}
	c.seq++
	kept := len(rec.State.Ops) - 1
	nullifies := append([]int64(nil), rec.Seqs[kept:]...)
	rec.Seqs = append(rec.Seqs[:kept], c.seq)
	rec.HeadSeq, rec.Head = c.seq, op
	w := Write{
		Entry:     Entry{Seq: c.seq, DID: did, CID: op.CID(), CreatedAt: createdAt, Op: op.SignedCBOR(), Decoded: op},
		Type:      op.Type(),
		Signer:    applied.Signer,
		Nullifies: nullifies,
		Record:    rec,
	}
	c.writes = append(c.writes, w)
	return w.Entry, head, nil
}
