package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/plcdir/plc/internal/cli"
	"github.com/plcdir/plc/internal/gcbudget"
	"github.com/plcdir/plc/oplog"
)

func runBenchImport(ctx context.Context, e cli.Env, args []string) int {
	var db string
	fs := cli.NewFlagSet("bench import", "plc bench import [--db DB] [--append FILE] CORPUS",
		`Imports a corpus (plc bench gen) into a fresh database through plc
import's pipeline and reports ops/s end to end, the ratio to the signature
bound measured in the same run (plc bench verify's, measured before and
after the import, the mean of the two), the process's peak
RSS, and the database's bytes on disk per op. --append adds the result as
a row to a markdown file (BENCHMARKS.md).`, e)
	f := cli.NewFlags(fs, e)
	f.DB(&db)
	appendTo := fs.String("append", "", "append the result as a markdown row to this file")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the import to this file")
	memProfile := fs.String("memprofile", "", "write a heap profile at the end of the import to this file")
	if code, done := cli.ParseFlags(fs, args); done {
		return code
	}
	if fs.NArg() != 1 {
		return e.Failf(cli.ExitUsage, "Usage: plc bench import [--db DB] [--append FILE] CORPUS")
	}
	corpus := fs.Arg(0)
	sample, err := boundChecks(corpus)
	if err != nil {
		return e.Failf(cli.ExitUsage, "plc bench import: %v", err)
	}
	workers := runtime.GOMAXPROCS(0)
	bound, err := signatureBound(sample, workers)
	if err != nil {
		return e.Failf(cli.ExitFailure, "plc bench import: %v", err)
	}

	store, _, err := oplog.Open(ctx, db)
	if err != nil {
		return e.Failf(cli.ExitFailure, "plc bench import: %v", err)
	}
	defer store.Close()
	if seq, err := store.LatestSeq(ctx); err != nil || seq != 0 {
		return e.Failf(cli.ExitUsage, "plc bench import: %s must be an empty database (latest seq %d, %v)", oplog.RedactDB(db), seq, err)
	}
	in, err := os.Open(corpus)
	if err != nil {
		return e.Failf(cli.ExitUsage, "plc bench import: %v", err)
	}
	defer in.Close()
	log := oplog.NewLog(store, oplog.Options{NoRateLimit: true})
	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		return e.Failf(cli.ExitUsage, "plc bench import: %v", err)
	}
	stopBudget := gcbudget.Start(gcbudget.DefaultHeadroom) // as plc import runs
	start := time.Now()
	st, err := oplog.Import(ctx, log, in, oplog.ImportOptions{})
	elapsed := time.Since(start)
	stopBudget()
	stopProfile()
	if *memProfile != "" {
		if err := writeHeapProfile(*memProfile); err != nil {
			return e.Failf(cli.ExitFailure, "plc bench import: %v", err)
		}
	}
	log.Close()
	if err != nil {
		return e.Failf(cli.ExitFailure, "plc bench import: %v", err)
	}
	store.Close() // SQLite checkpoints its WAL into the file on the last close
	size, err := dbBytes(ctx, db)
	if err != nil {
		return e.Failf(cli.ExitFailure, "plc bench import: database size: %v", err)
	}
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	backend := "sqlite"
	if oplog.IsPostgres(db) {
		backend = "postgres"
	}
	// The bound again, after the import: one 2-second measure varies by
	// several percent with the machine's state (runs of one build gave
	// 17,400 to 19,100 ops/s on a 2-core VM), so the ratio is to the mean
	// of the measures taken before and after.
	runtime.GC()
	after, err := signatureBound(sample, workers)
	if err != nil {
		return e.Failf(cli.ExitFailure, "plc bench import: %v", err)
	}
	before := bound
	bound = (before + after) / 2
	rate := float64(st.Imported) / elapsed.Seconds()
	perOp := float64(size) / float64(max(st.Imported, 1))
	fmt.Fprintf(e.Stdout, "scenario         import\nbackend          %s\nops              %d imported, %d rejected\nelapsed          %s\nimport           %.0f ops/s\nsignature bound  %.0f ops/s (before %.0f, after %.0f)\nratio            %.2f\npeak RSS         %d MB\non disk          %.0f bytes/op\n",
		backend, st.Imported, st.Rejected, elapsed.Round(time.Millisecond), rate, bound, before, after, rate/bound, ru.Maxrss/1024, perOp)
	if *appendTo != "" {
		row := fmt.Sprintf("| %s | import | %s | %d | %.0f ops/s | %.2f | %d MB | %.0f B/op |\n",
			time.Now().UTC().Format("2006-01-02"), backend, st.Imported, rate, rate/bound, ru.Maxrss/1024, perOp)
		if err := appendRow(*appendTo, row); err != nil {
			return e.Failf(cli.ExitFailure, "plc bench import: %v", err)
		}
	}
	return cli.ExitOK
}

// dbBytes is a database's size on disk: an SQLite file with its WAL and
// shared-memory files, or the total size of a PostgreSQL database's user
// tables (heap, TOAST and indexes).
func dbBytes(ctx context.Context, db string) (int64, error) {
	if !oplog.IsPostgres(db) {
		var n int64
		for _, p := range []string{db, db + "-wal", db + "-shm"} {
			if fi, err := os.Stat(p); err == nil {
				n += fi.Size()
			}
		}
		return n, nil
	}
	c, err := pgx.Connect(ctx, db)
	if err != nil {
		return 0, err
	}
	defer c.Close(ctx)
	var n int64
	err = c.QueryRow(ctx, `SELECT COALESCE(sum(pg_total_relation_size(relid)), 0)::bigint FROM pg_catalog.pg_statio_user_tables`).Scan(&n)
	return n, err
}

// benchRowsHeader starts the table that --append adds rows to.
const benchRowsHeader = "\n## Rows appended by plc bench\n\n| date | scenario | backend | ops | rate | ÷ bound | peak RSS | on disk |\n|---|---|---|---|---|---|---|---|\n"

// appendRow appends a markdown row to path, starting the table if the
// file does not have it yet.
func appendRow(path, row string) error {
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if !strings.Contains(string(b), strings.TrimSpace(strings.SplitN(benchRowsHeader, "\n\n", 3)[1])) {
		if _, err := io.WriteString(f, benchRowsHeader); err != nil {
			return err
		}
	}
	_, err = io.WriteString(f, row)
	return err
}

// startCPUProfile starts a CPU profile written to path, and returns what
// stops it; with path "", it starts none.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// writeHeapProfile writes a profile of the live heap to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
