package validate_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mr-tron/base58"
	"github.com/plcdir/plc/validate"
)

// akaOfLen returns an at:// URI of n characters (n >= 5), ASCII only.
func akaOfLen(n int) string { return "at://" + strings.Repeat("a", n-5) }

// distinctAKAs returns n distinct short alsoKnownAs entries.
func distinctAKAs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("at://h%d.test", i)
	}
	return out
}

func servicesN(n int) []validate.Service {
	out := make([]validate.Service, n)
	for i := range out {
		out[i] = validate.Service{ID: fmt.Sprintf("svc%d", i), Type: "T", Endpoint: fmt.Sprintf("https://s%d.test", i)}
	}
	return out
}

func verificationMethodsN(n int) []validate.VerificationMethod {
	out := make([]validate.VerificationMethod, n)
	for i := range out {
		out[i] = validate.VerificationMethod{ID: fmt.Sprintf("vm%d", i), Key: fixedK256a}
	}
	return out
}

// didKeyOfLen returns a syntactically valid base58btc did:key of exactly n
// characters (n > len("did:key:z")+1).
func didKeyOfLen(n int) string {
	return "did:key:z" + strings.Repeat("2", n-len("did:key:z"))
}

// utf16Len counts s as JavaScript does, for the test's own sanity checks.
func utf16Len(s string) int {
	n := 0
	for _, r := range s {
		if r >= 0x10000 {
			n += 2
		} else {
			n++
		}
	}
	return n
}

const (
	emoji  = "\U0001F600" // non-BMP: 2 UTF-16 units, 4 UTF-8 bytes
	eAcute = "\u00e9"     // BMP non-ASCII: 1 UTF-16 unit, 2 UTF-8 bytes
)

