package validate_test

import (
	"bytes"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/mr-tron/base58"

	"github.com/plcdir/plc/validate"
)

const fxCryptoDir = "../testdata/atproto-crypto"

// fxSignatureVector is one entry of signature-fixtures.json.
type fxSignatureVector struct {
	Comment         string   `json:"comment"`
	MessageBase64   string   `json:"messageBase64"`
	Algorithm       string   `json:"algorithm"`
	PublicKeyDID    string   `json:"publicKeyDid"`
	SignatureBase64 string   `json:"signatureBase64"`
	ValidSignature  bool     `json:"validSignature"`
	Tags            []string `json:"tags"`
}

// fxDIDKeyVector is one entry of the w3c_didkey_*.json files.
type fxDIDKeyVector struct {
	PrivateKeyBytesHex    string `json:"privateKeyBytesHex"`
	PrivateKeyBytesBase58 string `json:"privateKeyBytesBase58"`
	PublicDIDKey          string `json:"publicDidKey"`
}

func fxReadJSON(tb testing.TB, name string, v any) {
	tb.Helper()
	b, err := os.ReadFile(fxCryptoDir + "/" + name)
	if err != nil {
		tb.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
}

func fxSignatureVectors(tb testing.TB) []fxSignatureVector {
	var vs []fxSignatureVector
	fxReadJSON(tb, "signature-fixtures.json", &vs)
	if len(vs) == 0 {
		tb.Fatal("no signature vectors")
	}
	return vs
}

func fxDIDKeyVectors(tb testing.TB) map[validate.Curve][]fxDIDKeyVector {
	out := map[validate.Curve][]fxDIDKeyVector{}
	for file, curve := range map[string]validate.Curve{
		"w3c_didkey_K256.json": validate.CurveK256,
		"w3c_didkey_P256.json": validate.CurveP256,
	} {
		var vs []fxDIDKeyVector
		fxReadJSON(tb, file, &vs)
		if len(vs) == 0 {
			tb.Fatalf("%s: no vectors", file)
		}
		out[curve] = vs
	}
	return out
}

// fxCurveOrder is the group order n of each curve.
var fxCurveOrder = map[validate.Curve]*big.Int{
	validate.CurveP256: elliptic.P256().Params().N,
	validate.CurveK256: fxBigHex("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141"),
}

func fxBigHex(s string) *big.Int {
	n, ok := new(big.Int).SetString(s, 16)
	if !ok {
		panic(s)
	}
	return n
}

// fxStdBase64 decodes standard base64 with or without padding.
func fxStdBase64(s string) ([]byte, error) {
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}

// The atproto signature vectors: low-S r‖s signatures verify; high-S and
// DER-encoded ones are refused on both curves.
func TestAtprotoSignatureVectors(t *testing.T) {
	for _, v := range fxSignatureVectors(t) {
		t.Run(v.Comment, func(t *testing.T) {
			msg, err := fxStdBase64(v.MessageBase64)
			if err != nil {
				t.Fatalf("messageBase64: %v", err)
			}
			raw, err := fxStdBase64(v.SignatureBase64)
			if err != nil {
				t.Fatalf("signatureBase64: %v", err)
			}
			key, err := validate.ParseDIDKey(v.PublicKeyDID)
			if err != nil {
				t.Fatalf("ParseDIDKey(%s): %v", v.PublicKeyDID, err)
			}
			wantCurve := map[string]validate.Curve{"ES256": validate.CurveP256, "ES256K": validate.CurveK256}[v.Algorithm]
			if key.Curve() != wantCurve {
				t.Errorf("curve %v, want %v for %s", key.Curve(), wantCurve, v.Algorithm)
			}
			hash := sha256.Sum256(msg)

			// A signature that is not 64 bytes (DER) cannot even be decoded:
			// it is invalid by construction.
			got := false
			if len(raw) == 64 {
				sig := validate.Signature(raw)
				got = key.Verify(&hash, &sig)

				// The same bytes as an op's sig field decode to the same signature.
				enc := base64.RawURLEncoding.EncodeToString(raw)
				dec, err := validate.DecodeSignature(enc)
				if err != nil || dec != sig {
					t.Errorf("DecodeSignature(%s) = %x, %v", enc, dec, err)
				}
				// The standard alphabet is not accepted in an op (only when
				// it happens to coincide with base64url).
				if std := base64.RawStdEncoding.EncodeToString(raw); std != enc {
					if _, err := validate.DecodeSignature(std); err == nil {
						t.Errorf("DecodeSignature accepted standard-alphabet %s", std)
					}
				}
			} else {
				if v.ValidSignature {
					t.Fatalf("valid vector has a %d-byte signature", len(raw))
				}
				enc := base64.RawURLEncoding.EncodeToString(raw)
				if _, err := validate.DecodeSignature(enc); err == nil {
					t.Errorf("DecodeSignature accepted a %d-byte signature", len(raw))
				}
			}
			if got != v.ValidSignature {
				t.Errorf("Verify = %t, want %t (tags %v)", got, v.ValidSignature, v.Tags)
			}
			// Cross-check against atcrypto's own (strict, low-S) verifier.
			pub, err := atcrypto.ParsePublicDIDKey(v.PublicKeyDID)
			if err != nil {
				t.Fatal(err)
			}
			if ref := pub.HashAndVerify(msg, raw) == nil; ref != v.ValidSignature {
				t.Errorf("atcrypto disagrees with the vector: %t", ref)
			}

			// A high-S vector is refused for its S alone: the same signature
			// with S replaced by n−S (the low-S twin) verifies.
			if slices.Contains(v.Tags, "high-s") {
				if len(raw) != 64 {
					t.Fatalf("high-S vector has a %d-byte signature", len(raw))
				}
				n := fxCurveOrder[key.Curve()]
				s := new(big.Int).SetBytes(raw[32:])
				if s.Cmp(new(big.Int).Rsh(n, 1)) <= 0 {
					t.Fatal("high-S vector has a low S")
				}
				twin := validate.Signature(raw)
				new(big.Int).Sub(n, s).FillBytes(twin[32:])
				if !key.Verify(&hash, &twin) {
					t.Error("the low-S twin of the high-S signature does not verify")
				}
				if err := pub.HashAndVerifyLenient(msg, raw); err != nil {
					t.Errorf("atcrypto's lenient check refuses the high-S signature: %v", err)
				}
			}

			// Flipping any bit of a valid signature or of the message breaks it.
			if v.ValidSignature {
				for i := 0; i < 64; i += 7 {
					bad := validate.Signature(raw)
					bad[i] ^= 0x01
					if key.Verify(&hash, &bad) {
						t.Errorf("signature with byte %d flipped verifies", i)
					}
				}
				other := sha256.Sum256(append(msg, 0))
				sig := validate.Signature(raw)
				if key.Verify(&other, &sig) {
					t.Error("signature verifies over another message")
				}
			}
		})
	}
}

// A signature made by one curve's key never verifies under the other
// curve's key, nor under another key of the same curve.
func TestSignatureDoesNotVerifyUnderOtherKeys(t *testing.T) {
	var valid []fxSignatureVector
	for _, v := range fxSignatureVectors(t) {
		if v.ValidSignature {
			valid = append(valid, v)
		}
	}
	keys := []string{}
	for _, vs := range fxDIDKeyVectors(t) {
		for _, v := range vs {
			keys = append(keys, v.PublicDIDKey)
		}
	}
	for _, v := range valid {
		msg, _ := fxStdBase64(v.MessageBase64)
		raw, _ := fxStdBase64(v.SignatureBase64)
		hash := sha256.Sum256(msg)
		sig := validate.Signature(raw)
		for _, other := range append(keys, fxKeysExcept(valid, v.PublicKeyDID)...) {
			k, err := validate.ParseDIDKey(other)
			if err != nil {
				t.Fatal(err)
			}
			if k.Verify(&hash, &sig) {
				t.Errorf("%s: signature verifies under %s", v.Comment, other)
			}
		}
	}
}

func fxKeysExcept(vs []fxSignatureVector, except string) []string {
	var out []string
	for _, v := range vs {
		if v.PublicKeyDID != except {
			out = append(out, v.PublicKeyDID)
		}
	}
	return out
}

// The W3C did:key vectors parse with the right curve, and the public key
// derived from each private key renders to the same did:key.
func TestW3CDIDKeyVectors(t *testing.T) {
	for curve, vs := range fxDIDKeyVectors(t) {
		for _, v := range vs {
			t.Run(curve.String()+"/"+v.PublicDIDKey, func(t *testing.T) {
				k, err := validate.ParseDIDKey(v.PublicDIDKey)
				if err != nil {
					t.Fatalf("ParseDIDKey: %v", err)
				}
				if k.Curve() != curve {
					t.Errorf("curve %v, want %v", k.Curve(), curve)
				}
				// Parsing is deterministic (and served from the cache the second time).
				if k2, err := validate.ParseDIDKey(v.PublicDIDKey); err != nil || k2.Curve() != curve {
					t.Errorf("second parse: %v, %v", k2, err)
				}
				if err := validate.CheckVerificationMethodKey(v.PublicDIDKey); err != nil {
					t.Errorf("CheckVerificationMethodKey: %v", err)
				}

				var priv []byte
				switch {
				case v.PrivateKeyBytesHex != "":
					priv, err = hex.DecodeString(v.PrivateKeyBytesHex)
				case v.PrivateKeyBytesBase58 != "":
					priv, err = base58.Decode(v.PrivateKeyBytesBase58)
				default:
					t.Fatal("vector has no private key")
				}
				if err != nil {
					t.Fatalf("private key: %v", err)
				}
				var signer interface {
					PublicKey() (atcrypto.PublicKey, error)
					HashAndSign([]byte) ([]byte, error)
				}
				switch curve {
				case validate.CurveK256:
					signer, err = atcrypto.ParsePrivateBytesK256(priv)
				case validate.CurveP256:
					signer, err = atcrypto.ParsePrivateBytesP256(priv)
				}
				if err != nil {
					t.Fatalf("private key: %v", err)
				}
				pub, err := signer.PublicKey()
				if err != nil {
					t.Fatal(err)
				}
				if got := pub.DIDKey(); got != v.PublicDIDKey {
					t.Errorf("derived did:key %s, want %s", got, v.PublicDIDKey)
				}

				// A signature by the private key verifies under the parsed key.
				msg := []byte("did:plc interop " + v.PublicDIDKey)
				raw, err := signer.HashAndSign(msg)
				if err != nil {
					t.Fatal(err)
				}
				if len(raw) != 64 {
					t.Fatalf("atcrypto signature is %d bytes", len(raw))
				}
				sig := validate.Signature(raw)
				hash := sha256.Sum256(msg)
				if !k.Verify(&hash, &sig) {
					t.Error("atcrypto signature does not verify")
				}
			})
		}
	}
}

// fxEncodeDIDKey builds a did:key from a multicodec prefix and key bytes.
func fxEncodeDIDKey(prefix []byte, key []byte) string {
	return "did:key:z" + base58.Encode(append(append([]byte{}, prefix...), key...))
}

// Rotation keys are only ever K-256 or P-256 compressed points in a
// base58btc did:key; everything else is refused.
func TestParseDIDKeyRejects(t *testing.T) {
	k256 := fxDIDKeyVectors(t)[validate.CurveK256][0].PublicDIDKey
	priv, err := hex.DecodeString(fxDIDKeyVectors(t)[validate.CurveK256][0].PrivateKeyBytesHex)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := atcrypto.ParsePrivateBytesK256(priv)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := sk.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	uncompressed := pub.UncompressedBytes()
	if len(uncompressed) != 65 {
		t.Fatalf("uncompressed point is %d bytes", len(uncompressed))
	}
	compressed := pub.Bytes()
	p256 := fxDIDKeyVectors(t)[validate.CurveP256][0].PublicDIDKey
	p256Bytes, err := base58.Decode(strings.TrimPrefix(p256, "did:key:z"))
	if err != nil {
		t.Fatal(err)
	}
	p256Point := p256Bytes[2:]

	// The compressed point the vectors use round-trips through the helper.
	if got := fxEncodeDIDKey([]byte{0xe7, 0x01}, compressed); got != k256 {
		t.Fatalf("fxEncodeDIDKey = %s, want %s", got, k256)
	}

	long := "did:key:z" + strings.Repeat("Q", 248)
	if len(long) <= 256 {
		t.Fatal("long key too short")
	}
	// x = 2^256-1 ≥ p on both curves: not a field element, so no point.
	badPoint := append([]byte{0x02}, bytes.Repeat([]byte{0xff}, 32)...)
	// An x in range for which no point exists (x³+ax+b is not a square).
	offCurve := func(onCurve func([]byte) bool) []byte {
		for x := byte(1); ; x++ {
			pt := make([]byte, 33)
			pt[0], pt[32] = 0x02, x
			if !onCurve(pt) {
				return pt
			}
		}
	}
	offK256 := offCurve(func(pt []byte) bool { _, err := atcrypto.ParsePublicBytesK256(pt); return err == nil })
	offP256 := offCurve(func(pt []byte) bool { x, _ := elliptic.UnmarshalCompressed(elliptic.P256(), pt); return x != nil })

	for _, tc := range []struct{ name, key string }{
		{"K-256 x with no point", fxEncodeDIDKey([]byte{0xe7, 0x01}, offK256)},
		{"P-256 x with no point", fxEncodeDIDKey([]byte{0x80, 0x24}, offP256)},
		{"uncompressed 65-byte K-256 point", fxEncodeDIDKey([]byte{0xe7, 0x01}, uncompressed)},
		{"uncompressed point with compressed prefix byte", fxEncodeDIDKey([]byte{0xe7, 0x01}, append([]byte{0x02}, uncompressed[1:]...))},
		{"ed25519 key", "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"},
		{"BLS12-381 G2 key", "did:key:zUC7K4ndUaGZgV7Cp2yJy6JtMoUHY6u7tkcSYUvPrEidqBmLCTLmi6d5WvwnUqejscAkERJ3bfjEiSYtdPkRSE8kSa11hFBr4sTgnbZ95SJj19PN2jdvJjyzpSZgxkyyxNnBNnY"},
		{"wrong multicodec (secp256k1 private key)", fxEncodeDIDKey([]byte{0x81, 0x26}, compressed)},
		{"wrong multicodec (P-384 prefix, P-256 point)", fxEncodeDIDKey([]byte{0x81, 0x24}, p256Point)},
		{"P-256 x coordinate out of range", fxEncodeDIDKey([]byte{0x80, 0x24}, badPoint)},
		{"K-256 x coordinate out of range", fxEncodeDIDKey([]byte{0xe7, 0x01}, badPoint)},
		{"point with bad tag byte", fxEncodeDIDKey([]byte{0xe7, 0x01}, append([]byte{0x04}, compressed[1:]...))},
		{"point one byte short", fxEncodeDIDKey([]byte{0xe7, 0x01}, compressed[:32])},
		{"point one byte long", fxEncodeDIDKey([]byte{0xe7, 0x01}, append(append([]byte{}, compressed...), 0))},
		{"prefix only", fxEncodeDIDKey([]byte{0xe7, 0x01}, nil)},
		{"not base58 (0)", strings.Replace(k256, "Q3s", "Q0s", 1)},
		{"not base58 (l)", k256[:len(k256)-1] + "l"},
		{"not base58 (non-ASCII)", k256[:len(k256)-1] + "é"},
		{"missing z prefix", strings.Replace(k256, "did:key:z", "did:key:", 1)},
		{"base58 with another multibase prefix", strings.Replace(k256, "did:key:z", "did:key:Z", 1)},
		{"multibase base32 key", "did:key:b" + strings.ToLower(strings.TrimPrefix(k256, "did:key:z"))},
		{"empty", ""},
		{"did:key: only", "did:key:"},
		{"did:key:z only", "did:key:z"},
		{"no did:key: prefix", strings.TrimPrefix(k256, "did:key:")},
		{"upper-case method", strings.Replace(k256, "did:key:", "DID:KEY:", 1)},
		{"did:web", "did:web:example.com"},
		{"leading space", " " + k256},
		{"trailing space", k256 + " "},
		{"trailing newline", k256 + "\n"},
		{"NUL inside", k256[:20] + "\x00" + k256[20:]},
		{"over 256 characters", long},
		{"valid key padded past 256 characters", k256 + strings.Repeat("1", 257-len(k256))},
	} {
		if k, err := validate.ParseDIDKey(tc.key); err == nil {
			t.Errorf("%s: ParseDIDKey(%q) accepted (curve %v)", tc.name, tc.key, k.Curve())
		}
	}
	// A leading zero byte in the base58 payload is a different key string:
	// the decoded bytes gain a 0x00 prefix and no longer start with a
	// multicodec.
	if _, err := validate.ParseDIDKey("did:key:z1" + strings.TrimPrefix(k256, "did:key:z")); err == nil {
		t.Error("ParseDIDKey accepted a key with a leading base58 zero")
	}
	// Sanity: the unmangled keys are accepted.
	for _, k := range []string{k256, p256} {
		if _, err := validate.ParseDIDKey(k); err != nil {
			t.Errorf("ParseDIDKey(%s): %v", k, err)
		}
	}
}

// Only the exact encoding of a 64-byte signature is accepted: unpadded
// base64url, 86 characters, zero trailing bits, nothing else.
func TestDecodeSignatureRejects(t *testing.T) {
	var raw [64]byte
	for i := range raw {
		raw[i] = byte(i*37 + 11)
	}
	raw[0] = 0xfb // encodes to '+' or '-' first
	raw[1] = 0xff // and '/' or '_' soon after
	good := base64.RawURLEncoding.EncodeToString(raw[:])
	if len(good) != 86 {
		t.Fatalf("good signature is %d chars", len(good))
	}
	sig, err := validate.DecodeSignature(good)
	if err != nil || sig != validate.Signature(raw) {
		t.Fatalf("DecodeSignature(%s) = %x, %v", good, sig, err)
	}
	if !strings.ContainsAny(good, "-_") {
		t.Fatal("test signature has no URL-alphabet characters")
	}
	// The last character carries 2 bits of data and 4 zero bits: set one of
	// the zero bits.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, good[85])
	nonZeroTail := good[:85] + string(alphabet[last|1])
	if nonZeroTail == good {
		nonZeroTail = good[:85] + string(alphabet[last|2])
	}
	std := strings.NewReplacer("-", "+", "_", "/").Replace(good)

	// Wrong length: refused before looking at the characters.
	for _, tc := range []struct{ name, sig string }{
		{"empty", ""},
		{"85 characters", good[:85]},
		{"87 characters", good + "A"},
		{"padded", good + "=="},
		{"newline inside, 88 chars", good[:40] + "\r\n" + good[40:]},
		{"trailing newline, 87 chars", good + "\n"},
		{"DER-sized", base64.RawURLEncoding.EncodeToString(make([]byte, 71))},
		{"63 bytes", base64.RawURLEncoding.EncodeToString(raw[:63])},
		{"65 bytes", base64.RawURLEncoding.EncodeToString(append(raw[:], 0))},
	} {
		if _, err := validate.DecodeSignature(tc.sig); err == nil {
			t.Errorf("%s: DecodeSignature(%q) accepted", tc.name, tc.sig)
		}
	}
	// Right length, wrong content: each of these would slip through a
	// decoder that only checks the decoded length (Go's skips CR and LF,
	// and accepts non-zero trailing bits unless Strict).
	for _, tc := range []struct{ name, sig string }{
		{"padding inside the 86", good[:84] + "=="},
		{"one padding character", good[:85] + "="},
		{"newline inside", good[:40] + "\n" + good[40:85]},
		{"CRLF inside", good[:40] + "\r\n" + good[40:84]},
		{"trailing newline", good[:85] + "\n"},
		{"trailing CRLF", good[:84] + "\r\n"},
		{"space inside", good[:40] + " " + good[41:]},
		{"tab inside", good[:40] + "\t" + good[41:]},
		{"NUL inside", good[:40] + "\x00" + good[41:]},
		{"non-zero trailing bits", nonZeroTail},
		{"standard alphabet", std},
		{"'+' character", good[:10] + "+" + good[11:]},
		{"'/' character", good[:10] + "/" + good[11:]},
		{"'.' character", good[:10] + "." + good[11:]},
		{"non-ASCII", good[:84] + "\u00e9"},
	} {
		if len(tc.sig) != 86 {
			t.Fatalf("%s: test input is %d chars, meant to be 86", tc.name, len(tc.sig))
		}
		if _, err := validate.DecodeSignature(tc.sig); err == nil {
			t.Errorf("%s: DecodeSignature(%q) accepted", tc.name, tc.sig)
		}
	}
	// Every one of the 16 possible final characters but the canonical one
	// is refused: with 2 data bits in the last character, 3 of the 4 values
	// sharing the data bits carry non-zero padding bits.
	accepted := 0
	for i := 0; i < len(alphabet); i++ {
		if _, err := validate.DecodeSignature(good[:85] + string(alphabet[i])); err == nil {
			accepted++
			if i%16 != 0 {
				t.Errorf("final character %q accepted: its low 4 bits are not zero", alphabet[i])
			}
		}
	}
	if accepted != 4 {
		t.Errorf("%d final characters accepted, want 4 (one per value of the 2 data bits)", accepted)
	}
}
