package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/plcdir/plc/cmd/plc/internal/opbuild"
	"github.com/plcdir/plc/internal/cli"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/tlog"
	"github.com/plcdir/plc/validate"
)

// tlogConfig is the transparency log's part of serveConfig.
type tlogConfig struct {
	// CheckpointKey is the checkpoint key file; empty: checkpoint.key in
	// the data directory, created when the log is new.
	CheckpointKey string
	// Origin names a key created in the data directory (default:
	// tlog.DefaultOrigin, <host name>/tlog).
	Origin string
	// Witnesses are URL=VKEY pairs; validate parses them into witnesses.
	Witnesses []string
	witnesses []*tlog.Witness
	// WitnessPolicy is a witness policy file (tlog.Policy's format), the
	// other way to name the witnesses, with a quorum.
	WitnessPolicy string
	policy        *tlog.Policy
	// quorum is how many of the witnesses must cosign a checkpoint: the
	// policy's (tlog.Policy.Quorum), or all of those given by --witness.
	quorum int
	// StartupCheck is how the derived state (nullified, signer indexes)
	// is checked at startup: "full" (every signature) or "quick" (the
	// chains replayed with the stored signer indexes; the signatures of
	// the DIDs with ops after the latest checkpoint and of the ops of the
	// last recovery window).
	StartupCheck string
}

func tlogFlags(f *cli.Flags, c *tlogConfig) {
	f.Str(&c.CheckpointKey, "checkpoint-key", "PLC_CHECKPOINT_KEY", "", "transparency-log checkpoint key file (plc keygen); default: checkpoint.key in the data directory, created for a new log")
	f.Str(&c.Origin, "origin", "PLC_ORIGIN", "", "origin (key name) of a checkpoint key created in the data directory: the log's URL prefix without its scheme, e.g. plc.example.com/tlog (default: <host name>/tlog)")
	f.Str(&c.StartupCheck, "startup-check", "PLC_STARTUP_CHECK", "quick", "startup check of the derived state (nullified, signer indexes): quick or full (every signature again)")
	f.List(&c.Witnesses, "witness", "PLC_WITNESSES", "a witness to cosign checkpoints, as URL=VKEY", func(s string) error {
		_, err := tlog.ParseWitness(s)
		return err
	})
	f.Str(&c.WitnessPolicy, "witness-policy", "PLC_WITNESS_POLICY", "", "witness policy file: the witnesses (with URLs) and the quorum of their cosignatures each checkpoint needs (see README); instead of --witness")
}

func (c *tlogConfig) validate() error {
	if c.StartupCheck != "quick" && c.StartupCheck != "full" {
		return fmt.Errorf("--startup-check %q: want quick or full", c.StartupCheck)
	}
	c.witnesses, c.policy, c.quorum = nil, nil, 0
	for _, s := range c.Witnesses {
		w, err := tlog.ParseWitness(s)
		if err != nil {
			return fmt.Errorf("--witness %q: %v", s, err)
		}
		c.witnesses = append(c.witnesses, w)
	}
	c.quorum = len(c.witnesses)
	if c.WitnessPolicy != "" {
		if len(c.Witnesses) > 0 {
			return errors.New("--witness-policy and --witness: name the witnesses in one of them (the policy file, to set a quorum)")
		}
		p, err := tlog.ReadPolicyFile(c.WitnessPolicy)
		if err != nil {
			return fmt.Errorf("--witness-policy: %w", err)
		}
		if err := p.CheckReachable(); err != nil {
			return fmt.Errorf("--witness-policy %s: %w", c.WitnessPolicy, err)
		}
		c.policy, c.witnesses, c.quorum = p, p.Witnesses(), p.Quorum()
	}
	if c.Origin != "" {
		if _, _, err := tlog.GenerateKey(c.Origin); err != nil {
			return fmt.Errorf("--origin: %v", err)
		}
	}
	return nil
}

