package validate_test

import (
	"crypto/sha256"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	secpecdsa "github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"
	"github.com/plcdir/plc/validate"
	"gitlab.com/yawning/secp256k1-voi/secec"
)

// benchChain is a DID with a genesis op and a typical update (the shape of
// the bsky.app fixture: two rotation keys, one verification method, one
// handle, one PDS), signed with keys of one curve.
type benchChain struct {
	state    validate.State
	update   []byte // JSON of the update
	at       time.Time
	keyDID   string
	hash     [32]byte // sha256 of the update's unsigned bytes
	sig      validate.Signature
	rawSig   []byte
	pubBytes []byte // compressed point of the signing key
}

func newBenchChain(b *testing.B, p256 bool) *benchChain {
	b.Helper()
	gen := func() atcrypto.PrivateKeyExportable {
		var k atcrypto.PrivateKeyExportable
		var err error
		if p256 {
			k, err = atcrypto.GeneratePrivateKeyP256()
		} else {
			k, err = atcrypto.GeneratePrivateKeyK256()
		}
		if err != nil {
			b.Fatal(err)
		}
		return k
	}
	rot, rec, signing := gen(), gen(), gen()
	didKey := func(k atcrypto.PrivateKeyExportable) string {
		pub, err := k.PublicKey()
		if err != nil {
			b.Fatal(err)
		}
		return pub.DIDKey()
	}
	body := validate.Operation{
		Type:                validate.TypeOperation,
		RotationKeys:        []string{didKey(rot), didKey(rec)},
		VerificationMethods: []validate.VerificationMethod{{ID: "atproto", Key: didKey(signing)}},
		AlsoKnownAs:         []string{"at://bench-user.bsky.social"},
		Services:            []validate.Service{{ID: "atproto_pds", Type: "AtprotoPersonalDataServer", Endpoint: "https://morel.us-east.host.bsky.network"}},
	}
	genesis, err := validate.Sign(body, rot)
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := validate.State{DID: genesis.GenesisDID()}
	st, _, err = st.Next(genesis, t0)
	if err != nil {
		b.Fatal(err)
	}
	body.Prev = genesis.CID()
	body.AlsoKnownAs = []string{"at://bench-user.example.com"}
	update, err := validate.Sign(body, rot)
	if err != nil {
		b.Fatal(err)
	}
	sig, err := validate.DecodeSignature(update.Operation().Sig)
	if err != nil {
		b.Fatal(err)
	}
	pub, _ := rot.PublicKey()
	return &benchChain{
		state:    st,
		update:   update.AppendJSON(nil),
		at:       t0.Add(time.Hour),
		keyDID:   didKey(rot),
		hash:     sha256.Sum256(update.UnsignedCBOR()),
		sig:      sig,
		rawSig:   sig[:],
		pubBytes: pub.Bytes(),
	}
}

// forCurves runs f as a K256 and a P256 sub-benchmark.
func forCurves(b *testing.B, f func(b *testing.B, c *benchChain)) {
	for _, curve := range []struct {
		name string
		p256 bool
	}{{"K256", false}, {"P256", true}} {
		b.Run(curve.name, func(b *testing.B) { f(b, newBenchChain(b, curve.p256)) })
	}
}

// BenchmarkVerifyOp is the whole path of one submitted update: strict JSON
// parse, canonical DAG-CBOR (signed and unsigned), CID, signature decode,
// key lookup, signature check and the chain rules.
func BenchmarkVerifyOp(b *testing.B) {
	forCurves(b, func(b *testing.B, c *benchChain) {
		b.ReportAllocs()
		for b.Loop() {
			op, err := validate.ParseJSON(c.update)
			if err != nil {
				b.Fatal(err)
			}
			if _, _, err := c.state.Next(op, c.at); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkVerifySignature is the bare signature check: a parsed key, a
// decoded signature and a precomputed digest. It bounds BenchmarkVerifyOp.
func BenchmarkVerifySignature(b *testing.B) {
	forCurves(b, func(b *testing.B, c *benchChain) {
		key, err := validate.ParseDIDKey(c.keyDID)
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if !key.Verify(&c.hash, &c.sig) {
				b.Fatal("signature does not verify")
			}
		}
	})
}

// BenchmarkK256Library compares the two secp256k1 implementations at hand
// for the bare check: decred's (used by validate) and secp256k1-voi (used by
// indigo's atcrypto).
func BenchmarkK256Library(b *testing.B) {
	c := newBenchChain(b, false)
	b.Run("decred", func(b *testing.B) {
		pk, err := secp256k1.ParsePubKey(c.pubBytes)
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			var r, s secp256k1.ModNScalar
			r.SetByteSlice(c.rawSig[:32])
			s.SetByteSlice(c.rawSig[32:])
			if s.IsOverHalfOrder() || !secpecdsa.NewSignature(&r, &s).Verify(c.hash[:], pk) {
				b.Fatal("signature does not verify")
			}
		}
	})
	b.Run("voi", func(b *testing.B) {
		pk, err := secec.NewPublicKey(c.pubBytes)
		if err != nil {
			b.Fatal(err)
		}
		opts := &secec.ECDSAOptions{Encoding: secec.EncodingCompact, RejectMalleable: true}
		for b.Loop() {
			if !pk.Verify(c.hash[:], c.rawSig, opts) {
				b.Fatal("signature does not verify")
			}
		}
	})
	b.Run("atcrypto", func(b *testing.B) {
		pub, err := atcrypto.ParsePublicBytesK256(c.pubBytes)
		if err != nil {
			b.Fatal(err)
		}
		msg := func() []byte {
			op, err := validate.ParseJSON(c.update)
			if err != nil {
				b.Fatal(err)
			}
			return op.UnsignedCBOR()
		}()
		for b.Loop() {
			if err := pub.HashAndVerify(msg, c.rawSig); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkParseDIDKey is the uncached cost of parsing a rotation key, the
// reason parsed keys are cached.
func BenchmarkParseDIDKey(b *testing.B) {
	forCurves(b, func(b *testing.B, c *benchChain) {
		for b.Loop() {
			if _, err := validate.ParseDIDKeyUncached(c.keyDID); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkParseJSON is the parsing and encoding share of BenchmarkVerifyOp:
// strict JSON, both DAG-CBOR encodings, the signed-bytes hash and the CID.
func BenchmarkParseJSON(b *testing.B) {
	c := newBenchChain(b, false)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := validate.ParseJSON(c.update); err != nil {
			b.Fatal(err)
		}
	}
}
