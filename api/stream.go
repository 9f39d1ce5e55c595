package api

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/plcdir/plc/internal/defaults"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// The /export/stream WebSocket.
//
// A client connects with an optional cursor. Without one it receives the
// ops committed after it connected; with one it first receives every op
// with seq > cursor from the store (the backfill), then the live ops. Each
// op is one text message, rendered like a seq-mode /export line.
//
// Because seq is dense (1, 2, 3, …), a stream is a counter: it remembers
// the last seq it sent and only ever sends the next one. Live ops are read
// from the store once per Streamer by a single goroutine (the pump), woken
// by the log's commits and by a poll ticker (for commits of other processes
// sharing the database), and fanned out to the live streams through bounded
// buffers. A stream that joins behind the pump reads the missing range from
// the store itself; events it already sent are skipped. So the cut-over
// from backfill to live has neither a gap nor a duplicate.
//
// What a client has not accepted yet is bounded in bytes, as the reference
// bounds it (it pauses at 256 KB unsent): each stream has a writer
// goroutine that hands queued events to the connection, and counts the
// bytes queued for it (unsent) until the connection takes them. A stream
// reads the store only while its client has room: each page is sized to
// the room left under MaxUnsent, read, rendered and queued at once, and
// the stream pauses once more than half of MaxUnsent is unsent, until the
// client drains it. The connection's kernel send buffer is set to
// MaxUnsent as well. So a client that never reads holds about twice
// MaxUnsent of the server's memory, never a whole backfill, and for at most
// streamWriteTimeout. Store reads of streams (with the rendering of their
// pages) run at most StoreReads at a time and never wait on a client, so
// streams cannot take every database connection or core from the rest of
// the API and /_health.
//
// A live stream whose buffer overflows (a commit of more ops at once than
// SendBuffer, such as an ingest batch of a mirror or an import, to a client
// that is still writing out the ones before), or whose client has more
// than MaxUnsent bytes unsent, is let go by the pump, not closed: it reads
// the ops it missed from the store, as a stream that joins behind does,
// and goes live again. Only a client that is truly stuck is dropped: one
// more than MaxLag ops behind the latest op, or one that takes longer than
// streamWriteTimeout to accept one event.
//
// Streams end with a close frame: 1000 FutureCursor (cursor beyond the
// latest seq), 1000 OutdatedCursor (the first backfill op is older than the
// backfill window), 1000 ConsumerTooSlow (more than MaxLag ops behind the
// latest), 1001 on server shutdown, 1011 when the store fails or holds an op
// that no longer renders. A client whose write times out is disconnected
// without one: its connection accepts nothing more.

// Close reasons sent with status 1000, as the reference names them.
const (
	streamFutureCursor    = "FutureCursor"
	streamOutdatedCursor  = "OutdatedCursor"
	streamConsumerTooSlow = "ConsumerTooSlow"
)

const (
	// streamPageSize is the page size of the store reads of backfills,
	// catch-ups and the pump.
	streamPageSize = 1000
	// streamWriteTimeout bounds one message write: a client that takes
	// longer to accept one event is dropped.
	streamWriteTimeout = 30 * time.Second
	// defaultStreamMaxLag is StreamOptions.MaxLag's default: 25 ingest
	// batches of 4000 ops; at the real directory's write rate, days.
	defaultStreamMaxLag = 100_000
	// streamReadTimeout bounds one store read.
	streamReadTimeout = 30 * time.Second
	// streamReadLimit caps a client message. Clients have nothing to say;
	// their messages are read and dropped.
	streamReadLimit = 1024
	// streamCloseGrace is how long a stream that is cancelled (on Close)
	// lets the write in progress complete before it abandons it.
	streamCloseGrace = time.Second
	// streamRetryAfter is the Retry-After of a 503 (seconds).
	streamRetryAfter = "5"
	// defaultStreamMaxUnsent is StreamOptions.MaxUnsent's default, the
	// reference's bound.
	defaultStreamMaxUnsent = 256 << 10
	// defaultStreamStoreReads is StreamOptions.StoreReads's default.
	defaultStreamStoreReads = 2
	// streamEventEstimate is the size of an event a stream assumes before
	// it has rendered any (a typical event is 500 to 1000 bytes).
	streamEventEstimate = 1 << 10
)

