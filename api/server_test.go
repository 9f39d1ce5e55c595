package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/plcdir/plc/internal/testclock"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// The HTTP conformance suite: every route's status, content type and exact
// bytes, against a real log over each backend, with an injected clock.
// Every response also passes through checkAgainstSpec (openapi.yaml) and
// the CORS check in apiEnv.do.

const (
	ctJSON   = "application/json; charset=utf-8"
	ctDIDDoc = "application/did+ld+json; charset=utf-8"
	ctText   = "text/plain; charset=utf-8"
)

// encodeDID percent-encodes the colons of a DID, as some clients send it.
func encodeDID(did string) string { return strings.ReplaceAll(did, ":", "%3A") }

func TestRegisterThenEveryReadRouteServesExactBytes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		env := newAPIEnv(t, b, envOptions{})
		ks := keys(t, 2)
		g := genesisOp(t, "alice.test", ks[0], ks[0], ks[1])
		did := g.GenesisDID()

		for _, p := range []string{"", "/data", "/log", "/log/audit", "/log/last"} {
			env.get("/"+did+p).expectMessage(t, http.StatusNotFound, "DID not registered: "+did)
		}

		env.mustSubmit(did, g)

		data, _ := g.Data()
		doc := string(validate.AppendDocumentJSON(nil, did, data))
		dataJSON := string(validate.AppendDataJSON(nil, did, data))
		for _, d := range []string{did, encodeDID(did)} {
			env.get("/"+d).expect(t, http.StatusOK, ctDIDDoc, doc)
			env.get("/"+d+"/data").expect(t, http.StatusOK, ctJSON, dataJSON)
			env.get("/"+d+"/log").expect(t, http.StatusOK, ctJSON, "["+opJSON(g)+"]")
			env.get("/"+d+"/log/audit").expect(t, http.StatusOK, ctJSON, "["+auditJSON(did, g, t0, false)+"]")
			env.get("/"+d+"/log/last").expect(t, http.StatusOK, ctJSON, opJSON(g))
		}
		// One trailing slash is ignored, as by the reference's router.
		env.get("/"+did+"/").expect(t, http.StatusOK, ctDIDDoc, doc)
		env.get("/"+did+"/log/audit/").expect(t, http.StatusOK, ctJSON, "["+auditJSON(did, g, t0, false)+"]")
		// HEAD is GET without the body.
		env.do(http.MethodHead, "/"+did, nil).expect(t, http.StatusOK, ctDIDDoc, "")

		// The document's exact shape, pinned once (its rendering is tested
		// in validate; this guards the plumbing).
		wantPrefix := `{"@context":["https://www.w3.org/ns/did/v1","https://w3id.org/security/multikey/v1","https://w3id.org/security/suites/secp256k1-2019/v1"],"id":"` + did + `","alsoKnownAs":["at://alice.test"],"verificationMethod":[{"id":"` + did + `#atproto","type":"Multikey","controller":"` + did + `","publicKeyMultibase":"` + strings.TrimPrefix(atprotoKey, "did:key:") + `"}],"service":[{"id":"#atproto_pds","type":"AtprotoPersonalDataServer","serviceEndpoint":"https://pds.example.com"}]}`
		if doc != wantPrefix {
			t.Errorf("document:\n got  %s\n want %s", doc, wantPrefix)
		}
	})
}

func TestUpdateAndKeyRotation(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		env := newAPIEnv(t, b, envOptions{})
		ks := keys(t, 4)
		g := genesisOp(t, "alice.test", ks[0], ks[0], ks[1])
		did := g.GenesisDID()
		env.mustSubmit(did, g)

		// k1 rotates the keys to [k2]: k0 and k1 lose their power.
		env.clock.Advance(time.Minute)
		u1 := updateOp(t, g, "bob.test", ks[1], ks[2])
		env.mustSubmit(did, u1)

		env.clock.Advance(time.Minute)
		byOld := updateOp(t, u1, "mallory.test", ks[0], ks[0])
		env.submit(did, byOld).expectMessage(t, http.StatusBadRequest, "Invalid signature on op: "+opJSON(byOld))

		u2 := updateOp(t, u1, "carol.test", ks[2], ks[2], ks[3])
		env.mustSubmit(did, u2)

		data, _ := u2.Data()
		env.get("/"+did).expect(t, http.StatusOK, ctDIDDoc, string(validate.AppendDocumentJSON(nil, did, data)))
		env.get("/"+did+"/data").expect(t, http.StatusOK, ctJSON, string(validate.AppendDataJSON(nil, did, data)))
		env.get("/"+did+"/log").expect(t, http.StatusOK, ctJSON, "["+opJSON(g)+","+opJSON(u1)+","+opJSON(u2)+"]")
		env.get("/"+did+"/log/last").expect(t, http.StatusOK, ctJSON, opJSON(u2))
		env.get("/"+did+"/log/audit").expect(t, http.StatusOK, ctJSON, "["+
			auditJSON(did, g, t0, false)+","+
			auditJSON(did, u1, t0.Add(time.Minute), false)+","+
			auditJSON(did, u2, t0.Add(2*time.Minute), false)+"]")
	})
}

// recoverySetup registers a genesis op with rotation keys [k0, k1], then,
// an hour later, an update signed by k1 (index 1). k0 may nullify it.
func recoverySetup(t *testing.T, env *apiEnv) (did string, g, u1 *validate.Op, ks []plcKey) {
	t.Helper()
	ks = keys(t, 2)
	g = genesisOp(t, "alice.test", ks[1], ks[0], ks[1])
	did = g.GenesisDID()
	env.mustSubmit(did, g)
	env.clock.Advance(time.Hour)
	u1 = updateOp(t, g, "hijacked.test", ks[1], ks[1])
	env.mustSubmit(did, u1)
	return did, g, u1, ks
}

func TestRecoveryAtExactly72HoursNullifies(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		env := newAPIEnv(t, b, envOptions{})
		did, g, u1, ks := recoverySetup(t, env)

		// Same priority as u1's signer: refused.
		env.clock.Advance(time.Hour)
		same := updateOp(t, g, "alice.test", ks[1], ks[0], ks[1])
		env.submit(did, same).expectMessage(t, http.StatusBadRequest, "Invalid signature on op: "+opJSON(same))

		env.clock.Advance(validate.RecoveryWindow - time.Hour)
		r := updateOp(t, g, "alice.test", ks[0], ks[0])
		env.mustSubmit(did, r)
		tR := t0.Add(time.Hour + validate.RecoveryWindow)

		env.get("/"+did+"/log").expect(t, http.StatusOK, ctJSON, "["+opJSON(g)+","+opJSON(r)+"]")
		env.get("/"+did+"/log/last").expect(t, http.StatusOK, ctJSON, opJSON(r))
		env.get("/"+did+"/log/audit").expect(t, http.StatusOK, ctJSON, "["+
			auditJSON(did, g, t0, false)+","+
			auditJSON(did, u1, t0.Add(time.Hour), true)+","+
			auditJSON(did, r, tR, false)+"]")
		// seq mode carries no nullified; legacy mode reports it.
		env.get("/export?after=0").expect(t, http.StatusOK, contentJSONL, strings.Join([]string{
			sequencedJSON(did, g, t0, 1),
			sequencedJSON(did, u1, t0.Add(time.Hour), 2),
			sequencedJSON(did, r, tR, 3),
		}, "\n"))
		env.get("/export").expect(t, http.StatusOK, contentJSONL, strings.Join([]string{
			auditJSON(did, g, t0, false),
			auditJSON(did, u1, t0.Add(time.Hour), true),
			auditJSON(did, r, tR, false),
		}, "\n"))
		data, _ := r.Data()
		env.get("/"+did).expect(t, http.StatusOK, ctDIDDoc, string(validate.AppendDocumentJSON(nil, did, data)))
	})
}

