package tlog_test

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"filippo.io/mldsa"
	"golang.org/x/mod/sumdb/note"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/oplog/storetest"
	"github.com/plcdir/plc/tlog"
)

// newTestWitnessMLDSA is a tlog-witness that cosigns with an ML-DSA-44
// key (type 0x06).
func newTestWitnessMLDSA(t *testing.T, name, logVKey string) *testWitness {
	t.Helper()
	w := newTestWitness(t, name, logVKey)
	skey, vkey, err := tlog.GenerateCosignerKey(tlog.CosignatureMLDSA44, name)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tlog.NewCosigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	w.signer, w.vkey, w.hash = c, vkey, c.KeyHash()
	w.mu.Unlock()
	return w
}

func wtByName(ws []*testWitness, name string) *testWitness {
	for _, w := range ws {
		if w.name == name {
			return w
		}
	}
	return nil
}

// wtCheckMLDSALine checks an ML-DSA-44 cosignature line by hand: the key
// ID, and the signature over tlog-cosignature's cosigned_message built
// here from the checkpoint text.
func wtCheckMLDSALine(t *testing.T, w *testWitness, text, line string) {
	t.Helper()
	_, b64, _ := strings.Cut(strings.TrimPrefix(line, "— "), " ")
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != 4+8+mldsa.MLDSA44SignatureSize {
		t.Fatalf("ML-DSA-44 cosignature line of %d bytes: %q", len(raw), line)
	}
	if binary.BigEndian.Uint32(raw) != w.hash {
		t.Fatalf("cosignature line: key ID %x, want %x", raw[:4], w.hash)
	}
	cp, err := plc.ParseCheckpointBody(text)
	if err != nil {
		t.Fatal(err)
	}
	_, key64, _ := strings.Cut(w.vkey[len(w.name)+1:], "+")
	typed, _ := base64.StdEncoding.DecodeString(key64)
	pub, err := mldsa.NewPublicKey(mldsa.MLDSA44(), typed[1:])
	if err != nil || typed[0] != 0x06 {
		t.Fatalf("the witness's vkey: type %x, %v", typed[0], err)
	}
	msg := handSubtreeMessage(w.name, binary.BigEndian.Uint64(raw[4:12]), cp.Origin, uint64(cp.Size), cp.Root[:])
	if err := mldsa.Verify(pub, msg, raw[12:], nil); err != nil {
		t.Fatalf("the ML-DSA-44 cosignature does not verify: %v", err)
	}
}

