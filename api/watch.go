package api

import (
	"bufio"
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/plcdir/plc/internal/defaults"
	"github.com/plcdir/plc/validate"
	"github.com/plcdir/plc/watch"
)

// GET /_watch: the new ops of up to MaxDIDs DIDs as server-sent events.
//
// Each op is one event: its id is the op's seq, its type "op" and its data
// the watch.Change (the op as a seq-mode export line and what it changed).
// A client resumes after a seq with ?after=SEQ or the Last-Event-ID header
// (which wins: an EventSource sends it when it reconnects to the same
// URL): it first gets the ops after that seq, read from the store, then
// the live ones, with no gap and no duplicate (see watch.Hub). Comments
// (": keep-alive") keep idle connections open. A stream ends with one
// "error" event whose data is {"error": reason, "message": …}: TooSlow
// (the client fell more than Buffer events behind), Lifetime (the stream
// was open MaxLifetime: reconnect with Last-Event-ID), Shutdown, Internal.

// WatchOptions configure a Watcher. Zero values select the defaults.
type WatchOptions struct {
	// MaxDIDs bounds the DIDs of one stream (default 100).
	MaxDIDs int
	// MaxWatchers bounds the open streams; past it, new ones are answered
	// 503 with Retry-After (default 256).
	MaxWatchers int
	// Buffer bounds the live events waiting for one client (default 256):
	// a client further behind is sent a TooSlow error and dropped.
	Buffer int
	// KeepAlive is the interval of the keep-alive comments (default 30s).
	KeepAlive time.Duration
	// MaxLifetime bounds how long one stream stays open (default 1h).
	MaxLifetime time.Duration
	// WriteTimeout bounds the write of one event (default 30s).
	WriteTimeout time.Duration
	// NewTicker and After are the clocks of the keep-alives and the
	// lifetime (default: time's).
	NewTicker func(d time.Duration) (c <-chan time.Time, stop func())
	After     func(d time.Duration) <-chan time.Time
	// Logger receives the streams' errors (default: discarded).
	Logger *slog.Logger
	// Registry receives the streams' metrics (nil: kept, not registered).
	Registry prometheus.Registerer
}

// Watcher serves GET /_watch over a watch.Hub.
type Watcher struct {
	hub    *watch.Hub
	opts   WatchOptions
	logger *slog.Logger

	stopCtx context.Context
	stop    context.CancelFunc

	mu   sync.Mutex
	open int

	openGauge prometheus.Gauge
	ended     *prometheus.CounterVec
}

// NewWatcher returns the handler of GET /_watch over hub. Close ends its
// streams (the hub is the caller's).
func NewWatcher(hub *watch.Hub, opts WatchOptions) *Watcher {
	defaults.Positive(&opts.MaxDIDs, 100)
	defaults.Positive(&opts.MaxWatchers, 256)
	defaults.Positive(&opts.Buffer, 256)
	defaults.Positive(&opts.KeepAlive, 30*time.Second)
	defaults.Positive(&opts.MaxLifetime, time.Hour)
	defaults.Positive(&opts.WriteTimeout, 30*time.Second)
	if opts.NewTicker == nil {
		opts.NewTicker = func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		}
	}
	if opts.After == nil {
		opts.After = time.After
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{hub: hub, opts: opts, logger: cmp.Or(opts.Logger, slog.New(slog.DiscardHandler)), stopCtx: ctx, stop: cancel,
		openGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "plc_watch_streams_open",
			Help: "Open GET /_watch streams.",
		}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plc_watch_streams_ended_total",
			Help: "GET /_watch streams ended, by reason (TooSlow, Lifetime, Shutdown, Internal, or gone: the client left).",
		}, []string{"reason"}),
	}
	if opts.Registry != nil {
		opts.Registry.MustRegister(w.openGauge, w.ended)
	}
	return w
}

// Close ends every open stream with a Shutdown error event (call it when
// the HTTP server starts shutting down: http.Server.RegisterOnShutdown).
func (w *Watcher) Close() { w.stop() }

// watchQuery is a parsed GET /_watch request.
type watchQuery struct {
	dids  []string
	after int64 // -1: live only
}

func (w *Watcher) parse(r *http.Request) (watchQuery, error) {
	q := watchQuery{after: -1}
	seen := map[string]bool{}
	for _, d := range r.URL.Query()["did"] {
		if !validate.ValidDID(d) {
			return q, fmt.Errorf("invalid DID %q", d)
		}
		if !seen[d] {
			seen[d] = true
			q.dids = append(q.dids, d)
		}
	}
	if len(q.dids) == 0 {
		return q, errors.New("at least one did parameter is required")
	}
	if len(q.dids) > w.opts.MaxDIDs {
		return q, fmt.Errorf("at most %d DIDs per stream", w.opts.MaxDIDs)
	}
	seq := r.URL.Query().Get("after")
	what := "after"
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		seq, what = id, "Last-Event-ID"
	}
	if seq != "" {
		n, err := strconv.ParseInt(seq, 10, 64)
		if err != nil || n < 0 {
			return q, fmt.Errorf("%s must be a seq (a non-negative integer)", what)
		}
		q.after = n
	}
	return q, nil
}