func TestRecoveryOneMillisecondPast72HoursIsRefused(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		env := newAPIEnv(t, b, envOptions{})
		did, g, u1, ks := recoverySetup(t, env)
		env.clock.Advance(validate.RecoveryWindow + time.Millisecond)
		r := updateOp(t, g, "alice.test", ks[0], ks[0])
		env.submit(did, r).expectMessage(t, http.StatusBadRequest,
			"Recovery operation occurred outside of the allowed 72 hr recovery window. Time lapsed: 259200001")
		env.get("/"+did+"/log").expect(t, http.StatusOK, ctJSON, "["+opJSON(g)+","+opJSON(u1)+"]")
	})
}

func TestTombstoneMakesDIDUnavailable(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		env := newAPIEnv(t, b, envOptions{})
		ks := keys(t, 2)
		g := genesisOp(t, "alice.test", ks[0], ks[0], ks[1])
		did := g.GenesisDID()
		env.mustSubmit(did, g)
		env.clock.Advance(time.Minute)
		ts := tombstoneOp(t, g, ks[1])
		env.mustSubmit(did, ts)

		env.get("/"+did).expectMessage(t, http.StatusNotFound, "DID not available: "+did)
		env.get("/"+did+"/data").expectMessage(t, http.StatusNotFound, "DID not available: "+did)
		env.get("/"+did+"/log").expect(t, http.StatusOK, ctJSON, "["+opJSON(g)+","+opJSON(ts)+"]")
		env.get("/"+did+"/log/last").expect(t, http.StatusOK, ctJSON, opJSON(ts))
		env.get("/"+did+"/log/audit").expect(t, http.StatusOK, ctJSON, "["+
			auditJSON(did, g, t0, false)+","+auditJSON(did, ts, t0.Add(time.Minute), false)+"]")

		// Nothing builds on a tombstone.
		env.clock.Advance(time.Minute)
		after := updateOp(t, ts, "zombie.test", ks[1], ks[1])
		env.submit(did, after).expectMessage(t, http.StatusBadRequest, "Operations not correctly ordered")

		// But a higher-priority key may nullify it within 72 hours.
		r := updateOp(t, g, "alice.test", ks[0], ks[0])
		env.mustSubmit(did, r)
		data, _ := r.Data()
		env.get("/"+did).expect(t, http.StatusOK, ctDIDDoc, string(validate.AppendDocumentJSON(nil, did, data)))
		env.get("/"+did+"/log/audit").expect(t, http.StatusOK, ctJSON, "["+
			auditJSON(did, g, t0, false)+","+
			auditJSON(did, ts, t0.Add(time.Minute), true)+","+
			auditJSON(did, r, t0.Add(2*time.Minute), false)+"]")
	})
}

// exportEntry is what the export of one committed op must say.
type exportEntry struct {
	did       string
	op        *validate.Op
	createdAt time.Time
	seq       int64
}

func seqLines(es []exportEntry) string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = sequencedJSON(e.did, e.op, e.createdAt, e.seq)
	}
	return strings.Join(lines, "\n")
}

func legacyLines(es []exportEntry) string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = auditJSON(e.did, e.op, e.createdAt, false)
	}
	return strings.Join(lines, "\n")
}

func TestExportPagesInBothModes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		env := newAPIEnv(t, b, envOptions{})
		ks := keys(t, 1)
		var all []exportEntry
		for i := range 6 {
			g := genesisOp(t, fmt.Sprintf("user%d.test", i), ks[0], ks[0])
			did := g.GenesisDID()
			env.clock.Advance(time.Second)
			env.mustSubmit(did, g)
			all = append(all, exportEntry{did, g, env.clock.Now(), int64(len(all) + 1)})
			u := updateOp(t, g, fmt.Sprintf("user%d.example", i), ks[0], ks[0])
			env.clock.Advance(time.Second)
			env.mustSubmit(did, u)
			all = append(all, exportEntry{did, u, env.clock.Now(), int64(len(all) + 1)})
		}

		// seq mode, paged.
		for _, tc := range []struct {
			query string
			want  []exportEntry
		}{
			{"after=0&count=5", all[0:5]},
			{"after=5&count=5", all[5:10]},
			{"after=10&count=5", all[10:]},
			{"after=12", nil},
			{"after=0", all},
			{"after=000", all},
			{"after=3&count=5abc", all[3:8]},     // parseInt stops at the first non-digit
			{"after=3&count=%207", all[3:10]},    // leading white space is skipped
			{"after=3&count=%2B2", all[3:5]},     // a sign is allowed
			{"after=3&count=", all[3:]},          // empty: the default
			{"after=3&count=2&count=3", all[3:]}, // repeated: ignored, as express's array
			{"after=99999999999999999999999", nil},
		} {
			env.get("/export?"+tc.query).expect(t, http.StatusOK, contentJSONL, seqLines(tc.want))
		}

		// Legacy mode: by createdAt, with nullified.
		cut := all[4].createdAt
		for _, tc := range []struct {
			query string
			want  []exportEntry
		}{
			{"", all},
			{"count=3", all[:3]},
			{"after=", all},
			{"after=" + url.QueryEscape(stamp(cut)), all[5:]},
			{"after=" + url.QueryEscape(stamp(cut)) + "&count=2", all[5:7]},
			{"after=2026-03-01T12:00:05Z", all[5:]},
			{"after=2026-03-01T12:00:05.000%2B00:00", all[5:]},
			{"after=2026-03-01T13:00:05%2B01:00", all[5:]},
			{"after=2026-03-01T12:00:05.0009Z", all[5:]}, // truncated to the millisecond
			{"after=2026-03-01%2012:00:05", all[5:]},
			{"after=2026-03-01T12:00:04.999Z", all[4:]},
			{"after=2026-03-01", all},
			{"after=2026-03", all},
			{"after=2026-03-02", nil},
			{"after=1970-01-01T00:00:00Z", all},
			{"after=-000001-01-01T00:00:00Z", all},
			{"after=%2B275760-09-13T00:00:00.000Z", nil},
		} {
			env.get("/export?"+tc.query).expect(t, http.StatusOK, contentJSONL, legacyLines(tc.want))
		}

		for _, count := range []string{"0", "-1", "-0", "abc", "x5", "0x10", "%20", "-99999999999999999999"} {
			env.get("/export?count="+count).expectMessage(t, http.StatusBadRequest, "Invalid count parameter")
			env.get("/export?after=0&count="+count).expectMessage(t, http.StatusBadRequest, "Invalid count parameter")
		}
		for _, after := range []string{"yesterday", "2026-13-01", "2026-02-30x", "2026-03-01T25:00Z",
			"2026-03-01T12:00:05Zjunk", "2026-03-01T12", "12:00", "-1", "1e3", "%2B1", "-000000-01-01",
			"%2B275760-09-13T00:00:00.001Z"} {
			env.get("/export?after="+after).expectMessage(t, http.StatusBadRequest, "Invalid after parameter")
		}
	})
}

