package watch

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/plcdir/plc/internal/defaults"
	"github.com/plcdir/plc/oplog"
)

// Limits of the webhooks a directory keeps (plc watch add).
const (
	MaxWebhooksPerDID = 10
	MaxWebhooks       = 10_000
	maxURLLength      = 2048
)

// CheckURL returns an error unless u is an absolute http or https URL with
// a host, as a webhook's URL must be.
func CheckURL(u string) error {
	if len(u) > maxURLLength {
		return fmt.Errorf("webhook URL longer than %d bytes", maxURLLength)
	}
	p, err := url.Parse(u)
	if err != nil {
		return fmt.Errorf("webhook URL: %w", err)
	}
	if p.Scheme != "http" && p.Scheme != "https" {
		return fmt.Errorf("webhook URL %q: want an http or https URL", u)
	}
	if p.Host == "" {
		return fmt.Errorf("webhook URL %q has no host", u)
	}
	return nil
}

// WorkerOptions configure a Worker. Zero values select the defaults.
type WorkerOptions struct {
	// Timeout bounds one delivery, its answer included (default 10s).
	Timeout time.Duration
	// MaxAttempts bounds the attempts at one op: when they run out, the
	// webhook is disabled (plc watch enable resumes it at that op) (default
	// 12).
	MaxAttempts int
	// MinBackoff is the wait after the first failed attempt; each further
	// failure doubles it, up to MaxBackoff (defaults 1s and 10m).
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// Reload is how often the registered webhooks are read again (default
	// 10s): added ones start, removed ones stop. The lease on delivering
	// them (one process of those sharing the database delivers) is renewed
	// as often, for three times as long.
	Reload time.Duration
	// Buffer bounds the Events waiting for one webhook's deliveries
	// (default 64); past it, the webhook reads them again from the store.
	Buffer int
	// After is the clock of the backoff and the reloads, Now the one of
	// the signatures (defaults: time's).
	After func(d time.Duration) <-chan time.Time
	Now   func() time.Time
	// Transport carries the deliveries (default: a clone of
	// http.DefaultTransport). Redirects are never followed: a 3xx answer is
	// a failed attempt.
	Transport http.RoundTripper
	// Logger receives the deliveries' failures (default: discarded).
	Logger *slog.Logger
	// Registry receives the deliveries' metrics (nil: kept, not
	// registered).
	Registry prometheus.Registerer
}

// Worker delivers the Events of the registered webhooks' DIDs. Each
// webhook is delivered in seq order by its own goroutine, so a slow or
// dead receiver holds up only itself; nothing here touches the write path.
type Worker struct {
	hub    *Hub
	store  oplog.WebhookStore
	key    ed25519.PrivateKey
	opts   WorkerOptions
	client *http.Client
	logger *slog.Logger
	holder string // this worker's id in the delivery lease

	delivered prometheus.Counter
	failed    prometheus.Counter
	disabled  prometheus.Counter
}

// NewWorker returns a Worker that delivers the Events hub reads to the
// webhooks of store, signed with key.
func NewWorker(hub *Hub, store oplog.WebhookStore, key ed25519.PrivateKey, opts WorkerOptions) *Worker {
	defaults.Positive(&opts.Timeout, 10*time.Second)
	defaults.Positive(&opts.MaxAttempts, 12)
	defaults.Positive(&opts.MinBackoff, time.Second)
	defaults.Positive(&opts.MaxBackoff, 10*time.Minute)
	defaults.Positive(&opts.Reload, 10*time.Second)
	defaults.Positive(&opts.Buffer, 64)
	if opts.After == nil {
		opts.After = time.After
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Transport == nil {
		opts.Transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	attempts := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "plc_webhook_attempts_total",
		Help: "Webhook delivery attempts, by result (ok: the receiver answered 2xx; failed).",
	}, []string{"result"})
	disabled := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "plc_webhooks_disabled_total",
		Help: "Webhooks disabled because their attempts at one op ran out.",
	})
	if opts.Registry != nil {
		opts.Registry.MustRegister(attempts, disabled)
	}
	id := make([]byte, 12)
	rand.Read(id)
	return &Worker{
		holder:    hex.EncodeToString(id),
		delivered: attempts.WithLabelValues("ok"),
		failed:    attempts.WithLabelValues("failed"),
		disabled:  disabled,
		hub:       hub,
		store:     store,
		key:       key,
		opts:      opts,
		client: &http.Client{
			Transport:     opts.Transport,
			Timeout:       opts.Timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		logger: cmp.Or(opts.Logger, slog.New(slog.DiscardHandler)),
	}
}

