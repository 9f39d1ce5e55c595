package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plcdir/plc/oplog/storetest"
	"github.com/plcdir/plc/tlog"
)

// monitoredLog serves a directory's transparency log over n generated
// ops and returns its URL and verifier key.
func monitoredLog(t *testing.T, n int) (*httptest.Server, string) {
	t.Helper()
	s, _ := storetest.SQLite(t)
	storetest.Load(t, s, storetest.Corpus(t, 5, n))
	skey, vkey, err := tlog.GenerateKey("plc.test")
	if err != nil {
		t.Fatal(err)
	}
	key, err := tlog.ParseKey(skey)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(tlog.New(s, key, tlog.Options{}))
	t.Cleanup(srv.Close)
	return srv, vkey
}

func TestAuditMonitorCLI(t *testing.T) {
	ctx := context.Background()
	srv, vkey := monitoredLog(t, 60)
	dir := filepath.Join(t.TempDir(), "state")

	code, stdout, stderr := runPLC(t, ctx, nil, "audit", "monitor", srv.URL, "--state", dir, "--vkey", vkey, "--once")
	if code != exitOK || !strings.Contains(stderr, "ok: checkpoint of size 60 (was 0) verified, 60 new entries replayed") || stdout != "" {
		t.Fatalf("first round: exit %d\n%s%s", code, stdout, stderr)
	}
	// Flags before the URL work too; nothing new is fine.
	code, _, stderr = runPLC(t, ctx, nil, "audit", "monitor", "--once", "--state", dir, srv.URL+"/", "--vkey", vkey)
	if code != exitOK || !strings.Contains(stderr, "ok: checkpoint of size 60, unchanged") {
		t.Fatalf("second round: exit %d\n%s", code, stderr)
	}

	// A key that did not sign the log: an inconsistency, with evidence,
	// whether once or looping.
	_, other, err := tlog.GenerateKey("plc.test")
	if err != nil {
		t.Fatal(err)
	}
	for _, once := range []bool{true, false} {
		fresh := t.TempDir()
		args := []string{"audit", "monitor", srv.URL, "--state", fresh, "--vkey", other}
		if once {
			args = append(args, "--once")
		}
		code, _, stderr = runPLC(t, ctx, nil, args...)
		if code != exitFailure || !strings.Contains(stderr, "INCONSISTENCY (bad-signature)") ||
			!strings.Contains(stderr, "not signed by the key plc.test+") ||
			!strings.Contains(stderr, "evidence written to "+filepath.Join(fresh, "evidence-")) {
			t.Fatalf("wrong key (once %v): exit %d\n%s", once, code, stderr)
		}
		evs, _ := filepath.Glob(filepath.Join(fresh, "evidence-*-bad-signature.json"))
		if len(evs) != 1 {
			t.Fatalf("evidence files: %v", evs)
		}
	}
	// The state directory of a log is not another's.
	code, _, stderr = runPLC(t, ctx, nil, "audit", "monitor", srv.URL, "--state", dir, "--vkey", other, "--once")
	if code != exitUsage || !strings.Contains(stderr, "another log") {
		t.Fatalf("another log's state: exit %d\n%s", code, stderr)
	}

	// Usage errors.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--state", dir, "--vkey", vkey}, "want one directory URL"},
		{[]string{srv.URL, srv.URL, "--state", dir, "--vkey", vkey}, "want one directory URL"},
		{[]string{srv.URL, "--vkey", vkey}, "--state DIR is required"},
		{[]string{srv.URL, "--state", dir}, "--vkey is required"},
		{[]string{srv.URL, "--state", dir, "--vkey", "nonsense"}, "verifier key"},
		{[]string{"ftp://x", "--state", dir, "--vkey", vkey}, "http:// or https://"},
		{[]string{srv.URL, "--state", dir, "--vkey", vkey, "--interval", "0s"}, "--interval must be positive"},
		{[]string{srv.URL, "--state", dir, "--vkey", vkey, "--frobnicate"}, "flag provided but not defined"},
	} {
		code, _, stderr := runPLC(t, ctx, nil, append([]string{"audit", "monitor"}, tc.args...)...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, want 2 saying %q\n%s", tc.args, code, tc.want, stderr)
		}
	}
	code, _, stderr = runPLC(t, ctx, nil, "audit", "monitor", "-h")
	if code != exitOK || !strings.Contains(stderr, "Usage: plc audit monitor") || !strings.Contains(stderr, "PLC_MONITOR_VKEY") {
		t.Fatalf("-h: exit %d\n%s", code, stderr)
	}

	// The network failing says nothing about the log: exit 2, state kept.
	before, err := os.ReadFile(filepath.Join(dir, "checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
	code, _, stderr = runPLC(t, ctx, nil, "audit", "monitor", srv.URL, "--state", dir, "--vkey", vkey, "--once")
	if code != exitUsage || strings.Contains(stderr, "INCONSISTENCY") {
		t.Fatalf("server down: exit %d\n%s", code, stderr)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "checkpoint")); !bytes.Equal(before, after) {
		t.Fatal("the state changed")
	}
}