func TestExportCountIsCappedAt1000(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		env := newAPIEnv(t, b, envOptions{})
		const n = maxExportCount + 1
		k := keys(t, 1)[0]
		ops := make([]*validate.Op, n)
		for i := range ops {
			ops[i] = genesisOp(t, fmt.Sprintf("bulk%d.test", i), k, k)
		}
		// Submit through the log from a few goroutines: group commit
		// keeps this fast.
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += 8 {
					if _, err := env.log.Submit(context.Background(), ops[i].GenesisDID(), ops[i]); err != nil {
						errs <- err
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("submit: %v", err)
		}

		lines := func(r reply) []string {
			t.Helper()
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			return strings.Split(string(r.body), "\n")
		}
		for _, q := range []string{"after=0&count=5000", "after=0", "after=0&count=1000", "count=5000", ""} {
			if got := lines(env.get("/export?" + q)); len(got) != maxExportCount {
				t.Errorf("/export?%s: %d lines, want %d", q, len(got), maxExportCount)
			}
		}
		got := lines(env.get("/export?after=0&count=5000"))
		if !strings.HasSuffix(got[0], `"seq":1}`) || !strings.HasSuffix(got[len(got)-1], `"seq":1000}`) {
			t.Errorf("first and last lines: %s … %s", got[0], got[len(got)-1])
		}
		if got := lines(env.get("/export?after=1000&count=5000")); len(got) != 1 || !strings.HasSuffix(got[0], `"seq":1001}`) {
			t.Errorf("/export?after=1000: %q", got)
		}
	})
}

// opWith returns a plc_operation body with rotation keys [k] and edits
// applied, signed by k.
func opWith(t *testing.T, k plcKey, edit func(o *validate.Operation)) *validate.Op {
	t.Helper()
	o := opBody("alice.test", k)
	edit(&o)
	return signOp(t, o, k)
}

func TestSubmissionLimitMessagesReachTheClient(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		env := newAPIEnv(t, b, envOptions{})
		k := keys(t, 1)[0]
		long := func(prefix string, n int) string { return prefix + strings.Repeat("a", n-len(prefix)) }
		services := func(n int, endpointLen int) []validate.Service {
			var s []validate.Service
			for i := range n {
				s = append(s, validate.Service{ID: fmt.Sprintf("s%d", i), Type: "T", Endpoint: long("https://", endpointLen)})
			}
			return s
		}
		vms := func(n int) []validate.VerificationMethod {
			var v []validate.VerificationMethod
			for i := range n {
				v = append(v, validate.VerificationMethod{ID: fmt.Sprintf("k%d", i), Key: atprotoKey})
			}
			return v
		}
		aka259 := long("at://", 259)
		svcID := strings.Repeat("i", 33)
		vmKey := "did:key:z" + strings.Repeat("1", 248)
		ed25519 := "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
		create := signOp(t, validate.Operation{
			Type: validate.TypeCreate, SigningKey: k.did, RecoveryKey: k.did,
			Handle: "alice.test", Service: "https://pds.example.com",
		}, k)
		for _, tc := range []struct {
			name string
			op   *validate.Op
			msg  string
		}{
			{"too large", opWith(t, k, func(o *validate.Operation) { o.Services = services(10, 500) }),
				"Operation too large (4000 bytes maximum in cbor encoding)"},
			{"alsoKnownAs count", opWith(t, k, func(o *validate.Operation) {
				o.AlsoKnownAs = nil
				for i := range 11 {
					o.AlsoKnownAs = append(o.AlsoKnownAs, fmt.Sprintf("at://a%d.test", i))
				}
			}), "To many alsoKnownAs entries (max 10)"},
			{"alsoKnownAs length", opWith(t, k, func(o *validate.Operation) { o.AlsoKnownAs = []string{aka259} }),
				"alsoKnownAs entry too long (max 258): " + aka259},
			{"alsoKnownAs duplicate", opWith(t, k, func(o *validate.Operation) { o.AlsoKnownAs = []string{"at://a.test", "at://a.test"} }),
				"duplicate alsoKnownAs entry: at://a.test"},
			{"rotationKeys count", opWith(t, k, func(o *validate.Operation) { o.RotationKeys = slices.Repeat([]string{k.did}, 11) }),
				"Too many rotationKey entries (max 10)"},
			{"rotationKeys type", opWith(t, k, func(o *validate.Operation) { o.RotationKeys = []string{k.did, ed25519} }),
				"Invalid rotationKey: " + ed25519},
			{"services count", opWith(t, k, func(o *validate.Operation) { o.Services = services(11, 20) }),
				"To many service entries (max 10)"},
			{"service id", opWith(t, k, func(o *validate.Operation) { o.Services[0].ID = svcID }),
				"Service id too long (max 32): " + svcID},
			{"service type", opWith(t, k, func(o *validate.Operation) { o.Services[0].Type = strings.Repeat("t", 257) }),
				"Service type too long (max 256)"},
			{"service endpoint", opWith(t, k, func(o *validate.Operation) { o.Services[0].Endpoint = long("https://", 513) }),
				"Service endpoint too long (max 512)"},
			{"verificationMethods count", opWith(t, k, func(o *validate.Operation) { o.VerificationMethods = vms(11) }),
				"Too many Verification Method entries (max 10)"},
			{"verificationMethod id", opWith(t, k, func(o *validate.Operation) { o.VerificationMethods[0].ID = svcID }),
				"Verification Method id too long (max 32): " + svcID},
			{"verificationMethod key length", opWith(t, k, func(o *validate.Operation) { o.VerificationMethods[0].Key = vmKey }),
				"Verification Method key too long (max 256): " + vmKey},
			{"verificationMethod key syntax", opWith(t, k, func(o *validate.Operation) { o.VerificationMethods[0].Key = "did:key:abc" }),
				"Invalid verificationMethod key: did:key:abc"},
			{"legacy create", create, "Not a valid operation: " + opJSON(create)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				env.submit(tc.op.GenesisDID(), tc.op).expectMessage(t, http.StatusBadRequest, tc.msg)
			})
		}
		if r := env.get("/_health"); !strings.Contains(string(r.body), `"seq":0`) {
			t.Errorf("a refused op was committed: %s", r.body)
		}
	})
}

func TestPerDIDRateLimitMessagesReachTheClient(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, tc := range []struct {
			name    string
			spacing time.Duration
			allowed int // ops accepted before the refusal, genesis included
			msg     string
		}{
			{"hour", time.Minute, 10, "To many operations within last hour (max 10)"},
			{"day", 45 * time.Minute, 30, "To many operations within last day (max 30)"},
			{"week", time.Hour, 100, "To many operations within last week (max 100)"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				env := newAPIEnv(t, b, envOptions{})
				ks := keys(t, 2)
				head := genesisOp(t, "alice.test", ks[1], ks[0], ks[1])
				did := head.GenesisDID()
				env.mustSubmit(did, head)
				var prev *validate.Op
				for i := 1; i < tc.allowed; i++ {
					env.clock.Advance(tc.spacing)
					prev, head = head, updateOp(t, head, fmt.Sprintf("u%d.test", i), ks[1], ks[0], ks[1])
					env.mustSubmit(did, head)
				}
				env.clock.Advance(tc.spacing)
				over := updateOp(t, head, "over.test", ks[1], ks[0], ks[1])
				env.submit(did, over).expectMessage(t, http.StatusBadRequest, tc.msg)
				// A recovery op that nullifies something is exempt.
				r := updateOp(t, prev, "recovered.test", ks[0], ks[0], ks[1])
				env.mustSubmit(did, r)
			})
		}
	})
}

