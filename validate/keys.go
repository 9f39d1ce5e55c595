package validate

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"errors"
	"math/big"
	"strings"
	"sync"
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
	if k, ok := keyCache.m.Load(s); ok {
		return k.(*PublicKey), nil
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
	if _, ok := keyCache.m.Load(s); ok {
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

// keyCache bounds memory: when it holds maxCachedKeys it is emptied. Parsing
// a key costs about a tenth of a signature check, so a miss is cheap and a
// simple bound beats an LRU's bookkeeping on the hot path.
type boundedKeyCache struct {
	m sync.Map
	n atomic.Int64
}

var keyCache boundedKeyCache

const maxCachedKeys = 1 << 16

func (c *boundedKeyCache) store(s string, k *PublicKey) {
	if c.n.Add(1) > maxCachedKeys {
		c.m.Clear()
		c.n.Store(1)
	}
	c.m.Store(s, k)
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
	keyCache.m.Clear()
	keyCache.n.Store(0)
}
