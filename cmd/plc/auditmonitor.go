package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/plcdir/plc/audit"
	"github.com/plcdir/plc/client"
	"github.com/plcdir/plc/internal/cli"
	"github.com/plcdir/plc/tlog"
)

const monitorUsage = "plc audit monitor URL --state DIR --vkey VKEY [--witness-policy FILE] [--once] [--interval D]"

func runAuditMonitor(ctx context.Context, e env, args []string) int {
	fs := cli.NewFlagSet("monitor", monitorUsage,
		`Follows the transparency log of the directory at URL, trusting only its
checkpoint verifier key (--vkey, as plc serve logs it). Each round fetches
the signed checkpoint (/tlog/checkpoint) and checks:

  - its signature;
  - that it is consistent with the last checkpoint verified (kept in
    DIR/checkpoint): a consistency proof computed from hash tiles, which
    are checked against the signed root; the same size with another root
    is a fork;
  - every new entry (entry bundles): it hashes to its leaf in the tiles,
    its seq is its index + 1, and the did:plc rules accept its op after
    every entry before it (the monitor replays the log into its own
    database, DIR/monitor.sqlite);
  - that the tree of the replayed entries has the checkpoint's root;
  - with --witness-policy FILE (the policy format of plc serve, see the
    README): that the cosignatures of the policy's witnesses verify
    (other signers are ignored) and meet its quorum.

On any inconsistency it writes an evidence file in DIR (JSON: the kind,
the reason, the previous and new checkpoints, the failing proof, tiles or
entry) and exits 1, naming the file. Progress goes to standard error.

With --once, one round, then exit (for cron). Otherwise a round every
--interval; a round that fails on the network is retried at the next.

Exit status: 0 ok, 1 inconsistency found, 2 usage, network or local
errors.`, e)
	f := cli.NewFlags(fs, e)
	var (
		state, vkey string
		policyFile  string
		once        bool
		interval    time.Duration
		timeout     time.Duration
	)
	f.Str(&state, "state", "PLC_MONITOR_STATE", "", "state directory: the last verified checkpoint, the replayed log, evidence files (required)")
	f.Str(&vkey, "vkey", "PLC_MONITOR_VKEY", "", "the log's checkpoint verifier key (required)")
	f.Str(&policyFile, "witness-policy", "PLC_MONITOR_WITNESS_POLICY", "", "witness policy file: every checkpoint must carry valid cosignatures meeting its quorum")
	f.Bool(&once, "once", "PLC_MONITOR_ONCE", "run one round and exit")
	f.Duration(&interval, "interval", "PLC_MONITOR_INTERVAL", 10*time.Second, "time between rounds")
	f.Duration(&timeout, "timeout", "PLC_MONITOR_TIMEOUT", client.DefaultTimeout, "timeout of each HTTP request")
	pos, code, done := cli.ParseInterspersed(fs, args)
	if done {
		return code
	}
	fail := func(format string, a ...any) int {
		return e.Failf(exitUsage, "plc audit monitor: "+format+"\nUsage: %s", append(a, monitorUsage)...)
	}
	switch {
	case f.Err != nil:
		return fail("%v", f.Err)
	case len(pos) != 1:
		return fail("want one directory URL")
	case state == "":
		return fail("--state DIR is required")
	case vkey == "":
		return fail("--vkey is required (the log's verifier key)")
	case interval <= 0:
		return fail("--interval must be positive")
	case timeout <= 0:
		return fail("--timeout must be positive")
	}
	var policy *tlog.Policy
	if policyFile != "" {
		p, err := tlog.ReadPolicyFile(policyFile)
		if err != nil {
			return fail("--witness-policy: %v", err)
		}
		policy = p
	}
	m, err := audit.OpenMonitor(audit.MonitorOptions{
		URL:      pos[0],
		Dir:      state,
		VKey:     vkey,
		Policy:   policy,
		Client:   &http.Client{Timeout: timeout},
		Progress: prefixWriter{e, "plc audit monitor: "},
	})
	if err != nil {
		if errors.Is(err, audit.ErrMonitorUsage) {
			return fail("%v", err)
		}
		return e.Failf(exitUsage, "plc audit monitor: %v", err)
	}
	defer m.Close()
	if once {
		res, err := m.Round(ctx)
		if err != nil {
			return monitorFailed(e, err)
		}
		return e.Failf(exitOK, "plc audit monitor: %s", res)
	}
	err = m.Run(ctx, interval)
	if ctx.Err() != nil {
		return exitOK // interrupted
	}
	return monitorFailed(e, err)
}

// monitorFailed reports a failed round: an inconsistency (exit 1) or any
// other error (exit 2).
func monitorFailed(e env, err error) int {
	if inc, ok := errors.AsType[*audit.Inconsistency](err); ok {
		return e.Failf(exitFailure, "plc audit monitor: INCONSISTENCY (%s): %s\nplc audit monitor: evidence written to %s", inc.Kind, inc.Reason, inc.Evidence)
	}
	return e.Failf(exitUsage, "plc audit monitor: %v", err)
}

// prefixWriter writes each progress line to stderr with a prefix.
type prefixWriter struct {
	e      env
	prefix string
}

func (w prefixWriter) Write(p []byte) (int, error) {
	if _, err := fmt.Fprintf(w.e.Stderr, "%s%s", w.prefix, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