func TestCheckSubmissionLimits(t *testing.T) {
	signer := k256Keys(t, 1)[0]
	pool := k256Keys(t, 11)

	// Values used both in an op and in the expected message.
	aka259 := akaOfLen(259)
	akaEmoji259 := "at://" + strings.Repeat("a", 252) + emoji
	akaEAcute259 := "at://" + strings.Repeat("a", 253) + eAcute
	akaAllEmoji259 := "at://" + strings.Repeat(emoji, 126) + "ab"
	svcID33 := strings.Repeat("s", 33)
	svcIDEmoji33 := strings.Repeat(emoji, 16) + "a"
	vmID33 := strings.Repeat("v", 33)
	vmIDEmoji33 := "v" + strings.Repeat(emoji, 16)
	vmKey257 := didKeyOfLen(257)
	blsLike := "did:key:z" + base58.Encode(append([]byte{0xeb, 0x01}, bytes.Repeat([]byte{0x8a}, 96)...))

	// Sanity-check the JS lengths the cases below rely on, so a mistake in
	// the test data cannot masquerade as a pass.
	for s, want := range map[string]int{
		akaEmoji259: 259, akaEAcute259: 259, akaAllEmoji259: 259,
		svcIDEmoji33: 33, vmIDEmoji33: 33, vmKey257: 257,
	} {
		if got := utf16Len(s); got != want {
			t.Fatalf("test data: UTF-16 length of %q is %d, want %d", s, got, want)
		}
	}

	cases := []struct {
		name string
		mod  func(o *validate.Operation)
		want wantErr
	}{
		{"baseline", func(o *validate.Operation) {}, wantErr{}},

		// alsoKnownAs count.
		{"alsoKnownAs empty", func(o *validate.Operation) { o.AlsoKnownAs = nil }, wantErr{}},
		{"alsoKnownAs 10", func(o *validate.Operation) { o.AlsoKnownAs = distinctAKAs(10) }, wantErr{}},
		{"alsoKnownAs 11", func(o *validate.Operation) { o.AlsoKnownAs = distinctAKAs(11) },
			wantErr{class: validate.ErrLimit, msg: "To many alsoKnownAs entries (max 10)"}},

		// alsoKnownAs entry length, in UTF-16 units.
		{"alsoKnownAs entry 258 ASCII", func(o *validate.Operation) { o.AlsoKnownAs = []string{akaOfLen(258)} }, wantErr{}},
		{"alsoKnownAs entry 259 ASCII", func(o *validate.Operation) { o.AlsoKnownAs = []string{aka259} },
			wantErr{class: validate.ErrLimit, msg: "alsoKnownAs entry too long (max 258): " + aka259}},
		{"alsoKnownAs entry 258 units with non-BMP char (260 bytes)", func(o *validate.Operation) {
			o.AlsoKnownAs = []string{"at://" + strings.Repeat("a", 251) + emoji}
		}, wantErr{}},
		{"alsoKnownAs entry 259 units with non-BMP char", func(o *validate.Operation) { o.AlsoKnownAs = []string{akaEmoji259} },
			wantErr{class: validate.ErrLimit, msg: "alsoKnownAs entry too long (max 258): " + akaEmoji259}},
		{"alsoKnownAs entry 258 units of mostly non-BMP chars (132 runes, 510 bytes)", func(o *validate.Operation) {
			o.AlsoKnownAs = []string{"at://" + strings.Repeat(emoji, 126) + "a"}
		}, wantErr{}},
		{"alsoKnownAs entry 259 units of mostly non-BMP chars (133 runes)", func(o *validate.Operation) { o.AlsoKnownAs = []string{akaAllEmoji259} },
			wantErr{class: validate.ErrLimit, msg: "alsoKnownAs entry too long (max 258): " + akaAllEmoji259}},
		{"alsoKnownAs entry 258 units with BMP non-ASCII char (259 bytes)", func(o *validate.Operation) {
			o.AlsoKnownAs = []string{"at://" + strings.Repeat("a", 252) + eAcute}
		}, wantErr{}},
		{"alsoKnownAs entry 259 units with BMP non-ASCII char", func(o *validate.Operation) { o.AlsoKnownAs = []string{akaEAcute259} },
			wantErr{class: validate.ErrLimit, msg: "alsoKnownAs entry too long (max 258): " + akaEAcute259}},

		// alsoKnownAs duplicates.
		{"alsoKnownAs duplicate", func(o *validate.Operation) {
			o.AlsoKnownAs = []string{"at://a.test", "at://b.test", "at://a.test"}
		}, wantErr{class: validate.ErrLimit, msg: "duplicate alsoKnownAs entry: at://a.test"}},
		{"alsoKnownAs differing only in case are distinct", func(o *validate.Operation) {
			o.AlsoKnownAs = []string{"at://a.test", "at://A.test"}
		}, wantErr{}},

		// rotationKeys.
		{"rotationKeys empty", func(o *validate.Operation) { o.RotationKeys = nil }, wantErr{}},
		{"rotationKeys 10", func(o *validate.Operation) { o.RotationKeys = dids(pool[:10]...) }, wantErr{}},
		{"rotationKeys 10 duplicates", func(o *validate.Operation) {
			o.RotationKeys = dids(pool[0], pool[0], pool[0], pool[0], pool[0], pool[0], pool[0], pool[0], pool[0], pool[0])
		}, wantErr{}},
		{"rotationKeys 11", func(o *validate.Operation) { o.RotationKeys = dids(pool[:11]...) },
			wantErr{class: validate.ErrLimit, msg: "Too many rotationKey entries (max 10)"}},
		{"rotationKeys P-256 and K-256", func(o *validate.Operation) { o.RotationKeys = []string{fixedP256a, fixedK256a} }, wantErr{}},
		{"rotationKey ed25519", func(o *validate.Operation) { o.RotationKeys = []string{fixedK256a, fixedEd25519} },
			wantErr{class: validate.ErrInvalidKey, msg: "Invalid rotationKey: " + fixedEd25519}},
		{"rotationKey garbage", func(o *validate.Operation) { o.RotationKeys = []string{"not-a-key"} },
			wantErr{class: validate.ErrInvalidKey, msg: "Invalid rotationKey: not-a-key"}},
		{"rotationKey truncated", func(o *validate.Operation) { o.RotationKeys = []string{fixedK256a[:len(fixedK256a)-1]} },
			wantErr{class: validate.ErrInvalidKey, msg: "Invalid rotationKey: " + fixedK256a[:len(fixedK256a)-1]}},

		// services count and field lengths.
		{"services empty", func(o *validate.Operation) { o.Services = nil }, wantErr{}},
		{"services 10", func(o *validate.Operation) { o.Services = servicesN(10) }, wantErr{}},
		{"services 11", func(o *validate.Operation) { o.Services = servicesN(11) },
			wantErr{class: validate.ErrLimit, msg: "To many service entries (max 10)"}},
		{"service id 32", func(o *validate.Operation) { o.Services[0].ID = strings.Repeat("s", 32) }, wantErr{}},
		{"service id 33", func(o *validate.Operation) { o.Services[0].ID = svcID33 },
			wantErr{class: validate.ErrLimit, msg: "Service id too long (max 32): " + svcID33}},
		{"service id 32 units non-BMP", func(o *validate.Operation) { o.Services[0].ID = strings.Repeat(emoji, 16) }, wantErr{}},
		{"service id 33 units non-BMP", func(o *validate.Operation) { o.Services[0].ID = svcIDEmoji33 },
			wantErr{class: validate.ErrLimit, msg: "Service id too long (max 32): " + svcIDEmoji33}},
		{"service type 256", func(o *validate.Operation) { o.Services[0].Type = strings.Repeat("t", 256) }, wantErr{}},
		{"service type 256 units BMP non-ASCII (512 bytes)", func(o *validate.Operation) { o.Services[0].Type = strings.Repeat(eAcute, 256) }, wantErr{}},
		{"service type 257", func(o *validate.Operation) { o.Services[0].Type = strings.Repeat("t", 257) },
			wantErr{class: validate.ErrLimit, msg: "Service type too long (max 256)"}},
		{"service endpoint 512", func(o *validate.Operation) { o.Services[0].Endpoint = "https://" + strings.Repeat("e", 504) }, wantErr{}},
		{"service endpoint 512 units with non-BMP chars", func(o *validate.Operation) {
			o.Services[0].Endpoint = "https://" + strings.Repeat(emoji, 252)
		}, wantErr{}},
		{"service endpoint 513", func(o *validate.Operation) { o.Services[0].Endpoint = "https://" + strings.Repeat("e", 505) },
			wantErr{class: validate.ErrLimit, msg: "Service endpoint too long (max 512)"}},
		{"service endpoint 513 units with non-BMP chars", func(o *validate.Operation) {
			o.Services[0].Endpoint = "https://" + strings.Repeat(emoji, 252) + "e"
		}, wantErr{class: validate.ErrLimit, msg: "Service endpoint too long (max 512)"}},

		// verificationMethods count, id, key.
		{"verificationMethods empty", func(o *validate.Operation) { o.VerificationMethods = nil }, wantErr{}},
		{"verificationMethods 10", func(o *validate.Operation) { o.VerificationMethods = verificationMethodsN(10) }, wantErr{}},
		{"verificationMethods 11", func(o *validate.Operation) { o.VerificationMethods = verificationMethodsN(11) },
			wantErr{class: validate.ErrLimit, msg: "Too many Verification Method entries (max 10)"}},
		{"verificationMethod id 32", func(o *validate.Operation) { o.VerificationMethods[0].ID = strings.Repeat("v", 32) }, wantErr{}},
		{"verificationMethod id 33", func(o *validate.Operation) { o.VerificationMethods[0].ID = vmID33 },
			wantErr{class: validate.ErrLimit, msg: "Verification Method id too long (max 32): " + vmID33}},
		{"verificationMethod id 33 units non-BMP", func(o *validate.Operation) { o.VerificationMethods[0].ID = vmIDEmoji33 },
			wantErr{class: validate.ErrLimit, msg: "Verification Method id too long (max 32): " + vmIDEmoji33}},
		{"verificationMethod key 256", func(o *validate.Operation) { o.VerificationMethods[0].Key = didKeyOfLen(256) }, wantErr{}},
		{"verificationMethod key 257", func(o *validate.Operation) { o.VerificationMethods[0].Key = vmKey257 },
			wantErr{class: validate.ErrLimit, msg: "Verification Method key too long (max 256): " + vmKey257}},
		{"verificationMethod key not did:key:z", func(o *validate.Operation) { o.VerificationMethods[0].Key = "did:key:abc" },
			wantErr{class: validate.ErrInvalidKey, msg: "Invalid verificationMethod key: did:key:abc"}},
		{"verificationMethod key did:web", func(o *validate.Operation) { o.VerificationMethods[0].Key = "did:web:example.com" },
			wantErr{class: validate.ErrInvalidKey, msg: "Invalid verificationMethod key: did:web:example.com"}},
		{"verificationMethod key bad base58", func(o *validate.Operation) { o.VerificationMethods[0].Key = "did:key:z0OIl" },
			wantErr{class: validate.ErrInvalidKey, msg: "Invalid verificationMethod key: did:key:z0OIl"}},
		{"verificationMethod key empty", func(o *validate.Operation) { o.VerificationMethods[0].Key = "" },
			wantErr{class: validate.ErrInvalidKey, msg: "Invalid verificationMethod key: "}},
		{"verificationMethod key ed25519", func(o *validate.Operation) { o.VerificationMethods[0].Key = fixedEd25519 }, wantErr{}},
		{"verificationMethod key BLS-shaped", func(o *validate.Operation) { o.VerificationMethods[0].Key = blsLike }, wantErr{}},
		{"verificationMethod key P-256", func(o *validate.Operation) { o.VerificationMethods[0].Key = fixedP256a }, wantErr{}},

		// The reference's order of checks decides which message wins.
		{"order: alsoKnownAs count before rotationKeys count", func(o *validate.Operation) {
			o.AlsoKnownAs = distinctAKAs(11)
			o.RotationKeys = dids(pool[:11]...)
		}, wantErr{class: validate.ErrLimit, msg: "To many alsoKnownAs entries (max 10)"}},
		{"order: invalid rotationKey before services count", func(o *validate.Operation) {
			o.RotationKeys = []string{"bad"}
			o.Services = servicesN(11)
		}, wantErr{class: validate.ErrInvalidKey, msg: "Invalid rotationKey: bad"}},
		{"order: services before verificationMethods", func(o *validate.Operation) {
			o.Services = servicesN(11)
			o.VerificationMethods = verificationMethodsN(11)
		}, wantErr{class: validate.ErrLimit, msg: "To many service entries (max 10)"}},
		{"order: verificationMethod id before key", func(o *validate.Operation) {
			o.VerificationMethods[0] = validate.VerificationMethod{ID: vmID33, Key: "bad"}
		}, wantErr{class: validate.ErrLimit, msg: "Verification Method id too long (max 32): " + vmID33}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := baseOperation([]string{signer.did})
			o.Services = append([]validate.Service(nil), o.Services...)
			o.VerificationMethods = append([]validate.VerificationMethod(nil), o.VerificationMethods...)
			tc.mod(&o)
			op := signOp(t, o, signer)
			if n := len(op.SignedCBOR()); n > validate.MaxOpBytes {
				t.Fatalf("test data: op is %d bytes, over the size limit", n)
			}
			tc.want.check(t, validate.CheckSubmission(op))
		})
	}
}

