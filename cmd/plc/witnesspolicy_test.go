package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/storetest"
	"github.com/plcdir/plc/tlog"
)

func cosignerVKey(t *testing.T, typ byte, name string) string {
	t.Helper()
	_, vkey, err := tlog.GenerateCosignerKey(typ, name)
	if err != nil {
		t.Fatal(err)
	}
	return vkey
}

func writePolicy(t *testing.T, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "witnesses.policy")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runServeOnce runs plc serve with a cancelled context (it stops at once
// if it starts) and the environment vars.
func runServeOnce(t *testing.T, vars map[string]string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr bytes.Buffer
	db := filepath.Join(t.TempDir(), "plc.sqlite")
	args = append([]string{"serve", "--db", db, "--listen", "127.0.0.1:0", "--log-format", "json"}, args...)
	code := run(ctx, args, env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string { return vars[k] }})
	return code, stderr.String()
}

func TestWitnessPolicyFlag(t *testing.T) {
	ed := cosignerVKey(t, tlog.CosignatureEd25519, "ed.example/w")
	pq := cosignerVKey(t, tlog.CosignatureMLDSA44, "pq.example/w")
	other := cosignerVKey(t, tlog.CosignatureEd25519, "other.example/w")
	good := writePolicy(t, fmt.Sprintf("witness ed %s https://ed.example/w\nwitness pq %s https://pq.example/w\nwitness other %s\ngroup g 2 ed pq other\nquorum g\n", ed, pq, other))

	c := tlogConfig{StartupCheck: "quick", WitnessPolicy: good}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.witnesses) != 2 || c.witnesses[0].VKey != ed || c.witnesses[1].VKey != pq || c.quorum != 2 || c.policy == nil {
		t.Fatalf("witnesses %v, quorum %d", c.witnesses, c.quorum)
	}
	// --witness alone: every witness given is the quorum.
	c = tlogConfig{StartupCheck: "quick", Witnesses: []string{"https://ed.example/w=" + ed, "https://pq.example/w=" + pq}}
	if err := c.validate(); err != nil || len(c.witnesses) != 2 || c.quorum != 2 || c.policy != nil {
		t.Fatalf("--witness: %v, %d witnesses, quorum %d", err, len(c.witnesses), c.quorum)
	}

	for _, tc := range []struct {
		name string
		vars map[string]string
		args []string
		want string
	}{
		{"both flags", nil, []string{"--witness-policy", good, "--witness", "https://ed.example/w=" + ed}, "--witness-policy and --witness"},
		{"syntax error, from the environment", map[string]string{"PLC_WITNESS_POLICY": writePolicy(t, "witness ed "+ed+"\nquorum nobody\n")}, nil, `line 2: quorum "nobody" is not defined`},
		{"quorum out of reach", nil, []string{"--witness-policy", writePolicy(t, fmt.Sprintf("witness ed %s https://ed.example/w\nwitness other %s\ngroup g all ed other\nquorum g\n", ed, other))}, "can never be met"},
		{"missing file", nil, []string{"--witness-policy", filepath.Join(t.TempDir(), "nope")}, "--witness-policy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stderr := runServeOnce(t, tc.vars, tc.args...)
			if code != exitUsage || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, want %d saying %q; stderr:\n%s", code, exitUsage, tc.want, stderr)
			}
		})
	}
}

