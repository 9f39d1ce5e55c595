package watch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/plcdir/plc/internal/defaults"
	"github.com/plcdir/plc/oplog"
)

// Errors that end a Watch or refuse one.
var (
	// ErrTooSlow: the Watch's reader fell more than its buffer behind
	// the log; its Events were dropped.
	ErrTooSlow = errors.New("watcher too slow: events dropped")
	// ErrClosed: the Hub was closed.
	ErrClosed = errors.New("watch hub closed")
	// ErrFutureSeq: the seq to resume after is beyond the latest op.
	ErrFutureSeq = errors.New("seq is beyond the latest op")
	// ErrBacklog: resuming after the seq would replay more than
	// HubOptions.MaxBacklog events.
	ErrBacklog = errors.New("too many ops to replay since that seq")
)

// HubOptions configure a Hub. Zero values select the defaults.
type HubOptions struct {
	// PollInterval is how often the store is checked for commits of other
	// processes sharing the database (default 250ms); this process's are
	// seen at once.
	PollInterval time.Duration
	// MaxBacklog bounds the Events a new Watch replays from the store
	// (default 1000), and so the memory one holds before its reader takes
	// them.
	MaxBacklog int
	// StoreReads bounds the store reads of new Watches' replays made at
	// once, leaving the rest of the database pool to the API (default 2).
	StoreReads int
	// Logger receives the Hub's errors (default: discarded).
	Logger *slog.Logger
}

const (
	hubPageSize    = 1000
	hubReadTimeout = 30 * time.Second
)

// Hub follows a log and fans the Events of watched DIDs out to Watches.
type Hub struct {
	log    *oplog.Log
	store  oplog.Store
	opts   HubOptions
	logger *slog.Logger

	ctx    context.Context
	stop   context.CancelFunc
	kick   chan struct{}
	done   chan struct{}
	closer sync.Once
	reads  chan struct{} // a slot per replay read in progress

	mu      sync.Mutex
	closed  bool
	head    int64 // the last seq fanned out
	watches map[*Watch]struct{}
	byDID   map[string]map[*Watch]struct{} // the watches of each watched DID
	failing bool                           // the last read failed (logged once)
}

// NewHub returns a Hub over log and starts following it; Close stops it.
func NewHub(log *oplog.Log, opts HubOptions) *Hub {
	defaults.Positive(&opts.PollInterval, 250*time.Millisecond)
	defaults.Positive(&opts.MaxBacklog, 1000)
	defaults.Positive(&opts.StoreReads, 2)
	ctx, cancel := context.WithCancel(context.Background())
	h := &Hub{
		log:     log,
		store:   log.Store(),
		opts:    opts,
		logger:  cmp.Or(opts.Logger, slog.New(slog.DiscardHandler)),
		ctx:     ctx,
		stop:    cancel,
		kick:    make(chan struct{}, 1),
		reads:   make(chan struct{}, opts.StoreReads),
		done:    make(chan struct{}),
		watches: make(map[*Watch]struct{}),
		byDID:   make(map[string]map[*Watch]struct{}),
	}
	go h.run()
	return h
}

// Close ends every Watch with ErrClosed and stops following the log.
func (h *Hub) Close() {
	h.closer.Do(func() {
		h.mu.Lock()
		h.closed = true
		for w := range h.watches {
			w.end(ErrClosed)
		}
		clear(h.watches)
		clear(h.byDID)
		h.mu.Unlock()
		h.stop()
		<-h.done
	})
}

// Watch is one subscription to the Events of a set of DIDs.
type Watch struct {
	h       *Hub
	dids    map[string]bool
	backlog []Event    // read from the store at the start, in seq order
	live    chan Event // filled by the Hub, bounded
	last    int64      // the seq of the last Event returned

	endOnce sync.Once
	ended   chan struct{}
	err     error // set before ended is closed
}

// Watch starts a Watch of dids. With after ≥ 0 it first returns the
// Events of the ops after that seq, then the live ones; with after < 0,
// those committed from now on. buffer bounds the live Events waiting for
// the reader: past it the Watch ends with ErrTooSlow.
func (h *Hub) Watch(ctx context.Context, dids []string, after int64, buffer int) (*Watch, error) {
	w := &Watch{h: h, dids: make(map[string]bool, len(dids)), live: make(chan Event, max(buffer, 1)), ended: make(chan struct{})}
	for _, d := range dids {
		w.dids[d] = true
	}
	rctx, cancel := context.WithTimeout(ctx, hubReadTimeout)
	defer cancel()
	latest, err := h.store.LatestSeq(rctx)
	if err != nil {
		return nil, fmt.Errorf("read the latest seq: %w", err)
	}
	if after > latest {
		return nil, fmt.Errorf("%w: %d > %d", ErrFutureSeq, after, latest)
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	if len(h.watches) == 0 {
		// The Hub reads nothing while nobody watches: start it here.
		h.head = latest
	}
	from := h.head
	h.add(w)
	h.mu.Unlock()
	select {
	case h.kick <- struct{}{}:
	default:
	}
	if after < 0 {
		w.last = from
		return w, nil
	}
	w.last = after
	// The ops up to the Hub's position come from the store; the Hub sends
	// the later ones.
	for d := range w.dids {
		ops, err := h.replayOps(rctx, d)
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("read the ops of %s: %w", d, err)
		}
		evs, err := describe(ops, after, from)
		if err != nil {
			w.Close()
			return nil, err
		}
		w.backlog = append(w.backlog, evs...)
		if len(w.backlog) > h.opts.MaxBacklog {
			w.Close()
			return nil, fmt.Errorf("%w: more than %d", ErrBacklog, h.opts.MaxBacklog)
		}
	}
	slices.SortFunc(w.backlog, func(a, b Event) int { return cmp.Compare(a.Seq, b.Seq) })
	return w, nil
}