// StreamOptions configure a Streamer. Zero values select the defaults.
type StreamOptions struct {
	// BackfillWindow: a stream whose first backfill op is older than
	// Now()-BackfillWindow is closed with OutdatedCursor (default 7 days).
	BackfillWindow time.Duration
	// SendBuffer bounds the live events waiting for one client (default
	// 500). A client that falls further behind reads the ops it missed
	// from the store, then goes live again.
	SendBuffer int
	// MaxLag bounds how far behind the latest op a live stream may fall: a
	// stream more than MaxLag ops behind is closed with ConsumerTooSlow
	// (default 100 000).
	MaxLag int64
	// PollInterval is how often the store is checked for commits made by
	// other processes sharing the database (default 250ms). Commits of this
	// process are seen at once.
	PollInterval time.Duration
	// MaxStreams bounds the open streams; past it, new ones are answered
	// 503 with Retry-After (default 1024).
	MaxStreams int
	// MaxUnsent bounds the bytes of events queued for one client that its
	// connection has not taken yet (default 256 KiB). A stream pauses its
	// store reads while more than half of it is unsent; a live stream
	// over it is let go by the pump and catches up from the store. The
	// connection's kernel send buffer is set to the same size.
	MaxUnsent int
	// StoreReads bounds the store reads that streams make at once (a
	// backfill or catch-up page and its rendering, the latest seq),
	// leaving the rest of the database pool to the API (default 2). The
	// pump's one read per commit is not counted.
	StoreReads int
	// Now is the clock for the backfill window (default time.Now).
	Now func() time.Time
	// Logger receives the streams' log lines (default: discarded).
	Logger *slog.Logger
}

// Streamer serves /export/stream over a log. It is an http.Handler meant
// to be mounted at GET /export/stream.
type Streamer struct {
	log    *oplog.Log
	store  oplog.Store
	opts   StreamOptions
	logger *slog.Logger

	// stopCtx is cancelled by Close; every stream's context derives from it.
	stopCtx   context.Context
	stop      context.CancelFunc
	closeOnce sync.Once
	kick      chan struct{} // wakes the pump when a stream goes live
	pumpDone  chan struct{}
	handlers  sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	streams int                     // open streams, backfilling or live
	subs    map[*streamSub]struct{} // live streams
	head    int64                   // the last seq the pump fanned out
	pumpErr bool                    // the pump's last store read failed (log once)

	pageSize int           // store page size
	reads    chan struct{} // a slot per store read in progress (StoreReads)
	unsent   atomic.Int64  // bytes queued for every client, not yet taken
	hooks    streamHooks
}

// streamHooks let tests observe a Streamer and drive its races; all nil in
// production. They are called from the Streamer's goroutines.
type streamHooks struct {
	pageSize     int              // store page size (default streamPageSize)
	backfillPage func(last int64) // after each backfill page
	beforeLive   func()           // between the backfill and going live
	live         func()           // live and caught up, before the first live event
	send         func(seq int64)  // before a live event is written
	pumpRead     func()           // before each store read of the pump
	overflow     func()           // the pump let a stream go (its buffer overflowed)
	catchUp      func(last int64) // after each store page of a stream catching up
	done         func()           // a stream's handler has cleaned up
	// paused: a stream stops reading the store until its client drains
	// (st identifies the stream; unsent is its count at that moment).
	paused func(st *stream, unsent int64)
}

// streamSub is a live stream as the pump sees it.
type streamSub struct {
	st     *stream
	from   int64            // the stream had sent up to here when it went live
	events chan streamEvent // bounded by SendBuffer
	behind chan struct{}    // closed by the pump when events overflowed
}

