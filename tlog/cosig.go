package tlog

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"filippo.io/mldsa"
	"golang.org/x/mod/sumdb/note"

	"github.com/plcdir/plc"
)

// The signed-note signature types of C2SP tlog-cosignature keys.
const (
	// CosignatureEd25519 is the type of Ed25519 cosignature/v1 keys: the
	// signature is a timestamp and an Ed25519 signature of
	// CosignatureMessage.
	CosignatureEd25519 byte = 0x04
	// CosignatureMLDSA44 is the type of ML-DSA-44 (FIPS 204) subtree/v1
	// keys: the signature is a timestamp and an ML-DSA-44 signature of
	// SubtreeMessage, which commits to the cosigner's name, the origin,
	// the size and the root hash (not to extension lines).
	CosignatureMLDSA44 byte = 0x06
)

const (
	// mldsaPublicKeySize and mldsaSignatureSize are ML-DSA-44's.
	mldsaPublicKeySize = mldsa.MLDSA44PublicKeySize
	mldsaSignatureSize = mldsa.MLDSA44SignatureSize
	// subtreeLabel is the fixed 12-byte label of a subtree/v1 message.
	subtreeLabel = "subtree/v1\n\x00"
)

// SubtreeMessage is what a subtree/v1 (ML-DSA-44) cosignature by the
// cosigner name at POSIX time ts signs for the checkpoint cp: the TLS
// presentation of tlog-cosignature's cosigned_message, a fixed label, the
// name and the origin as 1–255 byte strings with a one-byte length, the
// timestamp, start 0, end cp.Size and the root hash, integers big-endian.
func SubtreeMessage(name string, ts uint64, cp plc.CheckpointBody) ([]byte, error) {
	switch {
	case len(name) == 0 || len(name) > 255:
		return nil, fmt.Errorf("cosigner name of %d bytes: want 1 to 255", len(name))
	case len(cp.Origin) == 0 || len(cp.Origin) > 255:
		return nil, fmt.Errorf("log origin of %d bytes: want 1 to 255", len(cp.Origin))
	case ts > math.MaxInt64:
		return nil, errors.New("timestamp beyond 2^63-1")
	case cp.Size < 0:
		return nil, errors.New("negative tree size")
	}
	m := make([]byte, 0, len(subtreeLabel)+1+len(name)+8+1+len(cp.Origin)+16+len(cp.Root))
	m = append(m, subtreeLabel...)
	m = append(m, byte(len(name)))
	m = append(m, name...)
	m = binary.BigEndian.AppendUint64(m, ts)
	m = append(m, byte(len(cp.Origin)))
	m = append(m, cp.Origin...)
	m = binary.BigEndian.AppendUint64(m, 0)
	m = binary.BigEndian.AppendUint64(m, uint64(cp.Size))
	return append(m, cp.Root[:]...), nil
}

// checkpointOnly parses a note text that must be exactly a checkpoint
// body, without extension lines: an ML-DSA-44 cosignature does not cover
// them, so a text that has some is neither signed nor verified.
func checkpointOnly(text []byte) (plc.CheckpointBody, error) {
	cp, err := plc.ParseCheckpointBody(string(text))
	if err != nil {
		return cp, err
	}
	if cp.Format() != string(text) {
		return cp, errors.New("checkpoint with extension lines, which an ML-DSA-44 cosignature does not cover")
	}
	return cp, nil
}

// cosignatureVerifierFor builds the verifier of a cosignature key whose
// name and hash are checked: typed is the type byte and the public key.
func cosignatureVerifierFor(vkey, name string, typed []byte) (note.Verifier, error) {
	switch typed[0] {
	case CosignatureEd25519:
		if len(typed) != 1+ed25519.PublicKeySize {
			return nil, fmt.Errorf("verifier key %q: want a 32-byte Ed25519 public key after the type 0x04", vkey)
		}
		return &cosignatureVerifier{name: name, hash: keyID(name, typed), pub: ed25519.PublicKey(typed[1:])}, nil
	case CosignatureMLDSA44:
		if len(typed) != 1+mldsaPublicKeySize {
			return nil, fmt.Errorf("verifier key %q: want a %d-byte ML-DSA-44 public key after the type 0x06, not %d bytes", vkey, mldsaPublicKeySize, len(typed)-1)
		}
		if len(name) > 255 {
			return nil, fmt.Errorf("verifier key %q: an ML-DSA-44 cosigner's name is at most 255 bytes", vkey)
		}
		pub, err := mldsa.NewPublicKey(mldsa.MLDSA44(), typed[1:])
		if err != nil {
			return nil, fmt.Errorf("verifier key %q: not an ML-DSA-44 public key: %v", vkey, err)
		}
		return &mldsaVerifier{name: name, hash: keyID(name, typed), pub: pub}, nil
	case 0x01:
		return nil, fmt.Errorf("verifier key %q is a plain Ed25519 signed-note key (type 0x01): a witness cosigns with a C2SP tlog-cosignature key (type 0x04, Ed25519, or 0x06, ML-DSA-44)", vkey)
	}
	return nil, fmt.Errorf("verifier key %q has signature type 0x%02x: want a C2SP tlog-cosignature key (type 0x04, Ed25519, or 0x06, ML-DSA-44)", vkey, typed[0])
}

