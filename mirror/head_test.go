package mirror_test

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"github.com/plcdir/plc/internal/testclock"
	"github.com/plcdir/plc/mirror"
	"github.com/plcdir/plc/oplog"
)

// headChecks counts the requests of the head check of a mirror whose
// cursor is at seq: GET /export?after=<seq-1>.
func (s *script) headChecks(seq int64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[seq-1]
}

// TestUpstreamTruncatedAfterServing: an upstream serves its log, then
// drops its last ops. Its pages after the mirror's cursor are empty, as an
// idle upstream's would be; the head check (at most once per poll
// interval) finds that the op at the cursor is gone and records it once,
// with the upstream's answer as evidence. When the upstream later serves
// another op at that seq, that is recorded too.
func TestUpstreamTruncatedAfterServing(t *testing.T) {
	f := newFixture(t)
	op := f.byID
	ctx := ctxFor(t)
	lines := numbered(f.ops)
	s := &script{lines: lines, ops: f.ops}
	url := newScript(t, s)
	clock := testclock.New(hostileNow)
	const poll = time.Minute
	dsn := sqliteBackend.dsn(t)
	start := func() *mirror.Mirror {
		cfg := mirror.Config{PageSize: hostilePage, PollInterval: poll, Now: clock.Now}
		return newMirror(t, url, newLog(t, openStore(t, dsn)), cfg)
	}
	sync := func(m *mirror.Mirror) {
		t.Helper()
		if err := m.Sync(ctx); err != nil {
			t.Fatalf("Sync: %v", err)
		}
	}
	m := start()
	// Two full pages, then an empty one: the upstream has nothing after
	// seq 8, and still serves seq 8 as it was.
	sync(m)
	checkStoreHolds(t, openStore(t, dsn), f.ops)
	if n := s.headChecks(8); n != 1 {
		t.Fatalf("%d head checks after the first sync, want 1", n)
	}
	sync(m) // within the poll interval: no check
	clock.Advance(poll)
	sync(m)
	if n := s.headChecks(8); n != 2 {
		t.Fatalf("%d head checks, want 2 (one per poll interval)", n)
	}
	if ds := divergences(t, m); len(ds) != 0 {
		t.Fatalf("divergences of a faithful upstream:%s", describe(ds))
	}

	// The upstream loses its last two ops.
	s.set(func(s *script) { s.lines = lines[:6] })
	clock.Advance(poll)
	sync(m)
	ds := divergences(t, m)
	if len(ds) != 1 {
		t.Fatalf("divergences:%s\nwant one", describe(ds))
	}
	checkDivergence(t, ds[0], oplog.KindHistoryRewrite, op["D1"].did, op["D1"].op.CID(),
		"seq 8, the last op this mirror took from the upstream ("+op["D1"].op.CID()+" of "+op["D1"].did+"), is gone from its export: asked for the op after seq 7, it answered nothing", []byte{})

	// Found again at the next checks, by this mirror and by the next one
	// on the same database: recorded once.
	sync(m)
	clock.Advance(poll)
	sync(m)
	m = start()
	sync(m)
	if n := s.headChecks(8); n != 5 {
		t.Fatalf("%d head checks, want 5", n)
	}
	if ds := divergences(t, m); len(ds) != 1 {
		t.Fatalf("divergences:%s\nwant still one", describe(ds))
	}

	// It grows again, with another op at seq 8.
	e := newcomer(t, "regrown.test", op["D1"].at)
	regrown := seqLine(e, 8)
	s.set(func(s *script) { s.lines = append(append([]sline{}, lines[:7]...), sline{8, regrown}) })
	clock.Advance(poll)
	sync(m)
	ds = divergences(t, m)
	if len(ds) != 2 {
		t.Fatalf("divergences:%s\nwant two", describe(ds))
	}
	checkDivergence(t, ds[1], oplog.KindHistoryRewrite, op["D1"].did, op["D1"].op.CID(),
		"the upstream now serves another op at seq 8 than the one this mirror took from it there", regrown)
	checkStoreHolds(t, openStore(t, dsn), f.ops)

	// An answer that is not an export line is a bad response.
	s.set(func(s *script) {
		s.fault = func(w http.ResponseWriter, after int64, count, call int) bool {
			if after != 7 {
				return false
			}
			w.Write([]byte("<html>maintenance</html>"))
			return true
		}
	})
	clock.Advance(poll)
	if err := m.Sync(ctx); err == nil {
		t.Fatal("Sync with a head check answered by garbage succeeded")
	}
	ds = divergences(t, m)
	if len(ds) != 3 {
		t.Fatalf("divergences:%s\nwant three", describe(ds))
	}
	checkDivergence(t, ds[2], oplog.KindBadResponse, "", "", "the first line is not an export line", []byte("<html>maintenance</html>"))
}

// TestHeadCheckOfARejectedLastLine: when the line at the mirror's cursor
// was rejected (a forged op), the head check compares the upstream's
// answer with that line, kept as evidence: the same line is fine, another
// op at its seq is a history rewrite.
func TestHeadCheckOfARejectedLastLine(t *testing.T) {
	f := newFixture(t)
	op := f.byID
	ctx := ctxFor(t)
	forged := forgedAfter(t, op["D1"], op["D1"].at.Add(time.Second))
	lines := numbered(append(append([]rec{}, f.ops...), forged)) // pages of 4, 4, 1
	s := &script{lines: lines, ops: f.ops}
	url := newScript(t, s)
	clock := testclock.New(hostileNow)
	l := newSQLiteLog(t)
	m := newMirror(t, url, l, mirror.Config{PageSize: hostilePage, PollInterval: time.Minute, Now: clock.Now})
	syncAgain := func() {
		t.Helper()
		clock.Advance(time.Minute)
		checks := s.headChecks(9)
		if err := m.Sync(ctx); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		if n := s.headChecks(9) - checks; n != 1 {
			t.Fatalf("%d head checks in a sync that found nothing new, want 1", n)
		}
	}
	if err := m.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	checkStoreHolds(t, l.Store(), f.ops)
	ds := divergences(t, m)
	if len(ds) != 1 || ds[0].Kind != string(oplog.KindInvalidOp) {
		t.Fatalf("divergences:%s\nwant the forged op", describe(ds))
	}
	// The upstream serves the rejected line as it was; then with other
	// spacing, which says the same.
	syncAgain()
	other := bytes.Replace(lines[8].b, []byte(`"seq":9`), []byte(`"seq": 9`), 1)
	if bytes.Equal(other, lines[8].b) {
		t.Fatal("the line was not changed")
	}
	s.set(func(s *script) { s.lines = append(append([]sline{}, lines[:8]...), sline{9, other}) })
	syncAgain()
	if ds := divergences(t, m); len(ds) != 1 {
		t.Fatalf("divergences:%s\nwant still one", describe(ds))
	}
	// Another op at seq 9.
	e := newcomer(t, "instead.test", forged.at)
	instead := seqLine(e, 9)
	s.set(func(s *script) { s.lines = append(append([]sline{}, lines[:8]...), sline{9, instead}) })
	syncAgain()
	ds = divergences(t, m)
	if len(ds) != 2 {
		t.Fatalf("divergences:%s\nwant two", describe(ds))
	}
	checkDivergence(t, ds[1], oplog.KindHistoryRewrite, forged.did, forged.op.CID(), "another op at seq 9", instead)
	checkStoreHolds(t, l.Store(), f.ops)
}
