package validate

import "encoding/base64"

// Signer signs bytes: it hashes them with SHA-256 and returns a 64-byte
// low-S r‖s ECDSA signature. indigo's atcrypto private keys satisfy it.
type Signer interface {
	HashAndSign(content []byte) ([]byte, error)
}

// Sign sets o.Sig to key's signature over o's unsigned canonical DAG-CBOR
// and returns the resulting op. It checks structure only (see NewOp).
func Sign(o Operation, key Signer) (*Op, error) {
	o.Sig = ""
	if err := checkStructure(&o); err != nil {
		return nil, err
	}
	sig, err := key.HashAndSign(UnsignedCBOR(o))
	if err != nil {
		return nil, err
	}
	o.Sig = base64.RawURLEncoding.EncodeToString(sig)
	return NewOp(o)
}