// deliver queues events without blocking; false when the buffer is full
// or the client would have more than MaxUnsent bytes unsent. Events the
// stream sent before it went live take no room.
func (sub *streamSub) deliver(events []streamEvent) bool {
	for _, ev := range events {
		if ev.seq <= sub.from {
			continue
		}
		n := int64(len(ev.msg))
		if sub.st.unsent.Load()+n > sub.st.s.maxUnsent() {
			return false
		}
		sub.st.hold(n)
		select {
		case sub.events <- ev:
		default:
			sub.st.taken(n)
			return false
		}
	}
	return true
}

// streamEvent is one rendered op, shared by every live stream.
type streamEvent struct {
	seq int64
	msg []byte
	err error // the op did not render
}

// NewStreamer returns a Streamer over log and starts its pump. Close stops
// it.
func NewStreamer(log *oplog.Log, opts StreamOptions) *Streamer {
	return newStreamer(log, opts, streamHooks{})
}

func newStreamer(log *oplog.Log, opts StreamOptions, hooks streamHooks) *Streamer {
	defaults.Positive(&opts.BackfillWindow, 7*24*time.Hour)
	defaults.Positive(&opts.SendBuffer, 500)
	defaults.Positive(&opts.MaxLag, defaultStreamMaxLag)
	defaults.Positive(&opts.PollInterval, 250*time.Millisecond)
	defaults.Positive(&opts.MaxStreams, 1024)
	defaults.Positive(&opts.MaxUnsent, defaultStreamMaxUnsent)
	defaults.Positive(&opts.StoreReads, defaultStreamStoreReads)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	logger := cmp.Or(opts.Logger, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	s := &Streamer{
		log:      log,
		store:    log.Store(),
		opts:     opts,
		logger:   logger,
		stopCtx:  ctx,
		stop:     cancel,
		kick:     make(chan struct{}, 1),
		pumpDone: make(chan struct{}),
		subs:     make(map[*streamSub]struct{}),
		pageSize: streamPageSize,
		reads:    make(chan struct{}, opts.StoreReads),
		hooks:    hooks,
	}
	if hooks.pageSize > 0 {
		s.pageSize = hooks.pageSize
	}
	go s.pump()
	return s
}

// Close ends every open stream (status 1001) and stops the pump, then waits
// for the streams' handlers to return. It is idempotent; streams opened
// afterwards are refused with 503.
func (s *Streamer) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.stop()
		<-s.pumpDone
	})
	s.handlers.Wait()
}

// ServeHTTP serves one stream.
func (s *Streamer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !streamIsUpgrade(r) {
		streamWriteError(w, http.StatusUpgradeRequired, "upgrade required")
		return
	}
	cursor, hasCursor, ok := parseStreamCursor(r.URL.Query())
	if !ok {
		streamWriteError(w, http.StatusBadRequest, "Invalid cursor parameter")
		return
	}
	if !s.acquire() {
		w.Header().Set("Retry-After", streamRetryAfter)
		streamWriteError(w, http.StatusServiceUnavailable, "too many open streams")
		return
	}
	defer s.release()

	// The stream is public, read-only and carries no credentials, so any
	// origin may open it, as any origin may GET /export.
	hw := streamHijacker{ResponseWriter: w, sendBuffer: s.opts.MaxUnsent}
	conn, err := websocket.Accept(hw, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return // Accept has answered the request
	}
	conn.SetReadLimit(streamReadLimit)

	ctx, cancel := context.WithCancel(s.stopCtx)
	defer cancel()
	// Writes are cut short when the client goes, not at once on Close
	// (see awaitWriter).
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	gone := make(chan struct{})
	go func() {
		// Read and drop client messages, so that pings and close frames
		// are answered; a read error means the client has gone.
		defer close(gone)
		defer cancel()
		defer wcancel()
		for {
			_, rd, err := conn.Reader(context.Background())
			if err != nil {
				return
			}
			if _, err := io.Copy(io.Discard, rd); err != nil {
				return
			}
		}
	}()
	defer func() {
		conn.CloseNow()
		<-gone
	}()

	st := &stream{s: s, conn: conn, ctx: ctx, cancel: cancel, wctx: wctx,
		room: make(chan struct{}, 1), ready: make(chan struct{}, 1)}
	written := make(chan struct{})
	go func() {
		defer close(written)
		st.writeLoop()
	}()
	end := st.run(cursor, hasCursor)
	if end.code != 0 && s.stopCtx.Err() == nil {
		// The client gets what is queued, then the close frame.
		st.finish()
	} else {
		cancel()
	}
	st.awaitWriter(written, wcancel)
	st.drop()
	if s.stopCtx.Err() != nil {
		end = streamShutdown
	}
	if end.code != 0 && !st.broken.Load() {
		conn.Close(end.code, end.reason)
	}
}

