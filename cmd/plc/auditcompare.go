package main

import (
	"cmp"
	"context"
	cryptorand "crypto/rand"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/plcdir/plc/audit"
	"github.com/plcdir/plc/client"
	"github.com/plcdir/plc/internal/cli"
)

func runAuditCompare(ctx context.Context, e env, args []string) int {
	const usageLine = "plc audit compare [--dids FILE | --sample N] [--json] A B"
	fs := cli.NewFlagSet("compare", usageLine,
		`Compares two directories (A and B: base URLs) DID by DID: each DID's
audit log (GET /:did/log/audit) and document (GET /:did). Reported per
DID, taking A as the reference: ops missing from B, ops extra in B, ops
that differ (the same CID with another createdAt, operation or nullified
flag, or different ops at the same position), and a different answer to
GET /:did; then a summary line.

The DIDs are those listed in --dids FILE (one per line, - for standard
input), or --sample N DIDs picked from A's seq-mode /export, spread over
the whole log (the seed is printed; --seed repeats a sample). Without
either, --sample 100.

Output: one block per DID that differs, then the summary; with --json, one
JSON object instead.

Exit status: 0 when the directories agree on every DID, 1 when they
differ, 2 on usage or network errors (or an answer a route does not
document).`, e)
	didsFile := fs.String("dids", "", "file listing the DIDs to compare, one per line (- for standard input)")
	sample := fs.Int("sample", 0, "compare N DIDs sampled from A's export (default 100 without --dids)")
	seed := fs.Uint64("seed", 0, "seed of the sample (default: random)")
	jsonOut := fs.Bool("json", false, "print one JSON report object")
	workers := fs.Int("workers", 4, "DIDs compared at once")
	timeout := fs.Duration("timeout", 30*time.Second, "timeout of each HTTP request")
	pos, code, done := cli.ParseInterspersed(fs, args)
	if done {
		return code
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	fail := func(format string, a ...any) int {
		return e.Failf(exitUsage, "plc audit compare: "+format+"\nUsage: %s", append(a, usageLine)...)
	}
	switch {
	case len(pos) != 2:
		return fail("want two directory URLs, A and B")
	case set["dids"] && set["sample"]:
		return fail("give --dids or --sample, not both")
	case set["sample"] && *sample < 1:
		return fail("--sample must be at least 1")
	case set["seed"] && set["dids"]:
		return fail("--seed goes with --sample")
	case *workers < 1:
		return fail("--workers must be at least 1")
	case *timeout <= 0:
		return fail("--timeout must be positive")
	}
	hc := &http.Client{Timeout: *timeout}
	a, err := client.New(pos[0], hc)
	if err != nil {
		return fail("A: %v", err)
	}
	b, err := client.New(pos[1], hc)
	if err != nil {
		return fail("B: %v", err)
	}

	var (
		dids    []string
		sampled bool
	)
	if set["dids"] {
		var in io.Reader = e.Stdin
		if *didsFile != "-" {
			f, err := os.Open(*didsFile)
			if err != nil {
				return e.Failf(exitUsage, "plc audit compare: %v", err)
			}
			defer f.Close()
			in = f
		}
		dids, err = audit.ReadDIDList(io.LimitReader(in, 1<<30))
		if err != nil {
			return e.Failf(exitUsage, "plc audit compare: %s: %v", *didsFile, err)
		}
		if len(dids) == 0 {
			return e.Failf(exitUsage, "plc audit compare: %s lists no DID", *didsFile)
		}
	} else {
		n := *sample
		n = cmp.Or(n, 100)
		if !set["seed"] {
			var s [8]byte
			cryptorand.Read(s[:])
			*seed = binary.LittleEndian.Uint64(s[:]) | 1 // never 0: 0 means "not sampled"
		}
		dids, err = audit.SampleDIDs(ctx, a, n, rand.New(rand.NewPCG(*seed, 0)))
		if err != nil {
			return e.Failf(exitUsage, "plc audit compare: sampling DIDs from A's export: %v", err)
		}
		if len(dids) == 0 {
			return e.Failf(exitUsage, "plc audit compare: A's export is empty: no DID to compare")
		}
		sampled = true
	}

	opts := audit.CompareOptions{Workers: *workers}
	shown := false
	if isTerminal(e.Stderr) {
		last := time.Time{}
		opts.Progress = func(done int) {
			if t := time.Now(); t.Sub(last) >= 250*time.Millisecond || done == len(dids) {
				last = t
				fmt.Fprintf(e.Stderr, "\r\033[Kcompared %d of %d DIDs", done, len(dids))
				shown = true
			}
		}
	}
	rep, err := audit.Compare(ctx, a, b, dids, opts)
	if shown {
		fmt.Fprint(e.Stderr, "\r\033[K")
	}
	if err != nil {
		return e.Failf(exitUsage, "plc audit compare: %v", err)
	}
	if sampled {
		rep.Seed = *seed
	}
	if *jsonOut {
		out, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return e.Failf(exitUsage, "plc audit compare: %v", err)
		}
		fmt.Fprintf(e.Stdout, "%s\n", out)
	} else {
		printCompareReport(e.Stdout, &rep)
	}
	if !rep.OK {
		return exitFailure
	}
	return exitOK
}

// printCompareReport writes a block per DID that differs, then the
// summary line.
func printCompareReport(w io.Writer, r *audit.CompareReport) {
	for _, c := range r.Results {
		if c.Identical {
			continue
		}
		n := len(c.Differences)
		plural := "s"
		if n == 1 {
			plural = ""
		}
		fmt.Fprintf(w, "%s: %d difference%s (A %d ops, B %d ops)\n", c.DID, n, plural, c.OpsA, c.OpsB)
		for _, d := range c.Differences {
			fmt.Fprintf(w, "  %s\n", cli.Printable(d.String()))
		}
	}
	how := ""
	if r.Seed != 0 {
		how = fmt.Sprintf(" (sampled from A's export, --seed %d)", r.Seed)
	}
	var kinds []string
	for k, n := range r.Counts {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
	}
	slices.Sort(kinds)
	detail := ""
	if len(kinds) > 0 {
		detail = " (" + strings.Join(kinds, ", ") + ")"
	}
	fmt.Fprintf(w, "summary: %d DIDs%s compared, A %s, B %s: %d identical, %d different%s\n",
		r.DIDs, how, r.A, r.B, r.Identical, r.Different, detail)
}
