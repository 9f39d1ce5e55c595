package mirror_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/audit"
	"github.com/plcdir/plc/internal/optest"
	"github.com/plcdir/plc/internal/pgtest"
	"github.com/plcdir/plc/mirror"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// Helpers of the mirror tests: stores, logs, reading divergences through
// the HTTP handler, comparing and verifying logs. Nothing here sleeps.

// t0 is the origin of the timestamps the tests choose themselves.
var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// backend opens a fresh, migrated database: SQLite in a temporary
// directory, or a PostgreSQL database of the test cluster.
type backend struct {
	name string
	dsn  func(t *testing.T) string
}

var (
	sqliteBackend = backend{"sqlite", func(t *testing.T) string { return filepath.Join(t.TempDir(), "plc.db") }}
	pgBackend     = backend{"postgres", func(t *testing.T) string { return pgtest.URL(t) }}
)

// openStore migrates the database dsn (as plc serve's openStore does) and
// opens it; it is closed when the test ends.
func openStore(t *testing.T, dsn string) oplog.Store {
	t.Helper()
	s, _, err := oplog.Open(context.Background(), dsn)
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newLog starts a log over s (closed when the test ends, before s).
func newLog(t *testing.T, s oplog.Store) *oplog.Log {
	t.Helper()
	l := oplog.NewLog(s, oplog.Options{NoRateLimit: true})
	t.Cleanup(l.Close)
	return l
}

// newSQLiteLog is a log over a fresh SQLite store.
func newSQLiteLog(t *testing.T) *oplog.Log {
	t.Helper()
	return newLog(t, openStore(t, sqliteBackend.dsn(t)))
}

// newMirror builds a mirror of upstream into l. Unless cfg says
// otherwise, it never audits on its own and its Wait fails the test: a
// test that goes through Run sets its own.
func newMirror(t *testing.T, upstream string, l *oplog.Log, cfg mirror.Config) *mirror.Mirror {
	t.Helper()
	cfg.Upstream, cfg.Log = upstream, l
	if cfg.AuditInterval == 0 {
		cfg.AuditInterval = -1
	}
	if cfg.Wait == nil {
		cfg.Wait = func(ctx context.Context, d time.Duration) error {
			t.Errorf("unexpected Wait(%v)", d)
			return context.Canceled
		}
	}
	m, err := mirror.New(cfg)
	if err != nil {
		t.Fatalf("mirror.New: %v", err)
	}
	return m
}

// ctxFor is a context that ends with the test, with a deadline that turns
// a hang into a failure rather than a stuck test binary.
func ctxFor(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// divergence is one item of GET /_mirror/divergences.
type divergence struct {
	ID               int64  `json:"id"`
	Kind             string `json:"kind"`
	DID              string `json:"did"`
	CID              string `json:"cid"`
	Reason           string `json:"reason"`
	Evidence         string `json:"evidence"`
	EvidenceEncoding string `json:"evidenceEncoding"`
	CreatedAt        string `json:"createdAt"`
}

// getJSON serves GET target with h and decodes the answer into v; it
// returns the status.
func getJSON(t *testing.T, h http.Handler, target string, v any) int {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	if ct := rec.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("GET %s: Content-Type %q", target, ct)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
		t.Fatalf("GET %s: %d %q: %v", target, rec.Code, rec.Body.String(), err)
	}
	return rec.Code
}

// divergences reads every divergence record of m through its HTTP
// handler, pageSize at a time, following the cursor (and "more", set on
// an answer cut short by its byte bound).
func divergences(t *testing.T, m *mirror.Mirror) []divergence {
	t.Helper()
	const pageSize = 3
	var (
		out   []divergence
		after int64
	)
	for {
		var page struct {
			Divergences []divergence `json:"divergences"`
			Cursor      int64        `json:"cursor"`
			More        bool         `json:"more"`
		}
		target := "/_mirror/divergences?" + url.Values{"after": {strconv.FormatInt(after, 10)}, "limit": {strconv.Itoa(pageSize)}}.Encode()
		if code := getJSON(t, m.Handler(), target, &page); code != http.StatusOK {
			t.Fatalf("GET %s: status %d", target, code)
		}
		if page.Divergences == nil {
			t.Fatalf("GET %s: divergences is not an array", target)
		}
		for _, d := range page.Divergences {
			if d.ID <= after {
				t.Fatalf("GET %s: record %d is not after %d", target, d.ID, after)
			}
			after = d.ID
		}
		if page.Cursor != after {
			t.Fatalf("GET %s: cursor %d, want %d", target, page.Cursor, after)
		}
		out = append(out, page.Divergences...)
		if len(page.Divergences) < pageSize && !page.More {
			return out
		}
	}
}

// evidence returns d's evidence as bytes, decoding base64 evidence.
func (d divergence) evidence(t *testing.T) []byte {
	t.Helper()
	switch d.EvidenceEncoding {
	case "":
		return []byte(d.Evidence)
	case "base64":
		b, err := base64.StdEncoding.DecodeString(d.Evidence)
		if err != nil {
			t.Fatalf("divergence %d: evidence is not base64: %v", d.ID, err)
		}
		return b
	}
	t.Fatalf("divergence %d: evidence encoding %q", d.ID, d.EvidenceEncoding)
	return nil
}

func describe(ds []divergence) string {
	var b bytes.Buffer
	for _, d := range ds {
		fmt.Fprintf(&b, "\n  #%d %s did=%s cid=%s reason=%q", d.ID, d.Kind, d.DID, d.CID, d.Reason)
	}
	return b.String()
}

// allOps returns every op of s in seq order.
func allOps(t *testing.T, s oplog.Store) []oplog.Entry {
	t.Helper()
	var out []oplog.Entry
	for after := int64(0); ; {
		es, err := s.Export(context.Background(), after, 1000)
		if err != nil {
			t.Fatalf("Export: %v", err)
		}
		out = append(out, es...)
		if len(es) < 1000 {
			return out
		}
		after = es[len(es)-1].Seq
	}
}

// didsOf returns the DIDs of es, in order of first appearance.
func didsOf(es []oplog.Entry) []string {
	seen := map[string]bool{}
	var out []string
	for _, e := range es {
		if !seen[e.DID] {
			seen[e.DID] = true
			out = append(out, e.DID)
		}
	}
	return out
}

func sameEntry(a, b oplog.Entry) bool {
	return a.DID == b.DID && a.CID == b.CID && a.CreatedAt.Equal(b.CreatedAt) && bytes.Equal(a.Op, b.Op) && a.Nullified == b.Nullified
}

func checkEntries(t *testing.T, what string, got, want []oplog.Entry, seqs bool) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d ops, want %d", what, len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if !sameEntry(g, w) || (seqs && g.Seq != w.Seq) {
			t.Fatalf("%s: op %d:\n got  seq=%d did=%s cid=%s at=%s nullified=%v\n want seq=%d did=%s cid=%s at=%s nullified=%v",
				what, i, g.Seq, g.DID, g.CID, g.CreatedAt, g.Nullified, w.Seq, w.DID, w.CID, w.CreatedAt, w.Nullified)
		}
	}
}

