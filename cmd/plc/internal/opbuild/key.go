package opbuild

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/bluesky-social/indigo/atproto/atcrypto"

	"github.com/plcdir/plc/internal/keyfile"
	"github.com/plcdir/plc/validate"
)

// MaxKeyFileBytes bounds what LoadKeyFile reads of a key file.
const MaxKeyFileBytes = 4096

// ErrKeyFile is the class of every error about a key file's content or
// permissions (not one about reading it).
var ErrKeyFile = errors.New("unusable key file")

// Key is a K-256 or P-256 private key with its public did:key. It is a
// validate.Signer.
type Key struct {
	priv   atcrypto.PrivateKeyExportable
	DIDKey string         // the public key, did:key:z…
	Curve  validate.Curve // CurveK256 or CurveP256
}

// HashAndSign signs b: SHA-256, low-S r‖s.
func (k *Key) HashAndSign(b []byte) ([]byte, error) { return k.priv.HashAndSign(b) }

// Multibase is the private key's multibase form, what a key file holds.
func (k *Key) Multibase() string {
	switch p := k.priv.(type) {
	case *atcrypto.PrivateKeyK256:
		return p.Multibase()
	case *atcrypto.PrivateKeyP256:
		return p.Multibase()
	}
	return ""
}

// GenerateKey returns a fresh key on curve (validate.CurveK256 or
// validate.CurveP256).
func GenerateKey(curve validate.Curve) (*Key, error) {
	var (
		priv atcrypto.PrivateKeyExportable
		err  error
	)
	switch curve {
	case validate.CurveK256:
		priv, err = atcrypto.GeneratePrivateKeyK256()
	case validate.CurveP256:
		priv, err = atcrypto.GeneratePrivateKeyP256()
	default:
		return nil, fmt.Errorf("unsupported curve %s", curve)
	}
	if err != nil {
		return nil, err
	}
	return newKey(priv)
}

func newKey(priv atcrypto.PrivateKeyExportable) (*Key, error) {
	pub, err := priv.PublicKey()
	if err != nil {
		return nil, err
	}
	k := &Key{priv: priv, DIDKey: pub.DIDKey()}
	pk, err := validate.ParseDIDKey(k.DIDKey)
	if err != nil {
		return nil, fmt.Errorf("%w: its public key is not a rotation key: %v", ErrKeyFile, err)
	}
	k.Curve = pk.Curve()
	return k, nil
}

// ParseKey parses a private key in multibase form ("z…").
func ParseKey(text string) (*Key, error) {
	text = strings.TrimSpace(text)
	switch {
	case strings.HasPrefix(text, "did:key:"):
		return nil, fmt.Errorf("%w: it holds a public key (did:key), not a private key", ErrKeyFile)
	case strings.HasPrefix(text, "PRIVATE+KEY+"):
		return nil, fmt.Errorf("%w: it is a transparency-log checkpoint key, not a did:plc rotation key (make one with plc keygen --type k256 or p256)", ErrKeyFile)
	}
	priv, err := atcrypto.ParsePrivateMultibase(text)
	if err != nil {
		return nil, fmt.Errorf("%w: not a K-256 or P-256 private key in multibase form (z…, as plc keygen --type k256 and goat crypto generate write): %v", ErrKeyFile, err)
	}
	return newKey(priv)
}

// LooksLikeKey reports whether s is itself a private key rather than the
// name of a file: a caller refuses it, as a key on a command line lands in
// shell history and in the process list.
func LooksLikeKey(s string) bool {
	_, err := atcrypto.ParsePrivateMultibase(strings.TrimSpace(s))
	return err == nil
}

// LoadKeyFile reads the private key in path. A file that other users may
// read or write (on Unix, any group or other permission bit) is refused.
func LoadKeyFile(path string) (*Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w %s: not a regular file", ErrKeyFile, path)
	}
	if perm := st.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, fmt.Errorf("%w %s: other users may read it (mode %04o); run chmod 600 %s", ErrKeyFile, path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxKeyFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	if len(b) > MaxKeyFileBytes {
		return nil, fmt.Errorf("%w %s: over %d bytes, not a key", ErrKeyFile, path, MaxKeyFileBytes)
	}
	k, err := ParseKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return k, nil
}

// WriteKeyFile writes k to a new file at path, mode 0600. An existing
// file is never overwritten.
func WriteKeyFile(path string, k *Key) error { return keyfile.Create(path, k.Multibase()+"\n") }
