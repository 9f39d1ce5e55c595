package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/plcdir/plc/internal/cli"
	"github.com/plcdir/plc/internal/corpus"
)

func runBenchGen(ctx context.Context, e cli.Env, args []string) int {
	fs := cli.NewFlagSet("bench gen",
		"plc bench gen (--dids N | --ops N) [--shape S] [--seed S] [--out FILE|-] [--invalid-rate P] [--workers W]",
		`Writes a signed synthetic corpus in the seq-mode export format (the lines
GET /export?after= returns, joined by "\n", no newline after the last):
DIDs shaped like the real directory's, with hostile updates and recoveries,
tombstones, legacy create ops and P-256 keys. The same flags give the same
bytes whatever --workers is. --invalid-rate mixes in invalid lines (forged
and high-S signatures, wrong prev, late recoveries) on top of the valid
ops. --shape longchain makes one DID of --ops N ops instead: a genesis
and a chain of updates, the history that costs the most to replay.
--shape longgap, keychurn and sharedkeys are the directory's DIDs with a
DID's next op a median ~2,800 lines later, with every key replaced on most
updates, or with a handful of PDS rotation keys shared by most DIDs. A
summary goes to stderr.`, e)
	dids := fs.Int("dids", 0, "number of DIDs to generate")
	ops := fs.Int("ops", 0, "number of valid ops to generate")
	seed := fs.Uint64("seed", 1, "seed: selects the corpus")
	out := fs.String("out", "-", "output file, - for stdout")
	rate := fs.Float64("invalid-rate", 0, "probability of an invalid line after each valid op, 0..1")
	workers := fs.Int("workers", runtime.GOMAXPROCS(0), "signing goroutines")
	shape := fs.String("shape", string(corpus.ShapeDirectory), "corpus shape: directory, longgap, keychurn, sharedkeys, or longchain (one DID of --ops N ops)")
	if code, done := cli.ParseFlags(fs, args); done {
		return code
	}
	if fs.NArg() != 0 || (*dids > 0) == (*ops > 0) || *dids < 0 || *ops < 0 {
		return e.Failf(cli.ExitUsage, "plc bench gen: give exactly one of --dids N and --ops N (N ≥ 1)")
	}
	if !(*rate >= 0 && *rate <= 1) || *workers < 1 {
		return e.Failf(cli.ExitUsage, "plc bench gen: --invalid-rate must be in [0, 1] and --workers at least 1")
	}
	cfg := corpus.Config{DIDs: *dids, Ops: *ops, Seed: *seed, InvalidRate: *rate, Workers: *workers, Shape: corpus.Shape(*shape)}
	switch cfg.Shape {
	case corpus.ShapeDirectory, corpus.ShapeLongGap, corpus.ShapeKeyChurn, corpus.ShapeSharedKeys:
	case corpus.ShapeLongChain:
		if *ops <= 0 {
			return e.Failf(cli.ExitUsage, "plc bench gen: --shape longchain takes --ops N (the length of the chain), not --dids")
		}
	default:
		return e.Failf(cli.ExitUsage, "plc bench gen: unknown --shape %q (want one of %v)", *shape, corpus.Shapes())
	}

	var w io.Writer = e.Stdout
	var f *os.File
	if *out != "-" {
		var err error
		if f, err = os.Create(*out); err != nil {
			return e.Failf(cli.ExitUsage, "plc bench gen: %v", err)
		}
		w = f
	}
	st, err := corpus.Generate(ctx, w, cfg)
	if f != nil {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintf(e.Stderr, "plc bench gen: %v\n", err)
		if f != nil {
			os.Remove(*out) // a partial corpus is not a corpus
		}
		return cli.ExitUsage
	}
	printGenStats(e.Stderr, &st)
	return cli.ExitOK
}

func printGenStats(w io.Writer, st *corpus.Stats) {
	pct := func(n, of int) float64 {
		if of == 0 {
			return 0
		}
		return 100 * float64(n) / float64(of)
	}
	fmt.Fprintf(w, "DIDs         %d (max %d ops, mean %.2f)\n", st.DIDs, st.MaxOpsPerDID, float64(st.Ops)/float64(max(st.DIDs, 1)))
	fmt.Fprintf(w, "ops          %d valid, %d lines, %s … %s\n", st.Ops, st.Lines,
		st.First.Format("2006-01-02"), st.Last.Format("2006-01-02"))
	fmt.Fprintf(w, "nullified    %d ops; %d DIDs (%.2f%%) recovered from a hostile update\n", st.Nullified, st.Recovered, pct(st.Recovered, st.DIDs))
	fmt.Fprintf(w, "tombstoned   %d DIDs (%.2f%%), %d of the tombstones nullified\n", st.Tombstoned, pct(st.Tombstoned, st.DIDs), st.TombstonesNullified)
	fmt.Fprintf(w, "legacy       %d DIDs (%.2f%%)\n", st.Legacy, pct(st.Legacy, st.DIDs))
	fmt.Fprintf(w, "P-256        %.2f%% of DIDs, %.2f%% of valid ops\n", pct(st.P256DIDs, st.DIDs), pct(st.P256Ops, st.Ops))
	fmt.Fprintf(w, "invalid      %d:", st.InvalidTotal())
	for k := range corpus.InvalidKind(corpus.NumInvalidKinds) {
		fmt.Fprintf(w, " %s %d;", k, st.Invalid[k])
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "elapsed      %s, %.0f ops/s\n", st.Elapsed.Round(1e6), float64(st.Lines)/st.Elapsed.Seconds())
}
