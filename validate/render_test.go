package validate_test

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/plcdir/plc/validate"
)

const renderDID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"

// mustNewOp builds an op without signing it (rendering does not look at
// the signature).
func mustNewOp(t *testing.T, o validate.Operation) *validate.Op {
	t.Helper()
	if o.Sig == "" {
		o.Sig = fixedSig
	}
	op, err := validate.NewOp(o)
	if err != nil {
		t.Fatalf("NewOp: %v", err)
	}
	return op
}

func TestLegacyCreateNormalisation(t *testing.T) {
	cases := []struct {
		handle, service string
		wantAKA, wantEP string
	}{
		{"alice.test", "example.com", "at://alice.test", "https://example.com"},
		{"at://x", "http://x", "at://x", "http://x"},
		{"https://x", "https://x", "at://x", "https://x"},
		{"http://x", "example.com:2583", "at://x", "https://example.com:2583"},
		{"at://https://x", "HTTP://x", "at://https://x", "https://HTTP://x"},
		{"", "", "at://", "https://"},
	}
	for _, tc := range cases {
		t.Run(tc.handle+"|"+tc.service, func(t *testing.T) {
			op := mustNewOp(t, validate.Operation{
				Type: validate.TypeCreate, SigningKey: fixedK256a, RecoveryKey: fixedP256a,
				Handle: tc.handle, Service: tc.service,
			})
			d, ok := op.Data()
			if !ok {
				t.Fatal("Data() of a create op returned false")
			}
			want := validate.Data{
				RotationKeys:        []string{fixedP256a, fixedK256a},
				VerificationMethods: []validate.VerificationMethod{{ID: "atproto", Key: fixedK256a}},
				AlsoKnownAs:         []string{tc.wantAKA},
				Services:            []validate.Service{{ID: "atproto_pds", Type: "AtprotoPersonalDataServer", Endpoint: tc.wantEP}},
			}
			if !reflect.DeepEqual(d, want) {
				t.Fatalf("Data() =\n %+v\nwant\n %+v", d, want)
			}
			// The op itself keeps the raw values.
			if o := op.Operation(); o.Handle != tc.handle || o.Service != tc.service {
				t.Fatalf("Operation() changed: handle %q service %q", o.Handle, o.Service)
			}
		})
	}
}

func TestDataOfOtherTypes(t *testing.T) {
	ts := mustNewOp(t, validate.Operation{Type: validate.TypeTombstone, Prev: "bafyreid6awsb6lzc54zxaq2roijyvpbkp5sf3yyuuv5kluaspdggxsdmvu"})
	if d, ok := ts.Data(); ok || !reflect.DeepEqual(d, validate.Data{}) {
		t.Fatalf("tombstone Data() = %+v, %v; want zero, false", d, ok)
	}
	o := baseOperation([]string{fixedK256a})
	op := mustNewOp(t, o)
	d, ok := op.Data()
	want := validate.Data{RotationKeys: o.RotationKeys, VerificationMethods: o.VerificationMethods, AlsoKnownAs: o.AlsoKnownAs, Services: o.Services}
	if !ok || !reflect.DeepEqual(d, want) {
		t.Fatalf("plc_operation Data() = %+v, %v; want %+v, true", d, ok, want)
	}
}

