package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/plcdir/plc/audit"
	"github.com/plcdir/plc/client"
	"github.com/plcdir/plc/internal/cli"
)

func runVerifyExport(ctx context.Context, e env, args []string) int {
	const usageLine = "plc audit verify-export [flags] FILE|-|URL"
	fs := cli.NewFlagSet("verify-export", usageLine,
		`Replays a whole export through the validator on all cores and reports
its ops, its DIDs, every invalid op (line, did, cid, reason) and the
nullification recomputed from the chain rules. Every CID, DID, signature
and chain rule is checked; each op is judged at its createdAt, its
acceptance time, after the ops of its DID before it in the export.

The export is FILE (plain, gzip or zstd), standard input (-), or the
http(s) URL of a directory, whose /export?after=<seq>&count=1000 is then
paged from the start to the end. Lines are those of a seq-mode export
({"type":"sequenced_op", did, operation, cid, createdAt, seq}: seq must
increase by one from line to line; a gap or a repeat is reported, and a
repeated line is not replayed) or of a legacy export ({did, operation,
cid, nullified, createdAt}: each stated nullified flag is checked against
the recomputed one).

A progress bar is shown on a terminal. Output: one line per problem, then
a summary; with --json, one JSON object instead.

Exit status: 0 when every op is valid (and no seq or nullified problem), 1
when any is not, 2 on usage or read errors.`, e)
	workers := new(int)
	f := cli.NewFlags(fs, e)
	f.Int(workers, "workers", "PLC_WORKERS", runtime.GOMAXPROCS(0), "goroutines parsing and verifying")
	if f.Err != nil {
		return e.Failf(exitUsage, "plc audit verify-export: %v", f.Err)
	}
	jsonOut := fs.Bool("json", false, "print one JSON report object")
	maxListed := fs.Int("max-listed", audit.DefaultMaxListed, "problems of each kind listed (the counts are exact)")
	pos, code, done := cli.ParseInterspersed(fs, args)
	if done {
		return code
	}
	if len(pos) != 1 {
		return e.Failf(exitUsage, "plc audit verify-export: want exactly one FILE, - (standard input) or URL\nUsage: %s", usageLine)
	}
	if *workers < 1 || *maxListed < 1 {
		return e.Failf(exitUsage, "plc audit verify-export: --workers and --max-listed must be at least 1")
	}
	opts := audit.ExportOptions{Workers: *workers, MaxListed: *maxListed}
	src := pos[0]

	var (
		r      io.Reader
		name   string
		size   int64
		read   *atomic.Int64
		closer func()
	)
	if isDirectoryURL(src) {
		d, err := client.New(src, nil)
		if err != nil {
			return e.Failf(exitUsage, "plc audit verify-export: %v", err)
		}
		name = d.String()
		r = d.ExportReader(ctx, 0)
		opts.StartSeq = 1
		closer = func() {}
	} else {
		name = src
		if src == "-" {
			name = "standard input"
		}
		in, n, err := openInput(src, e.Stdin)
		if err != nil {
			return e.Failf(exitUsage, "plc audit verify-export: %v", err)
		}
		dr, err := cli.Decompress(in)
		if err != nil {
			in.Close()
			return e.Failf(exitUsage, "plc audit verify-export: %s: %v", name, err)
		}
		r, size, read = dr, n, &in.n
		closer = func() { dr.Close(); in.Close() }
	}
	defer closer()

	p := &progress{w: e.Stderr, tty: isTerminal(e.Stderr), now: time.Now, size: size, read: read}
	p.start = p.now()
	if p.tty {
		opts.Progress = p.verified
	}
	rep, err := audit.VerifyExport(ctx, r, opts)
	p.clear()
	rep.Source = name
	if err != nil {
		rep.Error = err.Error()
	}
	if errors.Is(err, audit.ErrNotExport) {
		return e.Failf(exitUsage, "plc audit verify-export: %s: %v", name, err)
	}
	if *jsonOut {
		b, jerr := json.MarshalIndent(rep, "", "  ")
		if jerr != nil {
			return e.Failf(exitUsage, "plc audit verify-export: %v", jerr)
		}
		fmt.Fprintf(e.Stdout, "%s\n", b)
	} else {
		printExportReport(e.Stdout, &rep)
	}
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintf(e.Stderr, "plc audit verify-export: interrupted after line %d\n", rep.Lines)
		} else {
			fmt.Fprintf(e.Stderr, "plc audit verify-export: %s: %v\n", name, err)
		}
		return exitUsage
	}
	if !rep.OK {
		return exitFailure
	}
	return exitOK
}

