package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plcdir/plc/internal/pgtest"
	"github.com/plcdir/plc/oplog/tamper"
	"github.com/plcdir/plc/tlog"
)

// TestTransparencyLogEndToEnd: a new log gets a key in its data directory;
// audit logs with proofs verify with plc audit verify-log --proof and the
// printed verifier key; a tampered database, a missing or another key are
// refused at start.
func TestTransparencyLogEndToEnd(t *testing.T) {
	bin := plcBinary(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "data", "plc.sqlite")
	srv := startServer(t, db)
	writeHistory(t, srv.url, 0, 12, 3)
	keyFile := filepath.Join(dir, "data", "checkpoint.key")
	out, err := exec.Command(bin, "keygen", "--out", filepath.Join(dir, "other.key"), "--origin", "other.test").Output()
	if err != nil {
		t.Fatal(err)
	}
	otherVKey := strings.TrimSpace(string(out))
	lines := exportLines(t, srv.url)
	did := lineDIDs(t, lines)[3]
	code, body := getBody(t, srv.url+"/"+did+"/log/audit?proof=true")
	if code != 200 || !bytes.Contains(body, []byte(`"proof":{"treeSize":`)) {
		t.Fatalf("audit log with proofs: %d %s", code, body)
	}
	srv.kill()
	logFile := filepath.Join(dir, "audit.json")
	if err := os.WriteFile(logFile, body, 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatalf("no key in the data directory: %v", err)
	}
	vkey := vkeyOf(t, string(key))

	verify := func(args ...string) (int, string) {
		var stdout, stderr bytes.Buffer
		c := run(context.Background(), append([]string{"audit", "verify-log", "--proof"}, args...),
			env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }})
		return c, stdout.String() + stderr.String()
	}
	if c, msg := verify("--vkey", vkey, logFile); c != exitOK || !strings.HasPrefix(msg, "ok "+did) {
		t.Fatalf("verify-log --proof: exit %d: %s", c, msg)
	}
	if c, msg := verify("--vkey", otherVKey, logFile); c != exitFailure || !strings.Contains(msg, "inclusion proof") {
		t.Fatalf("verify-log --proof with another key: exit %d: %s", c, msg)
	}
	forged := flipFirstHash(t, body)
	forgedFile := filepath.Join(dir, "forged.json")
	os.WriteFile(forgedFile, forged, 0o600)
	if c, msg := verify("--vkey", vkey, forgedFile); c != exitFailure || !strings.Contains(msg, "not in the checkpoint's tree") {
		t.Fatalf("verify-log --proof of a forged proof: exit %d: %s", c, msg)
	}
	if c, msg := verify(logFile); c != exitUsage || !strings.Contains(msg, "--vkey") {
		t.Fatalf("verify-log --proof without a key: exit %d: %s", c, msg)
	}

	// Another key for this log: refused.
	p := startProcExpectExit(t, "serve", "--db", db, "--listen", "127.0.0.1:0", "--checkpoint-key", filepath.Join(dir, "other.key"))
	if !strings.Contains(p, "does not verify with the checkpoint key") {
		t.Fatalf("serve with another key: %s", p)
	}
	// The key file gone: refused, not replaced.
	os.Rename(keyFile, keyFile+".bak")
	if p := startProcExpectExit(t, "serve", "--db", db, "--listen", "127.0.0.1:0"); !strings.Contains(p, "key file") || !strings.Contains(p, "missing") {
		t.Fatalf("serve without its key: %s", p)
	}
	os.Rename(keyFile+".bak", keyFile)
	// An op changed behind the log's back: refused.
	tamper.Exec(t, db, `UPDATE operations SET created_at = created_at + 1 WHERE seq = 7`)
	if p := startProcExpectExit(t, "serve", "--db", db, "--listen", "127.0.0.1:0"); !strings.Contains(p, "does not match its transparency log") || !strings.Contains(p, "seq 7") {
		t.Fatalf("serve on a tampered database: %s", p)
	}
}

// TestTransparencyLogPostgresTamperRefused: the same start-up check on
// PostgreSQL, with the op row rewritten by a superuser.
func TestTransparencyLogPostgresTamperRefused(t *testing.T) {
	url := pgtest.URL(t)
	srv := startServer(t, url)
	writeHistory(t, srv.url, 100, 6, 2)
	srv.kill()
	tamper.Exec(t, url, `UPDATE operations SET op = (SELECT op FROM operations WHERE seq = 2) WHERE seq = 3`)
	if p := startProcExpectExit(t, "serve", "--db", url, "--listen", "127.0.0.1:0"); !strings.Contains(p, "does not match its transparency log") {
		t.Fatalf("serve on a tampered database: %s", p)
	}
}

func vkeyOf(t *testing.T, skey string) string {
	t.Helper()
	k, err := tlog.ParseKey(skey)
	if err != nil {
		t.Fatal(err)
	}
	return k.VKey
}

// startProcExpectExit runs the binary, which must exit non-zero before
// serving, and returns its stderr.
func startProcExpectExit(t *testing.T, args ...string) string {
	t.Helper()
	c := exec.Command(plcBinary(t), args...)
	c.Dir = filepath.Dir(plcBinary(t))
	out, err := c.CombinedOutput()
	if err == nil {
		t.Fatalf("%v exited 0: %s", args, out)
	}
	return string(out)
}

// flipFirstHash changes one character of the first proof hash of an audit
// log, keeping it valid base64 of the same length.
func flipFirstHash(t *testing.T, body []byte) []byte {
	t.Helper()
	i := bytes.Index(body, []byte(`"hashes":["`))
	if i < 0 {
		t.Fatal("no proof hashes")
	}
	out := bytes.Clone(body)
	j := i + len(`"hashes":["`)
	if out[j] == 'A' {
		out[j] = 'B'
	} else {
		out[j] = 'A'
	}
	return out
}
