package mirror_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plcdir/plc/api"
	"github.com/plcdir/plc/internal/corpus"
	"github.com/plcdir/plc/internal/optest"
	"github.com/plcdir/plc/mirror"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// apiUpstream is a real directory (the api package over a log) serving
// over HTTP, with its /export/stream, that counts the requests it gets.
type apiUpstream struct {
	log     *oplog.Log
	srv     *httptest.Server
	exports atomic.Int64  // GET /export requests
	streams chan struct{} // one value per GET /export/stream
}

func newAPIUpstream(t *testing.T, l *oplog.Log) *apiUpstream {
	t.Helper()
	u := &apiUpstream{log: l, streams: make(chan struct{}, 16)}
	streamer := api.NewStreamer(l, api.StreamOptions{})
	h := api.New(api.Config{Log: l, Stream: streamer})
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/export":
			u.exports.Add(1)
		case "/export/stream":
			select {
			case u.streams <- struct{}{}:
			default:
			}
		}
		h.ServeHTTP(w, r)
	}))
	// Cleanups run last first: the streams end, then the server closes,
	// then (registered earlier) the log and the store.
	t.Cleanup(u.srv.Close)
	t.Cleanup(streamer.Close)
	return u
}

// importCorpus generates a corpus of n valid ops and imports it into l.
func importCorpus(t *testing.T, l *oplog.Log, n int, seed uint64) corpus.Stats {
	t.Helper()
	var buf bytes.Buffer
	st, err := corpus.Generate(context.Background(), &buf, corpus.Config{Ops: n, Seed: seed})
	if err != nil {
		t.Fatalf("corpus.Generate: %v", err)
	}
	is, err := oplog.Import(context.Background(), l, &buf, oplog.ImportOptions{})
	if err != nil || is.Imported != int64(st.Ops) || is.Rejected != 0 {
		t.Fatalf("importing the corpus into the upstream: %+v, %v", is, err)
	}
	return st
}

// TestConvergence mirrors a real directory: a backfill by pages (Sync),
// then the live /export/stream (Run), and checks that the mirror holds
// exactly the upstream's log, that re-syncing changes nothing, and that
// the upstream's audit logs agree with it.
func TestConvergence(t *testing.T) {
	for _, b := range []backend{sqliteBackend, pgBackend} {
		t.Run(b.name, func(t *testing.T) { testConvergence(t, b) })
	}
}

