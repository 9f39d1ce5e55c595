package bench

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/audit"
	"github.com/plcdir/plc/internal/cli"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// sigCheck is one bare signature check of the bound: the signing did:key
// as the op states it, the op's digest and its decoded signature.
type sigCheck struct {
	key  string
	hash [32]byte
	sig  validate.Signature
}

// boundChecks reads the checks the signature bound is measured with: the
// valid genesis ops among the first 20,000 lines of a corpus (blank lines
// ignored), at most 2,000 of them. Only the checks are kept, so the
// benchmark's own memory does not weigh on the garbage collection of what
// it measures.
func boundChecks(path string) ([]sigCheck, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var checks []sigCheck
	lr := oplog.NewLineReader(f)
	for n := 0; n < 20000 && len(checks) < 2000; n++ {
		b, i, err := lr.Append(nil)
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, err
		}
		l, looksLikeExport, err := plc.ParseExportLine(b)
		if !looksLikeExport {
			return nil, fmt.Errorf("line %d: %w", i, err)
		}
		op := l.Op
		if op == nil || op.Prev() != "" {
			continue
		}
		st := validate.State{DID: l.DID}
		applied, err := st.Apply(op, l.CreatedAt)
		if err != nil {
			continue
		}
		key := st.Ops[0].RotationKeys[applied.Signer]
		sig, _ := validate.DecodeSignature(op.Operation().Sig)
		checks = append(checks, sigCheck{key, sha256.Sum256(op.UnsignedCBOR()), sig})
	}
	if len(checks) == 0 {
		return nil, errors.New("no valid genesis op in the corpus to measure the signature bound with")
	}
	// Judging the genesis ops parsed their keys: what is measured next
	// meets them for the first time.
	validate.ForgetParsedKeys()
	return checks, nil
}

func runBenchVerify(ctx context.Context, e cli.Env, args []string) int {
	fs := cli.NewFlagSet("bench verify", "plc bench verify [--workers N] [--cpuprofile FILE] [--memprofile FILE] CORPUS",
		`Replays an export corpus through the validator on all cores, with the
engine of plc audit verify-export (lines read and parsed in parallel,
DIDs spread over the workers, each DID's ops in order, each at its
createdAt), and measures ops/s end to end; beside it, in the same run, the
bare signature-check bound: the rate one core verifies signatures at
(keys decoded as at a first meeting, decoded signatures, precomputed
digests), times the number of workers. The ratio of the two is the figure
that counts.`, e)
	workers := fs.Int("workers", runtime.GOMAXPROCS(0), "parallel workers")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the replay to this file")
	memProfile := fs.String("memprofile", "", "write a heap profile (with the replay's allocations) to this file")
	if code, done := cli.ParseFlags(fs, args); done {
		return code
	}
	if fs.NArg() != 1 || *workers < 1 {
		return e.Failf(cli.ExitUsage, "Usage: plc bench verify [--workers N] [--cpuprofile FILE] [--memprofile FILE] CORPUS")
	}
	path := fs.Arg(0)
	sample, err := boundChecks(path)
	if err != nil {
		return e.Failf(cli.ExitUsage, "plc bench verify: %v", err)
	}
	f, err := os.Open(path)
	if err != nil {
		return e.Failf(cli.ExitUsage, "plc bench verify: %v", err)
	}
	defer f.Close()
	r, err := cli.Decompress(f)
	if err != nil {
		return e.Failf(cli.ExitUsage, "plc bench verify: %s: %v", path, err)
	}
	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		return e.Failf(cli.ExitUsage, "plc bench verify: %v", err)
	}
	rep, err := audit.VerifyExport(ctx, r, audit.ExportOptions{Workers: *workers})
	stopProfile()
	if err != nil {
		return e.Failf(cli.ExitUsage, "plc bench verify: %s: %v", path, err)
	}
	if *memProfile != "" {
		if err := writeHeapProfile(*memProfile); err != nil {
			return e.Failf(cli.ExitFailure, "plc bench verify: %v", err)
		}
	}
	runtime.GC() // the replay's garbage is not the bound's
	bound, err := signatureBound(sample, *workers)
	if err != nil {
		return e.Failf(cli.ExitFailure, "plc bench verify: %v", err)
	}

	fmt.Fprintf(e.Stdout, "scenario         verify\nops              %d (%d rejected)\nworkers          %d\nvalidator        %.0f ops/s\nsignature bound  %.0f ops/s (%d workers × one core)\nratio            %.2f\n",
		rep.Ops, rep.Invalid, *workers, rep.OpsPerSecond, bound, *workers, rep.OpsPerSecond/bound)
	if len(rep.InvalidOps) > 0 {
		first := rep.InvalidOps[0]
		fmt.Fprintf(e.Stderr, "first rejection: line %d %s: %s\n", first.Line, cli.Printable(first.DID), cli.Printable(first.Reason))
	}
	return cli.ExitOK
}

// signatureBound is the rate workers cores verify signatures at: one
// core's rate over checks (each key decoded as at a first meeting, over a
// precomputed digest), times workers.
func signatureBound(checks []sigCheck, workers int) (float64, error) {
	// Decoding the key is part of checking a signature against a key never
	// seen before, as most keys in a directory are.
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
