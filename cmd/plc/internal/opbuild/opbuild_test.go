package opbuild

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/validate"
)

func genKey(t *testing.T, curve validate.Curve) *Key {
	t.Helper()
	k, err := GenerateKey(curve)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKeyFileRoundTripInGoatsForm(t *testing.T) {
	for _, curve := range []validate.Curve{validate.CurveK256, validate.CurveP256} {
		k := genKey(t, curve)
		path := filepath.Join(t.TempDir(), "k")
		if err := WriteKeyFile(path, k); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(path)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("key file mode %v, %v; want 0600", st.Mode(), err)
		}
		got, err := LoadKeyFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if got.DIDKey != k.DIDKey || got.Curve != curve {
			t.Fatalf("%s: loaded %s %s, wrote %s", curve, got.DIDKey, got.Curve, k.DIDKey)
		}
		// indigo (and so goat) reads the file's form as the same key.
		b, _ := os.ReadFile(path)
		priv, err := atcrypto.ParsePrivateMultibase(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("%s: indigo cannot read %q: %v", curve, b, err)
		}
		pub, _ := priv.PublicKey()
		if pub.DIDKey() != k.DIDKey {
			t.Fatalf("%s: indigo reads %s, want %s", curve, pub.DIDKey(), k.DIDKey)
		}
		// It signs what validate verifies.
		op, err := validate.Sign(validate.Operation{Type: validate.TypeOperation, RotationKeys: []string{k.DIDKey}}, got)
		if err != nil || !validate.VerifySignature(op, k.DIDKey) {
			t.Fatalf("%s: signature does not verify: %v", curve, err)
		}
	}
}

func TestWriteKeyFileNeverOverwritesAKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k")
	first := genKey(t, validate.CurveK256)
	if err := WriteKeyFile(path, first); err != nil {
		t.Fatal(err)
	}
	if err := WriteKeyFile(path, genKey(t, validate.CurveK256)); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second write: %v", err)
	}
	if got, err := LoadKeyFile(path); err != nil || got.DIDKey != first.DIDKey {
		t.Fatalf("the first key was replaced: %v", err)
	}
}

func TestLoadKeyFileRefusesUnusableFiles(t *testing.T) {
	dir := t.TempDir()
	k := genKey(t, validate.CurveP256)
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		return p
	}
	for _, c := range []struct {
		name, path, want string
		class            error
	}{
		{"missing", filepath.Join(dir, "nope"), "no such file", nil},
		{"readable by others", write("open", k.Multibase(), 0o644), "other users may read it (mode 0644); run chmod 600", ErrKeyFile},
		{"a public key", write("pub", k.DIDKey, 0o600), "holds a public key (did:key)", ErrKeyFile},
		{"a checkpoint key", write("tlog", "PRIVATE+KEY+plc.test+1234+AAAA", 0o600), "transparency-log checkpoint key", ErrKeyFile},
		{"garbage", write("junk", "hello", 0o600), "not a K-256 or P-256 private key", ErrKeyFile},
		{"too long", write("long", strings.Repeat("z", MaxKeyFileBytes+1), 0o600), "over 4096 bytes", ErrKeyFile},
		{"a directory", dir, "not a regular file", ErrKeyFile},
	} {
		_, err := LoadKeyFile(c.path)
		if err == nil || !strings.Contains(err.Error(), c.want) || (c.class != nil && !errors.Is(err, c.class)) {
			t.Errorf("%s: %v; want %q", c.name, err, c.want)
		}
	}
}

func TestLooksLikeKey(t *testing.T) {
	k := genKey(t, validate.CurveK256)
	if !LooksLikeKey(k.Multibase()) || LooksLikeKey("recovery.key") || LooksLikeKey(k.DIDKey) {
		t.Fatal("LooksLikeKey misjudges")
	}
}

// chain is a DID's audit log as a directory would serve it.
type chain struct {
	t   *testing.T
	did string
	log []plc.AuditEntry
}