// sizedOp returns a signed plc_operation whose signed DAG-CBOR is exactly
// target bytes, with every field within its own limit: the padding is spread
// over the endpoints of eight services, each between 256 and 512 characters
// (so every endpoint's CBOR head is the same 3 bytes and each extra
// character adds exactly one byte).
func sizedOp(t *testing.T, signer testKey, target int) *validate.Op {
	t.Helper()
	const nSvc, minLen, maxLen = 8, 256, validate.MaxServiceEndpointLength
	build := func(lens []int) *validate.Op {
		o := baseOperation([]string{signer.did})
		o.AlsoKnownAs = distinctAKAs(3)
		o.Services = nil
		for i, n := range lens {
			prefix := fmt.Sprintf("https://pds%d.example.com/", i)
			o.Services = append(o.Services, validate.Service{
				ID: fmt.Sprintf("svc%d", i), Type: "AtprotoPersonalDataServer",
				Endpoint: prefix + strings.Repeat("p", n-len(prefix)),
			})
		}
		return signOp(t, o, signer)
	}
	lens := make([]int, nSvc)
	for i := range lens {
		lens[i] = minLen
	}
	need := target - len(build(lens).SignedCBOR())
	if need < 0 || need > nSvc*(maxLen-minLen) {
		t.Fatalf("sizedOp: cannot reach %d bytes (need %d more)", target, need)
	}
	for i := range lens {
		add := min(need, maxLen-minLen)
		lens[i] += add
		need -= add
	}
	op := build(lens)
	if got := len(op.SignedCBOR()); got != target {
		t.Fatalf("sizedOp: built %d bytes, want %d", got, target)
	}
	return op
}