// options are the log's options: the witnesses and their quorum, the
// policy's rule when a policy names them (its groups may need more than
// a count).
func (c *tlogConfig) options(logger *slog.Logger) tlog.Options {
	opts := tlog.Options{Logger: logger, Witnesses: c.witnesses, Quorum: c.quorum}
	if c.policy != nil {
		opts.QuorumMet = c.policy.Satisfied
	}
	return opts
}

// dataDir is where the embedded default keeps its files: the SQLite
// database's folder, or ./plc-data beside a PostgreSQL database.
func dataDir(db string) string {
	if oplog.IsPostgres(db) {
		return filepath.Dir(cli.DefaultDB)
	}
	return filepath.Dir(db)
}

// openTLog loads (or, for a new log, creates) the checkpoint key and runs
// the transparency log's startup check.
func openTLog(ctx context.Context, c *serveConfig, store oplog.Store, logger *slog.Logger) (*tlog.TLog, error) {
	key, err := tlog.OpenKey(ctx, store, c.TLog.CheckpointKey, dataDir(c.DB), c.TLog.Origin, logger)
	if err != nil && c.TLog.CheckpointKey != "" {
		return nil, fmt.Errorf("--checkpoint-key: %w", err)
	}
	if err != nil {
		return nil, err
	}
	if p := c.TLog.policy; p != nil {
		if err := p.CheckLog(key.VKey); err != nil {
			return nil, fmt.Errorf("--witness-policy %s: %w", c.TLog.WitnessPolicy, err)
		}
	}
	tl := tlog.New(store, key, c.TLog.options(logger))
	// The tree and the derived state are checked side by side: each reads
	// the whole log, one in seq order, the other by DID. A failure of the
	// tree check stops the other and is the one reported (an op changed,
	// added or deleted is the cause; what it does to the derived state is
	// a consequence).
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	derived := make(chan error, 1)
	go func() { derived <- checkDerived(dctx, c.TLog.StartupCheck, store, tl, logger) }()
	start := time.Now()
	last := start
	err = tl.Check(ctx, func(seq int64) {
		if time.Since(last) >= 10*time.Second {
			last = time.Now()
			logger.Info("checking the transparency log", "seq", seq)
		}
	})
	if err != nil {
		cancel()
		<-derived
		return nil, fmt.Errorf("transparency log: %w", err)
	}
	logger.Info("transparency log verified", "origin", key.Origin(), "vkey", key.VKey, "took", time.Since(start).Round(time.Millisecond).String())
	if err := <-derived; err != nil {
		return nil, err
	}
	return tl, nil
}

// checkDerived runs the startup check of the derived state (see
// oplog.CheckDerived): in full, or quick with the DIDs of the ops after
// the latest checkpoint in full.
func checkDerived(ctx context.Context, mode string, store oplog.Store, tl *tlog.TLog, logger *slog.Logger) error {
	total, err := store.LatestSeq(ctx)
	if err != nil {
		return err
	}
	// Quick: the DIDs with ops after the latest checkpoint in full (a log
	// with no checkpoint yet, a new one or one plc import wrote, which
	// checked every signature as it went, has none), and the signatures
	// of the ops a recovery could still nullify: those of the recovery
	// window before the latest op.
	opts := oplog.DerivedOptions{Quick: mode == "quick", After: total}
	switch cp, err := tl.Latest(ctx); {
	case err == nil:
		opts.After = cp.Size
	case !errors.Is(err, oplog.ErrNotFound):
		return err
	}
	if total > 0 {
		e, err := store.Op(ctx, total)
		if err != nil {
			return fmt.Errorf("read the latest op: %w", err)
		}
		opts.Recent = e.CreatedAt.Add(-validate.RecoveryWindow)
	}
	start := time.Now()
	last := start
	opts.Progress = func(n int64) {
		if time.Since(last) >= 10*time.Second {
			last = time.Now()
			logger.Info("checking the derived state", "mode", mode, "ops", n, "of", total)
		}
	}
	dr, ok := store.(oplog.DerivedReader)
	if !ok {
		return errors.New("check the derived state: the store cannot be read for it")
	}
	if err := oplog.CheckDerived(ctx, dr, opts); err != nil {
		var de *oplog.DerivedError
		if errors.As(err, &de) {
			return fmt.Errorf("%w: the database was changed behind the log's back (its nullified table or signer indexes, "+
				"or ops written before its first checkpoint); restore it from a backup", err)
		}
		return fmt.Errorf("check the derived state: %w", err)
	}
	logger.Info("derived state verified", "mode", mode, "ops", total, "took", time.Since(start).Round(time.Millisecond).String())
	return nil
}

