package validate_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"

	"github.com/plcdir/plc/validate"
)

// Fuzz targets in the style of age's internal/format: whatever parses must
// re-encode to identical bytes. For did:plc this is what makes a CID (and a
// DID) a function of the op: two different encodings of one op would be two
// identities for it.

// fxSeedOps returns the JSON of every op in every fixture log, valid or not,
// as stored and compacted.
func fxSeedOps(tb testing.TB) [][]byte {
	var out [][]byte
	for _, kind := range []string{"valid", "invalid"} {
		for _, l := range fxLoadLogs(tb, kind) {
			for _, e := range l.Entries {
				out = append(out, []byte(e.Operation), fxCompact(tb, e.Operation))
			}
		}
	}
	return out
}

// fxSeedStrings returns the sig fields and keys found in the fixture ops.
func fxSeedStrings(tb testing.TB) (sigs, keys []string) {
	for _, raw := range fxSeedOps(tb) {
		var o map[string]any
		if err := json.Unmarshal(raw, &o); err != nil {
			tb.Fatal(err)
		}
		if s, ok := o["sig"].(string); ok {
			sigs = append(sigs, s)
		}
		for _, f := range []string{"signingKey", "recoveryKey"} {
			if k, ok := o[f].(string); ok {
				keys = append(keys, k)
			}
		}
		if ks, ok := o["rotationKeys"].([]any); ok {
			for _, k := range ks {
				keys = append(keys, k.(string))
			}
		}
		if vms, ok := o["verificationMethods"].(map[string]any); ok {
			for _, k := range vms {
				keys = append(keys, k.(string))
			}
		}
	}
	for _, v := range fxSignatureVectors(tb) {
		keys = append(keys, v.PublicKeyDID)
		sigs = append(sigs, v.SignatureBase64)
	}
	for _, vs := range fxDIDKeyVectors(tb) {
		for _, v := range vs {
			keys = append(keys, v.PublicDIDKey)
		}
	}
	return sigs, keys
}

// fxFuzzTime is the acceptance time fuzzed ops are judged at.
var fxFuzzTime = time.Date(2025, 7, 25, 12, 0, 0, 0, time.UTC)

