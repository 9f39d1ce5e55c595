package validate_test

import (
	"errors"
	"testing"

	"github.com/mr-tron/base58"

	"github.com/plcdir/plc/validate"
)

// offCurveK256 returns a did:key of the K-256 form whose x has no point on
// the curve.
func offCurveK256(t *testing.T) string {
	t.Helper()
	for x := byte(1); x < 255; x++ {
		raw := append([]byte{0xe7, 0x01, 0x02}, make([]byte, 32)...)
		raw[len(raw)-1] = x
		k := "did:key:z" + base58.Encode(raw)
		if _, err := validate.ParseDIDKey(k); err != nil {
			return k
		}
	}
	t.Fatal("no off-curve x found")
	return ""
}

// TestOffCurveRotationKeyOnlyFailsWhereChecked: history is held to the
// form of rotation keys (points are decompressed when used), while new
// submissions are held to full parsing, as the reference's are.
func TestOffCurveRotationKeyOnlyFailsWhereChecked(t *testing.T) {
	bad := offCurveK256(t)
	if err := validate.CheckRotationKeyForm(bad); err != nil {
		t.Fatalf("form check rejected a well-formed key: %v", err)
	}
	signer, err := generateKey(false)
	if err != nil {
		t.Fatal(err)
	}
	body := validate.Operation{
		Type:         validate.TypeOperation,
		RotationKeys: []string{signer.did, bad},
	}
	op, err := validate.Sign(body, signer)
	if err != nil {
		t.Fatal(err)
	}
	st := validate.State{DID: op.GenesisDID()}
	if _, _, err := st.Next(op, baseTime); err != nil {
		t.Fatalf("history with an unused off-curve key: %v", err)
	}
	if err := validate.CheckSubmission(op); !errors.Is(err, validate.ErrInvalidKey) || err.Error() != "Invalid rotationKey: "+bad {
		t.Fatalf("submission: got %v, want Invalid rotationKey", err)
	}
	// Used to verify, the key cannot: signed by nobody valid, the op fails.
	body.RotationKeys = []string{bad}
	op2, err := validate.Sign(body, signer)
	if err != nil {
		t.Fatal(err)
	}
	st2 := validate.State{DID: op2.GenesisDID()}
	if _, _, err := st2.Next(op2, baseTime); !errors.Is(err, validate.ErrInvalidSignature) {
		t.Fatalf("op only an off-curve key could sign: got %v", err)
	}
	for _, k := range []string{"did:key:zQ3sh", "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK", "not a key"} {
		if validate.CheckRotationKeyForm(k) == nil {
			t.Errorf("form check accepted %q", k)
		}
	}
}

// TestForgetParsedKeysMakesTheNextParseAFirstMeeting: ParseDIDKey hands
// back the key it parsed before, until ForgetParsedKeys, after which the
// key is parsed again (a benchmark's replay meets it as new).
func TestForgetParsedKeysMakesTheNextParseAFirstMeeting(t *testing.T) {
	const s = "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"
	k1, err := validate.ParseDIDKey(s)
	if err != nil {
		t.Fatal(err)
	}
	if k2, _ := validate.ParseDIDKey(s); k2 != k1 {
		t.Fatal("a second parse did not find the first one's key")
	}
	validate.ForgetParsedKeys()
	if k3, _ := validate.ParseDIDKey(s); k3 == k1 {
		t.Fatal("after ForgetParsedKeys the key was still found parsed")
	}
}