func TestAppendDocumentJSON(t *testing.T) {
	pds := []validate.Service{{ID: "atproto_pds", Type: "AtprotoPersonalDataServer", Endpoint: "https://pds.example.com"}}
	cases := []struct {
		name string
		op   validate.Operation
		want string
	}{
		{
			// "other" (5 bytes) sorts before "backup" (6) and "atproto" (7);
			// the second P-256 method adds no second context.
			name: "K-256 and P-256, context in map order, deduplicated",
			op: validate.Operation{
				Type:         validate.TypeOperation,
				RotationKeys: []string{fixedK256a},
				VerificationMethods: []validate.VerificationMethod{
					{ID: "atproto", Key: fixedK256a}, {ID: "backup", Key: fixedP256a}, {ID: "other", Key: fixedP256a},
				},
				AlsoKnownAs: []string{"at://alice.test"},
				Services:    pds,
			},
			want: `{"@context":["https://www.w3.org/ns/did/v1","https://w3id.org/security/multikey/v1",` +
				`"https://w3id.org/security/suites/ecdsa-2019/v1","https://w3id.org/security/suites/secp256k1-2019/v1"],` +
				`"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","alsoKnownAs":["at://alice.test"],"verificationMethod":[` +
				`{"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz#other","type":"Multikey","controller":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","publicKeyMultibase":"zDnaeTiq1PdzvZXUaMdezchcMJQpBdH2VN4pgrrEhMCCbmwSb"},` +
				`{"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz#backup","type":"Multikey","controller":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","publicKeyMultibase":"zDnaeTiq1PdzvZXUaMdezchcMJQpBdH2VN4pgrrEhMCCbmwSb"},` +
				`{"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz#atproto","type":"Multikey","controller":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","publicKeyMultibase":"zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"}],` +
				`"service":[{"id":"#atproto_pds","type":"AtprotoPersonalDataServer","serviceEndpoint":"https://pds.example.com"}]}`,
		},
		{
			name: "K-256 first when its id sorts first",
			op: validate.Operation{
				Type:                validate.TypeOperation,
				VerificationMethods: []validate.VerificationMethod{{ID: "atproto", Key: fixedP256a}, {ID: "k", Key: fixedK256b}},
			},
			want: `{"@context":["https://www.w3.org/ns/did/v1","https://w3id.org/security/multikey/v1",` +
				`"https://w3id.org/security/suites/secp256k1-2019/v1","https://w3id.org/security/suites/ecdsa-2019/v1"],` +
				`"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","alsoKnownAs":[],"verificationMethod":[` +
				`{"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz#k","type":"Multikey","controller":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","publicKeyMultibase":"zQ3shtxV1FrJfhqE1dvxYRcCknWNjHc3c5X1y3ZSoPDi2aur2"},` +
				`{"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz#atproto","type":"Multikey","controller":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","publicKeyMultibase":"zDnaeTiq1PdzvZXUaMdezchcMJQpBdH2VN4pgrrEhMCCbmwSb"}],` +
				`"service":[]}`,
		},
		{
			name: "ed25519 adds no context but is a Multikey",
			op: validate.Operation{
				Type:                validate.TypeOperation,
				VerificationMethods: []validate.VerificationMethod{{ID: "atproto", Key: fixedEd25519}},
				AlsoKnownAs:         []string{"at://alice.test", "https://alice.example"},
				Services:            pds,
			},
			want: `{"@context":["https://www.w3.org/ns/did/v1","https://w3id.org/security/multikey/v1"],` +
				`"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","alsoKnownAs":["at://alice.test","https://alice.example"],"verificationMethod":[` +
				`{"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz#atproto","type":"Multikey","controller":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","publicKeyMultibase":"z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"}],` +
				`"service":[{"id":"#atproto_pds","type":"AtprotoPersonalDataServer","serviceEndpoint":"https://pds.example.com"}]}`,
		},
		{
			name: "ed25519 next to K-256",
			op: validate.Operation{
				Type:                validate.TypeOperation,
				VerificationMethods: []validate.VerificationMethod{{ID: "atproto", Key: fixedK256a}, {ID: "ed", Key: fixedEd25519}},
			},
			want: `{"@context":["https://www.w3.org/ns/did/v1","https://w3id.org/security/multikey/v1",` +
				`"https://w3id.org/security/suites/secp256k1-2019/v1"],` +
				`"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","alsoKnownAs":[],"verificationMethod":[` +
				`{"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz#ed","type":"Multikey","controller":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","publicKeyMultibase":"z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"},` +
				`{"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz#atproto","type":"Multikey","controller":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","publicKeyMultibase":"zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"}],` +
				`"service":[]}`,
		},
		{
			name: "legacy create",
			op: validate.Operation{
				Type: validate.TypeCreate, SigningKey: fixedK256a, RecoveryKey: fixedP256a,
				Handle: "alice.test", Service: "pds.example.com",
			},
			want: `{"@context":["https://www.w3.org/ns/did/v1","https://w3id.org/security/multikey/v1",` +
				`"https://w3id.org/security/suites/secp256k1-2019/v1"],` +
				`"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","alsoKnownAs":["at://alice.test"],"verificationMethod":[` +
				`{"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz#atproto","type":"Multikey","controller":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","publicKeyMultibase":"zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"}],` +
				`"service":[{"id":"#atproto_pds","type":"AtprotoPersonalDataServer","serviceEndpoint":"https://pds.example.com"}]}`,
		},
		{
			name: "service ids as bare fragments, in map order",
			op: validate.Operation{
				Type: validate.TypeOperation,
				Services: []validate.Service{
					{ID: "atproto_pds", Type: "AtprotoPersonalDataServer", Endpoint: "https://pds.example.com"},
					{ID: "bsky_fg", Type: "BskyFeedGenerator", Endpoint: "https://fg.example.com"},
					{ID: "a", Type: "T", Endpoint: "e"},
				},
			},
			want: `{"@context":["https://www.w3.org/ns/did/v1","https://w3id.org/security/multikey/v1"],` +
				`"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","alsoKnownAs":[],"verificationMethod":[],"service":[` +
				`{"id":"#a","type":"T","serviceEndpoint":"e"},` +
				`{"id":"#bsky_fg","type":"BskyFeedGenerator","serviceEndpoint":"https://fg.example.com"},` +
				`{"id":"#atproto_pds","type":"AtprotoPersonalDataServer","serviceEndpoint":"https://pds.example.com"}]}`,
		},
		{
			// DAG-CBOR order would be 1, 2, a, 01, 10, bb; JavaScript
			// enumerates array-index keys first, numerically. The context
			// list follows the same order: "10" (K-256) precedes "a"
			// (P-256). "4294967295" is not an array index (2^32-1) and
			// keeps its place among the string keys; "4294967294" is one.
			name: "integer-like keys first, in numeric order",
			op: validate.Operation{
				Type: validate.TypeOperation,
				VerificationMethods: []validate.VerificationMethod{
					{ID: "a", Key: fixedP256a}, {ID: "10", Key: fixedK256a}, {ID: "2", Key: fixedEd25519},
					{ID: "1", Key: fixedEd25519}, {ID: "01", Key: fixedEd25519}, {ID: "bb", Key: fixedK256b},
				},
				Services: []validate.Service{
					{ID: "4294967295", Type: "T", Endpoint: "e1"}, {ID: "b", Type: "T", Endpoint: "e2"},
					{ID: "4294967294", Type: "T", Endpoint: "e3"}, {ID: "-1", Type: "T", Endpoint: "e4"},
				},
			},
			want: `{"@context":["https://www.w3.org/ns/did/v1","https://w3id.org/security/multikey/v1",` +
				`"https://w3id.org/security/suites/secp256k1-2019/v1","https://w3id.org/security/suites/ecdsa-2019/v1"],` +
				`"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","alsoKnownAs":[],"verificationMethod":[` +
				`{"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz#1","type":"Multikey","controller":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","publicKeyMultibase":"z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"},` +
				`{"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz#2","type":"Multikey","controller":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","publicKeyMultibase":"z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"},` +
				`{"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz#10","type":"Multikey","controller":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","publicKeyMultibase":"zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"},` +
				`{"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz#a","type":"Multikey","controller":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","publicKeyMultibase":"zDnaeTiq1PdzvZXUaMdezchcMJQpBdH2VN4pgrrEhMCCbmwSb"},` +
				`{"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz#01","type":"Multikey","controller":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","publicKeyMultibase":"z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"},` +
				`{"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz#bb","type":"Multikey","controller":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","publicKeyMultibase":"zQ3shtxV1FrJfhqE1dvxYRcCknWNjHc3c5X1y3ZSoPDi2aur2"}],` +
				`"service":[{"id":"#4294967294","type":"T","serviceEndpoint":"e3"},` +
				`{"id":"#b","type":"T","serviceEndpoint":"e2"},` +
				`{"id":"#-1","type":"T","serviceEndpoint":"e4"},` +
				`{"id":"#4294967295","type":"T","serviceEndpoint":"e1"}]}`,
		},
		{
			name: "strings escaped",
			op: validate.Operation{
				Type:        validate.TypeOperation,
				AlsoKnownAs: []string{"at://\"q\"\\<&>\u2028\n"},
				Services:    []validate.Service{{ID: "x\"y", Type: "T\t", Endpoint: "https://e/\u00e9"}},
			},
			want: `{"@context":["https://www.w3.org/ns/did/v1","https://w3id.org/security/multikey/v1"],` +
				`"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","alsoKnownAs":["at://\"q\"\\<&>` + "\u2028" + `\n"],"verificationMethod":[],` +
				`"service":[{"id":"#x\"y","type":"T\t","serviceEndpoint":"https://e/` + "\u00e9" + `"}]}`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, ok := mustNewOp(t, tc.op).Data()
			if !ok {
				t.Fatal("Data() returned false")
			}
			prefix := []byte("prefix:")
			got := validate.AppendDocumentJSON(prefix, renderDID, d)
			if string(got[:len(prefix)]) != "prefix:" {
				t.Fatalf("AppendDocumentJSON clobbered dst: %q", got)
			}
			got = got[len(prefix):]
			if string(got) != tc.want {
				t.Fatalf("document:\n got  %s\n want %s", got, tc.want)
			}
			if !json.Valid(got) {
				t.Fatalf("document is not valid JSON: %s", got)
			}
		})
	}
}