// TestWitnessPolicyOfAnotherLogIsRefused: a policy whose log lines name
// another key than the log's stops serve at startup.
func TestWitnessPolicyOfAnotherLogIsRefused(t *testing.T) {
	ed := cosignerVKey(t, tlog.CosignatureEd25519, "ed.example/w")
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "checkpoint.key")
	skey, vkey, err := tlog.GenerateKey("plc.test/tlog")
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.WriteKeyFile(keyFile, skey); err != nil {
		t.Fatal(err)
	}
	_, otherLog, err := tlog.GenerateKey("plc.test/tlog")
	if err != nil {
		t.Fatal(err)
	}
	policy := "log %s\nwitness ed %s https://ed.example/w\nquorum ed\n"
	open := func(vkey string) error {
		db := filepath.Join(t.TempDir(), "plc.sqlite")
		c := serveConfig{DB: db, TLog: tlogConfig{StartupCheck: "quick", CheckpointKey: keyFile, WitnessPolicy: writePolicy(t, fmt.Sprintf(policy, vkey, ed))}}
		if err := c.TLog.validate(); err != nil {
			t.Fatal(err)
		}
		store, _, err := oplog.Open(context.Background(), db)
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		_, err = openTLog(context.Background(), &c, store, slog.New(slog.DiscardHandler))
		return err
	}
	if err := open(otherLog); err == nil || !strings.Contains(err.Error(), "log lines name other keys") {
		t.Fatalf("openTLog with another log's policy: %v", err)
	}
	if err := open(vkey); err != nil {
		t.Fatalf("openTLog with the log's own policy: %v", err)
	}
}

// TestAuditMonitorWitnessPolicy: plc audit monitor --witness-policy
// reports a checkpoint without the policy's quorum as an inconsistency
// (exit 1, evidence written); a policy that needs none passes; a bad
// policy file is a usage error.
func TestAuditMonitorWitnessPolicy(t *testing.T) {
	ctx := context.Background()
	srv, vkey := monitoredLog(t, 40)
	ed := cosignerVKey(t, tlog.CosignatureEd25519, "ed.example/w")
	pq := cosignerVKey(t, tlog.CosignatureMLDSA44, "pq.example/w")
	needsOne := writePolicy(t, fmt.Sprintf("log %s\nwitness ed %s\nwitness pq %s\ngroup g any ed pq\nquorum g\n", vkey, ed, pq))

	dir := t.TempDir()
	code, _, stderr := runPLCEnv(ctx, map[string]string{"PLC_MONITOR_WITNESS_POLICY": needsOne}, "audit", "monitor", srv.URL, "--state", dir, "--vkey", vkey, "--once")
	if code != exitFailure || !strings.Contains(stderr, "INCONSISTENCY (no-quorum)") || !strings.Contains(stderr, "evidence written to "+filepath.Join(dir, "evidence-")) {
		t.Fatalf("a checkpoint without cosignatures: exit %d\n%s", code, stderr)
	}
	if evs, _ := filepath.Glob(filepath.Join(dir, "evidence-*-no-quorum.json")); len(evs) != 1 {
		t.Fatalf("evidence files: %v", evs)
	}

	none := writePolicy(t, fmt.Sprintf("witness ed %s\nquorum none\n", ed))
	code, _, stderr = runPLC(t, ctx, nil, "audit", "monitor", srv.URL, "--state", t.TempDir(), "--vkey", vkey, "--witness-policy", none, "--once")
	if code != exitOK {
		t.Fatalf("quorum none: exit %d\n%s", code, stderr)
	}

	for _, tc := range []struct{ policy, want string }{
		{writePolicy(t, "witness ed "+ed+"\nquorum ed\nquorum ed\n"), "line 3: a second quorum line"},
		{writePolicy(t, fmt.Sprintf("log %s\nwitness ed %s\nquorum ed\n", cosignerVKey(t, tlog.CosignatureMLDSA44, "plc.test"), ed)), "log lines name other keys"},
		{filepath.Join(t.TempDir(), "missing"), "--witness-policy"},
	} {
		code, _, stderr = runPLC(t, ctx, nil, "audit", "monitor", srv.URL, "--state", t.TempDir(), "--vkey", vkey, "--witness-policy", tc.policy, "--once")
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("policy %s: exit %d, want 2 saying %q\n%s", tc.policy, code, tc.want, stderr)
		}
	}
}