// streamHijacker is the ResponseWriter Accept hijacks: it sets the kernel
// send buffer of the hijacked connection to sendBuffer bytes, so that a
// client that does not read holds no more of the kernel's memory than
// that. It is best effort: a connection that is not TCP keeps its buffer.
type streamHijacker struct {
	http.ResponseWriter
	sendBuffer int
}

// WriteHeaderNow passes on gin's way of sending the 101 before the hijack.
func (w streamHijacker) WriteHeaderNow() {
	if h, ok := w.ResponseWriter.(interface{ WriteHeaderNow() }); ok {
		h.WriteHeaderNow()
	}
}

func (w streamHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	setWriteBuffer(c, w.sendBuffer)
	return c, brw, nil
}

// setWriteBuffer sets the kernel send buffer of the TCP connection under
// c, through the wrappers around it (TLS, the connection limiter, the
// transport's JSON errors: each gives its inner connection by NetConn).
// It reports whether it found one.
func setWriteBuffer(c net.Conn, n int) bool {
	for range 8 {
		if sb, ok := c.(interface{ SetWriteBuffer(int) error }); ok {
			return sb.SetWriteBuffer(n) == nil
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return false
		}
		c = u.NetConn()
	}
	return false
}

// acquire counts a new stream in, unless the Streamer is closed or full.
func (s *Streamer) acquire() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.streams >= s.opts.MaxStreams {
		return false
	}
	s.streams++
	s.handlers.Add(1)
	return true
}

func (s *Streamer) release() {
	s.mu.Lock()
	s.streams--
	s.mu.Unlock()
	s.handlers.Done()
	if s.hooks.done != nil {
		s.hooks.done()
	}
}

// subscribe makes sub live. The pump will deliver every op after the
// returned seq; the stream must read the ops after lastSent up to it from
// the store itself.
func (s *Streamer) subscribe(sub *streamSub, lastSent int64) (pumpHead int64, ok bool) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, false
	}
	if len(s.subs) == 0 {
		// The pump reads nothing while no stream is live: start it
		// where this stream is.
		s.head = lastSent
	}
	s.subs[sub] = struct{}{}
	pumpHead = s.head
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return pumpHead, true
}

func (s *Streamer) unsubscribe(sub *streamSub) {
	s.mu.Lock()
	delete(s.subs, sub)
	s.mu.Unlock()
}

// pump reads new ops from the store, once for all live streams, and fans
// them out.
func (s *Streamer) pump() {
	defer close(s.pumpDone)
	ticker := time.NewTicker(s.opts.PollInterval)
	defer ticker.Stop()
	for {
		// Take the channel before reading, so that no commit is missed.
		changed := s.log.Changed()
		s.pumpOnce()
		select {
		case <-s.stopCtx.Done():
			return
		case <-changed:
		case <-ticker.C:
		case <-s.kick:
		}
	}
}

