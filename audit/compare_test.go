package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plcdir/plc/audit"
	"github.com/plcdir/plc/client"
	"github.com/plcdir/plc/internal/corpus"
	"github.com/plcdir/plc/internal/optest"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// Tests of Compare: two real directories (plc's API over SQLite) fed the
// same ops are identical; fed different histories, each difference is
// reported for its DID and for no other.

var cmpT0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// ingest appends one op to the directory at a given acceptance time.
func (d *testDirectory) ingest(t *testing.T, did string, op *validate.Op, at time.Time) {
	t.Helper()
	d.line++
	res, err := d.log.Ingest(context.Background(), "test", []oplog.IngestItem{{Line: d.line, DID: did, CID: op.CID(), Op: op, CreatedAt: at}})
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("ingest %s: %+v, %v", did, res.Rejected, err)
	}
}

func newClient(t *testing.T, d *testDirectory) *client.Client {
	t.Helper()
	c, err := client.New(d.srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// both ingests op into each directory at the same time.
func both(t *testing.T, a, b *testDirectory, did string, op *validate.Op, at time.Time) {
	t.Helper()
	a.ingest(t, did, op, at)
	b.ingest(t, did, op, at)
}

// unregistered is a DID neither directory knows.
const unregistered = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"

func TestCompareIdenticalDirectories(t *testing.T) {
	export, st, _ := genCorpus(t, corpus.Config{DIDs: 40, Seed: 29})
	a, b := newTestDirectory(t, nil), newTestDirectory(t, nil)
	a.importExport(t, export)
	b.importExport(t, export)
	ctx := context.Background()
	ca, cb := newClient(t, a), newClient(t, b)

	dids, err := audit.SampleDIDs(ctx, ca, 10, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		t.Fatal(err)
	}
	all := corpusDIDs(t, export)
	if len(dids) != 10 || len(all) != st.DIDs {
		t.Fatalf("sampled %d DIDs of %d (corpus: %d)", len(dids), len(all), st.DIDs)
	}
	for _, did := range dids {
		if !slices.Contains(all, did) {
			t.Errorf("sampled %s, not a DID of the corpus", did)
		}
	}
	rep, err := audit.Compare(ctx, ca, cb, append(all, unregistered), audit.CompareOptions{Workers: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.DIDs != st.DIDs+1 || rep.Identical != st.DIDs+1 || rep.Different != 0 || len(rep.Counts) != 0 {
		t.Errorf("identical directories: %+v", rep)
	}
	for i, c := range rep.Results {
		if c.DID != append(all, unregistered)[i] || !c.Identical || len(c.Differences) != 0 {
			t.Errorf("result %d: %+v", i, c)
		}
	}
}

func corpusDIDs(t *testing.T, export []byte) []string {
	t.Helper()
	var dids []string
	for l := range bytes.SplitSeq(export, []byte("\n")) {
		var v struct{ DID string }
		if err := json.Unmarshal(l, &v); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(dids, v.DID) {
			dids = append(dids, v.DID)
		}
	}
	return dids
}

// TestCompareReportsEachDifference builds two directories that share most
// of their history and differ in one way per DID.
func TestCompareReportsEachDifference(t *testing.T) {
	var tamperedDID string
	a := newTestDirectory(t, nil)
	b := newTestDirectory(t, func(h http.Handler) http.Handler {
		// B serves a different document for one DID, with the same log.
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/"+tamperedDID {
				w.Header().Set("Content-Type", "application/did+ld+json")
				fmt.Fprintf(w, `{"@context":[],"id":%q,"alsoKnownAs":["at://evil.test"]}`, tamperedDID)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	ids := make([]*optest.Identity, 9)
	at := func(h int, i int) time.Time {
		return cmpT0.Add(time.Duration(h)*time.Hour + time.Duration(i)*time.Minute)
	}
	for i := range ids {
		ids[i] = optest.NewIdentity(t, optest.Handle(i), 2)
	}
	// Every DID but the last: the same genesis and first update in both.
	for i, id := range ids[:8] {
		both(t, a, b, id.DID, id.Head, at(0, i))
		up := id.Update(t, nil, 0, "v1-"+optest.Handle(i))
		if i == 4 {
			// 4: the same op, accepted a second later in B.
			a.ingest(t, id.DID, up, at(1, i))
			b.ingest(t, id.DID, up, at(1, i).Add(time.Second))
		} else {
			both(t, a, b, id.DID, up, at(1, i))
		}
		id.Accept(up)
	}
	// 1: B lacks A's second update.
	a.ingest(t, ids[1].DID, ids[1].Update(t, nil, 0, "v2.test"), at(2, 1))
	// 2: B has a second update A lacks.
	b.ingest(t, ids[2].DID, ids[2].Update(t, nil, 0, "v2.test"), at(2, 2))
	// 3: each has its own second update.
	a.ingest(t, ids[3].DID, ids[3].Update(t, nil, 0, "a.test"), at(2, 3))
	b.ingest(t, ids[3].DID, ids[3].Update(t, nil, 0, "b.test"), at(2, 3))
	// 5: key 1 updates in both; in A, key 0 then recovers (nullifying it).
	stolen := ids[5].Update(t, nil, 1, "stolen.test")
	both(t, a, b, ids[5].DID, stolen, at(2, 5))
	fork := ids[5].Update(t, nil, 0, "recovered.test")
	a.ingest(t, ids[5].DID, fork, at(3, 5))
	// 6: B's document is tampered with (above). 8: only A has it.
	tamperedDID = ids[6].DID
	a.ingest(t, ids[8].DID, ids[8].Head, at(0, 8))

	dids := []string{unregistered}
	for _, id := range ids {
		dids = append(dids, id.DID)
	}
	rep, err := audit.Compare(context.Background(), newClient(t, a), newClient(t, b), dids, audit.CompareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{ // DID → kind@index: the log by position, then the document
		unregistered: nil,
		ids[0].DID:   nil,
		ids[1].DID:   {"missing@2", "document@-1"},
		ids[2].DID:   {"extra@2", "document@-1"},
		ids[3].DID:   {"replaced@2", "document@-1"},
		ids[4].DID:   {"createdAt@1"},
		ids[5].DID:   {"nullified@2", "missing@3", "document@-1"},
		ids[6].DID:   {"document@-1"},
		ids[7].DID:   nil,
		ids[8].DID:   {"missing@0", "document@-1"},
	}
	for _, c := range rep.Results {
		var got []string
		for _, d := range c.Differences {
			got = append(got, fmt.Sprintf("%s@%d", d.Kind, d.Index))
		}
		if !slices.Equal(got, want[c.DID]) || c.Identical != (len(want[c.DID]) == 0) {
			t.Errorf("%s: %v (identical %t), want %v", c.DID, got, c.Identical, want[c.DID])
		}
	}
	if rep.OK || rep.Identical != 3 || rep.Different != 7 || rep.DIDs != 10 {
		t.Errorf("summary: %d DIDs, %d identical, %d different, OK %t", rep.DIDs, rep.Identical, rep.Different, rep.OK)
	}
	wantCounts := map[string]int{"document": 6, "missing": 3, "extra": 1, "replaced": 1, "createdAt": 1, "nullified": 1}
	if fmt.Sprint(rep.Counts) != fmt.Sprint(wantCounts) {
		t.Errorf("counts %v, want %v", rep.Counts, wantCounts)
	}

	// The evidence: what each side has.
	find := func(did, kind string) audit.Difference {
		for _, c := range rep.Results {
			if c.DID != did {
				continue
			}
			for _, d := range c.Differences {
				if d.Kind == kind {
					return d
				}
			}
		}
		t.Fatalf("%s: no %s difference", did, kind)
		return audit.Difference{}
	}
	if d := find(ids[4].DID, "createdAt"); d.A != "2026-01-01T01:04:00.000Z" || d.B != "2026-01-01T01:04:01.000Z" {
		t.Errorf("createdAt difference %+v", d)
	}
	if d := find(ids[5].DID, "nullified"); d.CID != stolen.CID() || d.A != "true" || d.B != "false" {
		t.Errorf("nullified difference %+v", d)
	}
	if d := find(ids[5].DID, "missing"); d.CID != fork.CID() {
		t.Errorf("missing difference %+v", d)
	}
	if d := find(ids[8].DID, "document"); !strings.HasPrefix(d.A, "200 {") || d.B != "404 DID not registered: "+ids[8].DID {
		t.Errorf("document difference %+v", d)
	}
	if d := find(ids[6].DID, "document"); !strings.Contains(d.B, "evil.test") {
		t.Errorf("document difference %+v", d)
	}
}

// cannedDirectory serves fixed audit logs and documents.
func cannedDirectory(t *testing.T, logs map[string]string) *client.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		did, isLog := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/"), "/log/audit")
		body, ok := logs[did]
		switch {
		case !ok:
			w.WriteHeader(404)
			fmt.Fprintf(w, `{"message":"DID not registered: %s"}`, did)
		case isLog:
			w.Write([]byte(body))
		default:
			w.Write([]byte(`{"id":"` + did + `"}`))
		}
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCompareLogs covers the differences real directories cannot be made
// to show: the same CID with different operations, reordered ops, entries
// for another DID.
func TestCompareLogs(t *testing.T) {
	entry := func(did, cid, op string) string {
		return fmt.Sprintf(`{"did":%q,"operation":%s,"cid":%q,"nullified":false,"createdAt":"2026-01-01T00:00:00.000Z"}`, did, op, cid)
	}
	const d = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"
	logA := "[" + entry(d, "c1", `{"a":1,"b":2}`) + "," + entry(d, "c2", `{}`) + "," + entry(d, "c3", `{}`) + "]"
	logB := "[" + entry(d, "c1", `{ "b":2, "a":1 }`) + "," + entry(d, "c3", `{}`) + "," + entry("did:plc:other", "c2", `{"x":1}`) + "]"
	rep, err := audit.Compare(context.Background(), cannedDirectory(t, map[string]string{d: logA}), cannedDirectory(t, map[string]string{d: logB}), []string{d}, audit.CompareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, x := range rep.Results[0].Differences {
		got = append(got, fmt.Sprintf("%s@%d:%s", x.Kind, x.Index, x.CID))
	}
	// c1's operations are the same JSON value: no difference.
	want := []string{"entry@1:c2", "operation@1:c2", "order@1:"}
	if !slices.Equal(got, want) {
		t.Errorf("differences %v, want %v", got, want)
	}
}

func TestCompareDirectoryErrors(t *testing.T) {
	ok := cannedDirectory(t, map[string]string{})
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"500", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(500)
			w.Write([]byte(`{"message":"database down"}`))
		}, "answered 500 Internal Server Error: database down"},
		{"429 without a JSON body", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(429)
			w.Write([]byte("slow down\x1b[2J"))
		}, `answered 429 Too Many Requests: "slow down\x1b[2J"`},
		{"oversized", func(w http.ResponseWriter, r *http.Request) {
			w.Write(bytes.Repeat([]byte(" "), client.MaxAuditLogBytes+1))
		}, "body over"},
		{"not an audit log", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"not":"a log"}`))
		}, "not an audit log"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			bad, _ := client.New(srv.URL, nil)
			_, err := audit.Compare(context.Background(), ok, bad, []string{unregistered}, audit.CompareOptions{})
			var se *client.StatusError
			if !errors.As(err, &se) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), srv.URL) {
				t.Errorf("error %v, want a StatusError with %q", err, tc.want)
			}
		})
	}
	for _, bad := range []string{"ftp://x", "http://", "http://h/?q=1", "not a url", "https://user:secret@h/#f"} {
		_, err := client.New(bad, nil)
		if !errors.Is(err, client.ErrURL) || strings.Contains(err.Error(), "secret") {
			t.Errorf("client.New(%q): %v", bad, err)
		}
	}
}

// TestLatestSeqWithoutHealth: a directory whose /_health states no seq
// (the reference's) is searched, with few requests.
func TestLatestSeqWithoutHealth(t *testing.T) {
	export, st, _ := genCorpus(t, corpus.Config{DIDs: 60, Seed: 31})
	var requests atomic.Int64
	d := newTestDirectory(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			requests.Add(1)
			if r.URL.Path == "/_health" {
				w.Write([]byte(`{"version":"0.0.1"}`))
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	c := newClient(t, d)
	if n, err := c.LatestSeq(context.Background()); err != nil || n != 0 {
		t.Errorf("empty directory: %d, %v", n, err)
	}
	d.importExport(t, export)
	requests.Store(0)
	n, err := c.LatestSeq(context.Background())
	if err != nil || n != int64(st.Lines) {
		t.Errorf("LatestSeq %d, %v; want %d", n, err, st.Lines)
	}
	if n := requests.Load(); n > 30 {
		t.Errorf("%d requests to find the latest seq", n)
	}
}

func TestReadDIDList(t *testing.T) {
	dids, err := audit.ReadDIDList(strings.NewReader("# DIDs\n did:plc:aaaaaaaaaaaaaaaaaaaaaaaa \n\ndid:plc:bbbbbbbbbbbbbbbbbbbbbbbb\ndid:plc:aaaaaaaaaaaaaaaaaaaaaaaa\n"))
	if err != nil || !slices.Equal(dids, []string{"did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"}) {
		t.Errorf("ReadDIDList: %v, %v", dids, err)
	}
	if _, err := audit.ReadDIDList(strings.NewReader("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa\ndid:web:example.com\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("a did:web: %v", err)
	}
}