func runKeygen(ctx context.Context, e env, args []string) int {
	const usage = "plc keygen --out FILE [--origin NAME] [--type ed25519|ml-dsa-44|k256|p256]"
	fs := cli.NewFlagSet("keygen", usage,
		`Writes a new transparency-log checkpoint key to FILE (mode 0600;
an existing file is never overwritten) and prints its verifier key, which
monitors, witnesses and plc audit use to check the log's checkpoints. The
origin names the log in its checkpoints: use the log's URL prefix without
its scheme and trailing slash (C2SP tlog-tiles), e.g. plc.example.com/tlog
for a directory at https://plc.example.com, whose log is served under
https://plc.example.com/tlog/. The default is this machine's host name
followed by /tlog. Pass the file to plc serve or plc mirror with
--checkpoint-key.

With --type k256 or p256 it writes a did:plc rotation (or signing) key
instead: a secp256k1 or NIST P-256 private key in the multibase form goat
uses, and prints its public did:key. plc op reads these files.`, e)
	out := fs.String("out", "", "key file to create (required)")
	origin := fs.String("origin", tlog.DefaultOrigin(), "the log's origin (the key's name; transparency-log keys only)")
	typ := fs.String("type", "ed25519", "the key's kind: ed25519 (signed-note Ed25519, which the most verifiers read) or ml-dsa-44 (a C2SP tlog-cosignature ML-DSA-44 key, as tlog-checkpoint recommends; post-quantum) for a checkpoint key; k256 or p256 for a did:plc rotation key")
	if code, done := cli.ParseFlags(fs, args); done {
		return code
	}
	if *out == "" || fs.NArg() > 0 {
		return e.Failf(exitUsage, "plc keygen: want --out FILE and no arguments\nUsage: %s", usage)
	}
	if curve, ok := map[string]validate.Curve{"k256": validate.CurveK256, "p256": validate.CurveP256}[*typ]; ok {
		originSet := false
		fs.Visit(func(f *flag.Flag) { originSet = originSet || f.Name == "origin" })
		if originSet {
			return e.Failf(exitUsage, "plc keygen: --origin names a transparency log's key; a %s key has none", *typ)
		}
		k, err := opbuild.GenerateKey(curve)
		if err != nil {
			return e.Failf(exitFailure, "plc keygen: %v", err)
		}
		if err := opbuild.WriteKeyFile(*out, k); err != nil {
			return e.Failf(exitUsage, "plc keygen: %v", err)
		}
		fmt.Fprintln(e.Stdout, k.DIDKey)
		return exitOK
	}
	kinds := map[string]byte{"ed25519": tlog.KeyEd25519, "ml-dsa-44": tlog.KeyMLDSA44}
	kind, ok := kinds[*typ]
	if !ok {
		return e.Failf(exitUsage, "plc keygen: --type %q: want ed25519 or ml-dsa-44 (checkpoint keys), k256 or p256 (did:plc rotation keys)", *typ)
	}
	skey, vkey, err := tlog.GenerateKeyOfType(kind, *origin)
	if err != nil {
		return e.Failf(exitUsage, "plc keygen: %v", err)
	}
	if err := tlog.WriteKeyFile(*out, skey); err != nil {
		return e.Failf(exitUsage, "plc keygen: %v", err)
	}
	fmt.Fprintln(e.Stdout, vkey)
	return exitOK
}