func FuzzParseJSON(f *testing.F) {
	for _, b := range fxSeedOps(f) {
		f.Add(b)
	}
	for _, b := range fxEquivalentJSON(f) {
		f.Add(b)
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"type":"plc_tombstone","prev":"bafyreiguwtflhou46pupb3qtemh56x6o3fn3y7ym2q3jgoms35tdu2d5ga","sig":"\u0041"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		op, err := validate.ParseJSON(b)
		if err != nil {
			var verr *validate.Error
			if !errors.As(err, &verr) || !errors.Is(err, validate.ErrMalformed) {
				t.Fatalf("ParseJSON error %v (%T) is not an ErrMalformed *validate.Error", err, err)
			}
			return
		}
		// The strict parser accepts only what is valid JSON.
		if !json.Valid(b) {
			t.Fatalf("ParseJSON accepted invalid JSON %q", b)
		}
		fxAgreesWithStdlib(t, b, op)
		signed := op.SignedCBOR()
		if c := validate.CIDForCBOR(signed); c != op.CID() {
			t.Fatalf("CID %s is not the CID of SignedCBOR (%s)", op.CID(), c)
		}
		// DAG-CBOR round trip.
		op2, err := validate.ParseCBOR(signed)
		if err != nil {
			t.Fatalf("ParseCBOR(SignedCBOR()) of %q: %v", b, err)
		}
		if !bytes.Equal(op2.SignedCBOR(), signed) || op2.CID() != op.CID() {
			t.Fatalf("DAG-CBOR round trip changed %q", b)
		}
		// JSON round trip: the rendering parses to the same op and is a
		// fixed point.
		js := op.AppendJSON(nil)
		op3, err := validate.ParseJSON(js)
		if err != nil {
			t.Fatalf("ParseJSON(AppendJSON()) = %v for %s", err, js)
		}
		if !bytes.Equal(op3.SignedCBOR(), signed) || op3.CID() != op.CID() {
			t.Fatalf("JSON round trip changed the op:\n in %q\nout %s", b, js)
		}
		if js2 := op3.AppendJSON(nil); !bytes.Equal(js2, js) {
			t.Fatalf("AppendJSON is not a fixed point:\n%s\n%s", js, js2)
		}
		if js3 := op2.AppendJSON(nil); !bytes.Equal(js3, js) {
			t.Fatalf("the DAG-CBOR round trip renders differently:\n%s\n%s", js, js3)
		}
		if !bytes.Equal(op.UnsignedCBOR(), validate.UnsignedCBOR(op.Operation())) {
			t.Fatal("Op.UnsignedCBOR differs from UnsignedCBOR(Operation())")
		}
		// The content survives NewOp unchanged.
		op4, err := validate.NewOp(op.Operation())
		if err != nil || !bytes.Equal(op4.SignedCBOR(), signed) {
			t.Fatalf("NewOp(Operation()) = %v; changed bytes", err)
		}
		// Rendering helpers do not panic on whatever parsed.
		if d, ok := op.Data(); ok {
			validate.AppendDocumentJSON(nil, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", d)
			validate.AppendDataJSON(nil, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", d)
		}
		_ = validate.CheckSubmission(op)
		// Judging it as a genesis op must not panic either.
		st := validate.State{DID: op.GenesisDID()}
		_, _, _ = st.Next(op, fxFuzzTime)
	})
}

// fxAgreesWithStdlib checks that an op ParseJSON accepted decodes to the
// same content under encoding/json: a round trip cannot catch a string
// escape decoded wrongly (it would be re-encoded just as wrongly), this can.
func fxAgreesWithStdlib(t *testing.T, b []byte, op *validate.Op) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("encoding/json rejects %q: %v", b, err)
	}
	str := func(k string) string {
		v, ok := m[k].(string)
		if !ok {
			t.Fatalf("encoding/json: %s is %T in %q", k, m[k], b)
		}
		return v
	}
	strs := func(k string) []string {
		a, ok := m[k].([]any)
		if !ok {
			t.Fatalf("encoding/json: %s is %T in %q", k, m[k], b)
		}
		out := make([]string, len(a))
		for i, v := range a {
			out[i] = v.(string)
		}
		return out
	}
	want := validate.Operation{Sig: str("sig")}
	if m["prev"] != nil {
		want.Prev = str("prev")
	}
	switch str("type") {
	case "plc_operation":
		want.Type = validate.TypeOperation
		want.RotationKeys = strs("rotationKeys")
		want.AlsoKnownAs = strs("alsoKnownAs")
		for id, k := range m["verificationMethods"].(map[string]any) {
			want.VerificationMethods = append(want.VerificationMethods, validate.VerificationMethod{ID: id, Key: k.(string)})
		}
		for id, v := range m["services"].(map[string]any) {
			e := v.(map[string]any)
			want.Services = append(want.Services, validate.Service{ID: id, Type: e["type"].(string), Endpoint: e["endpoint"].(string)})
		}
	case "plc_tombstone":
		want.Type = validate.TypeTombstone
	case "create":
		want.Type = validate.TypeCreate
		want.SigningKey, want.RecoveryKey = str("signingKey"), str("recoveryKey")
		want.Handle, want.Service = str("handle"), str("service")
	default:
		t.Fatalf("accepted type %q", m["type"])
	}
	// Canonical order for the maps, and NewOp's empty-not-nil slices.
	wantOp, err := validate.NewOp(want)
	if err != nil {
		t.Fatalf("NewOp of encoding/json's reading of %q: %v", b, err)
	}
	if !bytes.Equal(wantOp.SignedCBOR(), op.SignedCBOR()) {
		t.Fatalf("ParseJSON and encoding/json read %q differently:\n%s\n%s", b, op.AppendJSON(nil), wantOp.AppendJSON(nil))
	}
}

