// Package mirror replicates another PLC directory (the upstream) into a
// local log, verifying every op independently: the lines of the upstream's
// export pages, then the events of its live /export/stream, go through
// oplog.Replay (the chain rules only, the upstream's createdAt as
// acceptance time, the seq order, the cursor committed with the ops).
// Whatever the upstream serves that the rules reject, or that contradicts
// what it served before, is kept as a divergence record with the
// upstream's bytes as evidence.
package mirror

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/client"
	"github.com/plcdir/plc/internal/defaults"
	"github.com/plcdir/plc/internal/gcbudget"
	"github.com/plcdir/plc/oplog"
)

// Config configures a Mirror. Upstream and Log are required.
type Config struct {
	// Upstream is the base URL of the directory to mirror.
	Upstream string
	// Log is the local log the upstream's ops are ingested into.
	Log *oplog.Log
	// Client makes the upstream requests (default: a client with
	// client.DefaultTimeout, 60 s).
	Client *http.Client
	// PageSize is the count asked of each export page (default 1000, the
	// reference's maximum).
	PageSize int
	// MaxBody bounds an upstream response (default 32 MiB).
	MaxBody int64
	// MinBackoff and MaxBackoff bound the wait after a failure (defaults
	// 1 s and 1 min); the wait doubles with each failure in a row.
	MinBackoff, MaxBackoff time.Duration
	// PollInterval is the wait between polls of an upstream that has
	// nothing new (a legacy upstream once caught up, an empty one), and the
	// least time between two head checks (see checkHead) (default 5 s).
	PollInterval time.Duration
	// AuditInterval is how often a sample of DIDs is checked against the
	// upstream's audit logs (default 1 min; negative: never).
	AuditInterval time.Duration
	// AuditSample is the number of DIDs checked each time (default 20).
	AuditSample int
	// Progress, if set, is called as Replay's Progress during backfills.
	Progress func(oplog.ImportStats)
	// GCHeadroom, if above 0, is the memory a backfill lets the heap grow
	// by, beyond Go's default, to spare collection work (see
	// internal/gcbudget); it does nothing when GOGC or GOMEMLIMIT is set.
	GCHeadroom int64
	// StreamTimeout bounds the live stream's handshake and the answer to
	// each ping (default 30 s).
	StreamTimeout time.Duration
	// StreamIdle is how long the live stream may send nothing before the
	// mirror pings the upstream and asks its export whether it has ops
	// the stream did not send (default 1 min): see follow.
	StreamIdle time.Duration
	// MaxEvidenceRows and MaxEvidenceBytes cap the divergence records
	// stored, in rows and in bytes (defaults DefaultMaxEvidenceRows and
	// DefaultMaxEvidenceBytes); past the cap, divergences are counted, not
	// stored (see evidence.go).
	MaxEvidenceRows, MaxEvidenceBytes int64
	// DivergencesResponseBytes bounds an answer of GET
	// /_mirror/divergences (default DefaultDivergencesResponseBytes); see
	// Handler.
	DivergencesResponseBytes int
	// Logger receives the mirror's log (default: discard).
	Logger *slog.Logger
	// Registry receives the mirror's metrics (default: none).
	Registry prometheus.Registerer
	// Now is the clock (default time.Now); Wait waits d or until ctx ends
	// (default: a timer).
	Now  func() time.Time
	Wait func(ctx context.Context, d time.Duration) error
	// After returns a channel that receives once d has passed (default
	// time.After): the stream's timeouts, the wait for a turn to list
	// divergences.
	After func(d time.Duration) <-chan time.Time
}

// Mode is how the upstream's export is read.
type Mode string

const (
	ModeUnknown Mode = ""
	ModeSeq     Mode = "seq"    // /export?after=<seq>, then /export/stream
	ModeLegacy  Mode = "legacy" // /export?after=<createdAt>
)

// Mirror replicates one upstream into a log.
type Mirror struct {
	cfg     Config
	up      *client.Client
	log     *oplog.Log
	store   oplog.Store
	source  string
	logger  *slog.Logger
	metrics *metrics

	mu          sync.Mutex
	mode        Mode
	state       string
	upstreamSeq int64 // the latest upstream seq seen (0: none)
	recorded    map[[sha256.Size]byte]bool
	headChecked time.Time // the last head check (see checkHead)

	listing chan struct{} // a slot per divergence listing being written
	ev      evidence

	backfills atomic.Int32 // Backfill calls running
}