func TestCheckSubmissionSize(t *testing.T) {
	signer := k256Keys(t, 1)[0]
	tooLarge := wantErr{class: validate.ErrLimit, msg: "Operation too large (4000 bytes maximum in cbor encoding)"}
	for _, tc := range []struct {
		size int
		want wantErr
	}{
		{3999, wantErr{}},
		{validate.MaxOpBytes, wantErr{}},
		{validate.MaxOpBytes + 1, tooLarge},
		{validate.MaxOpBytes + 100, tooLarge},
	} {
		t.Run(fmt.Sprint(tc.size), func(t *testing.T) {
			op := sizedOp(t, signer, tc.size)
			for _, s := range op.Operation().Services {
				if utf16Len(s.Endpoint) > validate.MaxServiceEndpointLength {
					t.Fatalf("test data: endpoint of %d chars", utf16Len(s.Endpoint))
				}
			}
			tc.want.check(t, validate.CheckSubmission(op))
		})
	}

	// The size limit is checked first, before the legacy create rejection.
	t.Run("oversized create", func(t *testing.T) {
		op := newCreate(t, signer, signer.did, signer.did, strings.Repeat("h", 4000), "pds.example.com")
		tooLarge.check(t, validate.CheckSubmission(op))
	})
}

func TestCheckSubmissionOpTypes(t *testing.T) {
	keys := k256Keys(t, 2)
	genesis := newGenesis(t, keys[0], keys[0].did)

	t.Run("legacy create rejected", func(t *testing.T) {
		op := newCreate(t, keys[0], keys[1].did, keys[0].did, "alice.test", "pds.example.com")
		err := validate.CheckSubmission(op)
		wantErr{class: validate.ErrLimit, prefix: "Not a valid operation: "}.check(t, err)
		if want := "Not a valid operation: " + string(op.AppendJSON(nil)); err.Error() != want {
			t.Fatalf("message:\n got  %q\n want %q", err, want)
		}
		if !strings.Contains(err.Error(), `"type":"create"`) {
			t.Fatalf("message does not embed the op: %q", err)
		}
	})
	t.Run("tombstone passes", func(t *testing.T) {
		wantErr{}.check(t, validate.CheckSubmission(newTombstone(t, genesis, keys[0])))
	})
	t.Run("genesis passes", func(t *testing.T) {
		wantErr{}.check(t, validate.CheckSubmission(genesis))
	})
	t.Run("update passes", func(t *testing.T) {
		wantErr{}.check(t, validate.CheckSubmission(newUpdate(t, genesis, keys[0], keys[1].did)))
	})
}