func TestAppendDocumentJSONEmpty(t *testing.T) {
	got := string(validate.AppendDocumentJSON(nil, renderDID, validate.Data{}))
	want := `{"@context":["https://www.w3.org/ns/did/v1","https://w3id.org/security/multikey/v1"],` +
		`"id":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","alsoKnownAs":[],"verificationMethod":[],"service":[]}`
	if got != want {
		t.Fatalf("document:\n got  %s\n want %s", got, want)
	}
}

func TestAppendDataJSON(t *testing.T) {
	cases := []struct {
		name string
		op   validate.Operation
		want string
	}{
		{
			name: "key order did, verificationMethods, rotationKeys, alsoKnownAs, services",
			op: validate.Operation{
				Type:                validate.TypeOperation,
				RotationKeys:        []string{fixedP256a, fixedK256a},
				VerificationMethods: []validate.VerificationMethod{{ID: "atproto", Key: fixedK256a}, {ID: "other", Key: fixedEd25519}},
				AlsoKnownAs:         []string{"at://alice.test"},
				Services: []validate.Service{
					{ID: "atproto_pds", Type: "AtprotoPersonalDataServer", Endpoint: "https://pds.example.com"},
					{ID: "labeler", Type: "AtprotoLabeler", Endpoint: "https://l.example.com"},
				},
			},
			want: `{"did":"did:plc:ewvi7nxzyoun6zhxrhs64oiz",` +
				`"verificationMethods":{"other":"did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK","atproto":"did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"},` +
				`"rotationKeys":["did:key:zDnaeTiq1PdzvZXUaMdezchcMJQpBdH2VN4pgrrEhMCCbmwSb","did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"],` +
				`"alsoKnownAs":["at://alice.test"],` +
				`"services":{"labeler":{"type":"AtprotoLabeler","endpoint":"https://l.example.com"},"atproto_pds":{"type":"AtprotoPersonalDataServer","endpoint":"https://pds.example.com"}}}`,
		},
		{
			name: "empty",
			op:   validate.Operation{Type: validate.TypeOperation},
			want: `{"did":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","verificationMethods":{},"rotationKeys":[],"alsoKnownAs":[],"services":{}}`,
		},
		{
			name: "integer-like keys first",
			op: validate.Operation{
				Type:                validate.TypeOperation,
				VerificationMethods: []validate.VerificationMethod{{ID: "a", Key: fixedK256a}, {ID: "10", Key: fixedK256b}, {ID: "2", Key: fixedP256a}},
				Services:            []validate.Service{{ID: "x", Type: "T", Endpoint: "e1"}, {ID: "20", Type: "T", Endpoint: "e2"}, {ID: "3", Type: "T", Endpoint: "e3"}},
			},
			want: `{"did":"did:plc:ewvi7nxzyoun6zhxrhs64oiz",` +
				`"verificationMethods":{"2":"did:key:zDnaeTiq1PdzvZXUaMdezchcMJQpBdH2VN4pgrrEhMCCbmwSb","10":"did:key:zQ3shtxV1FrJfhqE1dvxYRcCknWNjHc3c5X1y3ZSoPDi2aur2","a":"did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"},` +
				`"rotationKeys":[],"alsoKnownAs":[],` +
				`"services":{"3":{"type":"T","endpoint":"e3"},"20":{"type":"T","endpoint":"e2"},"x":{"type":"T","endpoint":"e1"}}}`,
		},
		{
			name: "legacy create",
			op: validate.Operation{
				Type: validate.TypeCreate, SigningKey: fixedK256a, RecoveryKey: fixedP256a,
				Handle: "https://alice.test", Service: "pds.example.com",
			},
			want: `{"did":"did:plc:ewvi7nxzyoun6zhxrhs64oiz",` +
				`"verificationMethods":{"atproto":"did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"},` +
				`"rotationKeys":["did:key:zDnaeTiq1PdzvZXUaMdezchcMJQpBdH2VN4pgrrEhMCCbmwSb","did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"],` +
				`"alsoKnownAs":["at://alice.test"],` +
				`"services":{"atproto_pds":{"type":"AtprotoPersonalDataServer","endpoint":"https://pds.example.com"}}}`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := mustNewOp(t, tc.op).Data()
			got := string(validate.AppendDataJSON([]byte("x"), renderDID, d))
			if got != "x"+tc.want {
				t.Fatalf("data:\n got  %s\n want x%s", got, tc.want)
			}
			if !json.Valid([]byte(tc.want)) {
				t.Fatal("test data: want is not valid JSON")
			}
		})
	}
}

