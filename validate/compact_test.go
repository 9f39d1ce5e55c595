package validate_test

import (
	"bytes"
	"testing"

	"github.com/plcdir/plc/validate"
)

// TestCompactRoundTripsFixtures: every real op survives the storage form
// with identical signed bytes, and the form is much smaller.
func TestCompactRoundTripsFixtures(t *testing.T) {
	var cbor, compact int
	for _, l := range append(fxLoadLogs(t, "valid"), fxLoadLogs(t, "invalid")...) {
		for i, e := range l.Entries {
			op, err := validate.ParseJSON(e.Operation)
			if err != nil {
				continue // some invalid fixtures do not parse
			}
			c := validate.AppendCompact(nil, op)
			back, err := validate.ParseCompact(c)
			if err != nil {
				t.Fatalf("%s op %d: %v", l.Name, i, err)
			}
			if !bytes.Equal(back.SignedCBOR(), op.SignedCBOR()) || back.CID() != op.CID() {
				t.Fatalf("%s op %d: compact form does not round-trip", l.Name, i)
			}
			cbor += len(op.SignedCBOR())
			compact += len(c)
		}
	}
	t.Logf("DAG-CBOR %d bytes, compact %d bytes (%.0f%%)", cbor, compact, 100*float64(compact)/float64(cbor))
	if compact*10 > cbor*7 {
		t.Fatalf("compact form is %d bytes for %d of DAG-CBOR: not compact", compact, cbor)
	}
}

// TestCompactFallsBackToRawForOddStrings: strings that only look like
// keys, signatures or CIDs are kept as they are.
func TestCompactFallsBackToRawForOddStrings(t *testing.T) {
	o := validate.Operation{
		Type:                validate.TypeOperation,
		RotationKeys:        []string{"did:key:z1", "did:key:z", "did:key:zQ3sh0OIl"},
		VerificationMethods: []validate.VerificationMethod{{ID: "", Key: "did:key:z11"}},
		AlsoKnownAs:         []string{"at://", "https://", "atproto", "BAFYREI"},
		Services:            []validate.Service{{ID: "atproto_pds", Type: "", Endpoint: "http://x"}},
		Sig:                 "short",
	}
	op, err := validate.NewOp(o)
	if err != nil {
		t.Fatal(err)
	}
	back, err := validate.ParseCompact(validate.AppendCompact(nil, op))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.SignedCBOR(), op.SignedCBOR()) {
		t.Fatal("odd strings did not round-trip")
	}
}

func FuzzParseCompact(f *testing.F) {
	for _, b := range fxSeedOps(f) {
		if op, err := validate.ParseJSON(b); err == nil {
			f.Add(validate.AppendCompact(nil, op))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		op, err := validate.ParseCompact(b)
		if err != nil {
			return
		}
		back, err := validate.ParseCompact(validate.AppendCompact(nil, op))
		if err != nil || !bytes.Equal(back.SignedCBOR(), op.SignedCBOR()) {
			t.Fatalf("a decoded compact op does not re-encode: %v", err)
		}
	})
}