type mldsaVerifier struct {
	name string
	hash uint32
	pub  *mldsa.PublicKey
}

func (v *mldsaVerifier) Name() string    { return v.name }
func (v *mldsaVerifier) KeyHash() uint32 { return v.hash }

// Verify checks a timestamped_signature (8-byte big-endian timestamp ||
// ML-DSA-44 signature) over the subtree/v1 message of the checkpoint msg.
func (v *mldsaVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != 8+mldsaSignatureSize {
		return false
	}
	cp, err := checkpointOnly(msg)
	if err != nil {
		return false
	}
	m, err := SubtreeMessage(v.name, binary.BigEndian.Uint64(sig[:8]), cp)
	if err != nil {
		return false
	}
	return mldsa.Verify(v.pub, m, sig[8:], nil) == nil
}

// CosignatureTime returns the timestamp of a cosignature line's
// timestamped_signature (after the 4-byte key ID).
func CosignatureTime(sig note.Signature) (time.Time, error) {
	raw, err := base64.StdEncoding.DecodeString(sig.Base64)
	if err != nil || len(raw) < 4+8 {
		return time.Time{}, errors.New("not a timestamped cosignature")
	}
	ts := binary.BigEndian.Uint64(raw[4:12])
	if ts > math.MaxInt64 {
		return time.Time{}, errors.New("cosignature timestamp beyond 2^63-1")
	}
	return time.Unix(int64(ts), 0).UTC(), nil
}

// Cosigner makes C2SP tlog-cosignature cosignatures of checkpoints with
// an Ed25519 (type 0x04) or ML-DSA-44 (type 0x06) key: it is the
// note.Signer of a witness (tests run their witnesses with it). Its
// private key form is the signed-note one,
// PRIVATE+KEY+<name>+<hash>+<base64(type || 32-byte seed)>.
type Cosigner struct {
	name string
	hash uint32
	typ  byte
	ed   ed25519.PrivateKey
	pq   *mldsa.PrivateKey
	vkey string
	// Now is the clock of the timestamps (nil: time.Now).
	Now func() time.Time
}

// GenerateCosignerKey returns a new cosigner key of type typ
// (CosignatureEd25519 or CosignatureMLDSA44) named name, as private and
// verifier key strings.
func GenerateCosignerKey(typ byte, name string) (skey, vkey string, err error) {
	seed := make([]byte, 32)
	if _, err := rand.Read(seed); err != nil {
		return "", "", err
	}
	c, err := newCosigner(typ, name, seed)
	if err != nil {
		return "", "", err
	}
	return c.privateKey(seed), c.vkey, nil
}