// New checks cfg and builds the mirror.
func New(cfg Config) (*Mirror, error) {
	if cfg.Log == nil {
		return nil, errors.New("mirror: Config.Log is nil")
	}
	defaults.Positive(&cfg.PageSize, 1000)
	defaults.Positive(&cfg.MaxBody, client.MaxExportPageBytes)
	defaults.Positive(&cfg.MinBackoff, time.Second)
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(time.Minute, cfg.MinBackoff)
	}
	defaults.Positive(&cfg.PollInterval, 5*time.Second)
	cfg.AuditInterval = cmp.Or(cfg.AuditInterval, time.Minute)
	defaults.Positive(&cfg.AuditSample, 20)
	defaults.Positive(&cfg.MaxEvidenceRows, DefaultMaxEvidenceRows)
	defaults.Positive(&cfg.MaxEvidenceBytes, DefaultMaxEvidenceBytes)
	defaults.Positive(&cfg.DivergencesResponseBytes, DefaultDivergencesResponseBytes)
	cfg.Logger = cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Wait == nil {
		cfg.Wait = defaults.Sleep
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	defaults.Positive(&cfg.StreamTimeout, 30*time.Second)
	defaults.Positive(&cfg.StreamIdle, time.Minute)
	up, err := client.New(cfg.Upstream, cfg.Client)
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	base := up.Base()
	m := &Mirror{
		cfg: cfg, up: up.WithMaxBody(cfg.MaxBody), log: cfg.Log, store: cfg.Log.Store(),
		source:   "upstream:" + base.String(),
		logger:   cfg.Logger,
		metrics:  newMetrics(cfg.Registry),
		state:    "starting",
		recorded: map[[sha256.Size]byte]bool{},
		listing:  make(chan struct{}, divergencesConcurrency),
	}
	return m, nil
}

// Source is the name of the mirror's cursor and records in the store.
func (m *Mirror) Source() string { return m.source }

// Run mirrors until ctx ends: backfill, then follow, and after a failure
// wait (backing off) and go on from the committed cursor. It returns nil
// when ctx ends.
func (m *Mirror) Run(ctx context.Context) error {
	m.startEvidence(ctx)
	if m.cfg.AuditInterval > 0 {
		actx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			m.auditLoop(actx)
		}()
		defer func() { stop(); <-done }() // no store access after Run returns
	}
	backoff := m.cfg.MinBackoff
	for ctx.Err() == nil {
		before := m.committedSeq(ctx)
		err := m.Step(ctx)
		if ctx.Err() != nil {
			break
		}
		if err == nil && m.committedSeq(ctx) == before {
			// The stream ended at once, without applying anything (a
			// cursor ahead of the upstream's head, a hostile upstream):
			// not asked again at once, or this would spin.
			err = errors.New("the stream ended without applying anything")
		}
		if err == nil {
			backoff = m.cfg.MinBackoff
			continue
		}
		if errors.Is(err, errCaughtUp) {
			backoff = m.cfg.MinBackoff
			m.setState("poll")
			_ = m.cfg.Wait(ctx, m.cfg.PollInterval)
			continue
		}
		m.metrics.upstreamErrors.Inc()
		m.logger.Warn("mirror: upstream failed, backing off", "err", err, "wait", backoff)
		m.setState("backoff")
		_ = m.cfg.Wait(ctx, backoff)
		backoff = min(2*backoff, m.cfg.MaxBackoff)
	}
	return nil
}

// committedSeq is the source's committed cursor seq (-1 when it cannot be
// read).
func (m *Mirror) committedSeq(ctx context.Context) int64 {
	c, err := m.store.Cursor(ctx, m.source)
	if err != nil {
		return -1
	}
	return c.Seq
}

// errCaughtUp: a legacy upstream (or an empty one) has nothing more for
// now; Run polls again after PollInterval.
var errCaughtUp = errors.New("caught up")

// Sync detects the upstream's mode if not known and backfills up to the
// upstream's head once (no live stream): a bootstrap, or a catch-up run
// from cron.
func (m *Mirror) Sync(ctx context.Context) error {
	m.startEvidence(ctx)
	if err := m.detect(ctx); err != nil {
		if errors.Is(err, errCaughtUp) {
			return nil
		}
		return err
	}
	err := m.Backfill(ctx)
	m.noteResponse(ctx, err)
	return err
}

// detect learns the upstream's mode unless it is known; errCaughtUp when
// the upstream's export is empty.
func (m *Mirror) detect(ctx context.Context) error {
	if m.Mode() != ModeUnknown {
		return nil
	}
	// The first op of the export says: with a seq, seq mode.
	body, err := m.up.Export(ctx, "0", 1)
	lines := plc.ExportLines(body)
	if err == nil && len(lines) == 0 {
		return errCaughtUp
	}
	var first plc.LineHead
	if err == nil {
		if first, err = plc.ReadLineHead(lines[0]); err != nil {
			err = badResponse(body, "GET /export: the first line is not an export line: %v", err)
		}
	}
	if err != nil {
		m.noteResponse(ctx, err)
		return err
	}
	mode := ModeLegacy
	if first.Seq != 0 {
		mode = ModeSeq
	}
	m.mu.Lock()
	m.mode = mode
	m.mu.Unlock()
	m.logger.Info("mirror: upstream export mode", "upstream", m.up.String(), "mode", mode)
	return nil
}