// pumpOnce delivers every committed op after the pump's head.
func (s *Streamer) pumpOnce() {
	for {
		s.mu.Lock()
		live, from := len(s.subs), s.head
		s.mu.Unlock()
		if live == 0 {
			return
		}
		if s.hooks.pumpRead != nil {
			s.hooks.pumpRead()
		}
		ctx, cancel := context.WithTimeout(s.stopCtx, streamReadTimeout)
		entries, err := s.store.Export(ctx, from, s.pageSize)
		cancel()
		if err != nil {
			s.mu.Lock()
			first := !s.pumpErr
			s.pumpErr = true
			s.mu.Unlock()
			if first && s.stopCtx.Err() == nil {
				s.logger.Error("export stream: reading new ops", "after", from, "err", err)
			}
			return // retried at the next wake-up
		}
		events := make([]streamEvent, len(entries))
		for i := range entries {
			e := &entries[i]
			events[i].seq = e.Seq
			events[i].msg, events[i].err = appendSequencedEntry(nil, e)
			if events[i].err != nil {
				s.logger.Error("export stream: rendering op", "seq", e.Seq, "err", events[i].err)
			}
		}
		var behind int
		s.mu.Lock()
		s.pumpErr = false
		// A stream that went live after the read may have moved head
		// (only when no stream was live); then this read is stale.
		if s.head == from && len(events) > 0 {
			for sub := range s.subs {
				if !sub.deliver(events) {
					// Let it go: it catches up from the store.
					delete(s.subs, sub)
					close(sub.behind)
					behind++
				}
			}
			s.head = events[len(events)-1].seq
		}
		s.mu.Unlock()
		for range behind {
			if s.hooks.overflow != nil {
				s.hooks.overflow()
			}
		}
		if len(entries) < s.pageSize {
			return
		}
	}
}

// stream is one client's stream. Its goroutine (run) reads the store and
// the pump's events and queues messages in order; the writer goroutine
// (writeLoop) hands them to the connection.
type stream struct {
	s        *Streamer
	conn     *websocket.Conn
	ctx      context.Context    // cancelled when the client goes, on Close, or when a write fails
	cancel   context.CancelFunc // ends the stream
	wctx     context.Context    // the writes': cancelled when the client goes, or to abandon a write
	lastSent int64              // the last seq queued for the client
	scratch  []byte             // where an op is rendered before it is queued

	// Rendered messages, for the size of the next page.
	msgs, msgBytes int64

	unsent atomic.Int64  // bytes queued (or held in the pump's buffer) and not yet taken by the connection
	room   chan struct{} // 1-buffered: unsent fell to half of MaxUnsent
	ready  chan struct{} // 1-buffered: wakes the writer

	broken atomic.Bool // a write failed or was abandoned: the connection is closed

	mu    sync.Mutex
	queue [][]byte // messages for the writer, in order
	done  bool     // nothing more is queued: the writer ends with the queue
}

// streamEnd says how a stream ends: with a close frame (code, reason), or
// with nothing to send (code 0: the connection is gone).
type streamEnd struct {
	code   websocket.StatusCode
	reason string
}

var (
	streamGone     = &streamEnd{}
	streamFuture   = &streamEnd{websocket.StatusNormalClosure, streamFutureCursor}
	streamOutdated = &streamEnd{websocket.StatusNormalClosure, streamOutdatedCursor}
	streamTooSlow  = &streamEnd{websocket.StatusNormalClosure, streamConsumerTooSlow}
	streamShutdown = &streamEnd{websocket.StatusGoingAway, ""}
	streamInternal = &streamEnd{websocket.StatusInternalError, "internal error"}
)

// run streams until the stream ends, and says how.
func (st *stream) run(cursor int64, hasCursor bool) *streamEnd {
	s := st.s
	latest, err := st.latestSeq()
	if err != nil {
		return st.failed("reading the latest seq", err)
	}
	if !hasCursor {
		st.lastSent = latest
	} else {
		if cursor > latest {
			return streamFuture
		}
		st.lastSent = cursor
		if end := st.backfill(); end != nil {
			return end
		}
	}
	if s.hooks.beforeLive != nil {
		s.hooks.beforeLive()
	}
	for {
		if end := st.live(); end != nil {
			return end
		}
		// The client fell behind its send buffer, and the pump let it go.
		if end := st.catchUp(); end != nil {
			return end
		}
	}
}

