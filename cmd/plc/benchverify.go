package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/plcdir/plc/validate"
)

// exportLine is the part of an export line (either mode) the benchmarks
// read.
type exportLine struct {
	DID       string          `json:"did"`
	Operation json.RawMessage `json:"operation"`
	CreatedAt string          `json:"createdAt"`
}

// readExportLines reads a JSON-lines export (blank lines ignored).
func readExportLines(r io.Reader) ([]exportLine, error) {
	var lines []exportLine
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var l exportLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		lines = append(lines, l)
	}
	return lines, sc.Err()
}

func runBenchVerify(ctx context.Context, e env, args []string) int {
	fs := newFlagSet("bench verify", "plc bench verify [--workers N] CORPUS",
		`Replays an export corpus through the validator on all cores (DIDs spread
over the workers, each DID's ops in order, each at its createdAt) and
measures ops/s; beside it, in the same run, the bare signature-check bound:
the rate one core verifies signatures at (parsed keys, decoded signatures,
precomputed digests), times the number of workers. The ratio of the two is
the figure that counts.`, e)
	workers := fs.Int("workers", runtime.GOMAXPROCS(0), "parallel workers")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() != 1 || *workers < 1 {
		fmt.Fprintln(e.stderr, "Usage: plc bench verify [--workers N] CORPUS")
		return exitUsage
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(e.stderr, "plc bench verify: %v\n", err)
		return exitUsage
	}
	lines, err := readExportLines(f)
	f.Close()
	if err != nil {
		fmt.Fprintf(e.stderr, "plc bench verify: %s: %v\n", fs.Arg(0), err)
		return exitUsage
	}

	// The validator: every op parsed, every rule applied.
	parts := make([][]int, *workers)
	for i, l := range lines {
		h := fnv.New32a()
		h.Write([]byte(l.DID))
		w := int(h.Sum32() % uint32(*workers))
		parts[w] = append(parts[w], i)
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		invalid  int
		firstErr error
	)
	start := time.Now()
	for _, part := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			states := map[string]*validate.State{}
			bad := 0
			var ferr error
			for _, i := range part {
				l := &lines[i]
				st := states[l.DID]
				if st == nil {
					st = &validate.State{DID: l.DID}
					states[l.DID] = st
				}
				err := func() error {
					at, err := validate.ParseTimestamp(l.CreatedAt)
					if err != nil {
						return err
					}
					op, err := validate.ParseJSON(l.Operation)
					if err != nil {
						return err
					}
					next, _, err := st.Next(op, at)
					if err != nil {
						return err
					}
					*st = next
					return nil
				}()
				if err != nil {
					bad++
					if ferr == nil {
						ferr = fmt.Errorf("%s: %w", l.DID, err)
					}
				}
			}
			mu.Lock()
			invalid += bad
			if firstErr == nil {
				firstErr = ferr
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	validatorRate := float64(len(lines)) / time.Since(start).Seconds()

	bound, err := signatureBound(lines, *workers)
	if err != nil {
		fmt.Fprintf(e.stderr, "plc bench verify: %v\n", err)
		return exitFailure
	}

	fmt.Fprintf(e.stdout, "scenario         verify\nops              %d (%d rejected)\nworkers          %d\nvalidator        %.0f ops/s\nsignature bound  %.0f ops/s (%d workers × one core)\nratio            %.2f\n",
		len(lines), invalid, *workers, validatorRate, bound, *workers, validatorRate/bound)
	if invalid > 0 {
		fmt.Fprintf(e.stderr, "first rejection: %v\n", firstErr)
	}
	return exitOK
}

// signatureBound is the rate workers cores verify signatures at: one
// core's rate, measured on the corpus's genesis ops (each from its signing
// did:key, decoded as at a first meeting, over a precomputed digest),
// times workers.
func signatureBound(lines []exportLine, workers int) (float64, error) {
	// The bound: bare signature checks of genesis ops on one core, each
	// from the signing did:key as the op states it (decoding the key is
	// part of checking a signature against a key never seen before, as
	// most keys in a directory are) over a precomputed digest.
	type check struct {
		key  string
		hash [32]byte
		sig  validate.Signature
	}
	var checks []check
	for i := 0; i < len(lines) && len(checks) < 2000; i++ {
		op, err := validate.ParseJSON(lines[i].Operation)
		if err != nil || op.Prev() != "" {
			continue
		}
		st := validate.State{DID: lines[i].DID}
		at, _ := validate.ParseTimestamp(lines[i].CreatedAt)
		next, applied, err := st.Next(op, at)
		if err != nil {
			continue
		}
		key := next.Ops[0].RotationKeys[applied.Signer]
		sig, _ := validate.DecodeSignature(op.Operation().Sig)
		checks = append(checks, check{key, sha256.Sum256(op.UnsignedCBOR()), sig})
	}
	if len(checks) == 0 {
		return 0, errors.New("no valid genesis op in the corpus to measure the bound with")
	}
	n := 0
	start := time.Now()
	for time.Since(start) < 2*time.Second || n < len(checks) {
		c := &checks[n%len(checks)]
		key, err := validate.ParseDIDKeyUncached(c.key)
		if err != nil || !key.Verify(&c.hash, &c.sig) {
			return 0, errors.New("a bare signature check failed")
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds() * float64(workers), nil

}