// accept appends res's op, accepted at res.At, and returns the replayed
// history.
func (c *chain) accept(res *Result) *History {
	c.t.Helper()
	for _, n := range res.Nullifies {
		for i := range c.log {
			if c.log[i].CID == n {
				c.log[i].Nullified = true
			}
		}
	}
	c.log = append(c.log, plc.AuditEntry{DID: res.DID, Operation: res.Op.AppendJSON(nil), CID: res.Op.CID(), CreatedAt: stamp(res.At)})
	c.did = res.DID
	return c.history()
}

func (c *chain) history() *History {
	c.t.Helper()
	h, err := Replay(c.did, c.log)
	if err != nil {
		c.t.Fatal(err)
	}
	return h
}

func must(t *testing.T) func(*Result, error) *Result {
	return func(res *Result, err error) *Result {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
}

func handleOf(t *testing.T, doc []byte) string {
	t.Helper()
	var d struct {
		AlsoKnownAs []string `json:"alsoKnownAs"`
	}
	if err := json.Unmarshal(doc, &d); err != nil || len(d.AlsoKnownAs) == 0 {
		t.Fatalf("document %s: %v", doc, err)
	}
	return d.AlsoKnownAs[0]
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// hostile makes a DID with rotation keys [recovery, rotation], an own
// update signed by recovery at t0+1h, and a hostile update signed by the
// lower-priority rotation key at t0+2h that removes recovery.
func hostile(t *testing.T) (c *chain, recovery, rotation *Key, own, evil *Result) {
	recovery, rotation = genKey(t, validate.CurveK256), genKey(t, validate.CurveP256)
	c = &chain{t: t}
	h := c.accept(must(t)(BuildGenesis(Genesis{RotationKeys: []string{recovery.DIDKey, rotation.DIDKey}, Handle: "alice.test", PDS: "https://pds.test"}, rotation, t0)))
	own = must(t)(h.Update(Changes{Handle: "alice2.test"}, recovery, t0.Add(time.Hour)))
	h = c.accept(own)
	thief := genKey(t, validate.CurveK256)
	evil = must(t)(h.Update(Changes{Handle: "evil.test", RemoveRotationKeys: []string{recovery.DIDKey}, AddRotationKeys: []string{thief.DIDKey}}, rotation, t0.Add(2*time.Hour)))
	c.accept(evil)
	return c, recovery, rotation, own, evil
}

// A recovery nullifies only the ops the key outranks, not the owner's own
// update before them, and restores the state before the hostile op.
func TestRecoverNullifiesOnlyWhatTheKeyOutranks(t *testing.T) {
	c, recovery, _, own, evil := hostile(t)
	res := must(t)(c.history().Recover(Changes{}, recovery, "", t0.Add(3*time.Hour)))
	if len(res.Nullifies) != 1 || res.Nullifies[0] != evil.Op.CID() || res.Op.Prev() != own.Op.CID() {
		t.Fatalf("recovery forks from %s nullifying %v; want from %s nullifying %s", res.Op.Prev(), res.Nullifies, own.Op.CID(), evil.Op.CID())
	}
	if got := handleOf(t, res.Document); got != "at://alice2.test" {
		t.Fatalf("restored handle %s", got)
	}
	h := c.accept(res)
	if head, _ := h.State.Head(); head.CID != res.Op.CID() || !h.Entries[2].Nullified {
		t.Fatalf("replayed history does not end with the recovery")
	}
}

// TestRecoveryAfterTheWindowIsRefusedLocally: 72 hours after the hostile
// op a recovery still passes; a millisecond later it is refused here with
// the reason, before anything is sent.
func TestRecoveryAfterTheWindowIsRefusedLocally(t *testing.T) {
	c, recovery, _, _, evil := hostile(t)
	evilAt := t0.Add(2 * time.Hour)
	must(t)(c.history().Recover(Changes{}, recovery, "", evilAt.Add(validate.RecoveryWindow)))
	_, err := c.history().Recover(Changes{}, recovery, "", evilAt.Add(validate.RecoveryWindow+time.Millisecond))
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "too late") || !strings.Contains(err.Error(), evil.Op.CID()) ||
		!strings.Contains(err.Error(), "the window closed at 2026-03-04T14:00:00.000Z") {
		t.Fatalf("late recovery: %v", err)
	}
}

func TestRecoverWithALowerPriorityKeyIsRefused(t *testing.T) {
	c, _, rotation, _, _ := hostile(t)
	_, err := c.history().Recover(Changes{}, rotation, "", t0.Add(3*time.Hour))
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "may nullify no op") {
		t.Fatalf("recovery with the lower key: %v", err)
	}
}

