package validate_test

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/plcdir/plc/validate"
)

// Test helpers shared by the table tests of this package. Nothing here reads
// the clock or sleeps: every time is derived from baseTime.

// baseTime is the fixed origin of every timestamp in the tests.
var baseTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// at returns baseTime + d.
func at(d time.Duration) time.Time { return baseTime.Add(d) }

// Fixed did:keys for tests that need stable bytes (rendering, sizes).
const (
	// From atproto-interop-tests w3c_didkey_K256.json.
	fixedK256a = "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"
	fixedK256b = "did:key:zQ3shtxV1FrJfhqE1dvxYRcCknWNjHc3c5X1y3ZSoPDi2aur2"
	// From atproto-interop-tests w3c_didkey_P256.json.
	fixedP256a = "did:key:zDnaeTiq1PdzvZXUaMdezchcMJQpBdH2VN4pgrrEhMCCbmwSb"
	// An ed25519 did:key (multicodec 0xed01), from the did:key specification.
	fixedEd25519 = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
	// fixedSig is a structurally plausible sig (86 base64url characters) for
	// ops built with NewOp whose signature is never checked.
	fixedSig = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0-Pw"
)

// testKey is a private key and its did:key.
type testKey struct {
	priv  atcrypto.PrivateKey
	did   string
	curve string
}

// HashAndSign lets a testKey be passed where a validate.Signer is expected.
func (k testKey) HashAndSign(b []byte) ([]byte, error) { return k.priv.HashAndSign(b) }

func (k testKey) String() string { return k.curve + ":" + k.did }

// generateKey returns a fresh key on the chosen curve.
func generateKey(p256 bool) (testKey, error) {
	var (
		priv  atcrypto.PrivateKey
		err   error
		curve = "K-256"
	)
	if p256 {
		curve = "P-256"
		priv, err = atcrypto.GeneratePrivateKeyP256()
	} else {
		priv, err = atcrypto.GeneratePrivateKeyK256()
	}
	if err != nil {
		return testKey{}, err
	}
	pub, err := priv.PublicKey()
	if err != nil {
		return testKey{}, err
	}
	return testKey{priv: priv, did: pub.DIDKey(), curve: curve}, nil
}

// Key pools generated once per test binary: tests need distinct keys, not
// fresh ones.
var (
	keyPoolOnce sync.Once
	k256Pool    []testKey
	p256Pool    []testKey
	keyPoolErr  error
)

const keyPoolSize = 12

func loadKeyPools(tb testing.TB) {
	tb.Helper()
	keyPoolOnce.Do(func() {
		for i := 0; i < keyPoolSize; i++ {
			k, err := generateKey(false)
			if err != nil {
				keyPoolErr = err
				return
			}
			p, err := generateKey(true)
			if err != nil {
				keyPoolErr = err
				return
			}
			k256Pool = append(k256Pool, k)
			p256Pool = append(p256Pool, p)
		}
	})
	if keyPoolErr != nil {
		tb.Fatalf("generating key pool: %v", keyPoolErr)
	}
}

// k256Keys returns n distinct K-256 keys (n <= keyPoolSize).
func k256Keys(tb testing.TB, n int) []testKey {
	tb.Helper()
	loadKeyPools(tb)
	if n > keyPoolSize {
		tb.Fatalf("k256Keys: at most %d keys", keyPoolSize)
	}
	return k256Pool[:n]
}

// p256Keys returns n distinct P-256 keys (n <= keyPoolSize).
func p256Keys(tb testing.TB, n int) []testKey {
	tb.Helper()
	loadKeyPools(tb)
	if n > keyPoolSize {
		tb.Fatalf("p256Keys: at most %d keys", keyPoolSize)
	}
	return p256Pool[:n]
}

// dids returns the did:keys of ks.
func dids(ks ...testKey) []string {
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = k.did
	}
	return out
}

// baseOperation is a typical plc_operation body (no prev, no sig) with the
// given rotation keys.
func baseOperation(rotationKeys []string) validate.Operation {
	return validate.Operation{
		Type:                validate.TypeOperation,
		RotationKeys:        rotationKeys,
		VerificationMethods: []validate.VerificationMethod{{ID: "atproto", Key: fixedK256b}},
		AlsoKnownAs:         []string{"at://alice.test"},
		Services: []validate.Service{{
			ID: "atproto_pds", Type: "AtprotoPersonalDataServer", Endpoint: "https://pds.example.com",
		}},
	}
}