// live makes the stream live and queues the pump's events until the
// stream ends (its end), or until it falls behind its send buffer or its
// unsent bytes (nil).
func (st *stream) live() *streamEnd {
	s := st.s
	sub := &streamSub{
		st:     st,
		from:   st.lastSent,
		events: make(chan streamEvent, s.opts.SendBuffer),
		behind: make(chan struct{}),
	}
	pumpHead, ok := s.subscribe(sub, st.lastSent)
	if !ok {
		return streamShutdown
	}
	defer func() {
		s.unsubscribe(sub)
		// The pump delivers no more: give back what it held.
		for {
			select {
			case ev := <-sub.events:
				st.taken(int64(len(ev.msg)))
			default:
				return
			}
		}
	}()
	// Ops committed since the backfill (or the catch-up) that the pump
	// has already passed.
	if end := st.sendFromStore(pumpHead); end != nil {
		return end
	}
	if s.hooks.live != nil {
		s.hooks.live()
	}

	for {
		var ev streamEvent
		select {
		case <-st.ctx.Done():
			return streamGone
		case <-sub.behind:
			return nil
		case ev = <-sub.events:
		}
		n := int64(len(ev.msg)) // held by the pump's deliver
		if ev.seq <= st.lastSent {
			st.taken(n)
			continue // sent before going live
		}
		if s.hooks.send != nil {
			s.hooks.send(ev.seq)
		}
		// Not expected (the pump reads densely from its head, which this
		// stream had reached when it went live), but never leave a gap.
		if end := st.sendFromStore(ev.seq - 1); end != nil {
			st.taken(n)
			return end
		}
		if ev.err != nil {
			return streamInternal // logged by the pump
		}
		st.push(ev.msg)
		st.lastSent = ev.seq
	}
}

// catchUp sends, from the store, the ops the stream missed while it was
// behind its send buffer, up to the latest: then it can go live again. A
// stream more than MaxLag ops behind the latest op is closed with
// ConsumerTooSlow.
func (st *stream) catchUp() *streamEnd {
	s := st.s
	for {
		latest, err := st.latestSeq()
		if err != nil {
			return st.failed("reading the latest seq", err)
		}
		if latest-st.lastSent > s.opts.MaxLag {
			s.logger.Info("export stream: client too slow, closing",
				"lastSent", st.lastSent, "latest", latest, "maxLag", s.opts.MaxLag)
			return streamTooSlow
		}
		got, asked, end := st.page("reading missed ops", -1, nil)
		if end != nil {
			return end
		}
		if s.hooks.catchUp != nil {
			s.hooks.catchUp(st.lastSent)
		}
		if got < asked {
			return nil
		}
	}
}

// backfill sends every op after lastSent that the store holds.
func (st *stream) backfill() *streamEnd {
	outdated := func(e *oplog.Entry) *streamEnd {
		oldest := st.s.opts.Now().Add(-st.s.opts.BackfillWindow)
		if e.CreatedAt.Before(oldest) {
			return streamOutdated
		}
		return nil
	}
	for {
		got, asked, end := st.page("reading the backfill", -1, outdated)
		if end != nil {
			return end
		}
		if got > 0 {
			outdated = nil // only the first op is judged
		}
		if st.s.hooks.backfillPage != nil {
			st.s.hooks.backfillPage(st.lastSent)
		}
		if got < asked {
			return nil
		}
	}
}

// sendFromStore sends the ops after lastSent up to and including upTo,
// reading them from the store.
func (st *stream) sendFromStore(upTo int64) *streamEnd {
	for st.lastSent < upTo {
		got, asked, end := st.page("reading missed ops", upTo, nil)
		if end != nil {
			return end
		}
		if got < asked {
			return nil // the store has no more
		}
	}
	return nil
}

