package tlog

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/plcdir/plc/internal/keyfile"
	"github.com/plcdir/plc/oplog"
)

// Key is a transparency log's checkpoint key, whose name is the log's
// origin: an Ed25519 signed-note key (type 0x01), or an ML-DSA-44
// tlog-cosignature key (type 0x06), which C2SP tlog-checkpoint
// recommends a log sign its checkpoints with.
type Key struct {
	Signer   note.Signer
	Verifier note.Verifier
	// VKey is the verifier key in the signed-note text form
	// (<origin>+<hash>+<base64>): what monitors, witnesses and plc audit
	// are given.
	VKey string
}

// Origin returns the log's origin: the key's name.
func (k *Key) Origin() string { return k.Signer.Name() }

// GenerateKey returns a new Ed25519 checkpoint key for origin, as the
// signed-note private and verifier key strings.
func GenerateKey(origin string) (skey, vkey string, err error) {
	return GenerateKeyOfType(KeyEd25519, origin)
}

// The kinds of checkpoint keys, by signed-note signature type.
const (
	// KeyEd25519 is a signed-note Ed25519 key (type 0x01).
	KeyEd25519 byte = 0x01
	// KeyMLDSA44 is an ML-DSA-44 tlog-cosignature key (type 0x06): the
	// log signs each checkpoint with a cosignature of its own (a
	// timestamp, and an ML-DSA-44 signature of the origin, size and
	// root hash; see SubtreeMessage).
	KeyMLDSA44 = CosignatureMLDSA44
)

// GenerateKeyOfType returns a new checkpoint key of type typ (KeyEd25519
// or KeyMLDSA44) for origin, as private and verifier key strings.
func GenerateKeyOfType(typ byte, origin string) (skey, vkey string, err error) {
	if err := checkOrigin(origin); err != nil {
		return "", "", err
	}
	switch typ {
	case KeyEd25519:
		return note.GenerateKey(rand.Reader, origin)
	case KeyMLDSA44:
		return GenerateCosignerKey(CosignatureMLDSA44, origin)
	}
	return "", "", fmt.Errorf("checkpoint key type 0x%02x: want 0x01 (Ed25519) or 0x06 (ML-DSA-44)", typ)
}

// checkOrigin refuses a name the signed-note format cannot carry.
func checkOrigin(origin string) error {
	if origin == "" || strings.ContainsFunc(origin, notInOrigin) {
		return fmt.Errorf("origin %q: want a non-empty name without spaces or '+', the log's URL prefix without its scheme (e.g. plc.example.com/tlog)", origin)
	}
	return nil
}

// notInOrigin reports the runes an origin cannot hold: controls, spaces,
// '+' and DEL.
func notInOrigin(r rune) bool { return r <= ' ' || r == '+' || r == 0x7f }

// ParseKey reads a private key in signed-note form: an Ed25519 one, or
// an ML-DSA-44 one (PRIVATE+KEY+<origin>+<hash>+<base64(0x06 || 32-byte
// seed)>, see Cosigner).
func ParseKey(skey string) (*Key, error) {
	skey = strings.TrimSpace(skey)
	if k, ok, err := parseMLDSAKey(skey); ok {
		return k, err
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		return nil, errors.New("not a signed-note private key (PRIVATE+KEY+<origin>+<hash>+<key>)")
	}
	// PRIVATE+KEY+<name>+<hash>+<base64(alg || seed)>
	// (the base64 may itself hold '+').
	parts := strings.SplitN(skey, "+", 5)
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return nil, errors.New("not an Ed25519 signed-note private key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(signer.Name(), pub)
	if err != nil {
		return nil, err
	}
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, err
	}
	if verifier.KeyHash() != signer.KeyHash() {
		return nil, errors.New("private key's hash does not match its public key")
	}
	return &Key{Signer: signer, Verifier: verifier, VKey: vkey}, nil
}

// parseMLDSAKey parses skey if it is an ML-DSA-44 private key (ok).
func parseMLDSAKey(skey string) (k *Key, ok bool, err error) {
	parts := strings.SplitN(skey, "+", 5)
	if len(parts) != 5 {
		return nil, false, nil
	}
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) == 0 || raw[0] != KeyMLDSA44 {
		return nil, false, nil
	}
	c, err := NewCosigner(skey)
	if err != nil {
		return nil, true, err
	}
	if err := checkOrigin(c.Name()); err != nil {
		return nil, true, err
	}
	v, err := NewCosignatureVerifier(c.VKey())
	if err != nil {
		return nil, true, err
	}
	return &Key{Signer: c, Verifier: v, VKey: c.VKey()}, true, nil
}

// LoadKey reads the key file at path.
func LoadKey(path string) (*Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParseKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return k, nil
}

// WriteKeyFile writes skey to a new file at path (mode 0600, its
// directory created), refusing to overwrite an existing one.
func WriteKeyFile(path, skey string) error { return keyfile.Create(path, skey+"\n") }

// OpenKey returns the checkpoint key of the log in store, and never starts
// a new log by accident: it loads file when set, else dir's
// checkpoint.key, which it creates (for origin, default DefaultOrigin(),
// and logs its verifier key) only when the file does not exist and the
// store holds no checkpoint: a new key for a log that has signed would
// start a new log over its ops. When another process sharing dir creates
// the file first, its key is the one returned.
func OpenKey(ctx context.Context, store oplog.Store, file, dir, origin string, logger *slog.Logger) (*Key, error) {
	if file != "" {
		return LoadKey(file)
	}
	path := filepath.Join(dir, "checkpoint.key")
	k, err := LoadKey(path)
	if err == nil {
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	switch _, err := store.Checkpoint(ctx); {
	case err == nil:
		return nil, fmt.Errorf("the log has signed checkpoints but its key file %s is missing: restore it, or pass --checkpoint-key", path)
	case !errors.Is(err, oplog.ErrNotFound):
		return nil, err
	}
	if origin == "" {
		origin = DefaultOrigin()
	}
	skey, vkey, err := GenerateKey(origin)
	if err != nil {
		return nil, err
	}
	if err := WriteKeyFile(path, skey); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return LoadKey(path)
		}
		return nil, fmt.Errorf("create the checkpoint key: %w", err)
	}
	logger.Warn("created a checkpoint key for the new transparency log: keep the file safe and publish the verifier key",
		"file", path, "vkey", vkey)
	return ParseKey(skey)
}

// DefaultOrigin is the origin of a key created without one: the log's URL
// prefix without its scheme, as C2SP tlog-tiles recommends, for a log
// served under /tlog/ at this machine's host name: "<host>/tlog", the host
// name with the runes an origin cannot hold replaced by '-' (plc.local
// without one). A directory served under another name should pass its own
// (e.g. plc.example.com/tlog for https://plc.example.com/tlog/).
func DefaultOrigin() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "plc.local"
	}
	return strings.Map(func(r rune) rune {
		if notInOrigin(r) || r == '/' {
			return '-'
		}
		return r
	}, h) + "/tlog"
}
