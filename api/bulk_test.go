package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plcdir/plc/oplog"
)

// Tests of POST /dids.

// headsCountingStore counts the store's reads of heads.
type headsCountingStore struct {
	oplog.Store
	head, heads atomic.Int64
}

func (s *headsCountingStore) Head(ctx context.Context, did string) (oplog.Entry, error) {
	s.head.Add(1)
	return s.Store.Head(ctx, did)
}

func (s *headsCountingStore) Heads(ctx context.Context, dids []string) (map[string]oplog.Entry, error) {
	s.heads.Add(1)
	return s.Store.Heads(ctx, dids)
}

// fakeDID is a well-formed did:plc that no test registers.
func fakeDID(i int) string {
	const b32 = "abcdefghijklmnopqrstuvwxyz234567"
	b := []byte(strings.Repeat("z", 24))
	for j := 23; i > 0; j-- {
		b[j] = b32[i%32]
		i /= 32
	}
	return "did:plc:" + string(b)
}

// bulkBody is the JSON body asking for dids.
func bulkBody(dids ...string) []byte {
	var b bytes.Buffer
	b.WriteString(`{"dids":[`)
	for i, d := range dids {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q", d)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

func (e *apiEnv) bulk(body []byte) reply {
	e.t.Helper()
	return e.do(http.MethodPost, "/dids", body, "Content-Type", "application/json")
}

func foundLine(did, doc string) string { return fmt.Sprintf(`{"did":%q,"document":%s}`, did, doc) }
func notFoundLine(did string) string {
	return fmt.Sprintf(`{"did":%q,"document":null,"notFound":true}`, did)
}
func tombstonedLine(did string) string {
	return fmt.Sprintf(`{"did":%q,"document":null,"tombstoned":true}`, did)
}

func jsonLines(lines ...string) string { return strings.Join(lines, "\n") + "\n" }

// TestBulkResolveAnswersEachDIDInRequestOrder: every kind of answer, in
// the request's order, duplicates answered where they stand, documents
// byte for byte what GET /:did answers; with and without the cache.
func TestBulkResolveAnswersEachDIDInRequestOrder(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, cacheBytes := range []int64{0, DefaultReadCacheBytes} {
			t.Run(fmt.Sprintf("cache=%d", cacheBytes), func(t *testing.T) {
				env := newAPIEnv(t, b, envOptions{config: func(c *Config) { c.ReadCacheBytes = cacheBytes }})
				k := keys(t, 2)
				ga, gb, gt := genesisOp(t, "a.test", k[0], k[0]), genesisOp(t, "b.test", k[1], k[1]), genesisOp(t, "t.test", k[0], k[0])
				a, bb, tomb := ga.GenesisDID(), gb.GenesisDID(), gt.GenesisDID()
				env.mustSubmit(a, ga)
				env.mustSubmit(bb, gb)
				env.mustSubmit(tomb, gt)
				env.mustSubmit(tomb, tombstoneOp(t, gt, k[0]))
				docA, docB := string(env.get("/"+a).body), string(env.get("/"+bb).body)
				unknown := fakeDID(1)
				want := jsonLines(notFoundLine(unknown), foundLine(a, docA), tombstonedLine(tomb), foundLine(bb, docB), foundLine(a, docA), notFoundLine(unknown))
				for range 2 { // the second from the cache, when there is one
					r := env.bulk(bulkBody(unknown, a, tomb, bb, a, unknown))
					r.expect(t, http.StatusOK, contentJSONL, want)
					if got := r.header.Get("Cache-Control"); got != cacheControlNone {
						t.Errorf("Cache-Control %q, want %q", got, cacheControlNone)
					}
				}
				// An update shows at once (the cache is exact).
				u := updateOp(t, ga, "a2.test", k[0], k[0])
				env.mustSubmit(a, u)
				docA2 := string(env.get("/" + a).body)
				if docA2 == docA {
					t.Fatal("the update did not change the document")
				}
				env.bulk(bulkBody(a)).expect(t, http.StatusOK, contentJSONL, jsonLines(foundLine(a, docA2)))
				for result, n := range map[string]float64{bulkDocument: 7, bulkTombstoned: 2, bulkNotFound: 4} {
					if got := metricValue(env.srv.bulk.dids.WithLabelValues(result)); got != n {
						t.Errorf("plc_bulk_resolve_dids_total{result=%q} = %v, want %v", result, got, n)
					}
				}
			})
		}
	})
}