// replayOps reads did's ops for a replay, holding one of the StoreReads
// slots.
func (h *Hub) replayOps(ctx context.Context, did string) ([]oplog.Entry, error) {
	select {
	case h.reads <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-h.reads }()
	return h.store.Ops(ctx, did)
}

// Next returns the next Event, waiting for one. It returns the Watch's
// end (ErrTooSlow, ErrClosed), after the Events that came before it, or
// ctx's error.
func (w *Watch) Next(ctx context.Context) (Event, error) {
	if len(w.backlog) > 0 {
		ev := w.backlog[0]
		w.backlog = w.backlog[1:]
		w.last = ev.Seq
		return ev, nil
	}
	for {
		var ev Event
		select {
		case ev = <-w.live:
		case <-w.ended:
			select {
			case ev = <-w.live:
			default:
				return Event{}, w.err
			}
		case <-ctx.Done():
			return Event{}, ctx.Err()
		}
		if ev.Seq <= w.last {
			continue
		}
		w.last = ev.Seq
		return ev, nil
	}
}

// Last returns the seq of the last Event Next returned (or the seq the
// Watch started after).
func (w *Watch) Last() int64 { return w.last }

// Close ends the Watch.
func (w *Watch) Close() {
	w.h.mu.Lock()
	w.h.remove(w)
	w.h.mu.Unlock()
	w.end(ErrClosed)
}

func (w *Watch) end(err error) {
	w.endOnce.Do(func() {
		w.err = err
		close(w.ended)
	})
}

func (h *Hub) run() {
	defer close(h.done)
	ticker := time.NewTicker(h.opts.PollInterval)
	defer ticker.Stop()
	for {
		// Take the channel before reading, so that no commit is missed.
		changed := h.log.Changed()
		h.pump()
		select {
		case <-h.ctx.Done():
			return
		case <-changed:
		case <-ticker.C:
		case <-h.kick:
		}
	}
}

// pump fans out every committed op after the Hub's head.
func (h *Hub) pump() {
	for {
		h.mu.Lock()
		n, from := len(h.watches), h.head
		h.mu.Unlock()
		if n == 0 {
			return
		}
		evs, last, full, err := h.read(from)
		if err != nil {
			h.mu.Lock()
			first := !h.failing
			h.failing = true
			h.mu.Unlock()
			if first && h.ctx.Err() == nil {
				h.logger.Error("watch: reading new ops", "after", from, "err", err)
			}
			return // retried at the next wake-up
		}
		h.mu.Lock()
		h.failing = false
		// A Watch that started after the read may have moved head (when
		// none was open); then the read is stale.
		if h.head == from && last > from {
			for _, ev := range evs {
				for w := range h.byDID[ev.DID] {
					if !w.deliver(ev) {
						h.remove(w)
						w.end(ErrTooSlow)
					}
				}
			}
			h.head = last
		}
		h.mu.Unlock()
		if !full {
			return
		}
	}
}

// read returns the Events of the watched DIDs among the ops after from
// (a page of them), the last seq read, and whether the page was full.
func (h *Hub) read(from int64) (evs []Event, last int64, full bool, err error) {
	ctx, cancel := context.WithTimeout(h.ctx, hubReadTimeout)
	defer cancel()
	entries, err := h.store.Export(ctx, from, hubPageSize)
	if err != nil {
		return nil, 0, false, err
	}
	if len(entries) == 0 {
		return nil, from, false, nil
	}
	last = entries[len(entries)-1].Seq
	h.mu.Lock()
	var dids []string
	for i := range entries {
		d := entries[i].DID
		if len(h.byDID[d]) > 0 && !slices.Contains(dids, d) {
			dids = append(dids, d)
		}
	}
	h.mu.Unlock()
	for _, d := range dids {
		ops, err := h.store.Ops(ctx, d)
		if err != nil {
			return nil, 0, false, fmt.Errorf("read the ops of %s: %w", d, err)
		}
		des, err := describe(ops, from, last)
		if err != nil {
			return nil, 0, false, err
		}
		evs = append(evs, des...)
	}
	slices.SortFunc(evs, func(a, b Event) int { return cmp.Compare(a.Seq, b.Seq) })
	return evs, last, len(entries) == hubPageSize, nil
}

// add registers w; h.mu is held.
func (h *Hub) add(w *Watch) {
	h.watches[w] = struct{}{}
	for d := range w.dids {
		ws := h.byDID[d]
		if ws == nil {
			ws = make(map[*Watch]struct{})
			h.byDID[d] = ws
		}
		ws[w] = struct{}{}
	}
}

// remove unregisters w; h.mu is held.
func (h *Hub) remove(w *Watch) {
	if _, ok := h.watches[w]; !ok {
		return
	}
	delete(h.watches, w)
	for d := range w.dids {
		delete(h.byDID[d], w)
		if len(h.byDID[d]) == 0 {
			delete(h.byDID, d)
		}
	}
}

// deliver queues ev without blocking; false when w's buffer is full.
func (w *Watch) deliver(ev Event) bool {
	select {
	case w.live <- ev:
		return true
	default:
		return false
	}
}
