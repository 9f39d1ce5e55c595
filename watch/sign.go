package watch

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/plcdir/plc/internal/keyfile"
)

// Webhook signatures.
//
// A delivery carries two headers: TimestampHeader, the Unix time in
// seconds when it was signed, and SignatureHeader, the standard base64 of
// the Ed25519 signature of
//
//	"plc-webhook-v1\n" + <timestamp header value> + "\n" + <body bytes>
//
// by the directory's webhook key, whose public key GET /_watch/key
// publishes. The context string keeps these signatures apart from any
// other use of an Ed25519 key; the timestamp lets a receiver refuse
// replays of old deliveries.
const (
	TimestampHeader = "PLC-Webhook-Timestamp"
	SignatureHeader = "PLC-Webhook-Signature"
	// signContext starts every signed message.
	signContext = "plc-webhook-v1\n"
)

// SignedMessage returns the bytes a delivery's signature covers.
func SignedMessage(timestamp string, body []byte) []byte {
	m := make([]byte, 0, len(signContext)+len(timestamp)+1+len(body))
	m = append(m, signContext...)
	m = append(m, timestamp...)
	m = append(m, '\n')
	return append(m, body...)
}

// Sign returns the values of TimestampHeader and SignatureHeader for body
// signed by key at time t.
func Sign(key ed25519.PrivateKey, t time.Time, body []byte) (timestamp, signature string) {
	timestamp = strconv.FormatInt(t.Unix(), 10)
	sig := ed25519.Sign(key, SignedMessage(timestamp, body))
	return timestamp, base64.StdEncoding.EncodeToString(sig)
}

// ErrBadSignature: a delivery's signature does not verify, or its
// timestamp is not within the allowed skew.
var ErrBadSignature = errors.New("bad webhook signature")

// Verify checks a delivery: its signature headers' values, its exact body,
// the directory's public key, and that its timestamp is within maxSkew of
// now (maxSkew 0: not checked).
func Verify(pub ed25519.PublicKey, timestamp, signature string, body []byte, now time.Time, maxSkew time.Duration) error {
	sig, err := base64.StdEncoding.DecodeString(signature)
	if err != nil || len(sig) != ed25519.SignatureSize || len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: malformed", ErrBadSignature)
	}
	if !ed25519.Verify(pub, SignedMessage(timestamp, body), sig) {
		return ErrBadSignature
	}
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: malformed timestamp", ErrBadSignature)
	}
	if d := now.Sub(time.Unix(sec, 0)).Abs(); maxSkew > 0 && d > maxSkew {
		return fmt.Errorf("%w: timestamp %s is %s away from now", ErrBadSignature, timestamp, d.Round(time.Second))
	}
	return nil
}

// keyFilePrefix starts a webhook key file: the rest of the line is the
// standard base64 of the key's 32-byte seed.
const keyFilePrefix = "plc-webhook-ed25519 "

// OpenKey reads the webhook key file at path. With create set, a missing
// file is created (mode 0600) with a new key.
func OpenKey(path string, create bool) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		return createKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("webhook key: %w", err)
	}
	rest, ok := strings.CutPrefix(strings.TrimSpace(string(b)), keyFilePrefix)
	if !ok {
		return nil, fmt.Errorf("webhook key %s: not a webhook key file (want %q and a base64 seed)", path, strings.TrimSpace(keyFilePrefix))
	}
	seed, err := base64.StdEncoding.DecodeString(rest)
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("webhook key %s: the seed is not %d bytes of base64", path, ed25519.SeedSize)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// createKey writes a new key to path, unless another process has just
// done so: the file is written whole under a temporary name, then linked
// to path, so a reader never sees half of it, and the key already there
// wins.
func createKey(path string) (ed25519.PrivateKey, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	line := keyFilePrefix + base64.StdEncoding.EncodeToString(key.Seed()) + "\n"
	if err := keyfile.Create(path, line); errors.Is(err, keyfile.ErrExists) {
		return OpenKey(path, false)
	} else if err != nil {
		return nil, fmt.Errorf("webhook key: %w", err)
	}
	return key, nil
}
