package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plcdir/plc/tlog"
)

// plc keygen -h recommends the origin C2SP tlog-tiles asks for, the log's
// URL prefix without its scheme, and a key made without --origin gets
// one of that form rather than the bare host name.
func TestKeygenRecommendsTheURLPrefixOrigin(t *testing.T) {
	ctx := context.Background()
	_, stdout, stderr := runPLC(t, ctx, nil, "keygen", "-h")
	help := stdout + stderr
	if !strings.Contains(help, "plc.example.com/tlog") || !strings.Contains(help, "URL prefix") {
		t.Fatalf("keygen -h does not recommend the URL prefix form:\n%s", help)
	}
	out := filepath.Join(t.TempDir(), "checkpoint.key")
	code, vkey, stderr := runPLC(t, ctx, nil, "keygen", "--out", out)
	if code != exitOK {
		t.Fatalf("keygen: %d %s", code, stderr)
	}
	k, err := tlog.LoadKey(out)
	if err != nil {
		t.Fatal(err)
	}
	if k.Origin() != tlog.DefaultOrigin() || !strings.HasSuffix(k.Origin(), "/tlog") {
		t.Fatalf("default origin %q, want <host>/tlog", k.Origin())
	}
	if !strings.HasPrefix(vkey, k.Origin()+"+") {
		t.Fatalf("printed verifier key %q is not the key's", vkey)
	}
}