func (w *Watcher) acquire() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.open >= w.opts.MaxWatchers || w.stopCtx.Err() != nil {
		return false
	}
	w.open++
	w.openGauge.Set(float64(w.open))
	return true
}

func (w *Watcher) release() {
	w.mu.Lock()
	w.open--
	w.openGauge.Set(float64(w.open))
	w.mu.Unlock()
}

// ServeHTTP serves one stream.
func (w *Watcher) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	q, err := w.parse(r)
	if err != nil {
		streamWriteError(rw, http.StatusBadRequest, err.Error())
		return
	}
	if !w.acquire() {
		rw.Header().Set("Retry-After", streamRetryAfter)
		streamWriteError(rw, http.StatusServiceUnavailable, "too many open watch streams")
		return
	}
	defer w.release()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(w.stopCtx, cancel)
	defer stop()

	wt, err := w.hub.Watch(ctx, q.dids, q.after, w.opts.Buffer)
	switch {
	case errors.Is(err, watch.ErrFutureSeq), errors.Is(err, watch.ErrBacklog):
		streamWriteError(rw, http.StatusBadRequest, err.Error())
		return
	case errors.Is(err, watch.ErrClosed):
		rw.Header().Set("Retry-After", streamRetryAfter)
		streamWriteError(rw, http.StatusServiceUnavailable, "the server is shutting down")
		return
	case err != nil:
		w.logger.Error("watch: starting a stream", "err", err)
		streamWriteError(rw, http.StatusInternalServerError, "Internal Server Error")
		return
	}
	defer wt.Close()

	rc := http.NewResponseController(rw)
	h := rw.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	h.Set("Access-Control-Allow-Origin", "*")
	rw.WriteHeader(http.StatusOK)
	bw := bufio.NewWriter(rw)
	send := func(b []byte) bool {
		rc.SetWriteDeadline(time.Now().Add(w.opts.WriteTimeout))
		if _, err := bw.Write(b); err != nil {
			return false
		}
		if err := bw.Flush(); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send([]byte(": watching\n\n")) {
		return
	}

	// Next blocks: a goroutine hands the events over.
	type next struct {
		ev  watch.Event
		err error
	}
	events := make(chan next)
	go func() {
		for {
			ev, err := wt.Next(ctx)
			select {
			case events <- next{ev, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	tick, stopTick := w.opts.NewTicker(w.opts.KeepAlive)
	defer stopTick()
	lifetime := w.opts.After(w.opts.MaxLifetime)
	reason := "gone"
	defer func() { w.ended.WithLabelValues(reason).Inc() }()
	end := func(why, msg string) {
		reason = why
		b := append([]byte("event: error\ndata: {\"error\":"), validate.AppendJSONString(nil, why)...)
		b = append(b, `,"message":`...)
		b = validate.AppendJSONString(b, msg)
		send(append(b, "}\n\n"...))
	}
	for {
		select {
		case n := <-events:
			if n.err != nil {
				switch {
				case errors.Is(n.err, watch.ErrTooSlow):
					end("TooSlow", fmt.Sprintf("more than %d events waited for this client: reconnect with Last-Event-ID", w.opts.Buffer))
				case errors.Is(n.err, watch.ErrClosed), w.stopCtx.Err() != nil:
					end("Shutdown", "the server is shutting down: reconnect with Last-Event-ID")
				case r.Context().Err() != nil:
				default:
					w.logger.Error("watch: reading events", "err", n.err)
					end("Internal", "internal error")
				}
				return
			}
			b := append([]byte("id: "), strconv.FormatInt(n.ev.Seq, 10)...)
			b = append(b, "\nevent: op\ndata: "...)
			b = append(b, n.ev.JSON...)
			if !send(append(b, "\n\n"...)) {
				return
			}
		case <-ctx.Done():
			if w.stopCtx.Err() != nil && r.Context().Err() == nil {
				end("Shutdown", "the server is shutting down: reconnect with Last-Event-ID")
			}
			return
		case <-tick:
			if !send([]byte(": keep-alive\n\n")) {
				return
			}
		case <-lifetime:
			end("Lifetime", "the stream was open for its lifetime: reconnect with Last-Event-ID")
			return
		}
	}
}

// GET /_watch/key: the public key of the webhook signatures.
func serveWatchKey(c *gin.Context, key ed25519.PublicKey) {
	if key == nil {
		writeMessage(c, http.StatusNotFound, "Not Found: this directory delivers no webhooks")
		return
	}
	b := append([]byte(`{"type":"Ed25519","publicKey":`), validate.AppendJSONString(nil, base64.StdEncoding.EncodeToString(key))...)
	b = append(b, `,"timestampHeader":`...)
	b = validate.AppendJSONString(b, watch.TimestampHeader)
	b = append(b, `,"signatureHeader":`...)
	b = validate.AppendJSONString(b, watch.SignatureHeader)
	b = append(b, `,"signed":"plc-webhook-v1\n<timestamp>\n<body>"}`...)
	c.Data(http.StatusOK, contentJSON, b)
}