func testConvergence(t *testing.T, b backend) {
	ctx := ctxFor(t)
	// The upstream's clock steps a millisecond each time it is read, so
	// that a recovery fork is never accepted in the millisecond of the op
	// it nullifies.
	base := time.Now().UTC().Truncate(time.Millisecond)
	var ticks atomic.Int64
	upLog := oplog.NewLog(openStore(t, b.dsn(t)), oplog.Options{NoRateLimit: true,
		Now: func() time.Time { return base.Add(time.Duration(ticks.Add(1)) * time.Millisecond) }})
	t.Cleanup(upLog.Close)
	up := newAPIUpstream(t, upLog)
	st := importCorpus(t, upLog, 300, 2)
	if st.Nullified == 0 || st.Tombstoned == 0 {
		t.Fatalf("the corpus has %d nullified ops and %d tombstones: want some of each", st.Nullified, st.Tombstoned)
	}
	upStore := upLog.Store()

	mLog := newLog(t, openStore(t, b.dsn(t)))
	var (
		progress    []oplog.ImportStats
		m           *mirror.Mirror
		backfilling = true // what Backfilling said at every batch (the handle index waits meanwhile)
	)
	m = newMirror(t, up.srv.URL, mLog, mirror.Config{PageSize: 64, Progress: func(s oplog.ImportStats) {
		progress = append(progress, s)
		backfilling = backfilling && m.Backfilling()
	}})
	if m.Backfilling() {
		t.Error("Backfilling before any backfill")
	}
	if err := m.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if !backfilling || m.Backfilling() {
		t.Errorf("Backfilling said %v at a batch and %v after Sync, want true and false", backfilling, m.Backfilling())
	}
	if m.Mode() != mirror.ModeSeq {
		t.Fatalf("mode %q, want %q", m.Mode(), mirror.ModeSeq)
	}
	// 300 ops in pages of 64: five pages, the last one short.
	if n := up.exports.Load(); n != 1+5 {
		t.Errorf("%d GET /export requests, want 6 (detection and five pages)", n)
	}
	if len(progress) == 0 || progress[len(progress)-1].Imported != 300 {
		t.Errorf("progress reports %+v, want a last one with 300 ops imported", progress)
	}
	checkSameLog(t, mLog.Store(), upStore)
	if n := verifyStore(t, mLog.Store()); n != st.Nullified {
		t.Errorf("the mirror has %d nullified ops, the corpus %d", n, st.Nullified)
	}
	if s := m.Status(ctx); s.Cursor != 300 || s.Mode != mirror.ModeSeq || s.LagOps != 0 || s.Upstream != up.srv.URL {
		t.Errorf("status after Sync: %+v", s)
	}

	// Again: nothing is new, nothing is applied twice.
	if err := m.Sync(ctx); err != nil {
		t.Fatalf("second Sync: %v", err)
	}
	checkSameLog(t, mLog.Store(), upStore)

	// The upstream's audit logs agree with the mirror on every DID.
	for _, did := range didsOf(allOps(t, upStore)) {
		if err := m.CheckDID(ctx, did); err != nil {
			t.Fatalf("CheckDID(%s): %v", did, err)
		}
	}
	if err := m.AuditSample(ctx, 50); err != nil {
		t.Fatalf("AuditSample: %v", err)
	}
	if ds := divergences(t, m); len(ds) != 0 {
		t.Fatalf("divergences from a faithful upstream:%s", describe(ds))
	}

	// The live path: Run follows the stream; new ops reach the mirror
	// through it, with no more pages.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	select {
	case <-up.streams:
	case err := <-done:
		t.Fatalf("Run returned before following the stream: %v", err)
	case <-ctx.Done():
		t.Fatal("the mirror never asked for the stream")
	}
	pages := up.exports.Load()
	live := submitLiveOps(t, upLog)
	latest, err := upStore.LatestSeq(ctx)
	if err != nil || latest != 300+int64(live) {
		t.Fatalf("upstream latest seq %d, %v; want %d", latest, err, 300+live)
	}
	waitCursor(ctx, t, mLog, m.Source(), latest)
	checkSameLog(t, mLog.Store(), upStore)
	verifyStore(t, mLog.Store())
	if n := up.exports.Load(); n != pages {
		t.Errorf("%d GET /export requests while following the stream: the live ops came by pages", n-pages)
	}
	if s := m.Status(ctx); s.State != "stream" || s.Cursor != latest || s.LagSeconds != 0 {
		t.Errorf("status while following: %+v", s)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if ds := divergences(t, m); len(ds) != 0 {
		t.Fatalf("divergences from a faithful upstream:%s", describe(ds))
	}
}

// submitLiveOps submits new ops to the upstream: a DID with a recovery
// fork that nullifies an update, a tombstoned DID and an updated one. It
// returns how many ops it submitted.
func submitLiveOps(t *testing.T, l *oplog.Log) int {
	t.Helper()
	n := 0
	submit := func(id *optest.Identity, op *validate.Op) {
		t.Helper()
		if _, err := l.Submit(context.Background(), id.DID, op); err != nil {
			t.Fatalf("Submit: %v", err)
		}
		n++
	}
	x := optest.NewIdentity(t, "live-x.test", 2)
	gx := x.Head
	submit(x, gx)
	submit(x, x.Update(t, nil, 1, "stolen.test"))
	submit(x, x.Update(t, gx, 0, "recovered.test")) // nullifies the update
	y := optest.NewIdentity(t, "live-y.test", 1)
	submit(y, y.Head)
	submit(y, y.Tombstone(t, nil, 0))
	z := optest.NewIdentity(t, "live-z.test", 1)
	submit(z, z.Head)
	submit(z, z.Update(t, nil, 0, "live-z2.test"))
	return n
}

// legacyUpstream is a stand-in for the 2024 reference directory: GET
// /export?after=<ISO timestamp>&count=N only, lines {did, operation, cid,
// nullified, createdAt} with createdAt > after in (createdAt, cid) order,
// no seq, no stream. It serves the ops of a store.
type legacyUpstream struct {
	store oplog.Store
	mu    sync.Mutex
	pages [][]oplog.Entry // what each full page served held
	other atomic.Int64    // requests for other paths (404)
}