func TestChainRuleMessagesReachTheClient(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		env := newAPIEnv(t, b, envOptions{})
		ks := keys(t, 2)
		g := genesisOp(t, "alice.test", ks[0], ks[0])
		did := g.GenesisDID()

		wrongSigner := genesisOp(t, "alice.test", ks[1], ks[0])
		env.submit(wrongSigner.GenesisDID(), wrongSigner).expectMessage(t, http.StatusBadRequest,
			"Invalid signature on op: "+opJSON(wrongSigner))

		other := genesisOp(t, "bob.test", ks[0], ks[0])
		env.submit(did, other).expectMessage(t, http.StatusBadRequest,
			"Hash of genesis operation does not match DID identifier: "+other.GenesisDID())

		ts := tombstoneOp(t, g, ks[0])
		env.submit(did, ts).expectMessage(t, http.StatusBadRequest,
			"Improperly formatted operation, expected genesis op to not be tombstone")

		env.mustSubmit(did, g)
		env.clock.Advance(time.Minute)
		env.submit(did, other).expectMessage(t, http.StatusBadRequest, "Operations not correctly ordered")
		dangling := updateOp(t, other, "bob.test", ks[0], ks[0])
		env.submit(did, dangling).expectMessage(t, http.StatusBadRequest, "Operations not correctly ordered")
		env.submit(did, g).expectMessage(t, http.StatusBadRequest, "Operations not correctly ordered")
	})
}

func TestPostPathDID(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		env := newAPIEnv(t, b, envOptions{})
		k := keys(t, 1)[0]
		g := genesisOp(t, "alice.test", k, k)
		did := g.GenesisDID()
		for _, bad := range []string{"foo", "did:plc:" + strings.ToUpper(did[8:]), did[:len(did)-1], did + "a", "did:web:example.com"} {
			env.submit(bad, g).expectMessage(t, http.StatusBadRequest, "Invalid DID: "+bad)
		}
		env.do(http.MethodPost, "/export%2Fstream", g.AppendJSON(nil)).expectMessage(t, http.StatusBadRequest, "Invalid DID: export/stream")
		// An encoded DID is the same DID.
		env.submit(encodeDID(did), g).expect(t, http.StatusOK, ctText, "OK")
		env.get("/"+did+"/log").expect(t, http.StatusOK, ctJSON, "["+opJSON(g)+"]")
	})
}

func TestMalformedBodiesAre400NotServerErrors(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		env := newAPIEnv(t, b, envOptions{})
		k := keys(t, 1)[0]
		g := genesisOp(t, "alice.test", k, k)
		did := g.GenesisDID()
		valid := opJSON(g)
		sig := g.Operation().Sig
		swap := func(old, new string) string {
			if !strings.Contains(valid, old) {
				t.Fatalf("%q not in %s", old, valid)
			}
			return strings.Replace(valid, old, new, 1)
		}
		for _, tc := range []struct {
			name, body string
			prefix     string
		}{
			{"empty", "", "Not a valid operation: invalid JSON"},
			{"truncated", valid[:len(valid)-1], "Not a valid operation: invalid JSON"},
			{"array", "[]", "Not a valid operation: "},
			{"null", "null", "Not a valid operation: "},
			{"number", "1e400", "Not a valid operation: "},
			{"string", `"plc_operation"`, "Not a valid operation: "},
			{"empty object", "{}", "Not a valid operation: "},
			{"unknown type", swap(`"type":"plc_operation"`, `"type":"plc_op"`), "Not a valid operation: "},
			{"type not a string", swap(`"type":"plc_operation"`, `"type":1`), "Not a valid operation: "},
			{"rotationKeys not an array", swap(`"rotationKeys":[`, `"rotationKeys":"x","other":[`), "Not a valid operation: "},
			{"unknown key", swap(`{"sig"`, `{"extra":1,"sig"`), "Not a valid operation: "},
			{"duplicate key", swap(`{"sig"`, `{"prev":null,"sig"`), "Not a valid operation: "},
			{"unknown key in service", swap(`"endpoint":`, `"x":"y","endpoint":`), "Not a valid operation: "},
			{"prev not a CID", swap(`"prev":null`, `"prev":"abc"`), "Not a valid operation: "},
			{"prev a number", swap(`"prev":null`, `"prev":123`), "Not a valid operation: "},
			{"missing prev", swap(`"prev":null,`, ``), "Not a valid operation: "},
			{"trailing data", valid + " x", "Not a valid operation: "},
			{"two objects", valid + valid, "Not a valid operation: "},
			{"invalid UTF-8", swap("alice.test", "alice\xff.test"), "Not a valid operation: "},
			{"NUL", swap("alice.test", `alice\u0000.test`), "Not a valid operation: "},
			{"deep nesting", strings.Repeat("[", 50000), "Not a valid operation: "},
			{"sig not base64url", swap(sig, "!"+sig[1:]), "Invalid signature on op: "},
			{"sig padded", swap(sig, sig+"=="), "Invalid signature on op: "},
			{"sig with CRLF", swap(sig, sig[:40]+`\r\n`+sig[40:]), "Invalid signature on op: "},
			{"sig wrong length", swap(sig, sig[:80]), "Invalid signature on op: "},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := env.do(http.MethodPost, "/"+did, []byte(tc.body), "Content-Type", "application/json")
				if r.status != http.StatusBadRequest || r.header.Get("Content-Type") != ctJSON ||
					!strings.HasPrefix(string(r.body), `{"message":`+strconv.Quote(tc.prefix)[:len(tc.prefix)+1]) {
					t.Errorf("status %d %s, body %.300s; want 400 with a message starting %q", r.status, r.header.Get("Content-Type"), r.body, tc.prefix)
				}
			})
		}
		env.get("/"+did).expectMessage(t, http.StatusNotFound, "DID not registered: "+did)
	})
}

func TestBodyLargerThan100KBIs413(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		env := newAPIEnv(t, b, envOptions{})
		k := keys(t, 1)[0]
		g := genesisOp(t, "alice.test", k, k)
		did := g.GenesisDID()
		pad := func(n int) []byte {
			body := g.AppendJSON(nil)
			return append(body, strings.Repeat(" ", n-len(body))...)
		}
		for _, n := range []int{maxBodyBytes + 1, 10 << 20} {
			r := env.do(http.MethodPost, "/"+did, pad(n), "Content-Type", "application/json")
			r.expectMessage(t, http.StatusRequestEntityTooLarge, "request entity too large")
		}
		// Exactly 100 KB (a valid op and white space) is accepted.
		r := env.do(http.MethodPost, "/"+did, pad(maxBodyBytes), "Content-Type", "application/json")
		r.expect(t, http.StatusOK, ctText, "OK")
	})
}

// raceStore lets a test run a competing write between the moment Submit
// reads a DID's record (its pre-check) and the moment the op reaches the
// sequencer.
type raceStore struct {
	oplog.Store
	afterRecord atomic.Pointer[func()]
}

