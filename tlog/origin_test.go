package tlog_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plcdir/plc/oplog/storetest"
	"github.com/plcdir/plc/tlog"
)

// C2SP tlog-tiles: the origin SHOULD be the log's URL prefix without its
// scheme. A key created without --origin was named after the bare host
// name, which is no prefix of the log (served under /tlog/).
func TestDefaultOriginIsNotABareHostName(t *testing.T) {
	o := tlog.DefaultOrigin()
	host, path, ok := strings.Cut(o, "/")
	if !ok || path != "tlog" || host == "" {
		t.Fatalf("DefaultOrigin() = %q, want <host>/tlog", o)
	}
	if _, _, err := tlog.GenerateKey(o); err != nil {
		t.Fatalf("GenerateKey(%q): %v", o, err)
	}
}

// A log whose key was created with a bare host name keeps it: OpenKey
// loads the key file as it is and never makes a new key (a new log) for
// the new default origin. Only a new log gets the new default.
func TestOpenKeyKeepsAnExistingOrigin(t *testing.T) {
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	skey, _, err := tlog.GenerateKey("plc.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.WriteKeyFile(filepath.Join(dir, "checkpoint.key"), skey); err != nil {
		t.Fatal(err)
	}
	s, _ := storetest.SQLite(t)
	k, err := tlog.OpenKey(ctx, s, "", dir, "", logger)
	if err != nil {
		t.Fatal(err)
	}
	if k.Origin() != "plc.example.com" {
		t.Fatalf("existing key opened with origin %q, want plc.example.com", k.Origin())
	}
	k, err = tlog.OpenKey(ctx, s, "", t.TempDir(), "", logger)
	if err != nil {
		t.Fatal(err)
	}
	if k.Origin() != tlog.DefaultOrigin() {
		t.Fatalf("new key's origin %q, want %q", k.Origin(), tlog.DefaultOrigin())
	}
}