// TestBulkResolveReadsOneQueryPerBatchAndFillsTheCache: 1000 DIDs cost
// one Heads query per oplog.HeadsPerQuery of them, no single reads; the
// answers fill the cache GET /:did reads, and a second request is
// answered from it without a query.
func TestBulkResolveReadsOneQueryPerBatchAndFillsTheCache(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		var counting *headsCountingStore
		env := newAPIEnv(t, b, envOptions{
			wrap:   func(s oplog.Store) oplog.Store { counting = &headsCountingStore{Store: s}; return counting },
			config: func(c *Config) { c.ReadCacheBytes = DefaultReadCacheBytes },
		})
		k := keys(t, 1)
		g := genesisOp(t, "a.test", k[0], k[0])
		did := g.GenesisDID()
		env.mustSubmit(did, g)
		dids := make([]string, maxBulkDIDs)
		for i := range dids {
			dids[i] = fakeDID(i)
		}
		dids[700] = did
		r := env.bulk(bulkBody(dids...))
		if r.status != http.StatusOK {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		lines := strings.Split(strings.TrimSuffix(string(r.body), "\n"), "\n")
		if len(lines) != maxBulkDIDs || lines[700] != foundLine(did, docOf(did, g)) || lines[999] != notFoundLine(dids[999]) {
			t.Fatalf("%d lines; line 700 %.200s", len(lines), lines[min(700, len(lines)-1)])
		}
		wantQueries := int64((maxBulkDIDs + oplog.HeadsPerQuery - 1) / oplog.HeadsPerQuery)
		if got := counting.heads.Load(); got != wantQueries || counting.head.Load() != 0 {
			t.Fatalf("%d Heads queries and %d Head reads, want %d and 0", got, counting.head.Load(), wantQueries)
		}
		// GET /:did is answered from what the bulk request stored.
		env.get("/"+did).expect(t, http.StatusOK, contentDIDDoc, docOf(did, g))
		if counting.head.Load() != 0 {
			t.Fatal("GET /:did read the store: the bulk answer was not cached")
		}
		// And a bulk request of a cached DID reads nothing.
		env.bulk(bulkBody(did, did)).expect(t, http.StatusOK, contentJSONL, jsonLines(foundLine(did, docOf(did, g)), foundLine(did, docOf(did, g))))
		if got := counting.heads.Load(); got != wantQueries {
			t.Fatalf("a bulk request of cached DIDs made %d more Heads queries", got-wantQueries)
		}
	})
}

// TestBulkResolveRefusesWhatIsNotAListOfDIDs: every malformed body is a
// 400 with a message saying what is wrong, before any query.
func TestBulkResolveRefusesWhatIsNotAListOfDIDs(t *testing.T) {
	forEachBackend(t, testBulkResolveRefuses)
}

