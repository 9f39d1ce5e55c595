package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"golang.org/x/mod/sumdb/note"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/audit"
	"github.com/plcdir/plc/internal/cli"
	"github.com/plcdir/plc/tlog"
	"github.com/plcdir/plc/validate"
)

func runAudit(ctx context.Context, e env, args []string) int {
	return cli.RunGroup(ctx, e, "audit", "command", []command{
		{Name: "verify-log", Summary: "verify audit logs (the /:did/log/audit format)", Run: runVerifyLog},
		{Name: "verify-export", Summary: "replay a whole export (file or directory) through the validator", Run: runVerifyExport},
		{Name: "compare", Summary: "compare two directories' audit logs and documents, DID by DID", Run: runAuditCompare},
		{Name: "monitor", Summary: "follow a directory's transparency log and verify every checkpoint and entry", Run: runAuditMonitor},
	}, args)
}

func runVerifyLog(ctx context.Context, e env, args []string) int {
	fs := cli.NewFlagSet("verify-log", "plc audit verify-log [flags] FILE...",
		`Replays each audit log (a JSON array of {did, operation, cid, nullified,
createdAt}, as GET /:did/log/audit returns) with its createdAt times, and
checks every CID, the DID, every signature, the chain rules and the
nullified flags. Prints one line per file:

  ok <did> <n> ops (<m> nullified)
  invalid <did>: op <index> <cid>: <reason>

With --proof, each entry must also carry an inclusion proof (GET
/:did/log/audit?proof=true) that verifies against a checkpoint signed by
--vkey.

Exit status: 0 when every log is valid, 1 when any is invalid, 2 on usage
or read errors.`, e)
	withProof := fs.Bool("proof", false, "also check each entry's inclusion proof (logs fetched with ?proof=true) against a checkpoint signed by --vkey")
	vkey, workers := new(string), new(int)
	f := cli.NewFlags(fs, e)
	f.Str(vkey, "vkey", "PLC_VKEY", "", "the directory's checkpoint verifier key, for --proof")
	f.Int(workers, "workers", "PLC_WORKERS", runtime.GOMAXPROCS(0), "files verified in parallel")
	if code, done := f.Parse("plc audit verify-log", args); done {
		return code
	}
	files := fs.Args()
	if len(files) == 0 {
		return e.Failf(exitUsage, "plc audit verify-log: no files given\nUsage: plc audit verify-log [flags] FILE...")
	}
	if *workers < 1 {
		return e.Failf(exitUsage, "plc audit verify-log: --workers must be at least 1")
	}
	var verifier note.Verifier
	if *withProof {
		var err error
		if verifier, err = tlog.NewVerifier(*vkey); err != nil {
			return e.Failf(exitUsage, "plc audit verify-log: --proof needs the directory's verifier key: --vkey %q: %v", *vkey, err)
		}
	}

	type outcome struct {
		line   string
		code   int
		stderr bool
	}
	results := make([]outcome, len(files))
	sem := make(chan struct{}, *workers)
	var wg sync.WaitGroup
	for i, f := range files {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if ctx.Err() != nil {
				results[i] = outcome{fmt.Sprintf("plc audit verify-log: %s: interrupted", f), exitUsage, true}
				return
			}
			entries, err := readLogFile(f)
			if err != nil {
				results[i] = outcome{fmt.Sprintf("plc audit verify-log: %v", err), exitUsage, true}
				return
			}
			res := audit.VerifyLog(entries)
			if res.Failure == nil && verifier != nil {
				if at, err := audit.VerifyProofs(entries, verifier); err != nil {
					results[i] = outcome{fmt.Sprintf("invalid %s: op %d %s: %v", res.DID, at, entries[at].CID, err), exitFailure, false}
					return
				}
			}
			if res.Failure == nil {
				results[i] = outcome{fmt.Sprintf("ok %s %d ops (%d nullified)", res.DID, res.Ops, res.Nullified), exitOK, false}
				return
			}
			results[i] = outcome{invalidLine(f, res), exitFailure, false}
		}()
	}
	wg.Wait()
	code := exitOK
	for _, r := range results {
		if r.stderr {
			fmt.Fprintln(e.Stderr, r.line)
		} else {
			fmt.Fprintln(e.Stdout, r.line)
		}
		code = max(code, r.code)
	}
	return code
}

func readLogFile(path string) ([]plc.AuditEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	entries, err := plc.ReadAuditLog(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return entries, nil
}

func invalidLine(file string, res audit.LogResult) string {
	f := res.Failure
	if errors.Is(f.Err, audit.ErrEmptyLog) {
		return fmt.Sprintf("invalid %s: empty audit log", file)
	}
	reason := f.Err.Error()
	var ve *validate.Error
	if errors.As(f.Err, &ve) {
		reason = ve.Short()
	}
	return fmt.Sprintf("invalid %s: op %d %s: %s", res.DID, f.Index, f.CID, reason)
}