func TestUpdateRefusesAKeyTheHeadDoesNotList(t *testing.T) {
	c, recovery, _, _, _ := hostile(t)
	_, err := c.history().Update(Changes{Handle: "back.test"}, recovery, t0.Add(3*time.Hour))
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "is not a rotation key") {
		t.Fatalf("update with a removed key: %v", err)
	}
}

// An op that fails the directory's rules is refused by Check with the
// validator's class.
func TestCheckRefusesWhatTheDirectoryWould(t *testing.T) {
	c, recovery, rotation, _, evil := hostile(t)
	h := c.history()
	body := evil.Op.Operation()
	body.Prev = evil.Op.CID()
	body.AlsoKnownAs = []string{"at://mine.test"}
	op, err := validate.Sign(body, recovery) // recovery is no longer a rotation key
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Check(op, t0.Add(3*time.Hour)); !errors.Is(err, ErrRefused) || !errors.Is(err, validate.ErrInvalidSignature) {
		t.Fatalf("op signed by a removed key: %v", err)
	}
	if _, err := h.Update(Changes{Handle: "not a handle"}, rotation, t0.Add(3*time.Hour)); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "handle") {
		t.Fatalf("malformed handle: %v", err)
	}
	if _, err := h.Update(Changes{PDS: "ftp://pds.test"}, rotation, t0.Add(3*time.Hour)); !errors.Is(err, ErrRefused) {
		t.Fatalf("malformed PDS: %v", err)
	}
}

func TestReplayRefusesAFalseNullifiedFlag(t *testing.T) {
	c, _, _, _, _ := hostile(t)
	c.log[1].Nullified = true
	if _, err := Replay(c.did, c.log); !errors.Is(err, ErrHistory) || !strings.Contains(err.Error(), "nullified=true") {
		t.Fatalf("false flag: %v", err)
	}
}

// TestRecoverUndoesEveryHostileOpNotJustTheLast: a thief who signed two
// updates with the lower-priority key; the recovery forks from before the
// first, so the state restored is the owner's, not the thief's first.
func TestRecoverUndoesEveryHostileOpNotJustTheLast(t *testing.T) {
	recovery, rotation := genKey(t, validate.CurveK256), genKey(t, validate.CurveK256)
	c := &chain{t: t}
	g := must(t)(BuildGenesis(Genesis{RotationKeys: []string{recovery.DIDKey, rotation.DIDKey}, Handle: "alice.test", PDS: "https://pds.test"}, rotation, t0))
	h := c.accept(g)
	e1 := must(t)(h.Update(Changes{PDS: "https://evil.test"}, rotation, t0.Add(time.Hour)))
	h = c.accept(e1)
	e2 := must(t)(h.Update(Changes{Handle: "evil.test", RemoveRotationKeys: []string{recovery.DIDKey}}, rotation, t0.Add(2*time.Hour)))
	h = c.accept(e2)
	res := must(t)(h.Recover(Changes{}, recovery, "", t0.Add(3*time.Hour)))
	if res.Op.Prev() != g.Op.CID() || len(res.Nullifies) != 2 || res.Nullifies[0] != e1.Op.CID() || res.Nullifies[1] != e2.Op.CID() {
		t.Fatalf("recovery forks from %s nullifying %v; want from the genesis nullifying both hostile ops", res.Op.Prev(), res.Nullifies)
	}
	if string(res.Document) != string(g.Document) {
		t.Fatalf("restored document %s\nwant %s", res.Document, g.Document)
	}
}

// A key the owner removed on purpose cannot undo what came after.
func TestRecoverWithAKeyTheOwnerRemovedIsRefused(t *testing.T) {
	recovery, rotation := genKey(t, validate.CurveK256), genKey(t, validate.CurveK256)
	c := &chain{t: t}
	h := c.accept(must(t)(BuildGenesis(Genesis{RotationKeys: []string{recovery.DIDKey, rotation.DIDKey}}, rotation, t0)))
	h = c.accept(must(t)(h.Update(Changes{RemoveRotationKeys: []string{recovery.DIDKey}}, recovery, t0.Add(time.Hour))))
	h = c.accept(must(t)(h.Update(Changes{Handle: "later.test"}, rotation, t0.Add(2*time.Hour))))
	if _, err := h.Recover(Changes{}, recovery, "", t0.Add(3*time.Hour)); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "may not nullify") {
		t.Fatalf("recovery with a removed key: %v", err)
	}
}

