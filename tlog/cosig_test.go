package tlog_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"filippo.io/mldsa"
	"golang.org/x/mod/sumdb/note"
	sumdb "golang.org/x/mod/sumdb/tlog"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/tlog"
)

// cosigTestCheckpoint is a checkpoint text of size n.
func cosigTestCheckpoint(origin string, n int64) string {
	root := sumdb.RecordHash(fmt.Appendf(nil, "leaf %d", n))
	return plc.CheckpointBody{Origin: origin, Size: n, Root: root}.Format()
}

// handVKey encodes a cosignature verifier key by hand, as
// tlog-cosignature and signed-note say.
func handVKey(name string, typ byte, pub []byte) (vkey string, hash uint32) {
	typed := append([]byte{typ}, pub...)
	sum := sha256.Sum256(append([]byte(name+"\n"), typed...))
	hash = binary.BigEndian.Uint32(sum[:4])
	return fmt.Sprintf("%s+%08x+%s", name, hash, base64.StdEncoding.EncodeToString(typed)), hash
}

// handLine is a signature line: key ID, timestamp, signature.
func handLine(name string, hash uint32, ts uint64, sig []byte) string {
	raw := binary.BigEndian.AppendUint32(nil, hash)
	raw = binary.BigEndian.AppendUint64(raw, ts)
	return "— " + name + " " + base64.StdEncoding.EncodeToString(append(raw, sig...)) + "\n"
}

// handSubtreeMessage builds tlog-cosignature's cosigned_message by hand.
func handSubtreeMessage(name string, ts uint64, origin string, size uint64, root []byte) []byte {
	m := []byte("subtree/v1\n\x00")
	m = append(m, byte(len(name)))
	m = append(m, name...)
	m = binary.BigEndian.AppendUint64(m, ts)
	m = append(m, byte(len(origin)))
	m = append(m, origin...)
	m = binary.BigEndian.AppendUint64(m, 0)
	m = binary.BigEndian.AppendUint64(m, size)
	return append(m, root...)
}

func openWith(t *testing.T, text, line, vkey string) error {
	t.Helper()
	v, err := tlog.NewCosignatureVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	_, err = note.Open([]byte(text+"\n"+line), note.VerifierList(v))
	return err
}

// TestCosignatureKnownAnswer signs with keys generated in the test and
// messages built by hand from the spec, and checks that the verifiers
// accept them, and refuse them by another key or over another checkpoint.
func TestCosignatureKnownAnswer(t *testing.T) {
	const name = "witness.example/w1"
	const ts = 1700000000
	text := cosigTestCheckpoint("plc.test/tlog", 1234)
	other := cosigTestCheckpoint("plc.test/tlog", 1235)
	cp, err := plc.ParseCheckpointBody(text)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("ML-DSA-44", func(t *testing.T) {
		sk, err := mldsa.GenerateKey(mldsa.MLDSA44())
		if err != nil {
			t.Fatal(err)
		}
		vkey, hash := handVKey(name, 0x06, sk.PublicKey().Bytes())
		msg := handSubtreeMessage(name, ts, "plc.test/tlog", 1234, cp.Root[:])
		if got, err := tlog.SubtreeMessage(name, ts, cp); err != nil || string(got) != string(msg) {
			t.Fatalf("SubtreeMessage = %x, %v\nwant %x", got, err, msg)
		}
		sig, err := sk.Sign(nil, msg, nil)
		if err != nil {
			t.Fatal(err)
		}
		line := handLine(name, hash, ts, sig)
		if err := openWith(t, text, line, vkey); err != nil {
			t.Fatalf("a valid ML-DSA-44 cosignature does not verify: %v", err)
		}
		if err := openWith(t, other, line, vkey); err == nil {
			t.Fatal("the cosignature verifies over another checkpoint")
		}
		// The timestamp is signed.
		if err := openWith(t, text, handLine(name, hash, ts+1, sig), vkey); err == nil {
			t.Fatal("the cosignature verifies with another timestamp")
		}
		// The name is signed: the same key under another name fails.
		vkey2, hash2 := handVKey("witness.example/w2", 0x06, sk.PublicKey().Bytes())
		if err := openWith(t, text, handLine("witness.example/w2", hash2, ts, sig), vkey2); err == nil {
			t.Fatal("the cosignature verifies under another cosigner name")
		}
		sk2, _ := mldsa.GenerateKey(mldsa.MLDSA44())
		wrong, _ := sk2.Sign(nil, msg, nil)
		if err := openWith(t, text, handLine(name, hash, ts, wrong), vkey); err == nil {
			t.Fatal("a signature by another key verifies")
		}
		// Extension lines are not covered: such a checkpoint never verifies.
		if err := openWith(t, text+"extension\n", line, vkey); err == nil {
			t.Fatal("the cosignature verifies over a checkpoint with an extension line")
		}
	})

	t.Run("Ed25519", func(t *testing.T) {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		vkey, hash := handVKey(name, 0x04, pub)
		sig := ed25519.Sign(priv, fmt.Appendf(nil, "cosignature/v1\ntime %d\n%s", ts, text))
		line := handLine(name, hash, ts, sig)
		if err := openWith(t, text, line, vkey); err != nil {
			t.Fatalf("a valid Ed25519 cosignature does not verify: %v", err)
		}
		if err := openWith(t, other, line, vkey); err == nil {
			t.Fatal("the cosignature verifies over another checkpoint")
		}
		_, priv2, _ := ed25519.GenerateKey(rand.Reader)
		wrong := ed25519.Sign(priv2, fmt.Appendf(nil, "cosignature/v1\ntime %d\n%s", ts, text))
		if err := openWith(t, text, handLine(name, hash, ts, wrong), vkey); err == nil {
			t.Fatal("a signature by another key verifies")
		}
	})
}

