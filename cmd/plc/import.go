package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/plcdir/plc/internal/cli"
	"github.com/plcdir/plc/internal/gcbudget"
	"github.com/plcdir/plc/oplog"
)

// importConfig is everything `plc import` needs.
type importConfig struct {
	// DB is a postgres:// URL or the path of an SQLite file.
	DB string
	// Input is the export file, or "-" for standard input.
	Input string
	// Source names the input for resuming (empty: named after its first
	// line; see oplog.ImportOptions.Source).
	Source string
	// Batch is the number of lines per transaction.
	Batch int
	// Workers is the number of goroutines parsing and verifying.
	Workers int
	// MaxClockSkew: see oplog.Options.MaxClockSkew.
	MaxClockSkew time.Duration

	// For tests: the clock (default time.Now) and a hook called after each
	// batch has committed.
	now        func() time.Time
	afterBatch func(oplog.ImportStats)
}

func (c *importConfig) validate() error {
	if c.DB == "" {
		return errors.New("--db must not be empty")
	}
	if c.Batch < 1 {
		return errors.New("--batch must be at least 1")
	}
	if c.Workers < 1 {
		return errors.New("--workers must be at least 1")
	}
	return validateClockSkew(c.MaxClockSkew)
}

func runImport(ctx context.Context, e env, args []string) int {
	var c importConfig
	fs := cli.NewFlagSet("import", "plc import [flags] FILE|-|DIR",
		`Imports an export into the log: the lines of a seq-mode export
({"type":"sequenced_op", did, operation, cid, createdAt, seq}) or of a
legacy export ({did, operation, cid, nullified, createdAt}), from FILE or
from standard input (-), plain, gzip or zstd; or a folder of bundles
(DIR, see plc export --bundles; --vkey required). Every op is verified and
judged by the chain rules at its own createdAt; invalid lines are not
applied, but reported ("rejected line <n> <did> <cid>: <reason>") and kept
in the database's rejected table, and the import goes on.

The position is committed with each batch of ops: after an interruption,
run the same command again to resume; nothing is applied twice.

FILE may also be a foreign bulk format: a plcbundle V1 repository (a
folder with plc_bundles.json; its hash chain is checked), or allegedly's
weekly files (<week start>.jsonl.gz, or a folder of them).

Exit status: 0 when the whole input is done (even with rejected lines), 1
on a database error or an interruption, 2 on usage or input errors.`, e)
	f := cli.NewFlags(fs, e)
	f.DB(&c.DB)
	f.Str(&c.Source, "source", "PLC_IMPORT_SOURCE", "", "name of the input, for resuming (default: named after its first line)")
	f.Int(&c.Batch, "batch", "PLC_IMPORT_BATCH", oplog.DefaultImportBatch, "lines per transaction")
	f.Int(&c.Workers, "workers", "PLC_WORKERS", oplog.DefaultImportWorkers(), "goroutines parsing lines and checking signatures (default: one per core, and one more)")
	clockSkewFlag(f, &c.MaxClockSkew)
	bf := bundleImportFlags(f)
	if code, done := f.Parse("plc import", args); done {
		return code
	}
	if fs.NArg() != 1 {
		return e.Failf(exitUsage, "plc import: want exactly one FILE (or - for standard input)\nUsage: plc import [flags] FILE|-|DIR")
	}
	c.Input = fs.Arg(0)
	if err := c.validate(); err != nil {
		return e.Failf(exitUsage, "plc import: %v", err)
	}
	// The import allocates fast and keeps little: let the heap grow more
	// between collections, within a bounded headroom.
	defer gcbudget.Start(gcbudget.DefaultHeadroom)()
	if isBundleFolder(c.Input) {
		return importBundles(ctx, c, bf, e)
	}
	if code, ok := importForeign(ctx, c, e); ok {
		return code
	}
	return importExport(ctx, c, e)
}