func TestUTF16TestHelper(t *testing.T) {
	// Guard the helper the limit tests depend on.
	for s, want := range map[string]int{"": 0, "abc": 3, eAcute: 1, emoji: 2, "a" + emoji + eAcute: 4} {
		if got := utf16Len(s); got != want {
			t.Errorf("utf16Len(%q) = %d, want %d", s, got, want)
		}
	}
	if utf8.RuneCountInString(emoji) != 1 || len(emoji) != 4 {
		t.Fatal("emoji constant is not a single 4-byte rune")
	}
}

// rateState returns a state whose ops were accepted at the given times
// (oldest first).
func rateState(times []time.Time) *validate.State {
	st := &validate.State{DID: "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"}
	for i, t := range times {
		st.Ops = append(st.Ops, validate.ChainOp{CID: fmt.Sprintf("op%d", i), CreatedAt: t})
	}
	return st
}

// spaced returns n times, the newest at newest and each step earlier than
// the next, oldest first.
func spaced(newest time.Time, step time.Duration, n int) []time.Time {
	out := make([]time.Time, n)
	for i := range out {
		out[n-1-i] = newest.Add(-time.Duration(i) * step)
	}
	return out
}

func TestCheckRateLimit(t *testing.T) {
	now := at(30 * 24 * time.Hour)
	const (
		hour = time.Hour
		day  = 24 * time.Hour
		week = 7 * day
	)
	hourErr := wantErr{class: validate.ErrRateLimit, msg: "To many operations within last hour (max 10)"}
	dayErr := wantErr{class: validate.ErrRateLimit, msg: "To many operations within last day (max 30)"}
	weekErr := wantErr{class: validate.ErrRateLimit, msg: "To many operations within last week (max 100)"}
	with := func(a []time.Time, more ...time.Time) []time.Time {
		out := append([]time.Time(nil), more...)
		return append(out, a...)
	}
	cases := []struct {
		name  string
		times []time.Time
		want  wantErr
	}{
		{"no ops", nil, wantErr{}},

		// Hour: the minute-spaced ops are all within the last hour.
		{"9 in last hour", spaced(now.Add(-time.Minute), time.Minute, 9), wantErr{}},
		{"10 in last hour", spaced(now.Add(-time.Minute), time.Minute, 10), hourErr},
		{"9 in last hour and 1 exactly 1h old", with(spaced(now.Add(-time.Minute), time.Minute, 9), now.Add(-hour)), wantErr{}},
		{"9 in last hour and 1 just under 1h old", with(spaced(now.Add(-time.Minute), time.Minute, 9), now.Add(-hour+time.Millisecond)), hourErr},
		{"10 just over 1h old", spaced(now.Add(-hour-time.Millisecond), time.Millisecond, 10), wantErr{}},

		// Day: 30-minute spacing from 2h ago keeps the last hour empty.
		{"29 in last day", spaced(now.Add(-2*hour), 30*time.Minute, 29), wantErr{}},
		{"30 in last day", spaced(now.Add(-2*hour), 30*time.Minute, 30), dayErr},
		{"29 in last day and 1 exactly 24h old", with(spaced(now.Add(-2*hour), 30*time.Minute, 29), now.Add(-day)), wantErr{}},
		{"29 in last day and 1 just under 24h old", with(spaced(now.Add(-2*hour), 30*time.Minute, 29), now.Add(-day+time.Millisecond)), dayErr},

		// Week: hourly spacing from 25h ago keeps the last day empty.
		{"99 in last week", spaced(now.Add(-25*hour), hour, 99), wantErr{}},
		{"100 in last week", spaced(now.Add(-25*hour), hour, 100), weekErr},
		{"99 in last week and 1 exactly 7d old", with(spaced(now.Add(-25*hour), hour, 99), now.Add(-week)), wantErr{}},
		{"99 in last week and 1 just under 7d old", with(spaced(now.Add(-25*hour), hour, 99), now.Add(-week+time.Millisecond)), weekErr},

		{"many ops older than a week", spaced(now.Add(-week-time.Millisecond), time.Minute, 300), wantErr{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.want.check(t, validate.CheckRateLimit(rateState(tc.times), now))
		})
	}
}