// TestKeygenMLDSA44: plc keygen --type ml-dsa-44 makes a log key that
// signs checkpoints plc audit monitor verifies with the printed vkey.
func TestKeygenMLDSA44(t *testing.T) {
	ctx := context.Background()
	keyFile := filepath.Join(t.TempDir(), "checkpoint.key")
	code, stdout, stderr := runPLC(t, ctx, nil, "keygen", "--out", keyFile, "--origin", "plc.test/tlog", "--type", "ml-dsa-44")
	if code != exitOK {
		t.Fatalf("keygen: exit %d\n%s", code, stderr)
	}
	vkey := strings.TrimSpace(stdout)
	key, err := tlog.LoadKey(keyFile)
	if err != nil || key.VKey != vkey {
		t.Fatalf("LoadKey: %v; vkey %q, printed %q", err, key.VKey, vkey)
	}
	if v, err := tlog.NewVerifier(vkey); err != nil || v.Name() != "plc.test/tlog" {
		t.Fatalf("the printed vkey: %v", err)
	}
	s, _ := storetest.SQLite(t)
	storetest.Load(t, s, storetest.Corpus(t, 5, 30))
	srv := httptest.NewServer(tlog.New(s, key, tlog.Options{}))
	defer srv.Close()
	code, _, stderr = runPLC(t, ctx, nil, "audit", "monitor", srv.URL, "--state", t.TempDir(), "--vkey", vkey, "--once")
	if code != exitOK || !strings.Contains(stderr, "checkpoint of size 30") {
		t.Fatalf("monitor of an ML-DSA-44 log: exit %d\n%s", code, stderr)
	}
	code, _, stderr = runPLC(t, ctx, nil, "keygen", "--out", filepath.Join(t.TempDir(), "k"), "--type", "rsa")
	if code != exitUsage || !strings.Contains(stderr, `--type "rsa": want ed25519 or ml-dsa-44`) {
		t.Fatalf("keygen --type rsa: exit %d\n%s", code, stderr)
	}
}

// TestWitnessPolicyGroupsDecideTheQuorum: the log is given the policy's
// own rule, not only its least count. With all-of(any(a, b), any(c, d))
// two cosignatures may or may not meet the quorum; a count of 2 would
// take a and b as a quorum.
func TestWitnessPolicyGroupsDecideTheQuorum(t *testing.T) {
	k := map[string]string{}
	src := ""
	for _, n := range []string{"a", "b", "c", "d"} {
		k[n] = cosignerVKey(t, tlog.CosignatureEd25519, n+".example/w")
		src += fmt.Sprintf("witness %s %s https://%s.example/w\n", n, k[n], n)
	}
	src += "group ab any a b\ngroup cd any c d\ngroup both all ab cd\nquorum both\n"
	c := tlogConfig{StartupCheck: "quick", WitnessPolicy: writePolicy(t, src)}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	opts := c.options(slog.Default())
	if len(opts.Witnesses) != 4 || opts.QuorumMet == nil {
		t.Fatalf("options: %d witnesses, QuorumMet set %v; want 4 and the policy's rule", len(opts.Witnesses), opts.QuorumMet != nil)
	}
	if opts.QuorumMet([]string{k["a"], k["b"]}) {
		t.Error("a and b met the quorum all-of(any(a, b), any(c, d))")
	}
	if !opts.QuorumMet([]string{k["a"], k["d"]}) {
		t.Error("a and d did not meet the quorum all-of(any(a, b), any(c, d))")
	}

	// --witness: every witness given, counted.
	w := tlogConfig{StartupCheck: "quick", Witnesses: []string{"https://a.example/w=" + k["a"], "https://b.example/w=" + k["b"]}}
	if err := w.validate(); err != nil {
		t.Fatal(err)
	}
	if o := w.options(slog.Default()); o.Quorum != 2 || o.QuorumMet != nil {
		t.Errorf("--witness twice: quorum %d, rule set %v; want 2 counted", o.Quorum, o.QuorumMet != nil)
	}
}
