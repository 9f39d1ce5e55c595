package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// Tests of GET /_lookup/handle/:handle.

// lookupReply decodes an answer of the route.
func lookupReply(t *testing.T, r reply) handleClaims {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if got := r.header.Get("Content-Type"); got != contentJSON {
		t.Fatalf("content-type %q", got)
	}
	var out handleClaims
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatalf("%v: %s", err, r.body)
	}
	return out
}

func claimDIDs(c handleClaims) []string {
	var out []string
	for _, cl := range c.Claims {
		out = append(out, cl.DID)
	}
	return out
}

// TestHandleLookupListsCurrentClaimsOnly: the DIDs whose current document
// lists the handle, with their PDS; not a DID that changed its handle
// away, nor a tombstoned one, though the index still holds both.
func TestHandleLookupListsCurrentClaimsOnly(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		env := newAPIEnv(t, b, envOptions{noRateLimit: true})
		k := keys(t, 4)
		ga, gb := genesisOp(t, "alice.test", k[0], k[0]), genesisOp(t, "Alice.Test", k[1], k[1])
		moved := genesisOp(t, "alice.test", k[2], k[2])
		gone := genesisOp(t, "alice.test", k[3], k[3])
		for _, g := range []*validate.Op{ga, gb, moved, gone} {
			env.mustSubmit(g.GenesisDID(), g)
		}
		// Indexed while they claim it.
		if r := lookupReply(t, env.get("/_lookup/handle/alice.test")); len(r.Claims) != 4 {
			t.Fatalf("before the changes: %d claims, want 4: %v", len(r.Claims), claimDIDs(r))
		}
		env.mustSubmit(moved.GenesisDID(), updateOp(t, moved, "carol.test", k[2], k[2]))
		env.mustSubmit(gone.GenesisDID(), tombstoneOp(t, gone, k[3]))

		want := []string{ga.GenesisDID(), gb.GenesisDID()}
		slices.Sort(want)
		for _, path := range []string{"/_lookup/handle/alice.test", "/_lookup/handle/ALICE.test", "/_lookup/handle/at:%2F%2Falice.test"} {
			r := env.get(path)
			if got := r.header.Get("Cache-Control"); got != cacheControlRead {
				t.Errorf("%s: Cache-Control %q, want %q", path, got, cacheControlRead)
			}
			c := lookupReply(t, r)
			if c.Handle != "alice.test" || !slices.Equal(claimDIDs(c), want) || c.Truncated || c.IndexBehind != 0 || c.Note != claimsNote {
				t.Fatalf("%s: %s\nwant claims by %v", path, r.body, want)
			}
			for _, cl := range c.Claims {
				if cl.PDS != "https://pds.example.com" || !slices.Contains(cl.AlsoKnownAs, "at://alice.test") && !slices.Contains(cl.AlsoKnownAs, "at://Alice.Test") || !strings.HasPrefix(cl.UpdatedAt, "2026-03-01T12:00:00.") {
					t.Fatalf("%s: claim %+v", path, cl)
				}
			}
		}
		c := lookupReply(t, env.get("/_lookup/handle/carol.test"))
		if !slices.Equal(claimDIDs(c), []string{moved.GenesisDID()}) {
			t.Fatalf("carol.test: %v, want the DID that moved there", claimDIDs(c))
		}
		c = lookupReply(t, env.get("/_lookup/handle/nobody.test"))
		if len(c.Claims) != 0 || c.Truncated {
			t.Fatalf("nobody.test: %+v", c)
		}
		if got := env.get("/_lookup/handle/nobody.test").body; string(got) != fmt.Sprintf(`{"handle":"nobody.test","claims":[],"truncated":false,"note":%q}`, claimsNote) {
			t.Fatalf("an empty answer: %s", got)
		}
	})
}