// Of the ops a lower-priority key signed, a recovery nullifies those the
// window still allows, rather than refusing because the oldest is too old.
func TestRecoverNullifiesOnlyWhatTheWindowStillAllows(t *testing.T) {
	recovery, rotation := genKey(t, validate.CurveK256), genKey(t, validate.CurveK256)
	c := &chain{t: t}
	h := c.accept(must(t)(BuildGenesis(Genesis{RotationKeys: []string{recovery.DIDKey, rotation.DIDKey}}, rotation, t0)))
	old := must(t)(h.Update(Changes{Handle: "old.test"}, rotation, t0.Add(time.Hour)))
	h = c.accept(old)
	recent := must(t)(h.Update(Changes{Handle: "recent.test"}, rotation, t0.Add(80*time.Hour)))
	h = c.accept(recent)
	res := must(t)(h.Recover(Changes{}, recovery, "", t0.Add(81*time.Hour)))
	if res.Op.Prev() != old.Op.CID() || len(res.Nullifies) != 1 || res.Nullifies[0] != recent.Op.CID() {
		t.Fatalf("recovery forks from %s nullifying %v; want from %s nullifying %s", res.Op.Prev(), res.Nullifies, old.Op.CID(), recent.Op.CID())
	}
	// Asked to nullify from the old op, it refuses, saying why.
	if _, err := h.Recover(Changes{}, recovery, old.Op.CID(), t0.Add(81*time.Hour)); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "too late") {
		t.Fatalf("recovery from an op past the window: %v", err)
	}
}

// With a chosen first op, the recovery nullifies from there only; the
// genesis and unknown ops cannot be chosen.
func TestRecoverFromAChosenOp(t *testing.T) {
	recovery, rotation := genKey(t, validate.CurveK256), genKey(t, validate.CurveK256)
	c := &chain{t: t}
	g := must(t)(BuildGenesis(Genesis{RotationKeys: []string{recovery.DIDKey, rotation.DIDKey}, Handle: "alice.test"}, rotation, t0))
	h := c.accept(g)
	mine := must(t)(h.Update(Changes{Handle: "mine.test"}, rotation, t0.Add(time.Hour)))
	h = c.accept(mine)
	evil := must(t)(h.Update(Changes{Handle: "evil.test"}, rotation, t0.Add(2*time.Hour)))
	h = c.accept(evil)
	res := must(t)(h.Recover(Changes{}, recovery, evil.Op.CID(), t0.Add(3*time.Hour)))
	if res.Op.Prev() != mine.Op.CID() || len(res.Nullifies) != 1 || handleOf(t, res.Document) != "at://mine.test" {
		t.Fatalf("recovery from %s: prev %s, nullifies %v", evil.Op.CID(), res.Op.Prev(), res.Nullifies)
	}
	for from, want := range map[string]string{g.Op.CID(): "genesis", "bafyreiaaaa": "not a non-nullified op"} {
		if _, err := h.Recover(Changes{}, recovery, from, t0.Add(3*time.Hour)); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), want) {
			t.Errorf("recovery from %s: %v", from, err)
		}
	}
}

