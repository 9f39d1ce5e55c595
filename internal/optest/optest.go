// Package optest builds and signs did:plc operations for tests: fresh keys,
// a genesis op, updates, tombstones. It never reads the clock.
package optest

import (
	"cmp"
	"fmt"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"

	"github.com/plcdir/plc/validate"
)

// Key is a private key with its did:key. It is a validate.Signer.
type Key struct {
	Priv atcrypto.PrivateKey
	DID  string
}

// HashAndSign signs b (SHA-256, low-S r‖s).
func (k Key) HashAndSign(b []byte) ([]byte, error) { return k.Priv.HashAndSign(b) }

// NewKey returns a fresh K-256 key, or P-256 when p256 is set.
func NewKey(t testing.TB, p256 bool) Key {
	t.Helper()
	var (
		priv atcrypto.PrivateKey
		err  error
	)
	if p256 {
		priv, err = atcrypto.GeneratePrivateKeyP256()
	} else {
		priv, err = atcrypto.GeneratePrivateKeyK256()
	}
	if err != nil {
		t.Fatal(err)
	}
	pub, err := priv.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return Key{Priv: priv, DID: pub.DIDKey()}
}

// Body returns a typical plc_operation body: the rotation keys given, one
// atproto verification method, one handle and one PDS.
func Body(handle string, signing Key, rotation ...Key) validate.Operation {
	keys := make([]string, len(rotation))
	for i, k := range rotation {
		keys[i] = k.DID
	}
	return validate.Operation{
		Type:                validate.TypeOperation,
		RotationKeys:        keys,
		VerificationMethods: []validate.VerificationMethod{{ID: "atproto", Key: signing.DID}},
		AlsoKnownAs:         []string{"at://" + handle},
		Services:            []validate.Service{{ID: "atproto_pds", Type: "AtprotoPersonalDataServer", Endpoint: "https://pds.example.com"}},
	}
}

// Sign signs body with key and returns the op.
func Sign(t testing.TB, body validate.Operation, key Key) *validate.Op {
	t.Helper()
	op, err := validate.Sign(body, key)
	if err != nil {
		t.Fatal(err)
	}
	return op
}

// Identity is a DID under construction: its keys and its latest op.
type Identity struct {
	DID      string
	Rotation []Key
	Signing  Key
	Body     validate.Operation // the body of Head
	Head     *validate.Op
}

// NewIdentity creates a DID with nRotation fresh K-256 rotation keys and
// returns it with its signed genesis op (signed by the first key).
func NewIdentity(t testing.TB, handle string, nRotation int) *Identity {
	t.Helper()
	id := &Identity{Signing: NewKey(t, false)}
	for range nRotation {
		id.Rotation = append(id.Rotation, NewKey(t, false))
	}
	id.Body = Body(handle, id.Signing, id.Rotation...)
	id.Head = Sign(t, id.Body, id.Rotation[0])
	id.DID = id.Head.GenesisDID()
	return id
}

// Update returns a new op after prev (nil: after Head) that changes the
// handle, signed by rotation key signer; it does not move Head (call
// Accept for that).
func (id *Identity) Update(t testing.TB, prev *validate.Op, signer int, handle string) *validate.Op {
	t.Helper()
	prev = cmp.Or(prev, id.Head)
	body := id.Body
	body.Prev = prev.CID()
	body.AlsoKnownAs = []string{"at://" + handle}
	return Sign(t, body, id.Rotation[signer])
}

// Tombstone returns a tombstone after prev (nil: after Head).
func (id *Identity) Tombstone(t testing.TB, prev *validate.Op, signer int) *validate.Op {
	t.Helper()
	prev = cmp.Or(prev, id.Head)
	return Sign(t, validate.Operation{Type: validate.TypeTombstone, Prev: prev.CID()}, id.Rotation[signer])
}

// Accept makes op the identity's head.
func (id *Identity) Accept(op *validate.Op) {
	id.Head = op
	if op.Type() == validate.TypeOperation {
		id.Body = op.Operation()
		id.Body.Sig = ""
	}
}

// Handle returns a deterministic handle for the i-th test identity.
func Handle(i int) string { return fmt.Sprintf("user%d.test", i) }