// TestHandleLookupRefusesWhatIsNotAHandle: 400 with a message, no 500.
func TestHandleLookupRefusesWhatIsNotAHandle(t *testing.T) {
	env := newAPIEnv(t, backends[0], envOptions{})
	for path, shown := range map[string]string{
		"/_lookup/handle/not_a_handle":  `"not_a_handle"`,
		"/_lookup/handle/localhost":     `"localhost"`,
		"/_lookup/handle/-a.test":       `"-a.test"`,
		"/_lookup/handle/did:plc:abc":   `"did:plc:abc"`,
		"/_lookup/handle/a%20b.test":    `"a b.test"`,
		"/_lookup/handle/%FF.test":      `"\xff.test"`,
		"/_lookup/handle/x.test%2Fpath": `"x.test/path"`,
	} {
		env.get(path).expectMessage(t, http.StatusBadRequest, "Not a handle: "+shown)
	}
	// Only one segment: more is another path.
	env.get("/_lookup/handle/a.test/more").expectMessage(t, http.StatusNotFound, "Not Found")
}

// TestHandleLookupSaysHowFarTheIndexIsBehind: when the index is too far
// behind to catch up inside a lookup, the answer says so.
func TestHandleLookupSaysHowFarTheIndexIsBehind(t *testing.T) {
	old := handleCatchUp
	handleCatchUp = 1
	t.Cleanup(func() { handleCatchUp = old })
	env := newAPIEnv(t, backends[0], envOptions{})
	k := keys(t, 2)
	for _, key := range k {
		g := genesisOp(t, "alice.test", key, key)
		env.mustSubmit(g.GenesisDID(), g)
	}
	c := lookupReply(t, env.get("/_lookup/handle/alice.test"))
	if c.IndexBehind != 2 || len(c.Claims) != 0 {
		t.Fatalf("%+v, want no claims and indexBehind 2", c)
	}
	handleCatchUp = old
	c = lookupReply(t, env.get("/_lookup/handle/alice.test"))
	if c.IndexBehind != 0 || len(c.Claims) != 2 {
		t.Fatalf("%+v, want 2 claims once caught up", c)
	}
}

// TestHandleLookupIsBoundedAndSaysTruncated: at most MaxHandleDIDs
// candidates are checked, and the answer says there are more.
func TestHandleLookupIsBoundedAndSaysTruncated(t *testing.T) {
	env := newAPIEnv(t, backends[0], envOptions{noRateLimit: true})
	k := keys(t, 1)
	for i := range oplog.MaxHandleDIDs + 1 {
		o := opBody("crowd.test", k[0])
		o.Services[0].Endpoint = fmt.Sprintf("https://pds%d.example.com", i) // a distinct DID each
		g := signOp(t, o, k[0])
		env.mustSubmit(g.GenesisDID(), g)
	}
	c := lookupReply(t, env.get("/_lookup/handle/crowd.test"))
	if !c.Truncated || len(c.Claims) != oplog.MaxHandleDIDs {
		t.Fatalf("%d claims, truncated %v; want %d and true", len(c.Claims), c.Truncated, oplog.MaxHandleDIDs)
	}
}

// TestHandleLookupWithoutAnIndexIs501: a store without a handle index
// answers 501 with a message.
func TestHandleLookupWithoutAnIndexIs501(t *testing.T) {
	env := newAPIEnv(t, backends[0], envOptions{wrap: func(s oplog.Store) oplog.Store { return &headsCountingStore{Store: s} }})
	env.get("/_lookup/handle/alice.test").expectMessage(t, http.StatusNotImplemented, "This directory keeps no handle index")
}

// TestHandleLookupIsRateLimitedLikeOtherReads: one request of the
// per-client limit.
func TestHandleLookupIsRateLimitedLikeOtherReads(t *testing.T) {
	env := newAPIEnv(t, backends[0], envOptions{config: func(c *Config) { c.IPRate, c.IPBurst = 1, 1 }})
	lookupReply(t, env.get("/_lookup/handle/alice.test"))
	env.get("/_lookup/handle/alice.test").expectMessage(t, http.StatusTooManyRequests, "Too many requests, retry later")
}
