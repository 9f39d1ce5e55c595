package main

import (
	"context"
	"log/slog"
	"net/http"

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