func (s *raceStore) Record(ctx context.Context, did string) (*oplog.DIDRecord, error) {
	rec, err := s.Store.Record(ctx, did)
	if f := s.afterRecord.Swap(nil); f != nil {
		(*f)()
	}
	return rec, err
}

func TestConcurrentUpdateWithSamePrevLosesWith409(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		rs := &raceStore{}
		env := newAPIEnv(t, b, envOptions{wrap: func(s oplog.Store) oplog.Store { rs.Store = s; return rs }})
		k := keys(t, 1)[0]
		g := genesisOp(t, "alice.test", k, k)
		did := g.GenesisDID()
		env.mustSubmit(did, g)
		env.clock.Advance(time.Minute)
		u1 := updateOp(t, g, "one.test", k, k)
		u2 := updateOp(t, g, "two.test", k, k)

		// u1 passes its pre-check against [g]; u2 commits before u1 reaches
		// the sequencer; u1, checked again under the append lock, is now a
		// fork it has no right to make.
		var hookErr error
		hook := func() { _, hookErr = env.log.Submit(context.Background(), did, u2) }
		rs.afterRecord.Store(&hook)
		env.submit(did, u1).expectMessage(t, http.StatusConflict, "Invalid signature on op: "+opJSON(u1))
		if hookErr != nil {
			t.Fatalf("competing submit: %v", hookErr)
		}
		env.get("/"+did+"/log").expect(t, http.StatusOK, ctJSON, "["+opJSON(g)+","+opJSON(u2)+"]")

		// Sent again, u1 is judged against the current state: a plain 400.
		env.submit(did, u1).expectMessage(t, http.StatusBadRequest, "Invalid signature on op: "+opJSON(u1))
	})
}

// countingStore counts the reads of a DID's ops that reach the store.
type countingStore struct {
	oplog.Store
	reads atomic.Int64
}

func (s *countingStore) Head(ctx context.Context, did string) (oplog.Entry, error) {
	s.reads.Add(1)
	return s.Store.Head(ctx, did)
}

func (s *countingStore) Ops(ctx context.Context, did string) ([]oplog.Entry, error) {
	s.reads.Add(1)
	return s.Store.Ops(ctx, did)
}

// A read of anything that is not a did:plc (another DID method, or not a
// DID at all) is answered 400, as the reference answers it, and never
// reaches the database; a malformed did:plc is a 404 without a query.
func TestNonPLCDIDReadsAre400BeforeTheDatabase(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		cs := &countingStore{}
		env := newAPIEnv(t, b, envOptions{wrap: func(s oplog.Store) oplog.Store { cs.Store = s; return cs }})
		suffixes := []string{"", "/data", "/log", "/log/audit", "/log/last"}
		for _, path := range []string{
			"/did:web:example.com",
			"/did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme",
			"/did%3Aweb%3Aexample.com",
			"/DID:PLC:aaaaaaaaaaaaaaaaaaaaaaaa",
			"/foo",
			"/did",
			"/did%22quoted%5C",
			"/%FF%FE",
			"/%00",
			"/" + strings.Repeat("x", 5000),
		} {
			for _, suffix := range suffixes {
				env.get(path+suffix).expectMessage(t, http.StatusBadRequest, "Resolution of non-PLC DIDs not supported")
			}
		}
		for _, path := range []string{"/export/data", "/export/log/last", "/openapi.yaml/log", "/_health/log/audit"} {
			env.get(path).expectMessage(t, http.StatusBadRequest, "Resolution of non-PLC DIDs not supported")
		}
		for _, tc := range []struct{ path, did string }{
			{"/did:plc:ABCDEFGHIJKLMNOPQRSTUVWX", "did:plc:ABCDEFGHIJKLMNOPQRSTUVWX"},
			{"/did:plc:short", "did:plc:short"},
			{"/did%3Aplc%3Aabcdefghijklmnopqrstuvw1", "did:plc:abcdefghijklmnopqrstuvw1"},
			{"/did:plc:aaaaaaaaaaaaaaaaaaaaaaaa%2Flog", "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa/log"},
			{"/did:plc:aaaaaaaaaaaaaaaaaaaaaaaa%2F", "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa/"},
		} {
			for _, suffix := range suffixes {
				env.get(tc.path+suffix).expectMessage(t, http.StatusNotFound, "DID not registered: "+tc.did)
			}
		}
		if n := cs.reads.Load(); n != 0 {
			t.Fatalf("%d reads reached the store for DIDs that cannot be registered", n)
		}
		// A well-formed did:plc that is not registered is looked up: 404.
		unknown := "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
		for _, suffix := range suffixes {
			env.get("/"+unknown+suffix).expectMessage(t, http.StatusNotFound, "DID not registered: "+unknown)
		}
		if n := cs.reads.Load(); n != int64(len(suffixes)) {
			t.Fatalf("%d store reads for %d lookups of a well-formed did:plc", n, len(suffixes))
		}
	})
}

func TestUnknownRoutesAndMethodsAnswerJSON(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		env := newAPIEnv(t, b, envOptions{})
		did := "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
		for _, p := range []string{"/", "/a/b/c/d", "/" + did + "/foo", "/" + did + "/log/foo", "/" + did + "/data/x"} {
			env.get(p).expectMessage(t, http.StatusNotFound, "Not Found")
		}
		for _, tc := range []struct{ method, path, allow string }{
			{http.MethodDelete, "/" + did, "GET, POST"},
			{http.MethodPut, "/" + did, "GET, POST"},
			{http.MethodPost, "/export", "GET"},
			{http.MethodPost, "/_health", "GET"},
			{http.MethodPost, "/" + did + "/log", "GET"},
			{http.MethodPatch, "/openapi.yaml", "GET"},
			{http.MethodPost, "/openapi.yaml", "GET"},
			{http.MethodPost, "/export/stream", "GET"},
		} {
			r := env.do(tc.method, tc.path, nil)
			r.expectMessage(t, http.StatusMethodNotAllowed, "Method Not Allowed")
			if got := r.header.Get("Allow"); got != tc.allow {
				t.Errorf("%s %s: Allow %q, want %q", tc.method, tc.path, got, tc.allow)
			}
		}
	})
}

func TestCORSPreflight(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		env := newAPIEnv(t, b, envOptions{})
		for _, p := range []string{"/did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "/export", "/nowhere/at/all/x"} {
			r := env.do(http.MethodOptions, p, nil,
				"Origin", "https://app.example", "Access-Control-Request-Method", "POST",
				"Access-Control-Request-Headers", "content-type")
			if r.status != http.StatusNoContent || len(r.body) != 0 {
				t.Errorf("OPTIONS %s: %d %q", p, r.status, r.body)
			}
			if got := r.header.Get("Access-Control-Allow-Methods"); got != "GET,HEAD,POST" {
				t.Errorf("OPTIONS %s: Allow-Methods %q", p, got)
			}
			if got := r.header.Get("Access-Control-Allow-Headers"); got != "content-type" {
				t.Errorf("OPTIONS %s: Allow-Headers %q", p, got)
			}
		}
	})
}

