package validate

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"errors"
	"hash/maphash"
	"math/big"
	"strings"
	"sync/atomic"

	"github.com/mr-tron/base58"
	"gitlab.com/yawning/secp256k1-voi/secec"
)

// Curve names the key types did:plc rotation keys may use.
type Curve uint8

const (
	CurveUnknown Curve = iota
	CurveP256          // NIST P-256, multicodec 0x1200 (did:key:zDnae…)
	CurveK256          // secp256k1, multicodec 0xe7 (did:key:zQ3s…)
)

func (c Curve) String() string {
	switch c {
	case CurveP256:
		return "P-256"
	case CurveK256:
		return "K-256"
	}
	return "unknown"
}

const didKeyPrefix = "did:key:"

// maxDIDKeyLen bounds the did:key strings this package decodes.
const maxDIDKeyLen = 256

var (
	prefixP256 = [2]byte{0x80, 0x24}
	prefixK256 = [2]byte{0xe7, 0x01}
)

// PublicKey is a parsed rotation key.
type PublicKey struct {
	curve Curve
	k256  *secec.PublicKey
	p256  *ecdsa.PublicKey
}

// Curve returns the key's curve.
func (k *PublicKey) Curve() Curve { return k.curve }

var errNotDIDKey = errors.New("not a base58btc did:key")

// decodeDIDKey returns the multicodec-prefixed bytes of a did:key:z… string.
func decodeDIDKey(s string) ([]byte, error) {
	if len(s) > maxDIDKeyLen || !strings.HasPrefix(s, didKeyPrefix+"z") || len(s) == len(didKeyPrefix)+1 {
		return nil, errNotDIDKey
	}
	b, err := base58.Decode(s[len(didKeyPrefix)+1:])
	if err != nil || len(b) < 2 {
		return nil, errNotDIDKey
	}
	return b, nil
}

// CheckVerificationMethodKey checks the only thing the reference checks of a
// verification method key: that it is a did:key with a base58btc
// ("z"-prefixed) multibase value. Any key type is allowed.
func CheckVerificationMethodKey(s string) error {
	_, err := decodeDIDKey(s)
	return err
}

// keyCurveOf returns the curve a did:key names by its multicodec prefix,
// without checking the point (used for DID-document contexts).
func keyCurveOf(s string) Curve {
	b, err := decodeDIDKey(s)
	if err != nil {
		return CurveUnknown
	}
	switch [2]byte(b[:2]) {
	case prefixP256:
		return CurveP256
	case prefixK256:
		return CurveK256
	}
	return CurveUnknown
}

func multibaseOf(didKey string) string {
	return strings.TrimPrefix(didKey, didKeyPrefix)
}

// ParseDIDKey parses a rotation key: a did:key of a K-256 or P-256 public key
// as a 33-byte compressed point. Results are cached.
func ParseDIDKey(s string) (*PublicKey, error) {
	if k := keyCache.load(s); k != nil {
		return k, nil
	}
	k, err := parseDIDKey(s)
	if err != nil {
		return nil, err
	}
	keyCache.store(s, k)
	return k, nil
}

// rotationKeyPoint decodes a rotation key's did:key to its multicodec
// prefix and compressed point, checking the form but not the point.
func rotationKeyPoint(s string) ([2]byte, []byte, error) {
	b, err := decodeDIDKey(s)
	if err != nil {
		return [2]byte{}, nil, err
	}
	prefix, point := [2]byte(b[:2]), b[2:]
	if prefix != prefixK256 && prefix != prefixP256 {
		return prefix, nil, errors.New("unsupported key type (rotation keys must be K-256 or P-256)")
	}
	if len(point) != 33 || (point[0] != 2 && point[0] != 3) {
		return prefix, nil, errors.New("key is not a 33-byte compressed point")
	}
	return prefix, point, nil
}

// CheckRotationKeyForm checks that s has the form of a rotation key — a
// base58btc did:key of a K-256 or P-256 33-byte compressed point — without
// decompressing the point (the costly part of ParseDIDKey). Replayed
// history is held to this; a key is fully parsed when it is used to verify.
func CheckRotationKeyForm(s string) error {
	if keyCache.load(s) != nil {
		return nil
	}
	_, _, err := rotationKeyPoint(s)
	return err
}

