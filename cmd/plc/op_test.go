package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plcdir/plc/api"
	"github.com/plcdir/plc/cmd/plc/internal/opbuild"
	"github.com/plcdir/plc/internal/testclock"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/storetest"
)

// countingProxy forwards to target and counts the POSTs that pass: what
// plc op sent, as opposed to what it only checked.
func countingProxy(t *testing.T, target string) (string, *atomic.Int64) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	var posts atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			posts.Add(1)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &posts
}

// opRun runs plc with args and fails the test unless it exits with want.
func opRun(t *testing.T, want int, args ...string) (stdout, stderr string) {
	t.Helper()
	code, stdout, stderr := runPLC(t, context.Background(), nil, args...)
	if code != want {
		t.Fatalf("plc %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, stdout, stderr)
	}
	return stdout, stderr
}

// printed parses what an op command printed.
func printed(t *testing.T, stdout string) printedOp {
	t.Helper()
	var p printedOp
	if err := json.Unmarshal([]byte(stdout), &p); err != nil || p.DID == "" || len(p.Operation) == 0 {
		t.Fatalf("not an op command's output (%v):\n%s", err, stdout)
	}
	return p
}

func keygen(t *testing.T, dir, name, typ string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	stdout, _ := opRun(t, exitOK, "keygen", "--type", typ, "--out", path)
	if !strings.HasPrefix(stdout, "did:key:z") {
		t.Fatalf("keygen printed %q", stdout)
	}
	return path
}

// document is the parsed GET /:did of a DID.
type document struct {
	AlsoKnownAs        []string `json:"alsoKnownAs"`
	VerificationMethod []struct {
		PublicKeyMultibase string `json:"publicKeyMultibase"`
	} `json:"verificationMethod"`
	Service []struct {
		ServiceEndpoint string `json:"serviceEndpoint"`
	} `json:"service"`
}

func getDocument(t *testing.T, base, did string) (int, []byte, document) {
	t.Helper()
	code, body := getBody(t, base+"/"+did)
	var d document
	if code == http.StatusOK {
		if err := json.Unmarshal(body, &d); err != nil {
			t.Fatal(err)
		}
	}
	return code, body, d
}

// TestOpEndToEnd drives plc op against a real plc serve: genesis, updates
// of the handle, the PDS and the rotation keys, dry runs that send
// nothing, an op refused locally, and a recovery race: a hostile update
// signed with a lower-priority rotation key lands, and the higher-priority
// key's recovery nullifies it and restores the document.
func TestOpEndToEnd(t *testing.T) {
	srv := startServer(t, filepath.Join(t.TempDir(), "plc.sqlite"))
	dir, posts := countingProxy(t, srv.url)
	keys := t.TempDir()
	recovery := keygen(t, keys, "recovery.key", "k256")
	rotation := keygen(t, keys, "rotation.key", "p256")
	signing := keygen(t, keys, "signing.key", "k256")

	genesis := []string{"op", "genesis", "--rotation-key", recovery, "--rotation-key", rotation, "--sign-with", rotation,
		"--signing-key", signing, "--handle", "alice.test", "--pds", "https://pds.test", "--directory", dir}

	// A dry run prints the signed op and the document, and sends nothing.
	stdout, stderr := opRun(t, exitOK, append(genesis, "--dry-run")...)
	p := printed(t, stdout)
	did := p.DID
	if !strings.Contains(string(p.Operation), `"sig":`) || !strings.Contains(string(p.Document), `"at://alice.test"`) || !strings.Contains(stderr, "dry run") {
		t.Fatalf("dry run printed %s\n%s", stdout, stderr)
	}
	if code, _, _ := getDocument(t, srv.url, did); code != http.StatusNotFound || posts.Load() != 0 {
		t.Fatalf("a dry run sent the op: GET %d, %d POSTs", code, posts.Load())
	}

	// Signatures are randomised: a new genesis is a new DID (plc op
	// submit sends the very op a dry run printed).
	stdout, _ = opRun(t, exitOK, genesis...)
	did = printed(t, stdout).DID
	if _, _, d := getDocument(t, srv.url, did); d.AlsoKnownAs[0] != "at://alice.test" || d.Service[0].ServiceEndpoint != "https://pds.test" {
		t.Fatalf("after genesis: %+v", d)
	}

	update := func(key string, extra ...string) []string {
		return append([]string{"op", "update", "--did", did, "--directory", dir, "--key", key}, extra...)
	}
	opRun(t, exitOK, update(rotation, "--handle", "alice2.test")...)
	opRun(t, exitOK, update(rotation, "--pds", "https://pds2.test")...)
	_, _, d := getDocument(t, srv.url, did)
	if d.AlsoKnownAs[0] != "at://alice2.test" || d.Service[0].ServiceEndpoint != "https://pds2.test" {
		t.Fatalf("after updates: %+v", d)
	}

	// Rotate: a new key replaces the P-256 one, which then may sign no more.
	newKey := keygen(t, keys, "new.key", "k256")
	opRun(t, exitOK, update(rotation, "--add-rotation-key", newKey, "--remove-rotation-key", rotation)...)
	sent := posts.Load()
	_, stderr = opRun(t, exitFailure, update(rotation, "--handle", "x.test")...)
	if !strings.Contains(stderr, "is not a rotation key") || posts.Load() != sent {
		t.Fatalf("a removed key was used: %s", stderr)
	}

	// A dry-run update prints the signed op and the document it makes.
	stdout, _ = opRun(t, exitOK, update(newKey, "--handle", "dry.test", "--dry-run")...)
	if p := printed(t, stdout); !strings.Contains(string(p.Document), "at://dry.test") || posts.Load() != sent {
		t.Fatalf("dry-run update: %s (%d POSTs)", stdout, posts.Load()-sent)
	}
	// plc op submit sends what a dry run printed.
	dry := filepath.Join(keys, "dry.json")
	os.WriteFile(dry, []byte(stdout), 0o600)
	opRun(t, exitOK, "op", "submit", "--directory", dir, dry)
	if _, _, d := getDocument(t, srv.url, did); d.AlsoKnownAs[0] != "at://dry.test" {
		t.Fatalf("after submit: %+v", d)
	}

	// An op failing validate is refused locally: one signed (plc op sign)
	// by a key that is not a rotation key of the DID.
	stranger := keygen(t, keys, "stranger.key", "p256")
	stdout, _ = opRun(t, exitOK, update(newKey, "--handle", "stranger.test", "--dry-run")...)
	var unsigned map[string]any
	json.Unmarshal(printed(t, stdout).Operation, &unsigned)
	delete(unsigned, "sig")
	b, _ := json.Marshal(unsigned)
	unsignedFile := filepath.Join(keys, "unsigned.json")
	os.WriteFile(unsignedFile, b, 0o600)
	signedByStranger, _ := opRun(t, exitOK, "op", "sign", "--key", stranger, unsignedFile)
	sent = posts.Load()
	code, _, stderr := runPLC(t, context.Background(), strings.NewReader(signedByStranger), "op", "submit", "--directory", dir, "--did", did, "-")
	if code != exitFailure || !strings.Contains(stderr, "operation refused") || !strings.Contains(stderr, "invalid signature") || posts.Load() != sent {
		t.Fatalf("an op signed by a stranger: exit %d, %d POSTs\n%s", code, posts.Load()-sent, stderr)
	}
	// The same op signed by a rotation key passes.
	signed, _ := opRun(t, exitOK, "op", "sign", "--key", newKey, unsignedFile)
	if code, _, stderr := runPLC(t, context.Background(), strings.NewReader(signed), "op", "submit", "--directory", dir, "--did", did); code != exitOK {
		t.Fatalf("submit of a signed op: %s", stderr)
	}
	_, before, _ := getDocument(t, srv.url, did)

	// The race: the lower-priority key (new.key, index 1) is stolen; the
	// thief removes the recovery key and points the DID elsewhere.
	thief := keygen(t, keys, "thief.key", "k256")
	stdout, _ = opRun(t, exitOK, update(newKey, "--remove-rotation-key", recovery, "--add-rotation-key", thief, "--handle", "evil.test", "--pds", "https://evil.test")...)
	hostile := printed(t, stdout).CID
	if _, _, d := getDocument(t, srv.url, did); d.AlsoKnownAs[0] != "at://evil.test" {
		t.Fatalf("the hostile update did not land: %+v", d)
	}
	// The stolen key cannot recover; the recovery key can.
	_, stderr = opRun(t, exitFailure, "op", "recover", "--did", did, "--directory", dir, "--key", newKey)
	if !strings.Contains(stderr, "may nullify no op") {
		t.Fatalf("recovery with the stolen key: %s", stderr)
	}
	// By default the recovery would also undo the owner's own updates
	// signed by the stolen key in the window; a dry run shows it.
	stdout, _ = opRun(t, exitOK, "op", "recover", "--did", did, "--directory", dir, "--key", recovery, "--dry-run")
	if n := len(printed(t, stdout).Nullifies); n != 6 {
		t.Fatalf("a default recovery would nullify %d ops, want the 6 signed by lower-priority keys", n)
	}
	// --nullify-from the thief's op undoes only it.
	stdout, _ = opRun(t, exitOK, "op", "recover", "--did", did, "--directory", dir, "--key", recovery, "--nullify-from", hostile)
	if n := printed(t, stdout).Nullifies; len(n) != 1 || n[0] != hostile {
		t.Fatalf("recovery nullifies %v, want %s", n, hostile)
	}
	if _, after, _ := getDocument(t, srv.url, did); string(after) != string(before) {
		t.Fatalf("the recovery did not restore the document:\nbefore %s\nafter  %s", before, after)
	}
	audit := getAudit(t, srv.url, did)
	if n := len(audit); n < 2 || !audit[n-2].Nullified || audit[n-1].Nullified {
		t.Fatalf("audit log after recovery: %+v", audit)
	}
	// The recovery key, still first, may change the DID again; so may the
	// stolen key, still listed, until it is removed.
	opRun(t, exitOK, update(recovery, "--remove-rotation-key", newKey)...)
}

// TestOpRecoveryAfterTheWindowIsRefusedLocally: the directory's clock
// dated the hostile op more than 72 hours ago; plc op recover refuses to
// build the recovery, says why, and sends nothing.
func TestOpRecoveryAfterTheWindowIsRefusedLocally(t *testing.T) {
	clock := testclock.New(time.Now().Add(-80 * time.Hour))
	s, _ := storetest.SQLite(t)
	l := oplog.NewLog(s, oplog.Options{Now: clock.Now, NoRateLimit: true})
	srv := httptest.NewServer(api.New(api.Config{Log: l}))
	t.Cleanup(func() { srv.Close(); l.Close() })
	dir, posts := countingProxy(t, srv.URL)

	keys := t.TempDir()
	recovery := keygen(t, keys, "recovery.key", "k256")
	rotation := keygen(t, keys, "rotation.key", "k256")
	stdout, _ := opRun(t, exitOK, "op", "genesis", "--rotation-key", recovery, "--rotation-key", rotation, "--sign-with", rotation,
		"--handle", "alice.test", "--directory", dir)
	did := printed(t, stdout).DID
	clock.Advance(time.Minute)
	opRun(t, exitOK, "op", "update", "--did", did, "--directory", dir, "--key", rotation, "--handle", "evil.test", "--remove-rotation-key", recovery)
	sent := posts.Load()
	_, stderr := opRun(t, exitFailure, "op", "recover", "--did", did, "--directory", dir, "--key", recovery)
	if !strings.Contains(stderr, "too late") || !strings.Contains(stderr, "window closed at") || posts.Load() != sent {
		t.Fatalf("late recovery: %d POSTs\n%s", posts.Load()-sent, stderr)
	}
}

// TestOpKeyErrors: keys only from files, and files that are not usable
// keys are named with the reason.
func TestOpKeyErrors(t *testing.T) {
	dir := t.TempDir()
	good := keygen(t, dir, "good.key", "p256")
	k, err := opbuild.LoadKeyFile(good)
	if err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open.key")
	os.WriteFile(open, []byte(k.Multibase()), 0o644)
	os.Chmod(open, 0o644)
	checkpoint := filepath.Join(dir, "checkpoint.key")
	opRun(t, exitOK, "keygen", "--out", checkpoint, "--origin", "plc.test")

	for _, c := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"a key on the command line", []string{"op", "genesis", "--rotation-key", k.Multibase()}, exitUsage, "takes the name of a key file, not a key"},
		{"a key on the command line (update)", []string{"op", "update", "--did", "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "--directory", "http://127.0.0.1:1", "--key", k.Multibase(), "--handle", "a.test"}, exitUsage, "not a key"},
		{"missing", []string{"op", "genesis", "--rotation-key", filepath.Join(dir, "nope")}, exitUsage, "no such file"},
		{"readable by others", []string{"op", "genesis", "--rotation-key", open}, exitUsage, "chmod 600"},
		{"a checkpoint key", []string{"op", "genesis", "--rotation-key", checkpoint}, exitUsage, "transparency-log checkpoint key"},
		{"keygen overwrites nothing", []string{"keygen", "--type", "k256", "--out", good}, exitUsage, "refusing to overwrite"},
		{"keygen --origin with k256", []string{"keygen", "--type", "k256", "--out", filepath.Join(dir, "x"), "--origin", "a"}, exitUsage, "--origin"},
		{"no change", []string{"op", "update", "--did", "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "--directory", "http://127.0.0.1:1", "--key", good}, exitUsage, "nothing to change"},
	} {
		code, _, stderr := runPLC(t, context.Background(), nil, c.args...)
		if code != c.code || !strings.Contains(stderr, c.want) {
			t.Errorf("%s: exit %d, want %d with %q:\n%s", c.name, code, c.code, c.want, stderr)
		}
	}
	// Rotation keys keep the order of the flags, files and did:keys mixed.
	other := keygen(t, dir, "other.key", "k256")
	o, err := opbuild.LoadKeyFile(other)
	if err != nil {
		t.Fatal(err)
	}
	stdout, _ := opRun(t, exitOK, "op", "genesis", "--rotation-did-key", o.DIDKey, "--rotation-key", good)
	var op struct {
		RotationKeys []string `json:"rotationKeys"`
	}
	if err := json.Unmarshal(printed(t, stdout).Operation, &op); err != nil || len(op.RotationKeys) != 2 || op.RotationKeys[0] != o.DIDKey || op.RotationKeys[1] != k.DIDKey {
		t.Fatalf("rotation keys %v, want [%s %s]", op.RotationKeys, o.DIDKey, k.DIDKey)
	}

	// A genesis without a directory only prints (nothing to send it to).
	stdout, stderr := opRun(t, exitOK, "op", "genesis", "--rotation-key", good, "--handle", "a.test")
	if p := printed(t, stdout); !strings.HasPrefix(p.DID, "did:plc:") || !strings.Contains(stderr, "dry run") {
		t.Fatalf("genesis without a directory: %s %s", stdout, stderr)
	}
}