func testBulkResolveRefuses(t *testing.T, b backend) {
	var counting *headsCountingStore
	env := newAPIEnv(t, b, envOptions{wrap: func(s oplog.Store) oplog.Store { counting = &headsCountingStore{Store: s}; return counting }})
	d := fakeDID(7)
	tooMany := make([]string, maxBulkDIDs+1)
	for i := range tooMany {
		tooMany[i] = fakeDID(i)
	}
	for _, tc := range []struct{ body, msg string }{
		{``, `The body ends before the JSON object does: expected {"dids": ["did:plc:…", …]}`},
		{`[]`, `The body must be a JSON object: {"dids": ["did:plc:…", …]}`},
		{`null`, `The body must be a JSON object: {"dids": ["did:plc:…", …]}`},
		{`"did:plc:x"`, `The body must be a JSON object: {"dids": ["did:plc:…", …]}`},
		{`{}`, `Missing field dids: the body is {"dids": ["did:plc:…", …]}`},
		{`{"dids": []}`, `dids is empty: list 1 to 1000 DIDs`},
		{`{"dids": null}`, `dids must be an array of DIDs: {"dids": ["did:plc:…", …]}`},
		{`{"dids": "` + d + `"}`, `dids must be an array of DIDs: {"dids": ["did:plc:…", …]}`},
		{`{"dids": {"0": "` + d + `"}}`, `dids must be an array of DIDs: {"dids": ["did:plc:…", …]}`},
		{`{"dids": ["` + d + `", 5]}`, `dids[1] is not a string`},
		{`{"dids": [["` + d + `"]]}`, `dids[0] is not a string`},
		{`{"dids": ["did:web:example.com"]}`, `Invalid DID at dids[0]: "did:web:example.com" (only did:plc identifiers)`},
		{`{"dids": ["` + d + `", "did:plc:short"]}`, `Invalid DID at dids[1]: "did:plc:short" (only did:plc identifiers)`},
		{`{"dids": ["` + strings.ToUpper(d) + `"]}`, fmt.Sprintf(`Invalid DID at dids[0]: %q (only did:plc identifiers)`, strings.ToUpper(d))},
		{`{"dids": ["` + d + `"], "cursor": 1}`, `Unknown field "cursor": the body is {"dids": ["did:plc:…", …]}`},
		{`{"DIDS": ["` + d + `"]}`, `Unknown field "DIDS": the body is {"dids": ["did:plc:…", …]}`},
		{`{"dids": ["` + d + `"], "dids": ["` + d + `"]}`, `The field dids is given twice`},
		{`{"dids": ["` + d + `"]} {}`, `Unexpected data after the JSON object`},
		{`{"dids": ["` + d + `"]`, `The body ends before the JSON object does: expected {"dids": ["did:plc:…", …]}`},
		{`{"dids": ["` + d + `",]}`, `The body is not valid JSON (at byte 45): expected {"dids": ["did:plc:…", …]}`},
		{string(bulkBody(tooMany...)), `Too many DIDs: at most 1000 per request`},
	} {
		r := env.bulk([]byte(tc.body))
		r.expectMessage(t, http.StatusBadRequest, tc.msg)
		if t.Failed() {
			t.Fatalf("body %.100s", tc.body)
		}
	}
	if counting.heads.Load() != 0 {
		t.Fatalf("refused bodies made %d queries", counting.heads.Load())
	}
	// 1000 is the bound, not over it.
	if r := env.bulk(bulkBody(tooMany[:maxBulkDIDs]...)); r.status != http.StatusOK || bytes.Count(r.body, []byte("\n")) != maxBulkDIDs {
		t.Fatalf("1000 DIDs: status %d, %d lines", r.status, bytes.Count(r.body, []byte("\n")))
	}
	// Another method is not a bulk request.
	if r := env.do(http.MethodPut, "/dids", bulkBody(d)); r.status != http.StatusMethodNotAllowed {
		t.Fatalf("PUT /dids: %d", r.status)
	}
}

