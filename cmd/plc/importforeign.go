package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/plcdir/plc/bundle"
	"github.com/plcdir/plc/oplog"
)

// foreignSource is an input in a foreign bulk format, read by package
// bundle: a plcbundle V1 repository or allegedly's weekly files.
type foreignSource interface {
	bundle.ForeignSource
	Close() error
}

// importForeign imports c.Input when it is in a foreign bulk format — a
// folder with a plcbundle index (plc_bundles.json), a weekly file
// (<week start>.jsonl.gz) or a folder of them — and reports whether it
// was one (if not, the caller imports it as an export).
func importForeign(ctx context.Context, c importConfig, e env) (code int, handled bool) {
	if c.Input == "-" {
		return 0, false
	}
	fi, err := os.Stat(c.Input)
	if err != nil {
		return 0, false // the export import says what is wrong
	}
	var (
		format string
		open   func() (foreignSource, string, int64, error) // the source, its name, its lines (0: unknown)
	)
	switch {
	case fi.IsDir() && foreignPathExists(filepath.Join(c.Input, bundle.PlcbundleIndexFile)):
		format = "plcbundle repository"
		open = func() (foreignSource, string, int64, error) {
			r, err := bundle.OpenPlcbundle(c.Input)
			if err != nil {
				return nil, "", 0, err
			}
			return r, r.Source(), r.Lines(), nil
		}
	case fi.IsDir():
		paths, err := bundle.WeeklyFiles(c.Input)
		if err != nil || len(paths) == 0 {
			return 0, false
		}
		format = fmt.Sprintf("%d weekly files", len(paths))
		open = func() (foreignSource, string, int64, error) { return openWeeklyFiles(paths) }
	case bundle.IsWeeklyFile(filepath.Base(c.Input)):
		format = "weekly file"
		open = func() (foreignSource, string, int64, error) { return openWeeklyFiles([]string{c.Input}) }
	default:
		return 0, false
	}
	return runImportForeign(ctx, c, e, format, open), true
}

func openWeeklyFiles(paths []string) (foreignSource, string, int64, error) {
	r, err := bundle.OpenWeekly(paths)
	if err != nil {
		return nil, "", 0, err
	}
	name, err := r.Source()
	if err != nil {
		return nil, "", 0, err
	}
	return r, name, 0, nil
}

func foreignPathExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// runImportForeign replays a foreign source into the log through
// oplog.Replay, after the lines its cursor says an earlier run did.
func runImportForeign(ctx context.Context, c importConfig, e env, format string, open func() (foreignSource, string, int64, error)) int {
	if c.now == nil {
		c.now = time.Now
	}
	src, name, total, err := open()
	if err != nil {
		return e.Failf(exitUsage, "plc import: %s: %v", c.Input, err)
	}
	defer src.Close()
	if c.Source != "" {
		name = c.Source
	}

	store, _, err := oplog.Open(ctx, c.DB)
	if err != nil {
		return e.Failf(exitFailure, "plc import: %v", err)
	}
	defer store.Close()
	log := oplog.NewLog(store, oplog.Options{NoRateLimit: true, Now: c.now, MaxClockSkew: c.MaxClockSkew})
	defer log.Close()

	fmt.Fprintf(e.Stderr, "plc import: %s: %s, source %s\n", c.Input, format, name)
	var read atomic.Int64
	p := &progress{w: e.Stderr, tty: isTerminal(e.Stderr), now: c.now, size: total, read: &read, cmd: "plc import"}
	p.start = c.now()
	p.last = p.start
	done, st, err := bundle.ReplayForeign(ctx, log, src, oplog.ImportOptions{
		Source:    name,
		BatchSize: c.Batch,
		Workers:   c.Workers,
		Rejected:  p.rejected,
		Progress: func(st oplog.ImportStats) {
			read.Store(src.Skipped() + st.Lines)
			p.batch(st)
			if c.afterBatch != nil {
				c.afterBatch(st)
			}
		},
	})
	p.clear()
	verb := "done"
	if err != nil {
		verb = "stopped"
	}
	elapsed := c.now().Sub(p.start)
	fmt.Fprintf(e.Stdout, "%s: %d lines: %d imported, %d rejected, %d skipped (already imported); %s ops/s, %s\n",
		verb, done+st.Lines, st.Imported, st.Rejected, done+st.Skipped, rate(st.Imported, elapsed), elapsed.Round(time.Millisecond))
	if st.Rejected > 0 {
		fmt.Fprintf(e.Stdout, "%d lines rejected: not applied; reported above and kept in the database (table rejected, source %s)\n", st.Rejected, name)
	}
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, bundle.ErrPlcbundleRefused):
		return e.Failf(exitUsage, "plc import: %s: refused: %v\nthe lines before it are imported; nothing of it or after it is", c.Input, err)
	case errors.Is(err, oplog.ErrInput):
		return e.Failf(exitUsage, "plc import: %s: %v", c.Input, err)
	case ctx.Err() != nil:
		return e.Failf(exitFailure, "plc import: interrupted; run the same command again to resume")
	}
	return e.Failf(exitFailure, "plc import: %v; run the same command again to resume", err)
}
