package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/plcdir/plc/bundle"
	"github.com/plcdir/plc/internal/cli"
	"github.com/plcdir/plc/internal/gcbudget"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/tlog"
	"github.com/plcdir/plc/validate"
)

func runBenchBundles(ctx context.Context, e cli.Env, args []string) int {
	var db string
	fs := cli.NewFlagSet("bench bundles", "plc bench bundles [--db DB] [--bundle-size N] [--work DIR] [--cpuprofile FILE] CORPUS",
		`Imports a corpus (plc bench gen) into a source log (SQLite, in --work)
and signs a checkpoint of it with a fresh key (not measured); then
measures plc export of the log as lines (ops/s), plc export --bundles
(ops/s, bundle bytes per op), and the bootstrap of the fresh database --db
from the local bundles, each checked against the checkpoint and imported
through plc import's pipeline (ops/s, and its ratio to the signature bound
measured in the same run, before and after, as plc bench import does).`, e)
	f := cli.NewFlags(fs, e)
	f.DB(&db)
	size := fs.Int("bundle-size", bundle.DefaultSize, "ops per bundle")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the bootstrap to this file")
	work := fs.String("work", "", "folder for the source log and the bundles (default: a temporary one, removed at the end)")
	if code, done := cli.ParseFlags(fs, args); done {
		return code
	}
	fail := func(code int, format string, a ...any) int {
		return e.Failf(code, "plc bench bundles: "+format, a...)
	}
	if fs.NArg() != 1 {
		return fail(cli.ExitUsage, "want one CORPUS\nUsage: plc bench bundles [--db DB] [--bundle-size N] [--work DIR] [--cpuprofile FILE] CORPUS")
	}
	if *size < 1 || *size > bundle.MaxSize {
		return fail(cli.ExitUsage, "--bundle-size must be 1 to %d", bundle.MaxSize)
	}
	corpus := fs.Arg(0)
	sample, err := boundChecks(corpus)
	if err != nil {
		return fail(cli.ExitUsage, "%v", err)
	}
	dir := *work
	if dir == "" {
		if dir, err = os.MkdirTemp("", "plc-bench-bundles-"); err != nil {
			return fail(cli.ExitFailure, "%v", err)
		}
		defer os.RemoveAll(dir)
	}
	dst, _, err := oplog.Open(ctx, db)
	if err != nil {
		return fail(cli.ExitFailure, "%v", err)
	}
	defer dst.Close()
	if seq, err := dst.LatestSeq(ctx); err != nil || seq != 0 {
		return fail(cli.ExitUsage, "%s must be an empty database (latest seq %d, %v)", oplog.RedactDB(db), seq, err)
	}

	// The source log, with a signed checkpoint.
	fmt.Fprintf(e.Stderr, "importing %s into the source log...\n", corpus)
	src, _, err := oplog.Open(ctx, filepath.Join(dir, "source.sqlite"))
	if err != nil {
		return fail(cli.ExitFailure, "%v", err)
	}
	defer src.Close()
	if err := func() error {
		in, err := os.Open(corpus)
		if err != nil {
			return err
		}
		defer in.Close()
		l := oplog.NewLog(src, oplog.Options{NoRateLimit: true})
		defer l.Close()
		_, err = oplog.Import(ctx, l, in, oplog.ImportOptions{})
		return err
	}(); err != nil {
		return fail(cli.ExitFailure, "the source log: %v", err)
	}
	skey, vkey, err := tlog.GenerateKey("bench.invalid/tlog")
	if err != nil {
		return fail(cli.ExitFailure, "%v", err)
	}
	key, err := tlog.ParseKey(skey)
	if err != nil {
		return fail(cli.ExitFailure, "%v", err)
	}
	if _, _, err := tlog.New(src, key, tlog.Options{}).Sign(ctx); err != nil {
		return fail(cli.ExitFailure, "signing a checkpoint: %v", err)
	}

	// plc export: lines.
	start := time.Now()
	lines, _, err := bundle.ExportLines(ctx, src, 0, io.Discard)
	exportElapsed := time.Since(start)
	if err != nil {
		return fail(cli.ExitFailure, "export: %v", err)
	}

	// plc export --bundles.
	bdir := filepath.Join(dir, "bundles")
	var bytes, ops int64
	start = time.Now()
	res, err := bundle.Write(ctx, src, bdir, bundle.WriteOptions{Size: int64(*size), Progress: func(b bundle.Entry) {
		bytes += b.Bytes
		ops += b.Ops
	}})
	writeElapsed := time.Since(start)
	if err != nil {
		return fail(cli.ExitFailure, "export --bundles: %v", err)
	}
	if ops == 0 {
		return fail(cli.ExitUsage, "the corpus (%d ops) holds no full bundle of %d ops", lines, *size)
	}

	// The bootstrap: checked bundles through plc import's pipeline.
	workers := runtime.GOMAXPROCS(0)
	before, err := signatureBound(sample, workers)
	if err != nil {
		return fail(cli.ExitFailure, "%v", err)
	}
	// The source's import parsed the corpus's keys: the bootstrap meets
	// them for the first time, as a fresh process would.
	validate.ForgetParsedKeys()
	runtime.GC()
	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		return fail(cli.ExitFailure, "%v", err)
	}
	log := oplog.NewLog(dst, oplog.Options{NoRateLimit: true})
	stopBudget := gcbudget.Start(gcbudget.DefaultHeadroom) // as plc import runs
	start = time.Now()
	st, err := func() (oplog.ImportStats, error) {
		r, err := bundle.Open(ctx, bundle.Dir(bdir), bundle.Options{VKey: vkey})
		if err != nil {
			return oplog.ImportStats{}, err
		}
		defer r.Close()
		return oplog.ImportLines(ctx, log, r, oplog.ImportOptions{})
	}()
	bootElapsed := time.Since(start)
	stopBudget()
	stopProfile()
	log.Close()
	if err != nil {
		return fail(cli.ExitFailure, "bootstrap: %v", err)
	}
	runtime.GC()
	after, err := signatureBound(sample, workers)
	if err != nil {
		return fail(cli.ExitFailure, "%v", err)
	}
	bound := (before + after) / 2
	bootRate := float64(st.Imported) / bootElapsed.Seconds()
	backend := "sqlite"
	if oplog.IsPostgres(db) {
		backend = "postgres"
	}
	fmt.Fprintf(e.Stdout, "scenario         bundles\nbackend          %s (bootstrap)\nexport           %d ops in %s: %.0f ops/s\nexport bundles   %d bundles of %d ops in %s: %.0f ops/s, %.0f bytes/op\nbootstrap        %d ops (%d rejected) in %s: %.0f ops/s\nsignature bound  %.0f ops/s (before %.0f, after %.0f)\nratio            %.2f\n",
		backend,
		lines, exportElapsed.Round(time.Millisecond), float64(lines)/exportElapsed.Seconds(),
		res.Added, *size, writeElapsed.Round(time.Millisecond), float64(ops)/writeElapsed.Seconds(), float64(bytes)/float64(ops),
		st.Imported, st.Rejected, bootElapsed.Round(time.Millisecond), bootRate,
		bound, before, after, bootRate/bound)
	return cli.ExitOK
}