func TestHealth(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		env := newAPIEnv(t, b, envOptions{})
		env.get("/_health").expect(t, http.StatusOK, ctJSON, `{"version":"test-version","seq":0}`)
		k := keys(t, 1)[0]
		g := genesisOp(t, "alice.test", k, k)
		env.mustSubmit(g.GenesisDID(), g)
		env.get("/_health").expect(t, http.StatusOK, ctJSON, `{"version":"test-version","seq":1}`)

		// The database goes away.
		env.store.Close()
		env.get("/_health").expect(t, http.StatusServiceUnavailable, ctJSON, `{"version":"test-version","error":"Service Unavailable"}`)
		// Reads fail with a 500 whose details are logged, not sent.
		env.get("/"+g.GenesisDID()).expectMessage(t, http.StatusInternalServerError, "Internal Server Error")
		logs := env.logs.String()
		if !strings.Contains(logs, "health check failed") || !strings.Contains(logs, "read head of "+g.GenesisDID()) {
			t.Errorf("internal errors not logged:\n%s", logs)
		}
	})
}

func TestClosedLogAnswers503WithRetryAfter(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		env := newAPIEnv(t, b, envOptions{})
		env.log.Close()
		k := keys(t, 1)[0]
		g := genesisOp(t, "alice.test", k, k)
		r := env.submit(g.GenesisDID(), g)
		r.expectMessage(t, http.StatusServiceUnavailable, "Service Unavailable")
		if got := r.header.Get("Retry-After"); got != "5" {
			t.Errorf("Retry-After %q, want 5", got)
		}
	})
}

func TestErrorMapping(t *testing.T) {
	verdict := &validate.Error{Class: validate.ErrMisordered, Message: "Operations not correctly ordered"}
	for _, tc := range []struct {
		err      error
		status   int
		msg      string
		retry    time.Duration
		internal bool
	}{
		{verdict, 400, "Operations not correctly ordered", 0, false},
		{fmt.Errorf("wrapped: %w", verdict), 400, "Operations not correctly ordered", 0, false},
		{&oplog.ConflictError{Err: verdict}, 409, "Operations not correctly ordered", 0, false},
		{fmt.Errorf("x: %w", &oplog.ConflictError{Err: verdict}), 409, "Operations not correctly ordered", 0, false},
		{oplog.ErrOverloaded, 503, "Too many operations queued, retry later", time.Second, false},
		{oplog.ErrClosed, 503, "Service Unavailable", 5 * time.Second, false},
		{&http.MaxBytesError{Limit: 1}, 413, "request entity too large", 0, false},
		{notRegistered("did:plc:x"), 404, "DID not registered: did:plc:x", 0, false},
		{context.DeadlineExceeded, 503, "Service Unavailable", time.Second, false},
		{errors.New("pq: relation does not exist"), 500, "Internal Server Error", 0, true},
		{fmt.Errorf("read: %w", oplog.ErrNotFound), 500, "Internal Server Error", 0, true},
	} {
		status, msg, retry, internal := response(tc.err)
		if status != tc.status || msg != tc.msg || retry != tc.retry || internal != tc.internal {
			t.Errorf("response(%v) = %d %q %v %v, want %d %q %v %v", tc.err, status, msg, retry, internal, tc.status, tc.msg, tc.retry, tc.internal)
		}
	}
}

func TestPerClientRateLimit(t *testing.T) {
	env := newAPIEnv(t, backends[0], envOptions{config: func(c *Config) {
		c.IPRate, c.IPBurst, c.TrustProxy = 1, 2, true
	}})
	get := func(client string) reply {
		t.Helper()
		return env.do(http.MethodGet, "/export", nil, "X-Forwarded-For", client)
	}
	a, b := "198.51.100.1, 203.0.113.7", "203.0.113.8"
	for range 2 {
		if r := get(a); r.status != http.StatusOK {
			t.Fatalf("within the burst: %d", r.status)
		}
	}
	r := get(a)
	r.expectMessage(t, http.StatusTooManyRequests, "Too many requests, retry later")
	if got := r.header.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After %q, want 1", got)
	}
	if r := get("203.0.113.7"); r.status != http.StatusTooManyRequests {
		t.Errorf("the last X-Forwarded-For address is the key: %d", r.status)
	}
	if r := get(b); r.status != http.StatusOK {
		t.Errorf("another client is limited: %d", r.status)
	}
	if r := env.do(http.MethodGet, "/_health", nil, "X-Forwarded-For", a); r.status != http.StatusOK {
		t.Errorf("/_health is limited: %d", r.status)
	}
	if r := env.do(http.MethodOptions, "/export", nil, "X-Forwarded-For", a); r.status != http.StatusNoContent {
		t.Errorf("a preflight is limited: %d", r.status)
	}
	// One IPv6 /64 is one client.
	get("2001:db8::1")
	get("2001:db8::2")
	if r := get("2001:db8::3"); r.status != http.StatusTooManyRequests {
		t.Errorf("addresses of one /64 are not one client: %d", r.status)
	}
	env.clock.Advance(time.Second)
	if r := get(a); r.status != http.StatusOK {
		t.Errorf("after a second: %d", r.status)
	}
	if got := testutilCounter(t, env.reg, "plc_http_client_rate_limited_total"); got != 3 {
		t.Errorf("rate-limited counter %v, want 3", got)
	}
}

func TestPerClientRateLimitIgnoresForwardedForUnlessTrusted(t *testing.T) {
	env := newAPIEnv(t, backends[0], envOptions{config: func(c *Config) { c.IPRate, c.IPBurst = 1, 1 }})
	if r := env.do(http.MethodGet, "/export", nil, "X-Forwarded-For", "203.0.113.1"); r.status != http.StatusOK {
		t.Fatalf("first request: %d", r.status)
	}
	if r := env.do(http.MethodGet, "/export", nil, "X-Forwarded-For", "203.0.113.2"); r.status != http.StatusTooManyRequests {
		t.Errorf("a forged X-Forwarded-For escaped the limit: %d", r.status)
	}
}

func TestIPLimiterMemoryIsBounded(t *testing.T) {
	clock := testclock.New(t0)
	l := newIPLimiter(10, 10, clock.Now)
	l.maxClients = 100
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}) }
	for i := range 1000 {
		l.allow(addr(i))
		if n := len(l.clients); n > l.maxClients {
			t.Fatalf("%d clients tracked, max %d", n, l.maxClients)
		}
	}
	clock.Advance(l.idle)
	l.allow(addr(5000))
	if n := len(l.clients); n != 1 {
		t.Errorf("%d clients tracked after all went idle, want 1", n)
	}
}

func TestClientKey(t *testing.T) {
	for _, tc := range []struct {
		remote, xff string
		trust       bool
		want        string
	}{
		{"192.0.2.1:1234", "", false, "192.0.2.1"},
		{"192.0.2.1:1234", "203.0.113.9", false, "192.0.2.1"},
		{"192.0.2.1:1234", "198.51.100.1, 203.0.113.9", true, "203.0.113.9"},
		{"192.0.2.1:1234", "garbage", true, "192.0.2.1"},
		{"[2001:db8:1:2:3:4:5:6]:443", "", false, "2001:db8:1:2::"},
		{"[::ffff:192.0.2.1]:80", "", false, "192.0.2.1"},
	} {
		r := &http.Request{RemoteAddr: tc.remote, Header: http.Header{}}
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		if got := clientKey(r, tc.trust).String(); got != tc.want {
			t.Errorf("clientKey(%s, %q, %v) = %s, want %s", tc.remote, tc.xff, tc.trust, got, tc.want)
		}
	}
}

