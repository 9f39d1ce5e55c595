package api

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

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
// A live stream whose buffer overflows (a commit of more ops at once than
// SendBuffer, such as an ingest batch of a mirror or an import, to a client
// that is still writing out the ones before) is let go by the pump, not
// closed: it reads the ops it missed from the store, as a stream that joins
// behind does, and goes live again. Only a client that is truly stuck is
// dropped: one more than MaxLag ops behind the latest op, or one that takes
// longer than streamWriteTimeout to accept one event.
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
	// streamRetryAfter is the Retry-After of a 503 (seconds).
	streamRetryAfter = "5"
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

	pageSize int // store page size
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
}

// streamSub is a live stream as the pump sees it.
type streamSub struct {
	from   int64            // the stream had sent up to here when it went live
	events chan streamEvent // bounded by SendBuffer
	behind chan struct{}    // closed by the pump when events overflowed
}

// deliver queues events without blocking; false when the buffer is full.
// Events the stream sent before it went live take no room.
func (sub *streamSub) deliver(events []streamEvent) bool {
	for _, ev := range events {
		if ev.seq <= sub.from {
			continue
		}
		select {
		case sub.events <- ev:
		default:
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
	if opts.BackfillWindow <= 0 {
		opts.BackfillWindow = 7 * 24 * time.Hour
	}
	if opts.SendBuffer <= 0 {
		opts.SendBuffer = 500
	}
	if opts.MaxLag <= 0 {
		opts.MaxLag = defaultStreamMaxLag
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 250 * time.Millisecond
	}
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = 1024
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
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
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return // Accept has answered the request
	}
	conn.SetReadLimit(streamReadLimit)

	ctx, cancel := context.WithCancel(s.stopCtx)
	defer cancel()
	gone := make(chan struct{})
	go func() {
		// Read and drop client messages, so that pings and close frames
		// are answered; a read error means the client has gone.
		defer close(gone)
		defer cancel()
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

	st := &stream{s: s, conn: conn, ctx: ctx}
	end := st.run(cursor, hasCursor)
	if s.stopCtx.Err() != nil {
		end = streamShutdown
	}
	if end.code != 0 {
		conn.Close(end.code, end.reason)
	}
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

// stream is one client's stream.
type stream struct {
	s        *Streamer
	conn     *websocket.Conn
	ctx      context.Context // cancelled when the client goes or on Close
	lastSent int64
	buf      []byte
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

// live makes the stream live and sends the pump's events until the stream
// ends (its end), or until it falls behind its send buffer (nil).
func (st *stream) live() *streamEnd {
	s := st.s
	sub := &streamSub{
		from:   st.lastSent,
		events: make(chan streamEvent, s.opts.SendBuffer),
		behind: make(chan struct{}),
	}
	pumpHead, ok := s.subscribe(sub, st.lastSent)
	if !ok {
		return streamShutdown
	}
	defer s.unsubscribe(sub)
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
		if ev.seq <= st.lastSent {
			continue // sent before going live
		}
		if s.hooks.send != nil {
			s.hooks.send(ev.seq)
		}
		// Not expected (the pump reads densely from its head, which this
		// stream had reached when it went live), but never leave a gap.
		if end := st.sendFromStore(ev.seq - 1); end != nil {
			return end
		}
		if ev.err != nil {
			return streamInternal // logged by the pump
		}
		if err := st.write(ev.msg); err != nil {
			return streamGone
		}
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
		entries, err := st.export(st.lastSent)
		if err != nil {
			return st.failed("reading missed ops", err)
		}
		for i := range entries {
			if end := st.sendEntry(&entries[i]); end != nil {
				return end
			}
		}
		if s.hooks.catchUp != nil {
			s.hooks.catchUp(st.lastSent)
		}
		if len(entries) < s.pageSize {
			return nil
		}
	}
}

// backfill sends every op after lastSent that the store holds.
func (st *stream) backfill() *streamEnd {
	first := true
	for {
		entries, err := st.export(st.lastSent)
		if err != nil {
			return st.failed("reading the backfill", err)
		}
		if first && len(entries) > 0 {
			oldest := st.s.opts.Now().Add(-st.s.opts.BackfillWindow)
			if entries[0].CreatedAt.Before(oldest) {
				return streamOutdated
			}
		}
		first = false
		for i := range entries {
			if end := st.sendEntry(&entries[i]); end != nil {
				return end
			}
		}
		if st.s.hooks.backfillPage != nil {
			st.s.hooks.backfillPage(st.lastSent)
		}
		if len(entries) < st.s.pageSize {
			return nil
		}
	}
}

// sendFromStore sends the ops after lastSent up to and including upTo,
// reading them from the store.
func (st *stream) sendFromStore(upTo int64) *streamEnd {
	for st.lastSent < upTo {
		entries, err := st.export(st.lastSent)
		if err != nil {
			return st.failed("reading missed ops", err)
		}
		for i := range entries {
			if entries[i].Seq > upTo {
				return nil
			}
			if end := st.sendEntry(&entries[i]); end != nil {
				return end
			}
		}
		if len(entries) < st.s.pageSize {
			return nil // the store has no more
		}
	}
	return nil
}

// sendEntry renders and sends e.
func (st *stream) sendEntry(e *oplog.Entry) *streamEnd {
	var err error
	st.buf, err = appendSequencedEntry(st.buf[:0], e)
	if err != nil {
		return st.failed("rendering an op", err)
	}
	if err := st.write(st.buf); err != nil {
		return streamGone
	}
	st.lastSent = e.Seq
	return nil
}

func (st *stream) write(msg []byte) error {
	ctx, cancel := context.WithTimeout(st.ctx, streamWriteTimeout)
	defer cancel()
	return st.conn.Write(ctx, websocket.MessageText, msg)
}

func (st *stream) export(after int64) ([]oplog.Entry, error) {
	ctx, cancel := context.WithTimeout(st.ctx, streamReadTimeout)
	defer cancel()
	return st.s.store.Export(ctx, after, st.s.pageSize)
}

func (st *stream) latestSeq() (int64, error) {
	ctx, cancel := context.WithTimeout(st.ctx, streamReadTimeout)
	defer cancel()
	return st.s.store.LatestSeq(ctx)
}

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
	return streamHeaderHasToken(r.Header, "Connection", "upgrade") &&
		streamHeaderHasToken(r.Header, "Upgrade", "websocket")
}

func streamHeaderHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
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
