package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/plcdir/plc/api"
	"github.com/plcdir/plc/bundle"
	"github.com/plcdir/plc/internal/cli"
	"github.com/plcdir/plc/internal/gcbudget"
	"github.com/plcdir/plc/mirror"
	"github.com/plcdir/plc/oplog"
)

func runMirror(ctx context.Context, e env, args []string) int {
	var (
		c        serveConfig
		upstream string
		forward  bool
		audit    time.Duration
		poll     time.Duration
		page     int
		once     bool
		evRows   int
		evBytes  int
		sTimeout time.Duration
		sIdle    time.Duration
	)
	fs := cli.NewFlagSet("mirror", "plc mirror --upstream URL [flags]",
		`Replicates another directory: pages through its export, then follows
its /export/stream, verifying every op with the chain rules; serves the
same read API (including /export and /export/stream, so mirrors can
chain); records what the upstream serves that the rules reject, or that
contradicts what it served before, at GET /_mirror/divergences. POST /:did
answers 405 unless --forward-writes. --db and --listen are plc serve's,
with the same defaults.

With --bootstrap DIR|URL (a bundle folder of the upstream's log, see plc
export --bundles) and --bootstrap-vkey (the upstream's checkpoint key), it
first imports the bundles, each once it is checked against their signed
checkpoint, then goes on from the upstream's export after their last seq.`, e)
	f := cli.NewFlags(fs, e)
	f.Str(&upstream, "upstream", "PLC_UPSTREAM", "", "base URL of the directory to mirror (required)")
	serverFlags(f, &c)
	f.Bool(&forward, "forward-writes", "PLC_FORWARD_WRITES", "proxy POST /:did to the upstream instead of answering 405")
	f.Duration(&audit, "audit-interval", "PLC_AUDIT_INTERVAL", time.Minute, "how often a sample of DIDs is checked against the upstream's audit logs (0: never)")
	f.Duration(&poll, "poll-interval", "PLC_MIRROR_POLL_INTERVAL", 5*time.Second, "wait between polls of an upstream that has nothing new, and between checks that it still serves the mirror's latest op")
	f.Bool(&once, "once", "PLC_MIRROR_ONCE", "backfill up to the upstream's head, then exit (no live stream)")
	f.Int(&page, "page-size", "PLC_PAGE_SIZE", 1000, "ops asked for per export page")
	f.Duration(&sTimeout, "stream-timeout", "PLC_MIRROR_STREAM_TIMEOUT", 30*time.Second, "bound on the upstream stream's WebSocket handshake and on the answer to a ping")
	f.Duration(&sIdle, "stream-idle", "PLC_MIRROR_STREAM_IDLE", time.Minute, "silence on the upstream stream after which the mirror pings it and checks the export for ops it missed")
	f.Int(&evRows, "max-evidence-rows", "PLC_MIRROR_MAX_EVIDENCE_ROWS", mirror.DefaultMaxEvidenceRows, "divergence records stored at most; past the cap (rows or bytes) divergences are counted, not stored")
	f.Int(&evBytes, "max-evidence-bytes", "PLC_MIRROR_MAX_EVIDENCE_BYTES", mirror.DefaultMaxEvidenceBytes, "bytes of divergence records (evidence, reason, DID, CID) stored at most")
	bootSrc, bootCheck := bootstrapFlags(f)
	if code, done := f.Parse("plc mirror", args); done {
		return code
	}
	if fs.NArg() > 0 {
		return e.Failf(exitUsage, "plc mirror: unexpected argument %q", fs.Arg(0))
	}
	if upstream == "" {
		return e.Failf(exitUsage, "plc mirror: --upstream is required")
	}
	up, err := url.Parse(strings.TrimRight(upstream, "/"))
	if err != nil || (up.Scheme != "http" && up.Scheme != "https") || up.Host == "" {
		return e.Failf(exitUsage, "plc mirror: --upstream %q: want an http:// or https:// URL", upstream)
	}
	if up.RawQuery != "" || up.Fragment != "" {
		return e.Failf(exitUsage, "plc mirror: --upstream %q: want a URL without query or fragment", upstream)
	}
	if page < 1 || page > 1000 {
		return e.Failf(exitUsage, "plc mirror: --page-size must be 1 to 1000")
	}
	if evRows < 1 || evBytes < 1 {
		return e.Failf(exitUsage, "plc mirror: --max-evidence-rows and --max-evidence-bytes must be positive")
	}
	if sTimeout <= 0 || sIdle <= 0 {
		return e.Failf(exitUsage, "plc mirror: --stream-timeout and --stream-idle must be positive durations (30s, 1m)")
	}
	if audit < 0 {
		return e.Failf(exitUsage, "plc mirror: --audit-interval must not be negative")
	}
	if poll <= 0 {
		return e.Failf(exitUsage, "plc mirror: --poll-interval %v: want a positive duration (5s, 1m)", poll)
	}
	if err := c.validate(); err != nil {
		return e.Failf(exitUsage, "plc mirror: %v", err)
	}
	var bootOpts bundle.Options
	if *bootSrc != "" {
		var err error
		if bootOpts, err = bootCheck.options("--bootstrap-"); err != nil {
			return e.Failf(exitUsage, "plc mirror: %v", err)
		}
		if _, err := bundleFetcher(*bootSrc); err != nil {
			return e.Failf(exitUsage, "plc mirror: --bootstrap: %v", err)
		}
	}
	logger, _ := newLogger(c.LogFormat, c.LogLevel, e.Stderr)
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var syncErr error
	c.NoDIDRateLimit = true // ops come from the upstream, judged by the chain rules only
	audit = cmp.Or(audit, -1)
	var bootstrapping atomic.Bool
	hook := func(log *oplog.Log, reg *prometheus.Registry, cfg *api.Config) (directoryRole, error) {
		p := &progress{w: e.Stderr, tty: isTerminal(e.Stderr), now: time.Now, cmd: "plc mirror: backfill"}
		p.start = time.Now()
		p.last = p.start
		m, err := mirror.New(mirror.Config{
			Upstream:         upstream,
			Log:              log,
			PageSize:         page,
			AuditInterval:    audit,
			PollInterval:     poll,
			MaxEvidenceRows:  int64(evRows),
			MaxEvidenceBytes: int64(evBytes),
			StreamTimeout:    sTimeout,
			StreamIdle:       sIdle,
			Logger:           logger,
			Registry:         reg,
			Progress:         p.batch,
			GCHeadroom:       gcbudget.DefaultHeadroom,
		})
		if err != nil {
			return directoryRole{}, err
		}
		cfg.ReadOnly = true
		if forward {
			proxy := httputil.NewSingleHostReverseProxy(up)
			proxy.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
				logger.Warn("mirror: forwarding a write failed", "err", err)
				w.Header().Set("Content-Type", "application/json; charset=utf-8")
				w.WriteHeader(http.StatusBadGateway)
				w.Write([]byte(`{"message":"The upstream directory could not be reached"}`))
			}
			cfg.Forward = proxy
		}
		cfg.Health = func() map[string]any {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			return m.Health(ctx)
		}
		cfg.Extra = m.Handler()
		cfg.UI = webUI(c, log, cfg, logger, m)
		logger.Info("mirroring", "upstream", up.Redacted(), "pollInterval", poll.String())
		run := func(ctx context.Context) {
			defer p.clear()
			if *bootSrc != "" {
				bootstrapping.Store(true)
				stopBudget := gcbudget.Start(gcbudget.DefaultHeadroom)
				syncErr = bootstrap(ctx, *bootSrc, bootOpts, log, m.Source(), p, logger)
				stopBudget()
				bootstrapping.Store(false)
				if syncErr != nil {
					stop()
					return
				}
			}
			if !once {
				m.Run(ctx)
				return
			}
			syncErr = m.Sync(ctx)
			if syncErr == nil {
				st := m.Status(ctx)
				fmt.Fprintf(e.Stdout, "caught up with %s: cursor %d\n", up.Redacted(), st.Cursor)
			}
			stop()
		}
		bulk := func() bool { return bootstrapping.Load() || m.Backfilling() }
		return directoryRole{Run: run, Bulk: bulk}, nil
	}
	if err := serveWith(ctx, c, logger, hook); err != nil {
		logger.Error("plc mirror stopped", "err", err)
		return e.Failf(exitFailure, "plc mirror: %v", err)
	}
	if errors.Is(syncErr, bundle.ErrRefused) {
		return e.Failf(exitFailure, "plc mirror: %v", syncErr)
	}
	if syncErr != nil {
		return e.Failf(exitFailure, "plc mirror: %v; run it again to go on from the committed cursor", syncErr)
	}
	return exitOK
}