func parseDIDKey(s string) (*PublicKey, error) {
	prefix, point, err := rotationKeyPoint(s)
	if err != nil {
		return nil, err
	}
	switch prefix {
	case prefixK256:
		pk, err := secec.NewPublicKey(point)
		if err != nil {
			return nil, err
		}
		return &PublicKey{curve: CurveK256, k256: pk}, nil
	case prefixP256:
		x, y := elliptic.UnmarshalCompressed(elliptic.P256(), point)
		if x == nil {
			return nil, errors.New("invalid P-256 point")
		}
		return &PublicKey{curve: CurveP256, p256: &ecdsa.PublicKey{Curve: elliptic.P256(), X: x, Y: y}}, nil
	}
	return nil, errors.New("unsupported key type (rotation keys must be K-256 or P-256)")
}

// keyTable holds parsed keys in a fixed table: each key has one slot,
// picked by a hash with a per-process seed, and a key stored in a taken
// slot replaces the one there. Memory is bounded by the table's size. A
// lookup is a hash, one load and a comparison, whether or not the key is
// there: most keys of a directory are met once or twice, so the misses
// are what the table must make cheap, and a map of ever-changing keys
// makes them dear. Parsing a key costs about a tenth of a signature check,
// so a key pushed out costs little, and a key shared by many DIDs (a PDS's
// rotation key) is found again after at most one parse.
type keyTable struct {
	seed  maphash.Seed
	slots [keyTableSlots]atomic.Pointer[parsedKey]
}

// keyTableSlots is the table's size: a power of two.
const keyTableSlots = 1 << 16

type parsedKey struct {
	s string
	k *PublicKey
}

// keyCache is the table ParseDIDKey and CheckRotationKeyForm look keys up in.
var keyCache = &keyTable{seed: maphash.MakeSeed()}

// index is the slot s may be held in.
func (t *keyTable) index(s string) uint64 {
	return maphash.String(t.seed, s) & (keyTableSlots - 1)
}

func (t *keyTable) slot(s string) *atomic.Pointer[parsedKey] { return &t.slots[t.index(s)] }

// load returns the key parsed from s, or nil if the table does not hold it.
func (t *keyTable) load(s string) *PublicKey {
	if e := t.slot(s).Load(); e != nil && e.s == s {
		return e.k
	}
	return nil
}

func (t *keyTable) store(s string, k *PublicKey) {
	t.slot(s).Store(&parsedKey{s: s, k: k})
}

func (t *keyTable) clear() {
	for i := range t.slots {
		t.slots[i].Store(nil)
	}
}

// Signature is a decoded op signature: 64 bytes r ‖ s.
type Signature [64]byte

// DecodeSignature decodes a sig field strictly: unpadded base64url of
// exactly 64 bytes, zero trailing bits, no other characters (the standard
// library decoder would skip CR and LF).
func DecodeSignature(s string) (Signature, error) {
	var sig Signature
	if len(s) != 86 {
		return sig, errors.New("signature is not 86 base64url characters")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return sig, errors.New("signature contains a character outside base64url")
		}
	}
	n, err := base64.RawURLEncoding.Strict().Decode(sig[:], []byte(s))
	if err != nil || n != 64 {
		return sig, errors.New("signature is not canonical base64url")
	}
	return sig, nil
}

// k256Options: digest already computed, r‖s encoding, low-S only.
var k256Options = &secec.ECDSAOptions{Encoding: secec.EncodingCompact, RejectMalleable: true}

var (
	p256N     = elliptic.P256().Params().N
	p256HalfN = new(big.Int).Rsh(p256N, 1)
)

// Verify reports whether sig is a valid low-S ECDSA signature by k over the
// SHA-256 digest hash. High-S signatures are rejected on both curves.
func (k *PublicKey) Verify(hash *[32]byte, sig *Signature) bool {
	switch k.curve {
	case CurveK256:
		// secp256k1-voi rejects r or s out of [1, n-1] and, with
		// RejectMalleable, s > n/2.
		return k.k256.Verify(hash[:], sig[:], k256Options)
	case CurveP256:
		r := new(big.Int).SetBytes(sig[:32])
		s := new(big.Int).SetBytes(sig[32:])
		if r.Sign() == 0 || s.Sign() == 0 || r.Cmp(p256N) >= 0 || s.Cmp(p256HalfN) > 0 {
			return false
		}
		return ecdsa.Verify(k.p256, hash[:], r, s)
	}
	return false
}

// ParseDIDKeyUncached parses a rotation key like ParseDIDKey, without
// reading or filling the cache: the cost of meeting a key for the first
// time (benchmarks measure it).
func ParseDIDKeyUncached(s string) (*PublicKey, error) { return parseDIDKey(s) }

// ForgetParsedKeys empties the cache of parsed keys (ParseDIDKey's), so
// that the keys met next are met as for the first time: a benchmark that
// replays a corpus after another run over it in the same process calls
// it, or the first run's keys would be found parsed.
func ForgetParsedKeys() {
	keyCache.clear()
}