// checkSameLog fails unless got holds the same log as want: the same ops
// in the same seq order, and for every DID the same ops with the same
// nullified flags and the same chain state.
func checkSameLog(t *testing.T, got, want oplog.Store) {
	t.Helper()
	ctx := context.Background()
	wantOps := allOps(t, want)
	checkEntries(t, "export", allOps(t, got), wantOps, true)
	for _, did := range didsOf(wantOps) {
		g, err := got.Ops(ctx, did)
		if err != nil {
			t.Fatalf("Ops(%s): %v", did, err)
		}
		w, err := want.Ops(ctx, did)
		if err != nil {
			t.Fatalf("Ops(%s): %v", did, err)
		}
		checkEntries(t, "ops of "+did, g, w, true)
		gr, err := got.Record(ctx, did)
		if err != nil {
			t.Fatalf("Record(%s): %v", did, err)
		}
		wr, err := want.Record(ctx, did)
		if err != nil {
			t.Fatalf("Record(%s): %v", did, err)
		}
		if gr.HeadSeq != wr.HeadSeq || gr.Tombstoned() != wr.Tombstoned() || len(gr.State.Ops) != len(wr.State.Ops) {
			t.Fatalf("record of %s: head %d tombstoned %v %d ops, want head %d tombstoned %v %d ops",
				did, gr.HeadSeq, gr.Tombstoned(), len(gr.State.Ops), wr.HeadSeq, wr.Tombstoned(), len(wr.State.Ops))
		}
	}
}