func (u *legacyUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/export" {
		u.other.Add(1)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"message":"Not Found"}`))
		return
	}
	q := r.URL.Query()
	count := 1000
	if c := q.Get("count"); c != "" {
		n, err := strconv.Atoi(c)
		if err != nil || n < 1 {
			http.Error(w, "bad count", http.StatusBadRequest)
			return
		}
		count = min(n, 1000)
	}
	after := time.Unix(0, 0).UTC()
	if a := q.Get("after"); a != "" {
		at, err := time.Parse(time.RFC3339Nano, a)
		switch {
		case err == nil:
			after = at
		case strings.Trim(a, "0123456789") == "":
			// JavaScript's new Date("0") is in the year 2000: before
			// every op here.
			after = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
		default:
			http.Error(w, "bad after", http.StatusBadRequest)
			return
		}
	}
	es, err := u.store.ExportByTime(r.Context(), after, count)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if len(es) == count {
		u.mu.Lock()
		u.pages = append(u.pages, es)
		u.mu.Unlock()
	}
	var b []byte
	for i, e := range es {
		if i > 0 {
			b = append(b, '\n')
		}
		b = validate.AppendAuditEntryJSON(b, e.DID, e.Decoded, e.Nullified, e.CreatedAt)
	}
	w.Header().Set("Content-Type", "application/jsonlines")
	w.Write(b)
}

// cutsInside counts the full pages served that ended inside a millisecond:
// the op after the page's last one, in the whole export, has the same
// createdAt.
func (u *legacyUpstream) cutsInside(t *testing.T, all []oplog.Entry) int {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	index := map[string]int{}
	for i, e := range all {
		index[e.CID] = i
	}
	n := 0
	for _, p := range u.pages {
		i := index[p[len(p)-1].CID]
		if i+1 < len(all) && all[i+1].CreatedAt.Equal(all[i].CreatedAt) {
			n++
		}
	}
	return n
}

// exportByTime is every op of s in the legacy export's order.
func exportByTime(t *testing.T, s oplog.Store) []oplog.Entry {
	t.Helper()
	es, err := s.ExportByTime(context.Background(), time.Unix(0, 0), 100_000)
	if err != nil {
		t.Fatalf("ExportByTime: %v", err)
	}
	return es
}

// legacyHistory builds ops of distinct DIDs in groups that share their
// createdAt millisecond, for ingesting into an upstream.
type legacyHistory struct {
	t     *testing.T
	ids   []*optest.Identity
	gen   []*validate.Op // the genesis op of each of ids
	items []oplog.IngestItem
	ms    time.Time // the millisecond of the last group
}

func (h *legacyHistory) add(at time.Time, did string, op *validate.Op) {
	h.items = append(h.items, oplog.IngestItem{
		Line: int64(len(h.items) + 1), DID: did, CID: op.CID(), Op: op, CreatedAt: at, Raw: op.AppendJSON(nil),
	})
}

// group adds, at the next millisecond (or at the last one, when same is
// set), the genesis ops of n new DIDs.
func (h *legacyHistory) group(n int, same bool) {
	if !same {
		h.ms = h.ms.Add(time.Millisecond)
	}
	for range n {
		id := optest.NewIdentity(h.t, optest.Handle(len(h.ids)), 2)
		h.ids, h.gen = append(h.ids, id), append(h.gen, id.Head)
		h.add(h.ms, id.DID, id.Head)
	}
}

// updates adds, at the next millisecond, an update of each DID given (by
// index), signed by rotation key signer.
func (h *legacyHistory) updates(signer int, idx ...int) {
	h.ms = h.ms.Add(time.Millisecond)
	for _, i := range idx {
		id := h.ids[i]
		op := id.Update(h.t, nil, signer, fmt.Sprintf("u%d-%d.test", i, len(h.items)))
		id.Accept(op)
		h.add(h.ms, id.DID, op)
	}
}

// ingest appends the items added since from to the upstream log.
func (h *legacyHistory) ingest(l *oplog.Log, source string, from int) {
	h.t.Helper()
	res, err := l.Ingest(context.Background(), source, h.items[from:])
	if err != nil || len(res.Rejected) != 0 || len(res.Entries) != len(h.items)-from {
		h.t.Fatalf("ingest into the upstream: %d entries, rejected %+v, %v", len(res.Entries), res.Rejected, err)
	}
}

// checkSameByTime fails unless the mirror holds the upstream's ops, in
// the legacy export's order and with the same nullified flags, every DID
// the same ops, and its logs verify. With seqOrder, the mirror's seq order
// must be the legacy export's order too (it is, for ops taken in one go).
func checkSameByTime(t *testing.T, mirrored, upstream oplog.Store, seqOrder bool) {
	t.Helper()
	want := exportByTime(t, upstream)
	checkEntries(t, "export by time", exportByTime(t, mirrored), want, false)
	if seqOrder {
		for i := range want {
			want[i].Nullified = false // Export does not report it
		}
		checkEntries(t, "export by seq", allOps(t, mirrored), want, false)
	}
	for _, did := range didsOf(want) {
		g, err := mirrored.Ops(context.Background(), did)
		if err != nil {
			t.Fatalf("Ops(%s): %v", did, err)
		}
		w, err := upstream.Ops(context.Background(), did)
		if err != nil {
			t.Fatalf("Ops(%s): %v", did, err)
		}
		checkEntries(t, "ops of "+did, g, w, false)
	}
	verifyStore(t, mirrored)
}

// TestLegacyUpstream mirrors an upstream that pages by createdAt only,
// with up to four ops per millisecond and pages of five, so that pages end
// inside milliseconds: no op may be skipped or taken twice. A first Sync,
// then Run, which polls, takes the ops added since, some of them in the
// millisecond the first Sync ended in.
func TestLegacyUpstream(t *testing.T) {
	ctx := ctxFor(t)
	upLog := newSQLiteLog(t)
	lu := &legacyUpstream{store: upLog.Store()}
	srv := httptest.NewServer(lu)
	t.Cleanup(srv.Close)

	h := &legacyHistory{t: t, ms: t0}
	for _, n := range []int{1, 4, 2, 3, 4, 1, 3, 4, 2, 4, 3} {
		h.group(n, false)
	}
	h.updates(0, 0, 5, 9)
	h.updates(1, 1, 2, 3, 4) // 1 is recovered below
	h.ms = h.ms.Add(time.Hour)
	h.updates(0, 6, 7)
	fork := h.ids[1].Update(t, h.gen[1], 0, "recovered.test")
	h.add(h.ms, h.ids[1].DID, fork) // nullifies its update by key 1
	h.ids[1].Accept(fork)
	h.group(2, false)
	h.ingest(upLog, "seed", 0)
	phase1 := len(h.items)

	mLog := newSQLiteLog(t)
	w := newWaiter()
	m := newMirror(t, srv.URL, mLog, mirror.Config{PageSize: 5, PollInterval: 7 * time.Second, Wait: w.Wait})
	if err := m.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if m.Mode() != mirror.ModeLegacy {
		t.Fatalf("mode %q, want %q", m.Mode(), mirror.ModeLegacy)
	}
	checkSameByTime(t, mLog.Store(), upLog.Store(), true)
	if n := lu.cutsInside(t, exportByTime(t, upLog.Store())); n < 3 {
		t.Fatalf("only %d pages ended inside a millisecond: the test does not test that", n)
	}
	if ds := divergences(t, m); len(ds) != 0 {
		t.Fatalf("divergences from a faithful legacy upstream:%s", describe(ds))
	}
	var nullified int
	for _, e := range exportByTime(t, mLog.Store()) {
		if e.Nullified {
			nullified++
		}
	}
	if nullified != 1 {
		t.Fatalf("%d nullified ops in the mirror, want 1", nullified)
	}

	// More ops upstream: two in the millisecond the mirror ended in (which
	// then holds four), then more groups.
	h.group(2, true)
	h.group(3, false)
	h.updates(0, 10, 11, 12)
	h.group(4, false)

	// Run: Backfill finds nothing new and polls; the test adds the ops
	// during the poll's wait; the next round takes them and polls again.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	if d := w.next(ctx, t); d != 7*time.Second {
		t.Fatalf("Run waited %v, want the poll interval", d)
	}
	if got := len(allOps(t, mLog.Store())); got != phase1 {
		t.Fatalf("the mirror holds %d ops before the new ones are added, want %d", got, phase1)
	}
	h.ingest(upLog, "seed", phase1)
	w.resume()
	if d := w.next(ctx, t); d != 7*time.Second {
		t.Fatalf("Run waited %v, want the poll interval", d)
	}
	checkSameByTime(t, mLog.Store(), upLog.Store(), false)
	if got := len(allOps(t, mLog.Store())); got != len(h.items) {
		t.Fatalf("the mirror holds %d ops, want %d", got, len(h.items))
	}
	if s := m.Status(ctx); s.Mode != mirror.ModeLegacy || s.State != "poll" || s.LagOps != -1 {
		t.Errorf("status while polling: %+v", s)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if ds := divergences(t, m); len(ds) != 0 {
		t.Fatalf("divergences from a faithful legacy upstream:%s", describe(ds))
	}
	if n := lu.other.Load(); n != 0 {
		t.Errorf("%d requests for other paths than /export (a stream?)", n)
	}
}

// TestLegacyMillisecondOverPage: more ops in one millisecond than a page
// holds cannot all be asked for from a legacy upstream. The mirror takes a
// page's worth, says so with a bad_response divergence, and goes on with
// the next millisecond: the skip is never silent.
func TestLegacyMillisecondOverPage(t *testing.T) {
	ctx := ctxFor(t)
	upLog := newSQLiteLog(t)
	srv := httptest.NewServer(&legacyUpstream{store: upLog.Store()})
	t.Cleanup(srv.Close)
	h := &legacyHistory{t: t, ms: t0}
	h.group(1, false)
	h.group(7, false)
	h.group(1, false)
	h.ingest(upLog, "seed", 0)
	all := exportByTime(t, upLog.Store())
	crowded := all[1].CreatedAt

	mLog := newSQLiteLog(t)
	m := newMirror(t, srv.URL, mLog, mirror.Config{PageSize: 5})
	if err := m.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	// The first op, the first five of the crowded millisecond in
	// (createdAt, cid) order, the last op.
	want := append(append([]oplog.Entry{}, all[:6]...), all[8])
	checkEntries(t, "mirror", exportByTime(t, mLog.Store()), want, false)
	ds := divergences(t, m)
	if len(ds) != 1 || ds[0].Kind != string(oplog.KindBadResponse) ||
		!strings.Contains(ds[0].Reason, "at least 5 ops at "+string(validate.AppendTimestamp(nil, crowded))) {
		t.Fatalf("divergences:%s\nwant one bad_response about the ops at %s", describe(ds), crowded)
	}
}

// waiter is a Config.Wait that hands each wait to the test and returns
// when the test resumes it.
type waiter struct {
	calls   chan time.Duration
	resumes chan struct{}
}

func newWaiter() *waiter {
	return &waiter{calls: make(chan time.Duration), resumes: make(chan struct{})}
}

func (w *waiter) Wait(ctx context.Context, d time.Duration) error {
	select {
	case w.calls <- d:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-w.resumes:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// next returns the duration of the next wait (which then waits for
// resume).
func (w *waiter) next(ctx context.Context, t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-w.calls:
		return d
	case <-ctx.Done():
		t.Fatal("Run never waited")
		return 0
	}
}

func (w *waiter) resume() { w.resumes <- struct{}{} }

// TestDivergencesHandler checks the HTTP handler's answers to bad input
// and other paths.
func TestDivergencesHandler(t *testing.T) {
	m := newMirror(t, "http://upstream.invalid", newSQLiteLog(t), mirror.Config{})
	for _, target := range []string{
		"/_mirror/divergences?after=abc",
		"/_mirror/divergences?after=-1",
		"/_mirror/divergences?after=1.5",
		"/_mirror/divergences?limit=0",
		"/_mirror/divergences?limit=1001",
		"/_mirror/divergences?limit=x",
		"/_mirror/divergences?after=abc&limit=0",
	} {
		var body map[string]any
		if code := getJSON(t, m.Handler(), target, &body); code != http.StatusBadRequest {
			t.Errorf("GET %s: status %d, want 400", target, code)
		}
		if msg, ok := body["message"].(string); !ok || msg == "" || len(body) != 1 {
			t.Errorf("GET %s: %v, want {\"message\": …}", target, body)
		}
	}
	var body map[string]any
	if code := getJSON(t, m.Handler(), "/_mirror/other", &body); code != http.StatusNotFound || body["message"] != "Not Found" {
		t.Errorf("GET /_mirror/other: %d %v", code, body)
	}
	var page struct {
		Divergences []divergence `json:"divergences"`
		Cursor      *int64       `json:"cursor"`
	}
	if code := getJSON(t, m.Handler(), "/_mirror/divergences?after=7&limit=1000", &page); code != http.StatusOK ||
		page.Divergences == nil || len(page.Divergences) != 0 || page.Cursor == nil || *page.Cursor != 7 {
		t.Errorf("GET /_mirror/divergences of none: %d %+v", code, page)
	}
}

// TestNewRejectsBadConfig: the upstream must be an http(s) URL without
// query or fragment, and a log is required.
func TestNewRejectsBadConfig(t *testing.T) {
	l := newSQLiteLog(t)
	for _, u := range []string{"", "ftp://x.test", "http://", "x.test", "http://x.test/?a=1", "http://x.test/#f"} {
		if _, err := mirror.New(mirror.Config{Upstream: u, Log: l}); err == nil {
			t.Errorf("New with upstream %q succeeded", u)
		}
	}
	if _, err := mirror.New(mirror.Config{Upstream: "http://x.test"}); err == nil {
		t.Error("New without a log succeeded")
	}
	m, err := mirror.New(mirror.Config{Upstream: "https://x.test/base/", Log: l})
	if err != nil {
		t.Fatal(err)
	}
	if m.Source() != "upstream:https://x.test/base" || m.Mode() != mirror.ModeUnknown {
		t.Errorf("source %q, mode %q", m.Source(), m.Mode())
	}
}