// testutilCounter returns the value of a counter without labels.
func testutilCounter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func TestLatencyMetricLabelsAreBounded(t *testing.T) {
	env := newAPIEnv(t, backends[0], envOptions{})
	for i := range 20 {
		env.get(fmt.Sprintf("/did:plc:%024d", i))
		env.get(fmt.Sprintf("/x/y/z/%d", i))
	}
	env.get("/export")
	env.do(http.MethodDelete, "/export", nil)
	mfs, err := env.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != "plc_http_request_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			got[labelString(m)] = m.GetHistogram().GetSampleCount()
		}
	}
	want := map[string]uint64{
		"GET 4xx /:did":       20,
		"GET 4xx unmatched":   20,
		"GET 2xx /export":     1,
		"other 4xx unmatched": 1,
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("series %q: %d observations, want %d (all: %v)", k, got[k], n, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("series %v, want exactly %v", got, want)
	}
	if logs := env.logs.String(); !strings.Contains(logs, `msg="http request"`) || !strings.Contains(logs, "route=/:did") {
		t.Errorf("no access log at Debug:\n%.1000s", logs)
	}
}

func labelString(m *dto.Metric) string {
	l := map[string]string{}
	for _, p := range m.GetLabel() {
		l[p.GetName()] = p.GetValue()
	}
	return l["method"] + " " + l["code"] + " " + l["route"]
}

func TestPanicInHandlerIsA500AndLogged(t *testing.T) {
	env := newAPIEnv(t, backends[0], envOptions{config: func(c *Config) {
		c.Stream = http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") })
	}})
	env.get("/export/stream").expectMessage(t, http.StatusInternalServerError, "Internal Server Error")
	if logs := env.logs.String(); !strings.Contains(logs, "panic in handler") || !strings.Contains(logs, "boom") {
		t.Errorf("panic not logged:\n%s", logs)
	}
	// The server still serves.
	env.get("/_health").expect(t, http.StatusOK, ctJSON, `{"version":"test-version","seq":0}`)
}

func TestStreamRoute(t *testing.T) {
	env := newAPIEnv(t, backends[0], envOptions{})
	env.get("/export/stream").expectMessage(t, http.StatusNotImplemented, "The event stream is not enabled on this server")

	var got atomic.Value
	env = newAPIEnv(t, backends[0], envOptions{config: func(c *Config) {
		c.Stream = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got.Store(r.URL.RawQuery)
			w.Header().Set("Content-Type", ctJSON)
			w.WriteHeader(http.StatusUpgradeRequired)
			w.Write([]byte(messageJSON("upgrade required")))
		})
	}})
	env.get("/export/stream?cursor=5").expectMessage(t, http.StatusUpgradeRequired, "upgrade required")
	if got.Load() != "cursor=5" {
		t.Errorf("stream handler saw query %v", got.Load())
	}
}

func TestOpenAPIDocumentIsServed(t *testing.T) {
	env := newAPIEnv(t, backends[0], envOptions{})
	env.get("/openapi.yaml").expect(t, http.StatusOK, "application/yaml", string(openapiYAML))
}

// routeParam is a gin path parameter (":did"), OpenAPI's "{did}".
var routeParam = regexp.MustCompile(`:(\w+)`)

// TestRouterAndSpecAgree keeps the router and openapi.yaml in step: the
// same paths with the same methods, no more, no less.
func TestRouterAndSpecAgree(t *testing.T) {
	doc := loadSpec(t)
	env := newAPIEnv(t, backends[0], envOptions{config: func(c *Config) { c.UI = http.NotFoundHandler() }})
	var routes, spec []string
	for _, r := range env.srv.engine.Routes() {
		switch r.Path {
		case "/", "/ui", "/ui/*path":
			// The web UI's HTML pages for people (Config.UI, package
			// web) are not part of the API contract.
			continue
		}
		if r.Path == "/bundles/*file" {
			routes = append(routes, "GET /bundles/{file}")
			continue
		}
		if r.Path == "/tlog/*path" {
			// One route serves the transparency log's documented paths.
			routes = append(routes, "GET /tlog/checkpoint", "GET /tlog/tile/{level}/{index}",
				"GET /tlog/tile/entries/{index}", "GET /tlog/proof/consistency")
			continue
		}
		routes = append(routes, r.Method+" "+routeParam.ReplaceAllString(r.Path, "{$1}"))
	}
	for p, item := range doc.Paths.Map() {
		for m := range item.Operations() {
			spec = append(spec, m+" "+p)
		}
	}
	slices.Sort(routes)
	slices.Sort(spec)
	if !slices.Equal(routes, spec) {
		t.Errorf("router and openapi.yaml differ:\n router %q\n spec   %q", routes, spec)
	}
}