// TestBulkResolveHostileBodiesAreBounded: a huge body is cut at the body
// cap (declared or chunked), a deeply nested one is refused at its first
// element without being descended into, and one that stalls is ended by
// the server's read timeout.
func TestBulkResolveHostileBodiesAreBounded(t *testing.T) {
	env := newAPIEnv(t, backends[0], envOptions{})
	d := fakeDID(3)
	huge := bulkBody(slicesRepeat(d, 4000)...) // 4000 × 36 bytes: over the cap
	env.bulk(huge).expectMessage(t, http.StatusRequestEntityTooLarge, "request entity too large")

	// Chunked: no Content-Length, cut as it is read (within 1000 DIDs:
	// blanks, then one long string).
	padded := `{"dids": [` + strings.Repeat(" ", 60_000) + `"` + strings.Repeat("a", 60_000) + `"]}`
	req, err := http.NewRequest(http.MethodPost, env.http.URL+"/dids", io.MultiReader(strings.NewReader(padded)))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = -1
	resp, err := env.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || string(body) != messageJSON("request entity too large") {
		t.Fatalf("chunked huge body: %d %s", resp.StatusCode, body)
	}

	nested := `{"dids": [` + strings.Repeat("[", 90_000) + strings.Repeat("]", 9_000)
	env.bulk([]byte(nested)).expectMessage(t, http.StatusBadRequest, "dids[0] is not a string")
	nestedKey := `{"x": ` + strings.Repeat(`{"x": `, 15_000)
	env.bulk([]byte(nestedKey)).expectMessage(t, http.StatusBadRequest, `Unknown field "x": the body is {"dids": ["did:plc:…", …]}`)

	// A body that stalls half way: the server's read timeout ends it
	// (plc serve sets one; here a short one), answered 400.
	slow := httptest.NewUnstartedServer(env.srv)
	slow.Config.ReadTimeout = 200 * time.Millisecond
	slow.Start()
	defer slow.Close()
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write([]byte(`{"dids": ["` + d + `", `)) // and nothing more
	req, err = http.NewRequest(http.MethodPost, slow.URL+"/dids", pr)
	if err != nil {
		t.Fatal(err)
	}
	resp, err = slow.Client().Do(req)
	if err != nil {
		t.Fatalf("stalled body: %v", err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || string(body) != messageJSON("Could not read the request body") {
		t.Fatalf("stalled body: %d %s", resp.StatusCode, body)
	}
}

func slicesRepeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// TestBulkResolveIsRateLimitedLikeOtherReads: a bulk request takes one
// request of the per-client limit.
func TestBulkResolveIsRateLimitedLikeOtherReads(t *testing.T) {
	env := newAPIEnv(t, backends[0], envOptions{config: func(c *Config) { c.IPRate, c.IPBurst = 1, 2 }})
	body := bulkBody(fakeDID(1))
	env.bulk(body).expect(t, http.StatusOK, contentJSONL, jsonLines(notFoundLine(fakeDID(1))))
	env.get("/"+fakeDID(1)).expectMessage(t, http.StatusNotFound, "DID not registered: "+fakeDID(1))
	r := env.bulk(body)
	r.expectMessage(t, http.StatusTooManyRequests, "Too many requests, retry later")
	if r.header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
}

// failingHeadsStore fails its Heads reads from the fail-th on.
type failingHeadsStore struct {
	oplog.Store
	calls atomic.Int64
	fail  int64
}

func (s *failingHeadsStore) Heads(ctx context.Context, dids []string) (map[string]oplog.Entry, error) {
	if s.calls.Add(1) >= s.fail {
		return nil, fmt.Errorf("read heads: %w", oplog.ErrStorage)
	}
	return s.Store.Heads(ctx, dids)
}

// TestBulkResolveCutOffNeverLooksComplete: a database failure before the
// first line is a 503 with a message; after lines were sent, the
// connection is cut, so that the client cannot take the lines it got for
// the whole answer.
func TestBulkResolveCutOffNeverLooksComplete(t *testing.T) {
	dids := make([]string, maxBulkDIDs)
	for i := range dids {
		dids[i] = fakeDID(i)
	}
	t.Run("FirstBatch", func(t *testing.T) {
		env := newAPIEnv(t, backends[0], envOptions{wrap: func(s oplog.Store) oplog.Store { return &failingHeadsStore{Store: s, fail: 1} }})
		r := env.bulk(bulkBody(dids...))
		r.expectMessage(t, http.StatusServiceUnavailable, "Database unavailable, retry later")
	})
	t.Run("LaterBatch", func(t *testing.T) {
		env := newAPIEnv(t, backends[0], envOptions{wrap: func(s oplog.Store) oplog.Store { return &failingHeadsStore{Store: s, fail: 2} }})
		resp, err := env.http.Client().Post(env.http.URL+"/dids", "application/json", bytes.NewReader(bulkBody(dids...)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || err == nil {
			t.Fatalf("status %d, read error %v after %d lines: want 200 and a cut connection", resp.StatusCode, err, bytes.Count(body, []byte("\n")))
		}
		if n := bytes.Count(body, []byte("\n")); n != oplog.HeadsPerQuery {
			t.Fatalf("%d lines before the cut, want the first batch's %d", n, oplog.HeadsPerQuery)
		}
	})
}

// FuzzParseDIDList: the body parser never panics, accepts only 1 to 1000
// well-formed DIDs, and accepts exactly what it reads back from their
// plain encoding.
func FuzzParseDIDList(f *testing.F) {
	d := fakeDID(9)
	for _, seed := range []string{
		`{"dids": ["` + d + `"]}`, `{"dids": []}`, `{"dids": [1]}`, `{}`, `[]`, `{"dids": ["` + d + `"], "x": 1}`,
		`{"dids": [["` + d + `"]]}`, `{"dids": ["` + d + `"]} x`, ` {"dids" : [ "` + d + `" , "` + d + `" ] } `,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		dids, err := parseDIDList(bytes.NewReader(body))
		if err != nil {
			if he, ok := err.(*httpError); !ok || he.status != http.StatusBadRequest {
				t.Fatalf("error %v is not a 400", err)
			}
			return
		}
		if len(dids) < 1 || len(dids) > maxBulkDIDs {
			t.Fatalf("accepted %d DIDs", len(dids))
		}
		var v struct {
			DIDs []string `json:"dids"`
		}
		if err := json.Unmarshal(body, &v); err != nil || !slices.Equal(v.DIDs, dids) {
			t.Fatalf("accepted %q as %q; encoding/json reads %q, %v", body, dids, v.DIDs, err)
		}
		again, err := parseDIDList(bytes.NewReader(bulkBody(dids...)))
		if err != nil || !slices.Equal(again, dids) {
			t.Fatalf("the plain encoding of %q reads back as %q, %v", dids, again, err)
		}
	})
}

// TestBulkResolveSeesAnotherProcessesWrites: the cache POST /dids reads
// and fills stays exact when another process appends, and with the reads
// routed to a streaming replica (plc serve --read-db).
func TestBulkResolveSeesAnotherProcessesWrites(t *testing.T) {
	for _, b := range cacheBackends {
		t.Run(b.name, func(t *testing.T) {
			e := newCachedEnv(t, b, DefaultReadCacheBytes)
			k := keys(t, 1)
			g := genesisOp(t, "a.test", k[0], k[0])
			did := g.GenesisDID()
			e.bulk(bulkBody(did)).expect(t, http.StatusOK, contentJSONL, jsonLines(notFoundLine(did)))
			e.submitOther(did, g)
			e.bulk(bulkBody(did)).expect(t, http.StatusOK, contentJSONL, jsonLines(foundLine(did, docOf(did, g))))
			e.bulk(bulkBody(did)).expect(t, http.StatusOK, contentJSONL, jsonLines(foundLine(did, docOf(did, g))))
			u := updateOp(t, g, "b.test", k[0], k[0])
			e.submitOther(did, u)
			e.bulk(bulkBody(did)).expect(t, http.StatusOK, contentJSONL, jsonLines(foundLine(did, docOf(did, u))))
			e.submitOther(did, tombstoneOp(t, u, k[0]))
			e.bulk(bulkBody(did, did)).expect(t, http.StatusOK, contentJSONL, jsonLines(tombstonedLine(did), tombstonedLine(did)))
		})
	}
}
