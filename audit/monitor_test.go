package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/audit"
	"github.com/plcdir/plc/internal/optest"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/storetest"
	"github.com/plcdir/plc/oplog/tamper"
	plctlog "github.com/plcdir/plc/tlog"
	"github.com/plcdir/plc/validate"
)

// monSwitch serves whichever handler is current: a log, then another.
type monSwitch struct {
	mu sync.Mutex
	h  http.Handler
}

func (s *monSwitch) set(h http.Handler) {
	s.mu.Lock()
	s.h = h
	s.mu.Unlock()
}

func (s *monSwitch) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	h := s.h
	s.mu.Unlock()
	h.ServeHTTP(w, r)
}

func monServe(t *testing.T, h http.Handler) (*monSwitch, string) {
	t.Helper()
	sw := &monSwitch{h: h}
	srv := httptest.NewServer(sw)
	t.Cleanup(srv.Close)
	return sw, srv.URL
}

// monTLog is a directory's transparency log over s: it signs whenever the
// log grew.
func monTLog(s oplog.Store, key *plctlog.Key) *plctlog.TLog {
	return plctlog.New(s, key, plctlog.Options{Interval: time.Nanosecond})
}

func monSign(t *testing.T, tl *plctlog.TLog) oplog.Checkpoint {
	t.Helper()
	cp, _, err := tl.Sign(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

func monOpen(t *testing.T, url, dir, vkey string, progress *storetest.Buffer, wait func(context.Context, time.Duration) error) *audit.Monitor {
	t.Helper()
	opts := audit.MonitorOptions{URL: url, Dir: dir, VKey: vkey, Wait: wait}
	if progress != nil {
		opts.Progress = progress
	}
	m, err := audit.OpenMonitor(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// monInconsistent fails unless err is an inconsistency of kind with an
// evidence file in dir, which it returns.
func monInconsistent(t *testing.T, err error, kind, dir string) audit.Evidence {
	t.Helper()
	var inc *audit.Inconsistency
	if !errors.As(err, &inc) || inc.Kind != kind {
		t.Fatalf("got %v, want an inconsistency of kind %s", err, kind)
	}
	if filepath.Dir(inc.Evidence) != dir {
		t.Fatalf("evidence %s is not in %s", inc.Evidence, dir)
	}
	b, err := os.ReadFile(inc.Evidence)
	if err != nil {
		t.Fatal(err)
	}
	var ev audit.Evidence
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatalf("evidence %s: %v\n%s", inc.Evidence, err, b)
	}
	if ev.Kind != kind || ev.Reason != inc.Reason || ev.Time.IsZero() || ev.URL == "" || ev.Checkpoint == "" {
		t.Fatalf("evidence %s:\n%s", inc.Evidence, b)
	}
	return ev
}

func monState(t *testing.T, dir string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// monSameLog fails unless the monitor's replayed log holds the same
// leaves as the directory's store.
func monSameLog(t *testing.T, m *audit.Monitor, s oplog.Store) {
	t.Helper()
	ctx := context.Background()
	want, err := s.Export(ctx, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Store().Export(ctx, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("the monitor replayed %d ops, the log has %d", len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(oplog.LeafData(&got[i]), oplog.LeafData(&want[i])) {
			t.Fatalf("the monitor's op %d differs from the log's", got[i].Seq)
		}
	}
}

func TestMonitorFollowsAGrowingLog(t *testing.T) {
	ctx := context.Background()
	lines := storetest.Corpus(t, 31, 900)
	s, _ := storetest.SQLite(t)
	key := wtKey(t, "plc.test")
	storetest.Load(t, s, lines[:300])
	tl := monTLog(s, key)
	_, url := monServe(t, tl)
	dir := t.TempDir()
	var progress storetest.Buffer

	m := monOpen(t, url, dir, key.VKey, &progress, nil)
	res, err := m.Round(ctx)
	if err != nil || res != (audit.MonitorRound{Previous: 0, Size: 300, Entries: 300}) {
		t.Fatalf("first round: %+v, %v\n%s", res, err, progress.String())
	}
	cp, err := s.Checkpoint(ctx)
	if err != nil || !bytes.Equal(monState(t, dir), cp.Note) {
		t.Fatalf("the state is not the served checkpoint: %v", err)
	}
	res, err = m.Round(ctx)
	if err != nil || res != (audit.MonitorRound{Previous: 300, Size: 300}) {
		t.Fatalf("a round without news: %+v, %v", res, err)
	}
	m.Close()

	// A new process resumes from the state directory.
	storetest.Load(t, s, lines[300:555])
	monSign(t, tl)
	m = monOpen(t, url, dir, key.VKey, &progress, nil)
	res, err = m.Round(ctx)
	if err != nil || res != (audit.MonitorRound{Previous: 300, Size: 555, Entries: 255}) {
		t.Fatalf("resumed round: %+v, %v\n%s", res, err, progress.String())
	}
	m.Close()

	// Run: the log grows between rounds.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	waits := 0
	wait := func(ctx context.Context, d time.Duration) error {
		if d != 7*time.Second {
			t.Errorf("waited %s", d)
		}
		waits++
		switch waits {
		case 1:
			storetest.Load(t, s, lines[555:700])
			monSign(t, tl)
		case 2:
			storetest.Load(t, s, lines[700:900])
			monSign(t, tl)
		default:
			cancel()
			return ctx.Err()
		}
		return nil
	}
	m = monOpen(t, url, dir, key.VKey, &progress, wait)
	if err := m.Run(ctx, 7*time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v\n%s", err, progress.String())
	}
	for _, want := range []string{
		"ok: checkpoint of size 555, unchanged",
		"ok: checkpoint of size 700 (was 555) verified, 145 new entries replayed",
		"ok: checkpoint of size 900 (was 700) verified, 200 new entries replayed",
	} {
		if !strings.Contains(progress.String(), want) {
			t.Fatalf("progress does not say %q:\n%s", want, progress.String())
		}
	}
	monSameLog(t, m, s)
	cp, _ = s.Checkpoint(context.Background())
	if !bytes.Equal(monState(t, dir), cp.Note) {
		t.Fatal("the state is not the latest checkpoint")
	}
	if evs, _ := filepath.Glob(filepath.Join(dir, "evidence-*")); len(evs) != 0 {
		t.Fatalf("evidence written for a sound log: %v", evs)
	}

	// An older checkpoint (a stale cache) is no inconsistency.
	old, err := note.Sign(&note.Note{Text: plc.CheckpointBody{Origin: "plc.test", Size: 555, Root: rootAt(t, s, 555)}.Format()}, key.Signer)
	if err != nil {
		t.Fatal(err)
	}
	sw, url2 := monServe(t, tl)
	sw.set(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/tlog/checkpoint" {
			w.Write(old)
			return
		}
		tl.ServeHTTP(w, r)
	}))
	m2 := monOpen(t, url2, dir, key.VKey, &progress, nil)
	res, err = m2.Round(context.Background())
	if err != nil || !res.Stale || res.Size != 555 || res.Previous != 900 {
		t.Fatalf("stale checkpoint: %+v, %v", res, err)
	}
}

func rootAt(t *testing.T, s oplog.Store, n int64) tlog.Hash {
	t.Helper()
	h, err := tlog.TreeHash(n, oplog.HashReader(context.Background(), s))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestMonitorDetectsAFork(t *testing.T) {
	ctx := context.Background()
	key := wtKey(t, "plc.test")
	a, _ := storetest.SQLite(t)
	storetest.Load(t, a, storetest.Corpus(t, 31, 300))
	b, _ := storetest.SQLite(t)
	storetest.Load(t, b, storetest.Corpus(t, 32, 400)[:300])
	c, _ := storetest.SQLite(t)
	storetest.Load(t, c, storetest.Corpus(t, 32, 400))
	tla, tlb, tlc := monTLog(a, key), monTLog(b, key), monTLog(c, key)
	sw, url := monServe(t, tla)
	for _, tc := range []struct {
		name  string
		other *plctlog.TLog
		size  int64
	}{{"SameSize", tlb, 300}, {"Larger", tlc, 400}} {
		t.Run(tc.name, func(t *testing.T) {
			sw.set(tla)
			dir := t.TempDir()
			m := monOpen(t, url, dir, key.VKey, nil, nil)
			if _, err := m.Round(ctx); err != nil {
				t.Fatal(err)
			}
			seen := monState(t, dir)
			// The same key signs another tree: a split view.
			sw.set(tc.other)
			_, err := m.Round(ctx)
			ev := monInconsistent(t, err, audit.KindFork, dir)
			if ev.PreviousCheckpoint != string(seen) {
				t.Fatalf("evidence's previous checkpoint:\n%s\nwant\n%s", ev.PreviousCheckpoint, seen)
			}
			// Both notes verify with the log's key: proof of the fork.
			pb, _, err1 := plctlog.OpenCheckpoint([]byte(ev.PreviousCheckpoint), key.Verifier)
			nb, _, err2 := plctlog.OpenCheckpoint([]byte(ev.Checkpoint), key.Verifier)
			if err1 != nil || err2 != nil || pb.Size != 300 || nb.Size != tc.size || pb.Root == nb.Root {
				t.Fatalf("evidence checkpoints: %+v %v, %+v %v", pb, err1, nb, err2)
			}
			if tc.size > 300 && len(ev.Proof) == 0 {
				t.Fatal("no proof in the evidence")
			}
			if !bytes.Equal(monState(t, dir), seen) {
				t.Fatal("the state moved to the forked checkpoint")
			}
		})
	}
}

func TestMonitorDetectsTamperedEntries(t *testing.T) {
	// The database's owner changes, deletes or reorders ops behind the
	// log's back; the server goes on serving. Seq 350 lies in the full
	// tile 256…511, so a deleted row shifts the entries that follow it.
	for _, tc := range []struct {
		name  string
		stmts []string
	}{
		{"change", []string{`UPDATE operations SET op = (SELECT op FROM operations WHERE seq = 5) WHERE seq = 350`}},
		{"delete", []string{`DELETE FROM nullified WHERE seq = 350`, `DELETE FROM operations WHERE seq = 350`}},
		{"reorder", []string{
			`UPDATE operations SET seq = -1 WHERE seq = 350`,
			`UPDATE operations SET seq = 350 WHERE seq = 351`,
			`UPDATE operations SET seq = 351 WHERE seq = -1`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			lines := storetest.Corpus(t, 31, 600)
			s, path := storetest.SQLite(t)
			key := wtKey(t, "plc.test")
			storetest.Load(t, s, lines[:300])
			tl := monTLog(s, key)
			_, url := monServe(t, tl)
			dir := t.TempDir()
			m := monOpen(t, url, dir, key.VKey, nil, nil)
			if _, err := m.Round(ctx); err != nil {
				t.Fatal(err)
			}
			storetest.Load(t, s, lines[300:])
			monSign(t, tl)
			before, err := s.Export(ctx, 349, 1)
			if err != nil {
				t.Fatal(err)
			}
			tamper.Exec(t, path, tc.stmts...)
			_, err = m.Round(ctx)
			ev := monInconsistent(t, err, audit.KindLeafMismatch, dir)
			if ev.Index == nil || *ev.Index != 349 || len(ev.Leaf) == 0 {
				t.Fatalf("evidence index %v, leaf %d bytes", ev.Index, len(ev.Leaf))
			}
			// The evidence holds the authenticated tile the leaf contradicts.
			tile := ev.Tiles["tile/0/001"]
			if len(tile) != 256*tlog.HashSize {
				t.Fatalf("evidence tiles: %d, want tile/0/001", len(ev.Tiles))
			}
			var want tlog.Hash
			copy(want[:], tile[(349-256)*tlog.HashSize:])
			if tlog.RecordHash(ev.Leaf) == want {
				t.Fatal("the evidence leaf matches its tile")
			}
			if tlog.RecordHash(oplog.LeafData(&before[0])) != want {
				t.Fatal("the tile does not hold the original leaf")
			}
			if n, _ := m.Store().TreeSize(ctx); n != 300 {
				t.Fatalf("the monitor replayed up to %d", n)
			}
		})
	}
}

func TestMonitorWrongKey(t *testing.T) {
	ctx := context.Background()
	s, _ := storetest.SQLite(t)
	storetest.Load(t, s, storetest.Corpus(t, 31, 20))
	key := wtKey(t, "plc.test")
	_, url := monServe(t, monTLog(s, key))
	for _, other := range []*plctlog.Key{wtKey(t, "plc.test"), wtKey(t, "elsewhere.test")} {
		dir := t.TempDir()
		_, err := monOpen(t, url, dir, other.VKey, nil, nil).Round(ctx)
		ev := monInconsistent(t, err, audit.KindBadSignature, dir)
		if !strings.Contains(ev.Reason, "not signed by the key "+other.Origin()) || !strings.Contains(ev.Reason, "plc.test+") {
			t.Fatalf("reason: %s", ev.Reason)
		}
		if _, err := os.Stat(filepath.Join(dir, "checkpoint")); !os.IsNotExist(err) {
			t.Fatalf("state written: %v", err)
		}
	}
	// A state directory of another log is refused.
	dir := t.TempDir()
	if _, err := monOpen(t, url, dir, key.VKey, nil, nil).Round(ctx); err != nil {
		t.Fatal(err)
	}
	_, err := audit.OpenMonitor(audit.MonitorOptions{URL: url, Dir: dir, VKey: wtKey(t, "plc.test").VKey})
	if !errors.Is(err, audit.ErrMonitorUsage) || !strings.Contains(err.Error(), "another log") {
		t.Fatalf("OpenMonitor over another log's state: %v", err)
	}
	for _, tc := range []struct{ url, vkey, want string }{
		{"ftp://x", key.VKey, "http:// or https://"},
		{url + "?x=1", key.VKey, "without query"},
		{url, "nonsense", "verifier key"},
	} {
		if _, err := audit.OpenMonitor(audit.MonitorOptions{URL: tc.url, Dir: t.TempDir(), VKey: tc.vkey}); !errors.Is(err, audit.ErrMonitorUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("OpenMonitor(%q, %q): %v, want %q", tc.url, tc.vkey, err, tc.want)
		}
	}
}

// fakeLog is a transparency log made of given leaves, served the way
// tlog-tiles says, independently of audit's server: it lets the tests
// craft what no honest directory would serve.
type fakeLog struct {
	key    *plctlog.Key
	leaves [][]byte
	hashes []tlog.Hash // stored hashes
	root   tlog.Hash
	// bundle and tile, if set, alter what is served.
	bundle func(n int64, b []byte) []byte
	tile   func(path string, b []byte) []byte
}

func newFakeLog(t *testing.T, key *plctlog.Key, leaves [][]byte) *fakeLog {
	t.Helper()
	f := &fakeLog{key: key, leaves: leaves}
	for i, l := range leaves {
		hs, err := tlog.StoredHashes(int64(i), l, f)
		if err != nil {
			t.Fatal(err)
		}
		f.hashes = append(f.hashes, hs...)
	}
	var err error
	if f.root, err = tlog.TreeHash(int64(len(leaves)), f); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fakeLog) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		if x >= int64(len(f.hashes)) {
			return nil, fmt.Errorf("no hash %d", x)
		}
		out[i] = f.hashes[x]
	}
	return out, nil
}

func (f *fakeLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	size := int64(len(f.leaves))
	if r.URL.Path == "/tlog/checkpoint" {
		msg, err := note.Sign(&note.Note{Text: plc.CheckpointBody{Origin: f.key.Origin(), Size: size, Root: f.root}.Format()}, f.key.Signer)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Write(msg)
		return
	}
	p, ok := strings.CutPrefix(r.URL.Path, "/tlog/tile/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	goPath := "tile/8/" + p
	if rest, ok := strings.CutPrefix(p, "entries/"); ok {
		goPath = "tile/8/data/" + rest
	}
	tile, err := tlog.ParseTilePath(goPath)
	if err != nil || (tile.N*256+int64(tile.W))<<(8*max(tile.L, 0)) > size {
		http.NotFound(w, r)
		return
	}
	var b []byte
	if tile.L < 0 {
		for _, l := range f.leaves[tile.N*256 : tile.N*256+int64(tile.W)] {
			b = append(b, byte(len(l)>>8), byte(len(l)))
			b = append(b, l...)
		}
		if f.bundle != nil {
			b = f.bundle(tile.N, b)
		}
	} else {
		if b, err = tlog.ReadTileData(tile, f); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		if f.tile != nil {
			b = f.tile("tile/"+p, b)
		}
	}
	w.Write(b)
}

// monLeaf is the leaf of op as the entry with seq.
func monLeaf(seq int64, did string, op *validate.Op, at time.Time) []byte {
	return oplog.LeafData(&oplog.Entry{Seq: seq, DID: did, CID: op.CID(), CreatedAt: at, Op: op.SignedCBOR()})
}

func TestMonitorCraftedLogs(t *testing.T) {
	ctx := context.Background()
	key := wtKey(t, "plc.test")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// A sound log: 5 DIDs, each updated once.
	var ids []*optest.Identity
	var sound [][]byte
	var ats []time.Time
	add := func(did string, op *validate.Op) {
		at := t0.Add(time.Duration(len(sound)) * time.Second)
		ats = append(ats, at)
		sound = append(sound, monLeaf(int64(len(sound)+1), did, op, at))
	}
	for i := range 5 {
		id := optest.NewIdentity(t, optest.Handle(i), 2)
		ids = append(ids, id)
		add(id.DID, id.Head)
	}
	for _, id := range ids {
		op := id.Update(t, nil, 0, "new-"+id.DID[8:16]+".test")
		id.Accept(op)
		add(id.DID, op)
	}
	n := int64(len(sound))
	next := t0.Add(time.Hour)
	stranger := optest.NewKey(t, false)
	forged := func() *validate.Op {
		body := ids[0].Body
		body.Prev = ids[0].Head.CID()
		body.AlsoKnownAs = []string{"at://stolen.test"}
		return optest.Sign(t, body, stranger)
	}()
	with := func(extra ...[]byte) [][]byte { return append(append([][]byte(nil), sound...), extra...) }
	widerSeq := func() []byte {
		l := monLeaf(n+1, ids[1].DID, ids[1].Update(t, nil, 0, "w.test"), next)
		i := bytes.Index(l, []byte("cseq")) + 4
		return append(append(append([]byte(nil), l[:i]...), 0x18, l[i]), l[i+1:]...)
	}()

	for _, tc := range []struct {
		name   string
		leaves [][]byte
		alter  func(f *fakeLog)
		kind   string // "": sound
		reason string
	}{
		{name: "Sound", leaves: sound},
		{name: "Empty", leaves: nil},
		{"ForgedSignature", with(monLeaf(n+1, ids[0].DID, forged, next)), nil, audit.KindRejectedEntry, "invalid signature"},
		{"GenesisAgain", with(monLeaf(n+1, ids[2].DID, optest.NewIdentity(t, "x.test", 1).Head, next)), nil, audit.KindRejectedEntry, "not correctly ordered"},
		{"UpdateOfAnUnknownDID", with(monLeaf(n+1, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", ids[3].Update(t, nil, 0, "z.test"), next)), nil, audit.KindRejectedEntry, ""},
		{"WrongSeq", with(monLeaf(n+2, ids[1].DID, ids[1].Update(t, nil, 0, "s.test"), next)), nil, audit.KindBadLeaf, "its seq is"},
		{"NotCBOR", with([]byte("hello")), nil, audit.KindBadLeaf, "not a leaf"},
		{"NotCanonical", with(widerSeq), nil, audit.KindBadLeaf, "canonical"},
		{"WrongCID", with(oplog.LeafData(&oplog.Entry{Seq: n + 1, DID: ids[1].DID, CID: ids[0].Head.CID(), CreatedAt: next, Op: ids[1].Update(t, nil, 0, "c.test").SignedCBOR()})), nil, audit.KindBadLeaf, "is not its op's CID"},
		{"BundleWithTrailingBytes", sound, func(f *fakeLog) {
			f.bundle = func(_ int64, b []byte) []byte { return append(b, 0) }
		}, audit.KindBadBundle, "truncated length"},
		{"BundleWithOtherLeaf", sound, func(f *fakeLog) {
			f.bundle = func(_ int64, b []byte) []byte { b[len(b)-1] ^= 1; return b }
		}, audit.KindLeafMismatch, "does not hash to its leaf hash"},
		{"TileAltered", sound, func(f *fakeLog) {
			f.tile = func(_ string, b []byte) []byte { b[0] ^= 1; return b }
		}, audit.KindBadTile, "do not hash to the signed root"},
		{"TileTooShort", sound, func(f *fakeLog) {
			f.tile = func(_ string, b []byte) []byte { return b[:len(b)-1] }
		}, audit.KindBadTile, "bytes, want"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeLog(t, key, tc.leaves)
			if tc.alter != nil {
				tc.alter(f)
			}
			_, url := monServe(t, f)
			dir := t.TempDir()
			m := monOpen(t, url, dir, key.VKey, nil, nil)
			res, err := m.Round(ctx)
			if tc.kind == "" {
				if err != nil || res.Size != int64(len(tc.leaves)) || res.Entries != res.Size {
					t.Fatalf("round: %+v, %v", res, err)
				}
				if got := rootAt(t, m.Store(), res.Size); got != f.root {
					t.Fatal("the monitor's tree is not the log's")
				}
				return
			}
			ev := monInconsistent(t, err, tc.kind, dir)
			if !strings.Contains(ev.Reason, tc.reason) {
				t.Fatalf("reason %q does not say %q", ev.Reason, tc.reason)
			}
			if (tc.kind == audit.KindRejectedEntry || tc.kind == audit.KindBadLeaf) &&
				(ev.Index == nil || *ev.Index != n || !bytes.Equal(ev.Leaf, tc.leaves[n])) {
				t.Fatalf("evidence index %v, leaf %q", ev.Index, ev.Leaf)
			}
			// Nothing of the failing bundle was replayed, and the next round
			// finds the same.
			if size, _ := m.Store().TreeSize(ctx); size != 0 {
				t.Fatalf("the monitor replayed %d entries", size)
			}
			_, err = m.Round(ctx)
			monInconsistent(t, err, tc.kind, dir)
			if evs, _ := filepath.Glob(filepath.Join(dir, "evidence-*.json")); len(evs) != 2 {
				t.Fatalf("evidence files: %v", evs)
			}
		})
	}
}