// TestWitnessesOfBothKindsCosignTheSameLog: an Ed25519 and an ML-DSA-44
// witness cosign the same checkpoints of one log, both cosignatures
// verify (by hand and with NewCosignatureVerifier), and the served
// checkpoint carries both.
func TestWitnessesOfBothKindsCosignTheSameLog(t *testing.T) {
	lines := storetest.Corpus(t, 21, 300)
	s, _ := storetest.SQLite(t)
	key := newKey(t, "plc.test/tlog")
	ed := newTestWitness(t, "ed.example/witness", key.VKey)
	pq := newTestWitnessMLDSA(t, "pq.example/witness", key.VKey)
	aed, apq := ed.witness(t), pq.witness(t)
	var logs storetest.Buffer

	storetest.Load(t, s, lines[:200])
	wtRound(t, s, key, &logs, aed, apq)
	cp, names := wtCosigners(t, s, key, ed, pq)
	if cp.Size != 200 || len(names) != 2 {
		t.Fatalf("checkpoint of size %d cosigned by %v, want 200 by both\n%s", cp.Size, names, logs.String())
	}
	// The log grows: both verify the consistency proof and cosign again.
	storetest.Load(t, s, lines[200:])
	tl := wtRound(t, s, key, &logs, aed, apq)
	cp, names = wtCosigners(t, s, key, ed, pq)
	if cp.Size != 300 || len(names) != 2 {
		t.Fatalf("checkpoint of size %d cosigned by %v, want 300 by both\n%s", cp.Size, names, logs.String())
	}
	if got := pq.reqs(); len(got) != 2 || got[1].old != 200 || got[1].proof == 0 || got[1].status != 200 {
		t.Fatalf("the ML-DSA-44 witness saw %+v", got)
	}

	srv := httptest.NewServer(tl)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/tlog/checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(served, cp.Note) {
		t.Fatalf("served checkpoint:\n%s\nstored:\n%s", served, cp.Note)
	}
	var vs []note.Verifier
	for _, vkey := range []string{ed.vkey, pq.vkey} {
		v, err := tlog.NewCosignatureVerifier(vkey)
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	n, err := note.Open(served, note.VerifierList(append(vs, key.Verifier)...))
	if err != nil || len(n.Sigs) != 3 {
		t.Fatalf("the served checkpoint: %v, %d verified signatures, want the log's and both witnesses'", err, len(n.Sigs))
	}
}

// TestMLDSALogKeyIsWitnessed: a log whose own checkpoint key is ML-DSA-44
// (type 0x06) signs checkpoints that verify with its verifier key, and
// witnesses of both kinds cosign them.
func TestMLDSALogKeyIsWitnessed(t *testing.T) {
	skey, vkey, err := tlog.GenerateKeyOfType(tlog.KeyMLDSA44, "plc.test/tlog")
	if err != nil {
		t.Fatal(err)
	}
	key, err := tlog.ParseKey(skey)
	if err != nil {
		t.Fatal(err)
	}
	if key.VKey != vkey || key.Origin() != "plc.test/tlog" {
		t.Fatalf("ParseKey: %q %q", key.VKey, key.Origin())
	}
	s, _ := storetest.SQLite(t)
	ed := newTestWitness(t, "ed.example/witness", vkey)
	pq := newTestWitnessMLDSA(t, "pq.example/witness", vkey)
	var logs storetest.Buffer
	storetest.Load(t, s, storetest.Corpus(t, 21, 80))
	wtRound(t, s, key, &logs, ed.witness(t), pq.witness(t))
	cp, names := wtCosigners(t, s, key, ed, pq)
	if cp.Size != 80 || len(names) != 2 {
		t.Fatalf("checkpoint of size %d cosigned by %v\n%s", cp.Size, names, logs.String())
	}
	v, err := tlog.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	body, n, err := tlog.OpenCheckpoint(cp.Note, v)
	if err != nil || body.Size != 80 {
		t.Fatalf("OpenCheckpoint with the ML-DSA-44 verifier key: %+v, %v", body, err)
	}
	// The log's line is an ML-DSA-44 cosignature of its own checkpoint.
	lw := &testWitness{name: key.Origin(), vkey: vkey, hash: v.KeyHash()}
	wtCheckMLDSALine(t, lw, n.Text, "— "+n.Sigs[0].Name+" "+n.Sigs[0].Base64)
}

func TestNewVerifierOfLogKeys(t *testing.T) {
	for _, typ := range []byte{tlog.KeyEd25519, tlog.KeyMLDSA44} {
		_, vkey, err := tlog.GenerateKeyOfType(typ, "plc.test/tlog")
		if err != nil {
			t.Fatal(err)
		}
		if v, err := tlog.NewVerifier(vkey); err != nil || v.Name() != "plc.test/tlog" {
			t.Fatalf("NewVerifier of a type 0x%02x key: %v", typ, err)
		}
	}
	if _, _, err := tlog.GenerateKeyOfType(0x05, "plc.test/tlog"); err == nil || !strings.Contains(err.Error(), "0x05") {
		t.Fatalf("GenerateKeyOfType(0x05): %v", err)
	}
	for _, tc := range []struct{ vkey, want string }{
		{"nonsense", "<name>+<hash>+<key>"},
		{"plc.test+00000000+AQ==", "malformed Ed25519 signed-note key"},
		{"plc.test+00000000+BQAAAA==", "type 0x05: want a log key of type 0x01 (Ed25519) or 0x06 (ML-DSA-44)"},
		{"plc.test+00000000+BgAAAA==", "ML-DSA-44 public key"},
	} {
		if _, err := tlog.NewVerifier(tc.vkey); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewVerifier(%q) = %v, want an error saying %q", tc.vkey, err, tc.want)
		}
	}
	// An ML-DSA-44 private key whose hash does not match is refused.
	skey, _, _ := tlog.GenerateKeyOfType(tlog.KeyMLDSA44, "plc.test/tlog")
	parts := strings.SplitN(skey, "+", 5)
	parts[3] = "00000000"
	if _, err := tlog.ParseKey(strings.Join(parts, "+")); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("ParseKey with a wrong hash: %v", err)
	}
}