func FuzzParseCBOR(f *testing.F) {
	for _, b := range fxSeedOps(f) {
		if op, err := validate.ParseJSON(b); err == nil {
			f.Add(op.SignedCBOR())
		}
	}
	f.Add([]byte{0xa0})
	f.Add([]byte{0xf6})
	f.Fuzz(func(t *testing.T, b []byte) {
		op, err := validate.ParseCBOR(b)
		if err != nil {
			if !errors.Is(err, validate.ErrMalformed) {
				t.Fatalf("ParseCBOR error %v is not ErrMalformed", err)
			}
			return
		}
		if !bytes.Equal(op.SignedCBOR(), b) {
			t.Fatalf("ParseCBOR accepted non-canonical bytes %x (canonical %x)", b, op.SignedCBOR())
		}
		if c := validate.CIDForCBOR(b); op.CID() != c {
			t.Fatalf("CID %s, want %s", op.CID(), c)
		}
		js := op.AppendJSON(nil)
		op2, err := validate.ParseJSON(js)
		if err != nil {
			t.Fatalf("ParseJSON(AppendJSON()) = %v for %s", err, js)
		}
		if !bytes.Equal(op2.SignedCBOR(), b) || op2.CID() != op.CID() {
			t.Fatalf("JSON rendering %s parses to another op", js)
		}
		if js2 := op2.AppendJSON(nil); !bytes.Equal(js2, js) {
			t.Fatalf("AppendJSON is not a fixed point:\n%s\n%s", js, js2)
		}
	})
}

func FuzzDecodeSignature(f *testing.F) {
	sigs, _ := fxSeedStrings(f)
	for _, s := range sigs {
		f.Add(s)
		f.Add(strings.NewReplacer("+", "-", "/", "_").Replace(s))
	}
	f.Add("")
	f.Add(strings.Repeat("A", 86))
	f.Fuzz(func(t *testing.T, s string) {
		sig, err := validate.DecodeSignature(s)
		if err != nil {
			return
		}
		if enc := base64.RawURLEncoding.EncodeToString(sig[:]); enc != s {
			t.Fatalf("DecodeSignature accepted %q, which is not the canonical encoding %q of its bytes", s, enc)
		}
	})
}

func FuzzParseDIDKey(f *testing.F) {
	_, keys := fxSeedStrings(f)
	for _, k := range keys {
		f.Add(k)
	}
	f.Add("")
	f.Add("did:key:z")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := validate.ParseDIDKey(s)
		if err != nil {
			if k != nil {
				t.Fatal("ParseDIDKey returned a key with an error")
			}
			return
		}
		if len(s) > 256 {
			t.Fatalf("accepted a %d-character key", len(s))
		}
		if !strings.HasPrefix(s, "did:key:z") {
			t.Fatalf("accepted %q without the did:key:z prefix", s)
		}
		if c := k.Curve(); c != validate.CurveK256 && c != validate.CurveP256 {
			t.Fatalf("accepted %q with curve %v", s, c)
		}
		k2, err := validate.ParseDIDKey(s)
		if err != nil || k2.Curve() != k.Curve() {
			t.Fatalf("second parse of %q: %v, %v", s, k2, err)
		}
		if err := validate.CheckVerificationMethodKey(s); err != nil {
			t.Fatalf("rotation key %q is not a valid verification method: %v", s, err)
		}
		// The key is the canonical encoding of its point: atcrypto parses it
		// and renders it back to the same string.
		pub, err := atcrypto.ParsePublicDIDKey(s)
		if err != nil {
			t.Fatalf("atcrypto rejects %q: %v", s, err)
		}
		if got := pub.DIDKey(); got != s {
			t.Fatalf("%q re-encodes to %q", s, got)
		}
	})
}

// TestDuplicateKeyFoundAmongManyKeys: past 16 keys the parser switches to
// a set for duplicate detection (a 100 KB body of keys would otherwise cost
// quadratic time); duplicates must still be found on both sides of the switch.
func TestDuplicateKeyFoundAmongManyKeys(t *testing.T) {
	for _, n := range []int{3, 16, 17, 20000} {
		var b strings.Builder
		b.WriteString(`{"type":"plc_operation","services":{`)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"k%d":{"type":"t","endpoint":"e"}`, i)
		}
		body := b.String()
		if _, err := validate.ParseJSON([]byte(body + `}}`)); err == nil || strings.Contains(err.Error(), "duplicate") {
			t.Fatalf("n=%d: want a missing-field error, got %v", n, err)
		}
		for _, d := range []int{0, n - 1} {
			dup := fmt.Sprintf(`%s,"k%d":{"type":"t","endpoint":"e"}}}`, body, d)
			_, err := validate.ParseJSON([]byte(dup))
			if want := fmt.Sprintf(`duplicate key "k%d"`, d); err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("n=%d: duplicate of key %d not reported: %v", n, d, err)
			}
		}
	}
}