// Step does one round: detect the upstream's mode if not known, backfill
// by pages up to the upstream's head, then (seq mode) follow the live
// stream until it ends. It returns errCaughtUp when a poll found the
// upstream's end, and the error that ended the round otherwise (nil when
// the stream ended in a way that calls for paging again).
func (m *Mirror) Step(ctx context.Context) error {
	if err := m.detect(ctx); err != nil {
		return err
	}
	mode := m.Mode()
	if err := m.Backfill(ctx); err != nil {
		m.noteResponse(ctx, err)
		return err
	}
	if mode == ModeLegacy {
		return errCaughtUp
	}
	err := m.follow(ctx)
	m.noteResponse(ctx, err)
	return err
}

// Mode returns the upstream's export mode (ModeUnknown until detected).
func (m *Mirror) Mode() Mode {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mode
}

func (m *Mirror) setState(s string) {
	m.mu.Lock()
	m.state = s
	m.mu.Unlock()
}

func (m *Mirror) sawUpstreamSeq(seq int64) {
	m.mu.Lock()
	m.upstreamSeq = max(m.upstreamSeq, seq)
	m.mu.Unlock()
}

// Backfill pages through the upstream's export from the committed cursor
// to its end, through oplog.Replay. In seq mode, when the upstream has
// nothing after the cursor, it checks (at most once per PollInterval) that
// the upstream still serves the op at the cursor (see checkHead).
func (m *Mirror) Backfill(ctx context.Context) error {
	m.setState("backfill")
	m.backfills.Add(1)
	defer m.backfills.Add(-1)
	defer gcbudget.Start(m.cfg.GCHeadroom)()
	var (
		src oplog.LineSource
		sr  *seqPages
	)
	switch m.Mode() {
	case ModeSeq:
		c, err := m.store.Cursor(ctx, m.source)
		if err != nil {
			return err
		}
		fctx, stop := context.WithCancel(ctx)
		sr = newSeqPages(fctx, m, c.Seq, m.cfg.PageSize)
		defer func() { stop(); <-sr.done }() // no upstream or store access after Backfill returns
		src = sr
	case ModeLegacy:
		after, boundary, err := m.legacyStart(ctx)
		if err != nil {
			return err
		}
		src = &legacyPages{m: m, after: after, boundary: boundary, count: m.cfg.PageSize}
	default:
		return errors.New("mirror: the upstream's mode is not known")
	}
	_, err := oplog.Replay(ctx, m.log, src, oplog.ImportOptions{
		Source: m.source, Progress: m.cfg.Progress,
		Ingest: m.ingest, // the evidence cap, the metrics, backing off from junk
	})
	m.updateCursorMetrics(ctx)
	if err != nil {
		return fmt.Errorf("backfill: %w", err)
	}
	if sr != nil {
		<-sr.done // Replay read to the end: the fetcher has returned
		if sr.lastEmpty {
			if err := m.checkHead(ctx); err != nil {
				return fmt.Errorf("checking the upstream's head: %w", err)
			}
		}
	}
	return nil
}

// Backfilling says whether the mirror is paging through the upstream's
// export (work that can wait for it, such as the handle index, should).
func (m *Mirror) Backfilling() bool { return m.backfills.Load() > 0 }

// legacyStart is where a legacy backfill starts: the createdAt of the
// log's latest op, and the CIDs of the ops at that millisecond.
func (m *Mirror) legacyStart(ctx context.Context) (time.Time, map[string]bool, error) {
	boundary := map[string]bool{}
	seq, err := m.store.LatestSeq(ctx)
	if err != nil || seq == 0 {
		return time.Time{}, boundary, err
	}
	last, err := m.store.Op(ctx, seq)
	if err != nil {
		return time.Time{}, nil, err
	}
	at := last.CreatedAt
	for after := at.Add(-time.Millisecond); ; {
		es, err := m.store.ExportByTime(ctx, after, 1000)
		if err != nil {
			return time.Time{}, nil, err
		}
		for _, e := range es {
			if e.CreatedAt.Equal(at) {
				boundary[e.CID] = true
			}
		}
		if len(es) < 1000 {
			break
		}
		after = es[len(es)-1].CreatedAt
		if after.After(at) {
			break
		}
	}
	return at, boundary, nil
}