func TestAppendJSONString(t *testing.T) {
	cases := []struct {
		in, want string
	}{
		{"", `""`},
		{"plain", `"plain"`},
		{`a"b`, `"a\"b"`},
		{`a\b`, `"a\\b"`},
		{"\b\f\n\r\t", `"\b\f\n\r\t"`},
		{"\x00", `"\u0000"`},
		{"\x01\x07\x0b\x0e\x1a\x1f", `"\u0001\u0007\u000b\u000e\u001a\u001f"`},
		{"<>&", `"<>&"`},
		{"/", `"/"`},
		{"\x7f", "\"\x7f\""},
		{"\u0080\u009f", "\"\u0080\u009f\""},
		{"\u2028\u2029", "\"\u2028\u2029\""},
		{"\u00e9\U0001F600", "\"\u00e9\U0001F600\""},
		{"x\"\\\ny", `"x\"\\\ny"`},
		{" !~", `" !~"`},
	}
	for _, tc := range cases {
		got := string(validate.AppendJSONString([]byte("["), tc.in))
		if got != "["+tc.want {
			t.Errorf("AppendJSONString(%q) = %s, want %s", tc.in, got[1:], tc.want)
		}
		// Whatever the escaping, it must decode back to the input.
		var back string
		if err := json.Unmarshal([]byte(tc.want), &back); err != nil || back != tc.in {
			t.Errorf("test data: %s decodes to %q (%v), want %q", tc.want, back, err, tc.in)
		}
	}
	// Every control character is escaped, as \uXXXX unless it has a short
	// form, with lowercase hex digits.
	short := map[byte]string{'\b': `\b`, '\f': `\f`, '\n': `\n`, '\r': `\r`, '\t': `\t`}
	const hex = "0123456789abcdef"
	for c := byte(0); c < 0x20; c++ {
		want, ok := short[c]
		if !ok {
			want = `\u00` + string(hex[c>>4]) + string(hex[c&0xf])
		}
		if got := string(validate.AppendJSONString(nil, string([]byte{c}))); got != `"`+want+`"` {
			t.Errorf("AppendJSONString(0x%02x) = %s, want %q", c, got, `"`+want+`"`)
		}
	}
}