// TestCosignerSignsWhatVerifiersCheck: a Cosigner of each kind signs what
// NewCosignatureVerifier accepts, with its clock's timestamp.
func TestCosignerSignsWhatVerifiersCheck(t *testing.T) {
	text := cosigTestCheckpoint("plc.test/tlog", 77)
	for _, typ := range []byte{tlog.CosignatureEd25519, tlog.CosignatureMLDSA44} {
		t.Run(fmt.Sprintf("0x%02x", typ), func(t *testing.T) {
			skey, vkey, err := tlog.GenerateCosignerKey(typ, "w.example/"+fmt.Sprint(typ))
			if err != nil {
				t.Fatal(err)
			}
			c, err := tlog.NewCosigner(skey)
			if err != nil {
				t.Fatal(err)
			}
			if c.VKey() != vkey || c.Type() != typ {
				t.Fatalf("NewCosigner: vkey %q type %x, want %q %x", c.VKey(), c.Type(), vkey, typ)
			}
			at := time.Unix(1800000000, 0)
			c.Now = func() time.Time { return at }
			signed, err := note.Sign(&note.Note{Text: text}, c)
			if err != nil {
				t.Fatal(err)
			}
			v, err := tlog.NewCosignatureVerifier(vkey)
			if err != nil {
				t.Fatal(err)
			}
			n, err := note.Open(signed, note.VerifierList(v))
			if err != nil {
				t.Fatalf("the cosigner's signature does not verify: %v", err)
			}
			if ts, err := tlog.CosignatureTime(n.Sigs[0]); err != nil || !ts.Equal(at) {
				t.Fatalf("CosignatureTime = %v, %v, want %v", ts, err, at)
			}
			if _, err := c.Sign([]byte("not a checkpoint\n")); err == nil {
				t.Fatal("the cosigner signed a text that is not a checkpoint")
			}
			// The private key's hash is checked.
			parts := strings.SplitN(skey, "+", 5)
			parts[3] = "00000000"
			if _, err := tlog.NewCosigner(strings.Join(parts, "+")); err == nil || !strings.Contains(err.Error(), "does not match") {
				t.Fatalf("a private key with a wrong hash: %v", err)
			}
		})
	}
	if _, err := tlog.NewCosigner("PRIVATE+KEY+x+00000000+" + base64.StdEncoding.EncodeToString(make([]byte, 33))); err == nil || !strings.Contains(err.Error(), "0x00") {
		t.Fatalf("a private key of type 0x00: %v", err)
	}
	skey, _, err := tlog.GenerateCosignerKey(tlog.CosignatureMLDSA44, "w.example/pq")
	if err != nil {
		t.Fatal(err)
	}
	c, err := tlog.NewCosigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Sign([]byte(text + "extension\n")); err == nil {
		t.Fatal("an ML-DSA-44 cosigner signed a checkpoint with an extension line it does not cover")
	}
}

func TestCosignatureVerifierRefusesBadKeys(t *testing.T) {
	sk, err := mldsa.GenerateKey(mldsa.MLDSA44())
	if err != nil {
		t.Fatal(err)
	}
	pq := sk.PublicKey().Bytes()
	ed, _, _ := ed25519.GenerateKey(rand.Reader)
	mk := func(name string, typ byte, pub []byte) string { v, _ := handVKey(name, typ, pub); return v }
	for _, tc := range []struct{ vkey, want string }{
		{mk("w", 0x05, pq), "signature type 0x05: want a C2SP tlog-cosignature key (type 0x04, Ed25519, or 0x06, ML-DSA-44)"},
		{mk("w", 0x02, ed), "signature type 0x02"},
		{mk("w", 0x01, ed), "plain Ed25519 signed-note key (type 0x01)"},
		{mk("w", 0x06, pq[:100]), "want a 1312-byte ML-DSA-44 public key after the type 0x06, not 100 bytes"},
		{mk("w", 0x06, ed), "want a 1312-byte ML-DSA-44 public key"},
		{mk("w", 0x04, pq), "want a 32-byte Ed25519 public key"},
		{mk(strings.Repeat("n", 256), 0x06, pq), "at most 255 bytes"},
	} {
		if _, err := tlog.NewCosignatureVerifier(tc.vkey); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewCosignatureVerifier(%.40s…) = %v, want an error saying %q", tc.vkey, err, tc.want)
		}
	}
	// Both kinds parse, and a witness of either kind is accepted.
	for _, v := range []string{mk("w.example/pq", 0x06, pq), mk("w.example/ed", 0x04, ed)} {
		if _, err := tlog.ParseWitness("https://w.example=" + v); err != nil {
			t.Errorf("ParseWitness: %v", err)
		}
	}
}