// noteResponse records a bad upstream response (a *client.StatusError) as
// a divergence, with what the upstream sent as evidence. Such a page is not
// used, and is asked for again later.
func (m *Mirror) noteResponse(ctx context.Context, err error) {
	if se, ok := errors.AsType[*client.StatusError](err); ok {
		m.record(ctx, Divergence{Kind: oplog.KindBadResponse, Detail: responseDetail(se), Evidence: se.Body})
	}
}

// badResponse is an answer of the upstream that the mirror itself finds
// unusable; the message names the request.
func badResponse(body []byte, format string, args ...any) error {
	return &client.StatusError{Message: fmt.Sprintf(format, args...), Body: body, Err: client.ErrMalformed}
}

// responseDetail is the divergence detail of a bad response: the request's
// path and its status (not the upstream's message, which is in the
// evidence: the same status is the same detail), or what is wrong with
// the body.
func responseDetail(se *client.StatusError) string {
	if se.URL == "" {
		return se.Message
	}
	path := se.URL
	if u, err := url.Parse(se.URL); err == nil {
		path = u.Path
	}
	switch {
	case se.Redirect():
		return fmt.Sprintf("GET %s: status %d, %s", path, se.Status, se.Message)
	case se.Status != 0:
		return fmt.Sprintf("GET %s: status %d", path, se.Status)
	}
	return fmt.Sprintf("GET %s: %s", path, se.Message)
}

func (m *Mirror) updateCursorMetrics(ctx context.Context) {
	c, err := m.store.Cursor(ctx, m.source)
	if err == nil {
		m.metrics.cursor.Set(float64(c.Seq))
	}
}

// Status is what /_health tells of the mirror.
type Status struct {
	Upstream string
	Mode     Mode
	State    string
	// Cursor is the last upstream seq applied (seq mode).
	Cursor int64
	// LagSeconds is how far the log's latest op is behind the clock while
	// backfilling (0 when following the live stream).
	LagSeconds float64
	// LagOps is how many upstream seqs seen are not applied yet (-1: not
	// known).
	LagOps int64
	// Evidence is the state of the stored divergence records.
	Evidence EvidenceStatus
}

// Status reports the mirror's state.
func (m *Mirror) Status(ctx context.Context) Status {
	m.mu.Lock()
	st := Status{Upstream: m.up.String(), Mode: m.mode, State: m.state, LagOps: -1}
	upSeq := m.upstreamSeq
	m.mu.Unlock()
	if c, err := m.store.Cursor(ctx, m.source); err == nil {
		st.Cursor = c.Seq
		if upSeq > 0 {
			st.LagOps = max(0, upSeq-c.Seq)
		}
	}
	if st.State != "stream" && st.State != "poll" {
		if seq, err := m.store.LatestSeq(ctx); err == nil && seq > 0 {
			if e, err := m.store.Op(ctx, seq); err == nil {
				st.LagSeconds = max(0, m.cfg.Now().Sub(e.CreatedAt).Seconds())
			}
		}
	}
	m.metrics.lag.Set(st.LagSeconds)
	st.Evidence = m.evidenceStatus()
	return st
}

// Health is Status as /_health's extra fields.
func (m *Mirror) Health(ctx context.Context) map[string]any {
	st := m.Status(ctx)
	h := map[string]any{
		"upstream":   st.Upstream,
		"mode":       string(st.Mode),
		"state":      st.State,
		"cursor":     st.Cursor,
		"lagSeconds": st.LagSeconds,
	}
	if st.LagOps >= 0 {
		h["lagOps"] = st.LagOps
	}
	ev := st.Evidence
	h["evidence"] = map[string]any{"rows": ev.Rows, "bytes": ev.Bytes, "maxRows": ev.MaxRows, "maxBytes": ev.MaxBytes,
		"dropped": ev.Dropped, "full": ev.Full}
	return h
}

// auditLoop checks a sample of DIDs against the upstream's audit logs
// every AuditInterval.
func (m *Mirror) auditLoop(ctx context.Context) {
	for m.cfg.Wait(ctx, m.cfg.AuditInterval) == nil {
		if err := m.AuditSample(ctx, m.cfg.AuditSample); err != nil && ctx.Err() == nil {
			m.logger.Warn("mirror: audit sample failed", "err", err)
		}
	}
}

// AuditSample checks n DIDs, chosen at random among the log's ops, against
// the upstream's audit logs (see CheckDID).
func (m *Mirror) AuditSample(ctx context.Context, n int) error {
	latest, err := m.store.LatestSeq(ctx)
	if err != nil || latest == 0 {
		return err
	}
	seen := map[string]bool{}
	for range n {
		e, err := m.store.Op(ctx, 1+rand.Int64N(latest))
		if err != nil {
			return err
		}
		if seen[e.DID] {
			continue
		}
		seen[e.DID] = true
		if err := m.CheckDID(ctx, e.DID); err != nil {
			return err
		}
	}
	return nil
}