func TestAppendTimestamp(t *testing.T) {
	cases := []struct {
		t    time.Time
		want string
	}{
		{time.Date(2026, 1, 2, 3, 4, 5, 6_000_000, time.UTC), "2026-01-02T03:04:05.006Z"},
		{time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), "2026-01-02T03:04:05.000Z"},
		{time.Date(2026, 12, 31, 23, 59, 59, 999_999_999, time.UTC), "2026-12-31T23:59:59.999Z"},
		{time.Date(2026, 1, 2, 3, 4, 5, 120_000_000, time.UTC), "2026-01-02T03:04:05.120Z"},
		{time.Date(2026, 1, 2, 3, 4, 5, 999_999, time.UTC), "2026-01-02T03:04:05.000Z"},
		{time.Date(2026, 1, 2, 1, 0, 0, 0, time.FixedZone("CEST", 2*3600)), "2026-01-01T23:00:00.000Z"},
		{time.Date(1970, 1, 1, 0, 0, 0, 1_000_000, time.UTC), "1970-01-01T00:00:00.001Z"},
	}
	for _, tc := range cases {
		if got := string(validate.AppendTimestamp([]byte("t="), tc.t)); got != "t="+tc.want {
			t.Errorf("AppendTimestamp(%v) = %q, want %q", tc.t, got, "t="+tc.want)
		}
	}
}