// isDirectoryURL reports whether an argument names a directory rather than a file.
func isDirectoryURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// printExportReport writes the text report: one line per problem listed,
// then a summary.
func printExportReport(w io.Writer, r *audit.ExportReport) {
	for _, p := range r.InvalidOps {
		seq := ""
		if p.Seq > 0 {
			seq = fmt.Sprintf(" (seq %d)", p.Seq)
		}
		fmt.Fprintf(w, "invalid line %d%s %s %s: %s\n", p.Line, seq, cli.Printable(p.DID), cli.Printable(p.CID), cli.Printable(p.Reason))
	}
	for _, p := range r.SeqProblems {
		switch p.Kind {
		case audit.SeqGap:
			fmt.Fprintf(w, "seq gap at line %d: seq %d after seq %d (%d missing)\n", p.Line, p.Seq, p.Prev, p.Seq-p.Prev-1)
		default:
			fmt.Fprintf(w, "seq repeat at line %d: seq %d is not after seq %d (line not replayed)\n", p.Line, p.Seq, p.Prev)
		}
	}
	for _, p := range r.NullifiedErrors {
		fmt.Fprintf(w, "nullified flag at line %d %s %s: stated %t, recomputed %t\n", p.Line, cli.Printable(p.DID), cli.Printable(p.CID), p.Stated, p.Recomputed)
	}
	if r.Truncated {
		fmt.Fprintf(w, "(lists cut short: the problems on the first lines are shown; the counts below are exact)\n")
	}
	mode := r.Mode
	if mode == "" {
		mode = "no valid line"
	} else {
		mode += " mode"
	}
	fmt.Fprintf(w, "source      %s (%s)\n", cli.Printable(r.Source), mode)
	fmt.Fprintf(w, "lines       %d\n", r.Lines)
	fmt.Fprintf(w, "ops         %d replayed: %d valid, %d invalid\n", r.Ops, r.Valid, r.Invalid)
	fmt.Fprintf(w, "DIDs        %d\n", r.DIDs)
	if r.Mode == audit.ModeLegacy {
		fmt.Fprintf(w, "nullified   %d recomputed, %d stated, %s\n", r.Nullified, r.StatedNullified, pluralCount(r.NullifiedMismatches, "disagreement", "disagreements"))
	} else {
		fmt.Fprintf(w, "nullified   %d (recomputed)\n", r.Nullified)
	}
	if r.FirstSeq > 0 {
		fmt.Fprintf(w, "seq         %d … %d: %s, %s\n", r.FirstSeq, r.LastSeq, pluralCount(r.SeqGaps, "gap", "gaps"), pluralCount(r.SeqRepeats, "repeat", "repeats"))
	}
	fmt.Fprintf(w, "rate        %.0f ops/s (%s)\n", r.OpsPerSecond, r.Elapsed.Round(time.Millisecond))
	if r.OK && r.Error == "" {
		fmt.Fprintf(w, "verdict     ok\n")
		return
	}
	var what []string
	add := func(n int64, one, many string) {
		if n > 0 {
			what = append(what, pluralCount(n, one, many))
		}
	}
	add(r.Invalid, "invalid op", "invalid ops")
	add(r.SeqGaps, "seq gap", "seq gaps")
	add(r.SeqRepeats, "seq repeat", "seq repeats")
	add(r.NullifiedMismatches, "nullified flag disagreement", "nullified flag disagreements")
	if r.Error != "" {
		what = append(what, "stopped before the end: "+r.Error)
	}
	fmt.Fprintf(w, "verdict     invalid: %s\n", strings.Join(what, ", "))
}

// pluralCount is "1 gap", "2 gaps".
func pluralCount(n int64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