// Run delivers until ctx ends, then waits for the deliveries in progress
// to stop. Of the workers sharing a database, only the one that holds the
// delivery lease delivers; the others take it over when it expires.
func (w *Worker) Run(ctx context.Context) {
	type running struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	active := map[int64]*running{}
	var wg sync.WaitGroup
	stopAll := func() {
		for id, r := range active {
			r.cancel()
			delete(active, id)
		}
		wg.Wait()
	}
	defer func() {
		stopAll()
		rctx, cancel := context.WithTimeout(context.Background(), w.opts.Timeout)
		defer cancel()
		if err := w.store.ReleaseWebhooks(rctx, w.holder); err != nil {
			w.logger.Warn("webhooks: releasing the delivery lease", "err", err)
		}
	}()
	leased := false
	for {
		held, err := w.store.LeaseWebhooks(ctx, w.holder, w.opts.Now(), 3*w.opts.Reload)
		if err != nil && ctx.Err() == nil {
			w.logger.Error("webhooks: renewing the delivery lease", "err", err)
		}
		if held != leased && ctx.Err() == nil {
			w.logger.Info("webhooks: delivery lease", "held", held)
		}
		leased = held
		if !held {
			// Another process delivers (or the lease could not be
			// renewed, and another may take it over).
			stopAll()
			select {
			case <-ctx.Done():
				return
			case <-w.opts.After(w.opts.Reload):
			}
			continue
		}
		hooks, err := w.store.Webhooks(ctx)
		if err != nil && ctx.Err() == nil {
			w.logger.Error("webhooks: reading the registered webhooks", "err", err)
		}
		if err == nil {
			seen := map[int64]bool{}
			for _, h := range hooks {
				if h.Disabled {
					continue
				}
				seen[h.ID] = true
				if r, ok := active[h.ID]; ok {
					select {
					case <-r.done: // it stopped (disabled, or removed): start again
					default:
						continue
					}
				}
				hctx, cancel := context.WithCancel(ctx)
				r := &running{cancel: cancel, done: make(chan struct{})}
				active[h.ID] = r
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer close(r.done)
					w.deliverAll(hctx, h)
				}()
			}
			for id, r := range active {
				if !seen[id] {
					r.cancel()
					delete(active, id)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-w.opts.After(w.opts.Reload):
		}
	}
}

// deliverAll delivers the Events of h's DID after its cursor, in order,
// until ctx ends or h is disabled or removed.
func (w *Worker) deliverAll(ctx context.Context, h oplog.Webhook) {
	if err := CheckURL(h.URL); err != nil {
		w.logger.Error("webhooks: not delivering", "webhook", h.ID, "err", err)
		return
	}
	for ctx.Err() == nil {
		wt, err := w.hub.Watch(ctx, []string{h.DID}, h.Cursor, w.opts.Buffer)
		if errors.Is(err, ErrBacklog) {
			if w.deliverBacklog(ctx, &h) {
				return
			}
			continue
		}
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, ErrClosed) {
				w.logger.Error("webhooks: reading ops", "webhook", h.ID, "did", h.DID, "cursor", h.Cursor, "err", err)
			}
			if !w.wait(ctx, w.opts.Reload) {
				return
			}
			continue
		}
		stop := w.deliverWatch(ctx, wt, &h)
		wt.Close()
		if stop {
			return
		}
	}
}

// deliverWatch delivers wt's Events; true when h is done (disabled,
// removed, or ctx ended), false to watch again from h's cursor.
func (w *Worker) deliverWatch(ctx context.Context, wt *Watch, h *oplog.Webhook) bool {
	for {
		ev, err := wt.Next(ctx)
		if err != nil {
			// Too slow: read what it missed from the store, from the cursor.
			return !errors.Is(err, ErrTooSlow)
		}
		if w.deliver(ctx, h, ev) {
			return true
		}
	}
}