// signOp signs o with key, failing the test on a structural error.
func signOp(tb testing.TB, o validate.Operation, key validate.Signer) *validate.Op {
	tb.Helper()
	op, err := validate.Sign(o, key)
	if err != nil {
		tb.Fatalf("Sign: %v", err)
	}
	return op
}

// newGenesis returns a genesis plc_operation with the given rotation keys,
// signed by signer.
func newGenesis(tb testing.TB, signer testKey, rotationKeys ...string) *validate.Op {
	tb.Helper()
	return signOp(tb, baseOperation(rotationKeys), signer)
}

// newUpdate returns a plc_operation whose prev is prev, with the given
// rotation keys, signed by signer. The handle is varied by a counter so that
// two updates with the same prev and keys are still distinct ops.
func newUpdate(tb testing.TB, prev *validate.Op, signer testKey, rotationKeys ...string) *validate.Op {
	tb.Helper()
	o := baseOperation(rotationKeys)
	o.Prev = prev.CID()
	o.AlsoKnownAs = []string{"at://u" + nextSerial() + ".test"}
	return signOp(tb, o, signer)
}

// newTombstone returns a plc_tombstone on prev signed by signer.
func newTombstone(tb testing.TB, prev *validate.Op, signer testKey) *validate.Op {
	tb.Helper()
	return signOp(tb, validate.Operation{Type: validate.TypeTombstone, Prev: prev.CID()}, signer)
}

// newCreate returns a legacy create op signed by signer.
func newCreate(tb testing.TB, signer testKey, signingKey, recoveryKey, handle, service string) *validate.Op {
	tb.Helper()
	return signOp(tb, validate.Operation{
		Type:        validate.TypeCreate,
		SigningKey:  signingKey,
		RecoveryKey: recoveryKey,
		Handle:      handle,
		Service:     service,
	}, signer)
}

// didOf returns the DID a genesis op creates.
func didOf(op *validate.Op) string { return op.GenesisDID() }

// emptyState is the state of the DID that genesis creates, before any op.
func emptyState(genesis *validate.Op) validate.State {
	return validate.State{DID: didOf(genesis)}
}

// mustNext applies op at t and fails the test if it is rejected.
func mustNext(tb testing.TB, st validate.State, op *validate.Op, t time.Time) (validate.State, validate.Applied) {
	tb.Helper()
	next, applied, err := st.Next(op, t)
	if err != nil {
		tb.Fatalf("Next(%s at %s): unexpected error: %v", op.CID(), t.Format(time.RFC3339Nano), err)
	}
	return next, applied
}

var (
	serialMu sync.Mutex
	serial   int
)

func nextSerial() string {
	serialMu.Lock()
	defer serialMu.Unlock()
	serial++
	return strconv.Itoa(serial)
}

// wantErr describes an expected error: its class, and its exact message or
// a prefix of it. The zero wantErr expects success.
type wantErr struct {
	class  error
	msg    string // exact message, if set
	prefix string // message prefix, if set
}

// check fails the test unless err matches w.
func (w wantErr) check(tb testing.TB, err error) {
	tb.Helper()
	if w.class == nil {
		if err != nil {
			tb.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		tb.Fatalf("got no error, want %v", w.class)
	}
	if !errors.Is(err, w.class) {
		tb.Fatalf("error %q is not %v", err, w.class)
	}
	var verr *validate.Error
	if !errors.As(err, &verr) {
		tb.Fatalf("error %q (%T) is not a *validate.Error", err, err)
	}
	if w.msg != "" && err.Error() != w.msg {
		tb.Fatalf("error message:\n got  %q\n want %q", err.Error(), w.msg)
	}
	if w.prefix != "" && !strings.HasPrefix(err.Error(), w.prefix) {
		tb.Fatalf("error message:\n got  %q\n want prefix %q", err.Error(), w.prefix)
	}
}
