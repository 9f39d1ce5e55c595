package oplog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

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
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 256
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 4096
	}
	l := &Log{
		store: store,
		opts:  opts,
		queue: make(chan *request, opts.QueueSize),
		done:  make(chan struct{}),
	}
	if opts.RecordCache == 0 {
		opts.RecordCache = DefaultRecordCache
	}
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
// committed entry once it is durable.
func (l *Log) Submit(ctx context.Context, did string, op *validate.Op) (Entry, error) {
	rec, err := l.store.Record(ctx, did)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return Entry{}, err
	}
	st, head := validate.State{DID: did}, int64(0)
	if rec != nil {
		st, head = rec.State, rec.HeadSeq
	}
	now := l.opts.Now().UTC().Truncate(time.Millisecond)
	if err := l.check(&st, op, now); err != nil {
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
// never earlier than a time already handed out nor than the createdAt of
// the last committed op (lastCommitted, read under the append lock), which
// another process with a clock ahead of ours may have written. So
// createdAt never decreases along seq, and an op is never older than its
// prev: the timestamp export and the per-DID order stay consistent.
func (l *Log) acceptanceTime(lastCommitted time.Time) time.Time {
	now := l.opts.Now().UTC().Truncate(time.Millisecond)
	if now.Before(l.last) {
		now = l.last
	}
	if now.Before(lastCommitted) {
		now = lastCommitted
	}
	l.last = now
	return now
}

func (l *Log) commit(batch []*request) {
	start := time.Now()
	dids := make([]string, len(batch))
	for i, r := range batch {
		dids[i] = r.did
	}
	results := make([]result, len(batch))
	var (
		seen   AppendView
		writes []Write
	)
	requested := l.cache.missing(dids)
	err := l.store.Append(context.Background(), requested, func(view AppendView) ([]Write, error) {
		if err := l.cache.complete(&view, dids, requested); err != nil {
			return nil, err
		}
		seen = view
		now := l.acceptanceTime(view.LastCreatedAt)
		c := newChain(view)
		for i, r := range batch {
			results[i] = result{}
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
		writes = c.writes
		return c.writes, nil
	})
	l.settle(seen, writes, err)
	written := 0
	for i, r := range batch {
		res := results[i]
		if err != nil && res.err == nil {
			res = result{err: fmt.Errorf("commit: %w", err)}
		}
		if res.err == nil {
			written++
		}
		r.res <- res
	}
	if err == nil && written > 0 {
		l.opts.Metrics.committed(written, time.Since(start), results[len(results)-1].entry.Seq)
		l.notify()
	}
}

// settle tells the record cache how an append transaction that read view
// and chose writes ended.
func (l *Log) settle(view AppendView, writes []Write, err error) {
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

func newChain(view AppendView) *chain {
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