func TestJSParseInt(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"5", 5, true}, {"1000", 1000, true}, {"007", 7, true}, {"5abc", 5, true}, {" \t\n5", 5, true},
		{"\u00a05", 5, true}, {"\ufeff5", 5, true}, {"+5", 5, true}, {"-5", -5, true}, {"-0", 0, true},
		{"0x10", 0, true}, {"1e3", 1, true}, {"1.9", 1, true}, {"99999999999999999999", 1<<63 - 1, true},
		{"", 0, false}, {"abc", 0, false}, {"+", 0, false}, {"- 5", 0, false}, {"\u00855", 0, false}, {".5", 0, false},
	} {
		got, ok := jsParseInt(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("jsParseInt(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParseJSDate(t *testing.T) {
	utc := func(y int, mo time.Month, d, h, mi, s, ms int) time.Time {
		return time.Date(y, mo, d, h, mi, s, ms*int(time.Millisecond), time.UTC)
	}
	for _, tc := range []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2024", utc(2024, 1, 1, 0, 0, 0, 0), true},
		{"2024-05", utc(2024, 5, 1, 0, 0, 0, 0), true},
		{"2024-05-06", utc(2024, 5, 6, 0, 0, 0, 0), true},
		{"2024-05-06T07:08", utc(2024, 5, 6, 7, 8, 0, 0), true},
		{"2024-05-06T07:08:09", utc(2024, 5, 6, 7, 8, 9, 0), true},
		{"2024-05-06T07:08:09.1Z", utc(2024, 5, 6, 7, 8, 9, 100), true},
		{"2024-05-06T07:08:09.123456789Z", utc(2024, 5, 6, 7, 8, 9, 123), true},
		{"2024-05-06t07:08:09z", utc(2024, 5, 6, 7, 8, 9, 0), true},
		{"2024-05-06 07:08:09Z", utc(2024, 5, 6, 7, 8, 9, 0), true},
		{"2024-05-06T07:08:09+02:00", utc(2024, 5, 6, 5, 8, 9, 0), true},
		{"2024-05-06T07:08:09-0230", utc(2024, 5, 6, 9, 38, 9, 0), true},
		{"2024-05-06T24:00:00Z", utc(2024, 5, 7, 0, 0, 0, 0), true},
		{"2023-02-30", utc(2023, 3, 2, 0, 0, 0, 0), true}, // V8 rolls over
		{" 2024-05-06 ", utc(2024, 5, 6, 0, 0, 0, 0), true},
		{"+002024-05-06T00:00:00Z", utc(2024, 5, 6, 0, 0, 0, 0), true},
		{"-000001-01-01T00:00:00Z", utc(-1, 1, 1, 0, 0, 0, 0), true},
		{"+275760-09-13T00:00:00.000Z", utc(275760, 9, 13, 0, 0, 0, 0), true},
		{"+275760-09-13T00:00:00.001Z", time.Time{}, false},
		{"-000000-01-01", time.Time{}, false},
		{"24", time.Time{}, false},
		{"2024-5-6", time.Time{}, false},
		{"2024-00-01", time.Time{}, false},
		{"2024-01-32", time.Time{}, false},
		{"2024-05-06T", time.Time{}, false},
		{"2024-05-06T07", time.Time{}, false},
		{"2024-05-06T07:60", time.Time{}, false},
		{"2024-05-06T24:00:01Z", time.Time{}, false},
		{"2024-05-06T07:08:09.Z", time.Time{}, false},
		{"2024-05-06T07:08:09+24:00", time.Time{}, false},
		{"2024-05-06Z", time.Time{}, false},
		{"2024-05-06T07:08:09Zx", time.Time{}, false},
		{"now", time.Time{}, false},
		{"", time.Time{}, false},
	} {
		got, ok := parseJSDate(tc.in)
		if ok != tc.ok || !got.Equal(tc.want) {
			t.Errorf("parseJSDate(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// recordingTB records the errors of a check instead of failing the test.
type recordingTB struct {
	testing.TB
	errs []string
}

func (r *recordingTB) Helper()                   {}
func (r *recordingTB) Errorf(f string, a ...any) { r.errs = append(r.errs, fmt.Sprintf(f, a...)) }

// TestSpecCheckerCatchesDrift makes sure checkAgainstSpec, which every
// request of this suite goes through, does reject responses that break the
// spec: a passing suite is otherwise no evidence.
func TestSpecCheckerCatchesDrift(t *testing.T) {
	did := "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
	line := `{"type":"sequenced_op","did":"` + did + `","operation":{"sig":"x","prev":null,"type":"plc_tombstone"},"cid":"bafyreia","createdAt":"2026-01-01T00:00:00.000Z","seq":1}`
	for _, tc := range []struct {
		name, method, path string
		status             int
		contentType, body  string
	}{
		{"undocumented status", "GET", "/" + did, http.StatusTeapot, ctJSON, messageJSON("x")},
		{"extra key in error", "GET", "/" + did, http.StatusNotFound, ctJSON, `{"message":"x","stack":"y"}`},
		{"document missing id", "GET", "/" + did, http.StatusOK, ctDIDDoc, `{"@context":["a","b"],"alsoKnownAs":[],"verificationMethod":[],"service":[]}`},
		{"wrong content type", "GET", "/" + did, http.StatusOK, ctJSON, `{}`},
		{"bad export line", "GET", "/export?after=0", http.StatusOK, contentJSONL, line},
		{"health without seq", "GET", "/_health", http.StatusOK, ctJSON, `{"version":"v"}`},
		{"submit answers JSON", "POST", "/" + did, http.StatusOK, ctJSON, `{}`},
	} {
		req, err := http.NewRequest(tc.method, "http://example"+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		rec := &recordingTB{TB: t}
		checkAgainstSpec(rec, req, reply{status: tc.status, header: http.Header{"Content-Type": {tc.contentType}}, body: []byte(tc.body)})
		if len(rec.errs) == 0 {
			t.Errorf("%s: checkAgainstSpec accepted it", tc.name)
		}
	}
}

// TestMangledOpsAreAlways400 submits every truncation of a valid op and
// every variant with one byte deleted or replaced: each must be a 400 with a
// JSON message, never a 5xx, and none may be committed.
func TestMangledOpsAreAlways400(t *testing.T) {
	opMetrics := prometheus.NewRegistry()
	env := newAPIEnv(t, backends[0], envOptions{config: func(c *Config) { c.OpMetrics = oplog.NewMetrics(opMetrics) }})
	k := keys(t, 1)[0]
	g := genesisOp(t, "alice.test", k, k)
	did := g.GenesisDID()
	valid := g.AppendJSON(nil)
	var bodies [][]byte
	for i := range valid {
		bodies = append(bodies,
			valid[:i],
			slices.Concat(valid[:i], valid[i+1:]),
			slices.Concat(valid[:i], []byte{0xff}, valid[i+1:]))
		if valid[i] != '"' {
			bodies = append(bodies, slices.Concat(valid[:i], []byte{'"'}, valid[i+1:]))
		}
	}
	for _, body := range bodies {
		r := env.do(http.MethodPost, "/"+did, body)
		if r.status != http.StatusBadRequest || r.header.Get("Content-Type") != ctJSON || !strings.HasPrefix(string(r.body), `{"message":"`) {
			t.Fatalf("POST %q: %d %s", body, r.status, r.body)
		}
	}
	env.get("/_health").expect(t, http.StatusOK, ctJSON, `{"version":"test-version","seq":0}`)
	// Refusals decided before the log are counted in the log's metrics.
	mfs, err := opMetrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var malformed float64
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if mf.GetName() == "plc_ops_rejected_total" && l.GetName() == "reason" && l.GetValue() == "malformed" {
					malformed = m.GetCounter().GetValue()
				}
			}
		}
	}
	if malformed == 0 {
		t.Errorf("no malformed rejections counted")
	}
}

// A mirror's server: POST answers 405 (or goes to Forward), /_health
// carries the mirror's fields, /_mirror/divergences goes to Extra; a
// directory that is not a mirror answers 404 there.
func TestMirrorRoles(t *testing.T) {
	k := keys(t, 1)
	op := genesisOp(t, "mirror.test", k[0], k[0])
	g := struct {
		did string
		op  *validate.Op
	}{op.GenesisDID(), op}
	plain := newAPIEnv(t, backends[0], envOptions{})
	plain.get("/_mirror/divergences").expectMessage(t, http.StatusNotFound, "Not Found: this directory is not a mirror")

	extra := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Write([]byte(`{"divergences":[],"cursor":0}`))
	})
	ro := newAPIEnv(t, backends[0], envOptions{config: func(c *Config) {
		c.ReadOnly = true
		c.Extra = extra
		c.Health = func() map[string]any { return map[string]any{"upstream": "http://up.test", "cursor": 7, "mode": "seq"} }
	}})
	ro.submit(g.did, g.op).expectMessage(t, http.StatusMethodNotAllowed, "This directory is a read-only mirror: submit operations to its upstream")
	ro.get("/"+g.did).expectMessage(t, http.StatusNotFound, "DID not registered: "+g.did)
	ro.get("/_health").expect(t, http.StatusOK, contentJSON, `{"version":"test-version","seq":0,"cursor":7,"mode":"seq","upstream":"http://up.test"}`)
	ro.get("/_mirror/divergences").expect(t, http.StatusOK, "application/json; charset=utf-8", `{"divergences":[],"cursor":0}`)

	var forwarded []string
	fw := newAPIEnv(t, backends[0], envOptions{config: func(c *Config) {
		c.ReadOnly = true
		c.Forward = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			forwarded = append(forwarded, r.Method+" "+r.URL.Path)
			w.Write([]byte("OK"))
		})
	}})
	fw.submit(g.did, g.op).expect(t, http.StatusOK, "text/plain; charset=utf-8", "OK")
	if want := []string{"POST /" + g.did}; !slices.Equal(forwarded, want) {
		t.Fatalf("forwarded %q, want %q", forwarded, want)
	}
	fw.get("/"+g.did).expectMessage(t, http.StatusNotFound, "DID not registered: "+g.did)
}
