package main

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/plcdir/plc/api"
	"github.com/plcdir/plc/mirror"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/web"
)

// webUI builds the web UI of the directory cfg configures, over log's
// store, with the transparency log cfg.TLog names and, for plc mirror, the
// mirror m (nil for plc serve). It returns nil with --no-ui.
func webUI(c serveConfig, log *oplog.Log, cfg *api.Config, logger *slog.Logger, m *mirror.Mirror) http.Handler {
	if c.NoUI {
		return nil
	}
	wc := web.Config{Store: log.Store(), Version: version, Logger: logger}
	if cp, ok := cfg.TLog.(web.Checkpoints); ok {
		wc.Checkpoints = cp
	}
	if m != nil {
		wc.Mirror = &web.Mirror{
			Source: m.Source(),
			Status: func(ctx context.Context) web.MirrorStatus {
				st := m.Status(ctx)
				return web.MirrorStatus{
					Upstream: st.Upstream, Mode: string(st.Mode), State: st.State,
					Cursor: st.Cursor, LagSeconds: st.LagSeconds, LagOps: st.LagOps,
				}
			},
		}
	}
	return web.New(wc)
}

// handleIndexInterval is how often the handle index is brought up to the
// log beside a running directory (the search also does it before it reads).
const handleIndexInterval = 5 * time.Second

// indexHandles keeps the handle index up with the log beside the running
// directory: a derived index only the UI's search reads, written outside
// the append transactions so that writes do not pay for it. A database
// upgraded from an earlier plc is filled in first, in the background; the
// directory serves meanwhile. Stopped with ctx, it goes on at the next
// start from where it stopped.
func indexHandles(ctx context.Context, store oplog.Store, logger *slog.Logger) {
	idx, ok := store.(oplog.HandleIndex)
	if !ok {
		return
	}
	behind, err := idx.HandlesBehind(ctx)
	if err != nil {
		logger.Warn("reading how far the handle index is behind failed", "err", err)
	}
	if behind > 0 {
		logger.Info("filling in the handle index", "ops", behind)
		start := time.Now()
		last := start
		n, err := oplog.CatchUpHandles(ctx, idx, 0, func(done int64) {
			if time.Since(last) >= 10*time.Second {
				last = time.Now()
				logger.Info("filling in the handle index", "ops", done, "of", behind)
			}
		})
		switch {
		case ctx.Err() != nil:
			logger.Info("handle index catch-up stopped; it goes on at the next start", "ops", n)
			return
		case err != nil:
			logger.Error("filling in the handle index failed; handle search may miss DIDs", "ops", n, "err", err)
		default:
			logger.Info("handle index filled in", "ops", n, "took", time.Since(start).Round(time.Millisecond).String())
		}
	}
	t := time.NewTicker(handleIndexInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// A read first: an idle log costs no write transaction.
		behind, err := idx.HandlesBehind(ctx)
		if err != nil && ctx.Err() == nil {
			logger.Warn("reading how far the handle index is behind failed; retrying", "err", err)
		}
		if behind == 0 {
			continue
		}
		if _, err := oplog.CatchUpHandles(ctx, idx, 0, nil); err != nil && ctx.Err() == nil {
			logger.Warn("indexing handles failed; retrying", "err", err)
		}
	}
}