// page queues the next page of ops after lastSent (those up to upTo, if
// upTo ≥ 0). It first waits for the client to have room (pause), then,
// holding a store read slot, reads as many ops as fit in the room left
// under MaxUnsent (at most the page size) and renders and queues them, so
// that nothing waits on the client while it holds the slot or the page.
// first, if set, judges the page's first op before anything is queued.
// got is the number of ops the store returned, asked the number asked
// for: fewer means the store has no more.
func (st *stream) page(what string, upTo int64, first func(*oplog.Entry) *streamEnd) (got, asked int, end *streamEnd) {
	if end := st.waitRoom(); end != nil {
		return 0, 0, end
	}
	room := st.s.maxUnsent() - st.unsent.Load()
	asked = int(min(int64(st.s.pageSize), max(1, room/st.eventSize())))
	if !st.readSlot() {
		return 0, asked, streamGone
	}
	defer st.readDone()
	entries, err := st.export(st.lastSent, asked)
	if err != nil {
		return 0, asked, st.failed(what, err)
	}
	if first != nil && len(entries) > 0 {
		if end := first(&entries[0]); end != nil {
			return len(entries), asked, end
		}
	}
	// A copy of each message, of its size: what the connection has taken
	// is freed at once, so the stream's memory is what it counts unsent.
	var msgs [][]byte
	for i := range entries {
		e := &entries[i]
		if upTo >= 0 && e.Seq > upTo {
			break
		}
		st.scratch, err = appendSequencedEntry(st.scratch[:0], e)
		if err != nil {
			st.pushAll(msgs)
			return len(entries), asked, st.failed("rendering an op", err)
		}
		msg := bytes.Clone(st.scratch)
		st.msgs++
		st.msgBytes += int64(len(msg))
		st.hold(int64(len(msg)))
		msgs = append(msgs, msg)
		st.lastSent = e.Seq
	}
	st.pushAll(msgs)
	return len(entries), asked, nil
}

// eventSize is the mean size of the events this stream rendered (an
// estimate before the first).
func (st *stream) eventSize() int64 {
	if st.msgs == 0 {
		return streamEventEstimate
	}
	return max(1, st.msgBytes/st.msgs)
}

// waitRoom pauses the stream while more than half of MaxUnsent is unsent.
func (st *stream) waitRoom() *streamEnd {
	resume := st.s.maxUnsent() / 2
	unsent := st.unsent.Load()
	if unsent <= resume {
		return nil
	}
	if st.s.hooks.paused != nil {
		st.s.hooks.paused(st, unsent)
	}
	for st.unsent.Load() > resume {
		select {
		case <-st.ctx.Done():
			return streamGone
		case <-st.room:
		}
	}
	return nil
}

// hold counts n more bytes unsent to the client.
func (st *stream) hold(n int64) {
	st.unsent.Add(n)
	st.s.unsent.Add(n)
}

// taken counts n bytes taken by the connection (or dropped), and wakes a
// paused stream once half of MaxUnsent is free.
func (st *stream) taken(n int64) {
	left := st.unsent.Add(-n)
	st.s.unsent.Add(-n)
	if left <= st.s.maxUnsent()/2 {
		select {
		case st.room <- struct{}{}:
		default:
		}
	}
}

// push queues msg (already counted by hold) for the writer.
func (st *stream) push(msg []byte) {
	st.mu.Lock()
	st.queue = append(st.queue, msg)
	st.mu.Unlock()
	select {
	case st.ready <- struct{}{}:
	default:
	}
}

// pushAll queues msgs (already counted by hold) for the writer.
func (st *stream) pushAll(msgs [][]byte) {
	if len(msgs) == 0 {
		return
	}
	st.mu.Lock()
	st.queue = append(st.queue, msgs...)
	st.mu.Unlock()
	select {
	case st.ready <- struct{}{}:
	default:
	}
}

// finish tells the writer that nothing more will be queued: it ends once
// the queue is written.
func (st *stream) finish() {
	st.mu.Lock()
	st.done = true
	st.mu.Unlock()
	select {
	case st.ready <- struct{}{}:
	default:
	}
}

// next returns the next queued message, waiting for one; false when the
// writer is to end.
func (st *stream) next() ([]byte, bool) {
	for {
		if st.ctx.Err() != nil {
			return nil, false
		}
		st.mu.Lock()
		if len(st.queue) > 0 {
			msg := st.queue[0]
			st.queue[0] = nil
			st.queue = st.queue[1:]
			st.mu.Unlock()
			return msg, true
		}
		done := st.done
		st.mu.Unlock()
		if done {
			return nil, false
		}
		select {
		case <-st.ctx.Done():
		case <-st.ready:
		}
	}
}