// importExport runs an import and reports on it; it returns the exit code.
func importExport(ctx context.Context, c importConfig, e env) int {
	if c.now == nil {
		c.now = time.Now
	}
	name := c.Input
	if name == "-" {
		name = "standard input"
	}
	in, size, err := openInput(c.Input, e.Stdin)
	if err != nil {
		return e.Failf(exitUsage, "plc import: %v", err)
	}
	defer in.Close()
	r, err := cli.Decompress(in)
	if err != nil {
		return e.Failf(exitUsage, "plc import: %s: %v", name, err)
	}
	defer r.Close()
	return importFrom(ctx, c, e, name, oplog.NewLineReader(r), size, &in.n)
}

// importFrom imports the export lines src hands over, named name in
// messages (size is the input's size and read counts what was read of it,
// for the ETA; 0 and nil: unknown), and reports on it; it returns the exit
// code.
func importFrom(ctx context.Context, c importConfig, e env, name string, src oplog.LineSource, size int64, read *atomic.Int64) int {
	if c.now == nil {
		c.now = time.Now
	}
	store, _, err := oplog.Open(ctx, c.DB)
	if err != nil {
		return e.Failf(exitFailure, "plc import: %v", err)
	}
	defer store.Close()
	log := oplog.NewLog(store, oplog.Options{NoRateLimit: true, Now: c.now, MaxClockSkew: c.MaxClockSkew})
	defer log.Close()

	p := &progress{w: e.Stderr, tty: isTerminal(e.Stderr), now: c.now, size: size, read: read, cmd: "plc import"}
	p.start = c.now()
	p.last = p.start
	st, err := oplog.ImportLines(ctx, log, src, oplog.ImportOptions{
		Source:    c.Source,
		BatchSize: c.Batch,
		Workers:   c.Workers,
		Rejected:  p.rejected,
		Progress: func(st oplog.ImportStats) {
			p.batch(st)
			if c.afterBatch != nil {
				c.afterBatch(st)
			}
		},
	})
	p.clear()
	if errors.Is(err, oplog.ErrNotExport) {
		return e.Failf(exitUsage, "plc import: %s: %v", name, err)
	}
	verb := "done"
	if err != nil {
		verb = "stopped"
	}
	elapsed := c.now().Sub(p.start)
	fmt.Fprintf(e.Stdout, "%s: %d lines: %d imported, %d rejected, %d skipped (already imported); %s ops/s, %s\n",
		verb, st.Lines, st.Imported, st.Rejected, st.Skipped, rate(st.Imported, elapsed), elapsed.Round(time.Millisecond))
	if st.Rejected > 0 {
		fmt.Fprintf(e.Stdout, "%d lines rejected: not applied; reported above and kept in the database (table rejected)\n", st.Rejected)
	}
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, oplog.ErrInput):
		return e.Failf(exitUsage, "plc import: %s: %v", name, err)
	case ctx.Err() != nil:
		return e.Failf(exitFailure, "plc import: interrupted; run the same command again to resume")
	}
	return e.Failf(exitFailure, "plc import: %v; run the same command again to resume", err)
}

// countingFile is the input, counting the bytes read from it (for the
// ETA: bytes read against the file's size).
type countingFile struct {
	r     io.Reader
	n     atomic.Int64
	close func() error
}

func (f *countingFile) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	f.n.Add(int64(n))
	return n, err
}

func (f *countingFile) Close() error { return f.close() }

// openInput opens path ("-": stdin) and returns its size when known (0
// otherwise).
func openInput(path string, stdin io.Reader) (*countingFile, int64, error) {
	if path == "-" {
		var size int64
		if f, ok := stdin.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
				size = fi.Size()
			}
		}
		return &countingFile{r: stdin, close: func() error { return nil }}, size, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if fi.IsDir() {
		f.Close()
		return nil, 0, fmt.Errorf("%s is a directory, not an export", path)
	}
	var size int64
	if fi.Mode().IsRegular() {
		size = fi.Size()
	}
	return &countingFile{r: f, close: f.Close}, size, nil
}