// NewCosigner parses a cosigner's private key (see Cosigner).
func NewCosigner(skey string) (*Cosigner, error) {
	// PRIVATE+KEY+<name>+<hash>+<base64> (the base64 may hold '+').
	parts := strings.SplitN(strings.TrimSpace(skey), "+", 5)
	if len(parts) != 5 || parts[0] != "PRIVATE" || parts[1] != "KEY" {
		return nil, errors.New("not a signed-note private key (PRIVATE+KEY+<name>+<hash>+<key>)")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 1+32 {
		return nil, errors.New("cosigner private key: want base64 of a type byte and a 32-byte seed")
	}
	c, err := newCosigner(raw[0], parts[2], raw[1:])
	if err != nil {
		return nil, err
	}
	if fmt.Sprintf("%08x", c.hash) != parts[3] {
		return nil, errors.New("cosigner private key: the key hash does not match the key")
	}
	return c, nil
}

func newCosigner(typ byte, name string, seed []byte) (*Cosigner, error) {
	if !validKeyName(name) {
		return nil, fmt.Errorf("cosigner name %q: want a non-empty name without spaces or '+'", name)
	}
	c := &Cosigner{name: name, typ: typ}
	var pub []byte
	switch typ {
	case CosignatureEd25519:
		c.ed = ed25519.NewKeyFromSeed(seed)
		pub = c.ed.Public().(ed25519.PublicKey)
	case CosignatureMLDSA44:
		if len(name) > 255 {
			return nil, fmt.Errorf("cosigner name of %d bytes: an ML-DSA-44 cosigner's is at most 255", len(name))
		}
		k, err := mldsa.NewPrivateKey(mldsa.MLDSA44(), seed)
		if err != nil {
			return nil, err
		}
		c.pq = k
		pub = k.PublicKey().Bytes()
	default:
		return nil, fmt.Errorf("cosigner key type 0x%02x: want 0x04 (Ed25519) or 0x06 (ML-DSA-44)", typ)
	}
	typed := append([]byte{typ}, pub...)
	c.hash = keyID(name, typed)
	c.vkey = fmt.Sprintf("%s+%08x+%s", name, c.hash, base64.StdEncoding.EncodeToString(typed))
	return c, nil
}

func (c *Cosigner) privateKey(seed []byte) string {
	return fmt.Sprintf("PRIVATE+KEY+%s+%08x+%s", c.name, c.hash, base64.StdEncoding.EncodeToString(append([]byte{c.typ}, seed...)))
}

// Name returns the cosigner's key name.
func (c *Cosigner) Name() string { return c.name }

// KeyHash returns the cosigner's key ID.
func (c *Cosigner) KeyHash() uint32 { return c.hash }

// Type returns the key's signature type (CosignatureEd25519 or
// CosignatureMLDSA44).
func (c *Cosigner) Type() byte { return c.typ }

// VKey returns the cosigner's verifier key, <name>+<hash>+<base64(type ||
// public key)>, which NewCosignatureVerifier reads.
func (c *Cosigner) VKey() string { return c.vkey }

// Sign returns the timestamped_signature of the checkpoint text msg (a
// text that is not a checkpoint is refused, and for ML-DSA-44 one with
// extension lines).
func (c *Cosigner) Sign(msg []byte) ([]byte, error) {
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	t := now().Unix()
	if t < 0 {
		return nil, errors.New("cosigning: the clock is before 1970")
	}
	ts := uint64(t)
	sig := binary.BigEndian.AppendUint64(nil, ts)
	if c.typ == CosignatureEd25519 {
		if _, err := plc.ParseCheckpointBody(string(msg)); err != nil {
			return nil, fmt.Errorf("cosigning: %w", err)
		}
		return append(sig, ed25519.Sign(c.ed, CosignatureMessage(ts, msg))...), nil
	}
	cp, err := checkpointOnly(msg)
	if err != nil {
		return nil, fmt.Errorf("cosigning: %w", err)
	}
	m, err := SubtreeMessage(c.name, ts, cp)
	if err != nil {
		return nil, fmt.Errorf("cosigning: %w", err)
	}
	s, err := c.pq.Sign(nil, m, nil)
	if err != nil {
		return nil, err
	}
	return append(sig, s...), nil
}

// NewVerifier returns the note.Verifier of a log's checkpoint key: a
// signed-note Ed25519 key (type 0x01) or a C2SP tlog-cosignature key,
// which tlog-checkpoint recommends a log sign with in its ML-DSA-44 form
// (type 0x06; Ed25519, type 0x04, is accepted too).
func NewVerifier(vkey string) (note.Verifier, error) {
	vkey = strings.TrimSpace(vkey)
	if v, err := note.NewVerifier(vkey); err == nil {
		return v, nil
	}
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) == 3 {
		if key, err := base64.StdEncoding.DecodeString(parts[2]); err == nil && len(key) > 0 {
			switch key[0] {
			case 0x01:
				return nil, fmt.Errorf("verifier key %q: a malformed Ed25519 signed-note key", vkey)
			case CosignatureEd25519, CosignatureMLDSA44:
			default:
				return nil, fmt.Errorf("verifier key %q has signature type 0x%02x: want a log key of type 0x01 (Ed25519) or 0x06 (ML-DSA-44)", vkey, key[0])
			}
		}
	}
	return NewCosignatureVerifier(vkey)
}