func TestOpAppendJSON(t *testing.T) {
	const prev = "bafyreid6awsb6lzc54zxaq2roijyvpbkp5sf3yyuuv5kluaspdggxsdmvu"
	cases := []struct {
		name string
		op   validate.Operation
		want string
	}{
		{
			name: "plc_operation genesis",
			op: validate.Operation{
				Type:                validate.TypeOperation,
				RotationKeys:        []string{fixedK256a, fixedP256a},
				VerificationMethods: []validate.VerificationMethod{{ID: "atproto", Key: fixedK256b}},
				AlsoKnownAs:         []string{"at://alice.test"},
				Services:            []validate.Service{{ID: "atproto_pds", Type: "AtprotoPersonalDataServer", Endpoint: "https://pds.example.com"}},
			},
			want: `{"sig":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0-Pw",` +
				`"prev":null,"type":"plc_operation",` +
				`"services":{"atproto_pds":{"type":"AtprotoPersonalDataServer","endpoint":"https://pds.example.com"}},` +
				`"alsoKnownAs":["at://alice.test"],` +
				`"rotationKeys":["did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme","did:key:zDnaeTiq1PdzvZXUaMdezchcMJQpBdH2VN4pgrrEhMCCbmwSb"],` +
				`"verificationMethods":{"atproto":"did:key:zQ3shtxV1FrJfhqE1dvxYRcCknWNjHc3c5X1y3ZSoPDi2aur2"}}`,
		},
		{
			name: "plc_operation update, maps in key order",
			op: validate.Operation{
				Type:         validate.TypeOperation,
				Prev:         prev,
				RotationKeys: []string{fixedK256a},
				VerificationMethods: []validate.VerificationMethod{
					{ID: "atproto", Key: fixedK256b}, {ID: "1", Key: fixedP256a}, {ID: "zz", Key: fixedEd25519},
				},
				Services: []validate.Service{
					{ID: "atproto_pds", Type: "AtprotoPersonalDataServer", Endpoint: "https://pds.example.com"},
					{ID: "10", Type: "T", Endpoint: "e10"}, {ID: "9", Type: "T", Endpoint: "e9"},
				},
			},
			want: `{"sig":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0-Pw",` +
				`"prev":"bafyreid6awsb6lzc54zxaq2roijyvpbkp5sf3yyuuv5kluaspdggxsdmvu","type":"plc_operation",` +
				`"services":{"9":{"type":"T","endpoint":"e9"},"10":{"type":"T","endpoint":"e10"},"atproto_pds":{"type":"AtprotoPersonalDataServer","endpoint":"https://pds.example.com"}},` +
				`"alsoKnownAs":[],` +
				`"rotationKeys":["did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"],` +
				`"verificationMethods":{"1":"did:key:zDnaeTiq1PdzvZXUaMdezchcMJQpBdH2VN4pgrrEhMCCbmwSb","zz":"did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK","atproto":"did:key:zQ3shtxV1FrJfhqE1dvxYRcCknWNjHc3c5X1y3ZSoPDi2aur2"}}`,
		},
		{
			name: "tombstone",
			op:   validate.Operation{Type: validate.TypeTombstone, Prev: prev},
			want: `{"sig":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0-Pw",` +
				`"prev":"bafyreid6awsb6lzc54zxaq2roijyvpbkp5sf3yyuuv5kluaspdggxsdmvu","type":"plc_tombstone"}`,
		},
		{
			name: "legacy create keeps raw fields",
			op: validate.Operation{
				Type: validate.TypeCreate, SigningKey: fixedK256a, RecoveryKey: fixedP256a,
				Handle: "alice.test", Service: "pds.example.com",
			},
			want: `{"sig":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0-Pw",` +
				`"prev":null,"type":"create","handle":"alice.test","service":"pds.example.com",` +
				`"signingKey":"did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme",` +
				`"recoveryKey":"did:key:zDnaeTiq1PdzvZXUaMdezchcMJQpBdH2VN4pgrrEhMCCbmwSb"}`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			op := mustNewOp(t, tc.op)
			got := op.AppendJSON([]byte("{}"))
			if string(got) != "{}"+tc.want {
				t.Fatalf("AppendJSON:\n got  %s\n want {}%s", got, tc.want)
			}
			m, err := op.MarshalJSON()
			if err != nil || string(m) != tc.want {
				t.Fatalf("MarshalJSON = %s, %v; want %s", m, err, tc.want)
			}
			// The rendering parses back to the same op.
			back, err := validate.ParseJSON([]byte(tc.want))
			if err != nil {
				t.Fatalf("ParseJSON(AppendJSON): %v", err)
			}
			if back.CID() != op.CID() {
				t.Fatalf("round trip changed the CID: %s != %s", back.CID(), op.CID())
			}
		})
	}
}
