package main

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/plcdir/plc/bundle"
	"github.com/plcdir/plc/internal/cli"
	"github.com/plcdir/plc/oplog"
)

// exportConfig is everything `plc export` needs.
type exportConfig struct {
	// DB is a postgres:// URL or the path of an SQLite file.
	DB string
	// After: the export starts after this seq.
	After int64
	// Out is the output file (empty: standard output).
	Out string
	// Compress is none, gzip or zstd (empty: from Out's extension).
	Compress string
	// Bundles, if set, is a bundle folder to bring up to date instead.
	Bundles    string
	BundleSize int
}

func runExport(ctx context.Context, e env, args []string) int {
	var (
		c     exportConfig
		after int
	)
	fs := cli.NewFlagSet("export", "plc export [--db DB] [--after SEQ] [--out FILE] [--compress none|gzip|zstd]\n  plc export --bundles DIR [--bundle-size N] [--db DB]",
		`Writes the log from the database (offline, either backend) as seq-mode
export lines, byte for byte what GET /export?after=… serves, one per line,
to standard output or --out FILE; plain, gzip or zstd (--compress, else
from the extension of --out: .gz, .zst). --after SEQ starts after that
seq: an interrupted export resumes with --after the seq of the last whole
line it wrote, into a new file (plc import reads the files in turn).

With --bundles DIR, brings the bundle folder DIR up to date instead: adds
the full bundles of --bundle-size ops (default 10000; a folder keeps its
size) that the log's latest signed checkpoint covers, then a new index
with that checkpoint and each bundle's proof (see the README, "Bundles").
Serve the folder with any static file server, or plc serve --bundles DIR.`, e)
	f := cli.NewFlags(fs, e)
	f.DB(&c.DB)
	f.Int(&after, "after", "PLC_EXPORT_AFTER", 0, "export the ops after this seq")
	f.Str(&c.Out, "out", "PLC_EXPORT_OUT", "", "output file (default: standard output)")
	f.Str(&c.Compress, "compress", "PLC_EXPORT_COMPRESS", "", "none, gzip or zstd (default: from the extension of --out, else none)")
	f.Str(&c.Bundles, "bundles", "PLC_EXPORT_BUNDLES", "", "write bundles to this folder instead of export lines")
	f.Int(&c.BundleSize, "bundle-size", "PLC_BUNDLE_SIZE", 0, fmt.Sprintf("ops per bundle (default: the folder's, or %d)", bundle.DefaultSize))
	if code, done := f.Parse("plc export", args); done {
		return code
	}
	fail := func(format string, a ...any) int {
		return e.Failf(exitUsage, "plc export: "+format, a...)
	}
	c.After = int64(after)
	switch {
	case fs.NArg() > 0:
		return fail("unexpected argument %q", fs.Arg(0))
	case c.DB == "":
		return fail("--db must not be empty")
	case c.After < 0:
		return fail("--after must not be negative")
	case c.BundleSize < 0 || c.BundleSize > bundle.MaxSize:
		return fail("--bundle-size must be 1 to %d", bundle.MaxSize)
	case c.Bundles != "" && (c.After != 0 || c.Out != "" || c.Compress != ""):
		return fail("--bundles writes a folder: --after, --out and --compress are for export lines")
	case c.Bundles == "" && c.BundleSize != 0:
		return fail("--bundle-size is for --bundles")
	}
	if c.Compress == "" {
		switch {
		case strings.HasSuffix(c.Out, ".gz"):
			c.Compress = "gzip"
		case strings.HasSuffix(c.Out, ".zst"):
			c.Compress = "zstd"
		default:
			c.Compress = "none"
		}
	}
	if c.Compress != "none" && c.Compress != "gzip" && c.Compress != "zstd" {
		return fail("--compress %q: want none, gzip or zstd", c.Compress)
	}
	if !oplog.IsPostgres(c.DB) {
		if _, err := os.Stat(c.DB); err != nil {
			return fail("no database at %s (--db)", c.DB)
		}
	}
	store, _, err := oplog.Open(ctx, c.DB)
	if err != nil {
		return e.Failf(exitFailure, "plc export: %v", err)
	}
	defer store.Close()
	if c.Bundles != "" {
		return exportBundles(ctx, c, store, e)
	}
	return writeExportLines(ctx, c, store, e)
}

func exportBundles(ctx context.Context, c exportConfig, store oplog.Store, e env) int {
	res, err := bundle.Write(ctx, store, c.Bundles, bundle.WriteOptions{
		Size: int64(c.BundleSize),
		Progress: func(b bundle.Entry) {
			fmt.Fprintf(e.Stderr, "plc export: bundle %d (seqs %d–%d): %d bytes\n", b.Number, b.FirstSeq, b.LastSeq, b.Bytes)
		},
	})
	if err != nil {
		return e.Failf(exitFailure, "plc export: %s: %v", c.Bundles, err)
	}
	fmt.Fprintf(e.Stdout, "%s: %d bundles (%d new), checkpoint of size %d\n", c.Bundles, res.Bundles, res.Added, res.CheckpointSize)
	return exitOK
}

func writeExportLines(ctx context.Context, c exportConfig, store oplog.Store, e env) int {
	out, name := e.Stdout, "standard output"
	var file *os.File
	if c.Out != "" {
		var err error
		if file, err = os.Create(c.Out); err != nil {
			return e.Failf(exitUsage, "plc export: %v", err)
		}
		defer file.Close()
		out, name = file, c.Out
	}
	bw := bufio.NewWriterSize(out, 1<<20)
	var (
		w     io.Writer = bw
		close           = func() error { return nil }
	)
	switch c.Compress {
	case "gzip":
		zw := gzip.NewWriter(bw)
		w, close = zw, zw.Close
	case "zstd":
		zw, err := zstd.NewWriter(bw)
		if err != nil {
			return e.Failf(exitFailure, "plc export: %v", err)
		}
		w, close = zw, zw.Close
	}
	n, last, err := bundle.ExportLines(ctx, store, c.After, w)
	// What was written up to last is flushed even on an error, so that
	// the output ends with whole lines up to that seq.
	for _, step := range []func() error{close, bw.Flush} {
		if serr := step(); err == nil {
			err = serr
		}
	}
	if err == nil && file != nil {
		err = file.Sync()
	}
	if err != nil {
		msg := fmt.Sprintf("plc export: %s: %v; %d ops written, up to seq %d", name, err, n, last)
		if errors.Is(err, context.Canceled) {
			msg = fmt.Sprintf("plc export: interrupted after %d ops, up to seq %d", n, last)
		}
		return e.Failf(exitFailure, "%s: go on with --after %d (into a new file)", msg, last)
	}
	fmt.Fprintf(e.Stderr, "plc export: %d ops after seq %d, up to seq %d, to %s\n", n, c.After, last, name)
	return exitOK
}