// writeLoop hands the queued messages to the connection, in order. A write
// that fails (the client has gone, or took longer than streamWriteTimeout
// to accept one event) ends the stream.
func (st *stream) writeLoop() {
	for {
		msg, ok := st.next()
		if !ok {
			return
		}
		err := st.write(msg)
		st.taken(int64(len(msg)))
		if err != nil {
			st.broken.Store(true)
			st.cancel()
			return
		}
	}
}

// awaitWriter waits for the writer to end: once it has written what was
// queued, when the stream was finished; at once otherwise. When the stream
// is cancelled (Close, or the stream ended without a close frame), the
// writer takes no more from its queue and has streamCloseGrace to finish
// the write in progress: then it is abandoned, which closes the
// connection. So Close neither cuts a write that is about to complete (the
// client then gets its close frame) nor waits on a client that does not
// read.
func (st *stream) awaitWriter(written <-chan struct{}, abandon context.CancelFunc) {
	select {
	case <-written:
		return
	case <-st.ctx.Done():
	case <-st.s.stopCtx.Done():
		st.cancel()
	}
	t := time.NewTimer(streamCloseGrace)
	defer t.Stop()
	select {
	case <-written:
	case <-t.C:
		abandon()
		<-written
	}
}

// drop gives back the bytes of what the writer left queued.
func (st *stream) drop() {
	st.mu.Lock()
	var n int64
	for _, msg := range st.queue {
		n += int64(len(msg))
	}
	st.queue = nil
	st.mu.Unlock()
	st.taken(n)
}

func (st *stream) write(msg []byte) error {
	ctx, cancel := context.WithTimeout(st.wctx, streamWriteTimeout)
	defer cancel()
	return st.conn.Write(ctx, websocket.MessageText, msg)
}

// readSlot waits for one of the StoreReads slots; false if the stream
// ended meanwhile.
func (st *stream) readSlot() bool {
	select {
	case st.s.reads <- struct{}{}:
		return true
	case <-st.ctx.Done():
		return false
	}
}

func (st *stream) readDone() { <-st.s.reads }

func (st *stream) export(after int64, limit int) ([]oplog.Entry, error) {
	ctx, cancel := context.WithTimeout(st.ctx, streamReadTimeout)
	defer cancel()
	return st.s.store.Export(ctx, after, limit)
}

func (st *stream) latestSeq() (int64, error) {
	if !st.readSlot() {
		return 0, context.Canceled
	}
	defer st.readDone()
	ctx, cancel := context.WithTimeout(st.ctx, streamReadTimeout)
	defer cancel()
	return st.s.store.LatestSeq(ctx)
}

// maxUnsent is MaxUnsent as a byte count.
func (s *Streamer) maxUnsent() int64 { return int64(s.opts.MaxUnsent) }

// failed ends a stream on a server-side error: logged, and 1011 to the
// client (nothing when the stream was ended by the client or Close).
func (st *stream) failed(what string, err error) *streamEnd {
	if st.ctx.Err() != nil {
		return streamGone
	}
	st.s.logger.Error("export stream: "+what, "lastSent", st.lastSent, "err", err)
	return streamInternal
}

// parseStreamCursor reads the cursor query parameter as the reference
// does (cursorParam ? parseInt(cursorParam, 10) : undefined): absent or
// empty means live only; otherwise jsParseInt, and ok is false for NaN or
// a negative value.
func parseStreamCursor(q map[string][]string) (cursor int64, present, ok bool) {
	vs := q["cursor"]
	if len(vs) == 0 || vs[0] == "" {
		return 0, false, true
	}
	n, ok := jsParseInt(vs[0])
	if !ok || n < 0 {
		return 0, true, false
	}
	return n, true, true
}

// streamIsUpgrade reports whether r asks for a WebSocket upgrade.
func streamIsUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") &&
		headerHasToken(r.Header, "Upgrade", "websocket")
}

// streamWriteError answers a request that was not upgraded with the API's
// JSON error body.
func streamWriteError(w http.ResponseWriter, status int, message string) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Access-Control-Allow-Origin", "*")
	w.WriteHeader(status)
	b := validate.AppendJSONString([]byte(`{"message":`), message)
	w.Write(append(b, '}'))
}