// verifyStore replays every DID's ops of s as an audit log
// (audit.VerifyLog: CIDs, signatures, the chain rules, the nullified
// flags) and fails on the first problem. It returns the number of
// nullified ops.
func verifyStore(t *testing.T, s oplog.Store) int {
	t.Helper()
	nullified := 0
	for _, did := range didsOf(allOps(t, s)) {
		es, err := s.Ops(context.Background(), did)
		if err != nil {
			t.Fatalf("Ops(%s): %v", did, err)
		}
		entries := make([]plc.AuditEntry, len(es))
		for i, e := range es {
			line := validate.AppendAuditEntryJSON(nil, e.DID, e.Decoded, e.Nullified, e.CreatedAt)
			if err := json.Unmarshal(line, &entries[i]); err != nil {
				t.Fatalf("audit entry of %s: %v", e.CID, err)
			}
		}
		res := audit.VerifyLog(entries)
		if res.Failure != nil {
			t.Fatalf("the log of %s does not verify: %v", did, res.Failure)
		}
		nullified += res.Nullified
	}
	return nullified
}

// waitCursor waits, on the commits of l, until the cursor of source
// reaches seq.
func waitCursor(ctx context.Context, t *testing.T, l *oplog.Log, source string, seq int64) {
	t.Helper()
	for {
		changed := l.Changed()
		c, err := l.Store().Cursor(ctx, source)
		if err != nil {
			t.Fatalf("Cursor: %v", err)
		}
		if c.Seq >= seq {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("the mirror's cursor is at seq %d, want %d: %v", c.Seq, seq, ctx.Err())
		}
	}
}

// Ops of the tests' own making.

// rec is a valid op and the acceptance time the upstream gave it.
type rec struct {
	name string
	did  string
	op   *validate.Op
	at   time.Time
}

// fixture is a small, valid history of four DIDs, interleaved:
//
//	A0 C0 B0 A1 B1 D0 A2 D1
//
// one second apart. C has only its genesis op; no op builds on C0.
type fixture struct {
	ids  map[string]*optest.Identity
	ops  []rec
	byID map[string]rec
}

var (
	fixtureOnce sync.Once
	fixtureVal  *fixture
)

// newFixture returns the fixture (its keys are made once per binary).
func newFixture(t *testing.T) *fixture {
	t.Helper()
	fixtureOnce.Do(func() {
		f := &fixture{ids: map[string]*optest.Identity{}, byID: map[string]rec{}}
		for i, n := range []string{"A", "B", "C", "D"} {
			f.ids[n] = optest.NewIdentity(t, optest.Handle(i), 2)
		}
		add := func(name string, op *validate.Op) {
			id := f.ids[name[:1]]
			id.Accept(op)
			r := rec{name: name, did: id.DID, op: op, at: t0.Add(time.Duration(len(f.ops)+1) * time.Second)}
			f.ops = append(f.ops, r)
			f.byID[name] = r
		}
		g := func(n string) *validate.Op { return f.ids[n].Head }
		add("A0", g("A"))
		add("C0", g("C"))
		add("B0", g("B"))
		add("A1", f.ids["A"].Update(t, nil, 0, "a1.test"))
		add("B1", f.ids["B"].Update(t, nil, 1, "b1.test"))
		add("D0", g("D"))
		add("A2", f.ids["A"].Update(t, nil, 1, "a2.test"))
		add("D1", f.ids["D"].Update(t, nil, 0, "d1.test"))
		fixtureVal = f
	})
	if fixtureVal == nil {
		t.Fatal("fixture: setup failed")
	}
	return fixtureVal
}

// without returns f's ops but those named.
func (f *fixture) without(names ...string) []rec {
	var out []rec
	for _, r := range f.ops {
		skip := false
		for _, n := range names {
			skip = skip || r.name == n
		}
		if !skip {
			out = append(out, r)
		}
	}
	return out
}

// checkStoreHolds fails unless s holds exactly want, in order (seqs 1…n),
// and every DID's log verifies.
func checkStoreHolds(t *testing.T, s oplog.Store, want []rec) {
	t.Helper()
	got := allOps(t, s)
	names := func() string {
		var b bytes.Buffer
		for _, r := range want {
			b.WriteString(r.name + " ")
		}
		return b.String()
	}
	if len(got) != len(want) {
		t.Fatalf("the store holds %d ops, want %d (%s)", len(got), len(want), names())
	}
	for i, e := range got {
		w := want[i]
		if e.Seq != int64(i+1) || e.DID != w.did || e.CID != w.op.CID() || !e.CreatedAt.Equal(w.at) || !bytes.Equal(e.Op, w.op.SignedCBOR()) {
			t.Fatalf("op %d: seq %d did %s cid %s at %s, want %s (seq %d did %s cid %s at %s); want %s",
				i, e.Seq, e.DID, e.CID, e.CreatedAt, w.name, i+1, w.did, w.op.CID(), w.at, names())
		}
	}
	verifyStore(t, s)
}