// deliverBacklog delivers, from the store, the first MaxBacklog Events
// after h's cursor: more than a Watch replays (a receiver down for long, a
// busy DID). True when h is done.
func (w *Worker) deliverBacklog(ctx context.Context, h *oplog.Webhook) bool {
	ops, err := w.hub.replayOps(ctx, h.DID)
	var evs []Event
	if err == nil {
		evs, err = describe(ops, h.Cursor, math.MaxInt64)
	}
	if err != nil {
		if ctx.Err() == nil {
			w.logger.Error("webhooks: reading ops", "webhook", h.ID, "did", h.DID, "cursor", h.Cursor, "err", err)
		}
		return !w.wait(ctx, w.opts.Reload)
	}
	for _, ev := range evs[:min(len(evs), w.hub.opts.MaxBacklog)] {
		if w.deliver(ctx, h, ev) {
			return true
		}
	}
	return false
}

// deliver delivers ev to h, retrying with backoff until the receiver takes
// it (the cursor moves past it) or the attempts run out (h is disabled).
// True when h is done: disabled, removed, or ctx ended.
func (w *Worker) deliver(ctx context.Context, h *oplog.Webhook, ev Event) bool {
	for {
		err := w.post(ctx, h, ev)
		if ctx.Err() != nil {
			return true
		}
		if err == nil {
			w.delivered.Inc()
			h.Cursor, h.Failures, h.LastError = ev.Seq, 0, ""
			return w.save(ctx, h)
		}
		w.failed.Inc()
		h.Failures++
		h.LastError = err.Error()
		if h.Failures >= w.opts.MaxAttempts {
			w.disabled.Inc()
			h.Disabled = true
			w.logger.Error("webhooks: attempts ran out, webhook disabled (plc watch enable resumes it)",
				"webhook", h.ID, "did", h.DID, "seq", ev.Seq, "attempts", h.Failures, "err", err)
			w.save(ctx, h)
			return true
		}
		w.logger.Warn("webhooks: delivery failed", "webhook", h.ID, "did", h.DID, "seq", ev.Seq, "attempt", h.Failures, "err", err)
		if w.save(ctx, h) || !w.wait(ctx, w.backoff(h.Failures)) {
			return true
		}
	}
}

// save stores h's delivery state; true when h was removed meanwhile.
func (w *Worker) save(ctx context.Context, h *oplog.Webhook) (removed bool) {
	err := w.store.SaveWebhook(ctx, h.ID, h.Cursor, h.Failures, h.Disabled, h.LastError)
	if errors.Is(err, oplog.ErrNotFound) {
		return true
	}
	if err != nil && ctx.Err() == nil {
		// Delivered again after a restart, never skipped.
		w.logger.Error("webhooks: saving the cursor", "webhook", h.ID, "cursor", h.Cursor, "err", err)
	}
	return false
}

// backoff is the wait after the n-th failed attempt in a row.
func (w *Worker) backoff(n int) time.Duration {
	d := w.opts.MinBackoff
	for i := 1; i < n && d < w.opts.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, w.opts.MaxBackoff)
}

func (w *Worker) wait(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-w.opts.After(d):
		return true
	}
}

// maxAnswer bounds what is read of a receiver's answer.
const maxAnswer = 64 << 10

// post delivers ev to h once.
func (w *Worker) post(ctx context.Context, h *oplog.Webhook, ev Event) error {
	ctx, cancel := context.WithTimeout(ctx, w.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(ev.JSON))
	if err != nil {
		return err
	}
	ts, sig := Sign(w.key, w.opts.Now(), ev.JSON)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "plc-webhook")
	req.Header.Set(TimestampHeader, ts)
	req.Header.Set(SignatureHeader, sig)
	req.Header.Set("PLC-Webhook-ID", strconv.FormatInt(h.ID, 10))
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswer))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("receiver answered %s", resp.Status)
	}
	return nil
}
