package corpus

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	k256ecdsa "github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"
	"github.com/mr-tron/base58"
)

// Deterministic keys and signatures. Private keys are drawn from a seeded
// ChaCha8 stream; signatures use RFC 6979 nonces on both curves, so the
// same key and message always give the same 64-byte low-S r‖s.

var (
	prefixK256 = [2]byte{0xe7, 0x01}
	prefixP256 = [2]byte{0x80, 0x24}

	p256Curve = elliptic.P256()
	p256N     = p256Curve.Params().N
	p256HalfN = new(big.Int).Rsh(p256N, 1)
	k256N     = secp256k1.S256().N
)

// key is a private rotation or signing key with its did:key.
type key struct {
	didKey string
	k256   *secp256k1.PrivateKey
	p256   *ecdsa.PrivateKey
}

// newKey draws a private key from rng and derives its did:key.
func newKey(rng *rand.ChaCha8, p256 bool) (*key, error) {
	var raw [32]byte
	for {
		rng.Read(raw[:])
		if p256 {
			priv, err := ecdsa.ParseRawPrivateKey(p256Curve, raw[:])
			if err != nil {
				continue // not reduced mod n, or zero: about 2^-32, draw again
			}
			pub, err := priv.PublicKey.Bytes() // 0x04 ‖ X ‖ Y
			if err != nil {
				return nil, fmt.Errorf("p-256 public key: %w", err)
			}
			var point [33]byte
			point[0] = 2 | pub[64]&1
			copy(point[1:], pub[1:33])
			return &key{didKey: didKey(prefixP256, point[:]), p256: priv}, nil
		}
		var s secp256k1.ModNScalar
		if overflow := s.SetBytes(&raw); overflow != 0 || s.IsZero() {
			continue
		}
		priv := secp256k1.NewPrivateKey(&s)
		return &key{didKey: didKey(prefixK256, priv.PubKey().SerializeCompressed()), k256: priv}, nil
	}
}

func didKey(prefix [2]byte, point []byte) string {
	b := make([]byte, 0, 2+len(point))
	b = append(b, prefix[:]...)
	b = append(b, point...)
	return "did:key:z" + base58.Encode(b)
}

// HashAndSign makes a key a validate.Signer: SHA-256, then a deterministic
// (RFC 6979) ECDSA signature, 64 bytes r‖s with s ≤ n/2.
func (k *key) HashAndSign(content []byte) ([]byte, error) {
	digest := sha256.Sum256(content)
	sig := make([]byte, 64)
	if k.k256 != nil {
		// decred's Sign is RFC 6979 and canonical (low-S, BIP 62).
		s := k256ecdsa.Sign(k.k256, digest[:])
		r, ss := s.R(), s.S()
		r.PutBytesUnchecked(sig[:32])
		ss.PutBytesUnchecked(sig[32:])
		return sig, nil
	}
	// A nil rand makes crypto/ecdsa sign deterministically (RFC 6979).
	der, err := k.p256.Sign(nil, digest[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("p-256 sign: %w", err)
	}
	var rs struct{ R, S *big.Int }
	if rest, err := asn1.Unmarshal(der, &rs); err != nil || len(rest) > 0 {
		return nil, errors.New("p-256 sign: unexpected signature encoding")
	}
	if rs.S.Cmp(p256HalfN) > 0 {
		rs.S.Sub(p256N, rs.S)
	}
	rs.R.FillBytes(sig[:32])
	rs.S.FillBytes(sig[32:])
	return sig, nil
}

// highS returns sig with s replaced by n−s: the same signature in its
// malleable, rejected form.
func (k *key) highS(sig []byte) []byte {
	n := k256N
	if k.p256 != nil {
		n = p256N
	}
	s := new(big.Int).SetBytes(sig[32:])
	s.Sub(n, s)
	out := make([]byte, 64)
	copy(out, sig[:32])
	s.FillBytes(out[32:])
	return out
}