func TestChangesAreAppliedAndChecked(t *testing.T) {
	recovery, rotation, signing := genKey(t, validate.CurveK256), genKey(t, validate.CurveP256), genKey(t, validate.CurveK256)
	c := &chain{t: t}
	h := c.accept(must(t)(BuildGenesis(Genesis{RotationKeys: []string{recovery.DIDKey, rotation.DIDKey}, Handle: "alice.test", PDS: "https://pds.test"}, rotation, t0)))
	now := t0.Add(time.Hour)

	res := must(t)(h.Update(Changes{SigningKey: signing.DIDKey, AddRotationKeys: []string{signing.DIDKey}, RemoveRotationKeys: []string{recovery.DIDKey}}, rotation, now))
	data, _ := res.Op.Data()
	if len(data.VerificationMethods) != 1 || data.VerificationMethods[0] != (validate.VerificationMethod{ID: "atproto", Key: signing.DIDKey}) {
		t.Errorf("verification methods %v", data.VerificationMethods)
	}
	if len(data.RotationKeys) != 2 || data.RotationKeys[0] != rotation.DIDKey || data.RotationKeys[1] != signing.DIDKey {
		t.Errorf("rotation keys %v: want the added key last", data.RotationKeys)
	}
	if !strings.Contains(string(res.Document), signing.DIDKey[len("did:key:"):]) {
		t.Errorf("document %s does not carry the new signing key", res.Document)
	}

	for _, c := range []struct {
		name string
		ch   Changes
		want string
	}{
		{"remove an absent key", Changes{RemoveRotationKeys: []string{signing.DIDKey}}, "not one of the keys"},
		{"add a present key", Changes{AddRotationKeys: []string{rotation.DIDKey}}, "already one of the keys"},
		{"remove every key", Changes{RemoveRotationKeys: []string{recovery.DIDKey, rotation.DIDKey}}, "lock the DID"},
		{"add an ed25519 rotation key", Changes{AddRotationKeys: []string{"did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"}}, "rotation key"},
		{"a signing key that is no did:key", Changes{SigningKey: "zQ3sh"}, "signing key"},
	} {
		if _, err := h.Update(c.ch, rotation, now); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want %q", c.name, err, c.want)
		}
	}
}

// A machine whose clock is behind the DID's latest op builds the op as
// the directory will date it: 1 ms after that op.
func TestOpsAreJudgedAtTheTimeTheDirectoryWillDateThem(t *testing.T) {
	rotation := genKey(t, validate.CurveK256)
	c := &chain{t: t}
	h := c.accept(must(t)(BuildGenesis(Genesis{RotationKeys: []string{rotation.DIDKey}}, rotation, t0)))
	res := must(t)(h.Update(Changes{Handle: "a.test"}, rotation, t0.Add(-time.Minute)))
	if want := t0.Add(time.Millisecond); !res.At.Equal(want) {
		t.Fatalf("judged at %s, want %s", res.At, want)
	}
}

// The per-DID rate limit is checked locally; a recovery is exempt, as
// on the directory.
func TestRateLimitIsCheckedLocallyAndRecoveriesAreExempt(t *testing.T) {
	recovery, rotation := genKey(t, validate.CurveK256), genKey(t, validate.CurveK256)
	c := &chain{t: t}
	h := c.accept(must(t)(BuildGenesis(Genesis{RotationKeys: []string{recovery.DIDKey, rotation.DIDKey}}, rotation, t0)))
	at := t0
	for i := range validate.RateLimitHour - 1 {
		at = at.Add(time.Minute)
		h = c.accept(must(t)(h.Update(Changes{Handle: fmt.Sprintf("h%d.test", i)}, rotation, at)))
	}
	at = at.Add(time.Minute)
	if _, err := h.Update(Changes{Handle: "one-too-many.test"}, rotation, at); !errors.Is(err, validate.ErrRateLimit) {
		t.Fatalf("op over the hourly limit: %v", err)
	}
	if _, err := h.Recover(Changes{}, recovery, "", at); err != nil {
		t.Fatalf("a recovery over the hourly limit: %v", err)
	}
}

func TestReplayRefusesAnotherDIDsOpOrAWrongCID(t *testing.T) {
	c, _, _, _, _ := hostile(t)
	other, _, _, _, _ := hostile(t)
	log := append([]plc.AuditEntry(nil), c.log...)
	log[1] = other.log[1]
	if _, err := Replay(c.did, log); !errors.Is(err, ErrHistory) {
		t.Fatalf("another DID's op: %v", err)
	}
	log = append([]plc.AuditEntry(nil), c.log...)
	log[1].CID = log[2].CID
	if _, err := Replay(c.did, log); !errors.Is(err, ErrHistory) || !strings.Contains(err.Error(), "hashes to") {
		t.Fatalf("a wrong CID: %v", err)
	}
}
