package mirror_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/plcdir/plc/internal/optest"
	"github.com/plcdir/plc/mirror"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// A scripted seq-mode upstream: it serves pages of lines built from valid
// ops, with faults injected by each test.

// sline is one line the script serves; seq places it (pages hold the
// lines with seq > after, in list order), b is what is sent.
type sline struct {
	seq int64
	b   []byte
}

// seqLine renders r as a seq-mode export line with seq.
func seqLine(r rec, seq int64) []byte {
	return validate.AppendSequencedJSON(nil, r.did, r.op, r.at, seq)
}

// numbered renders recs as lines with seqs 1, 2, 3…
func numbered(recs []rec) []sline {
	out := make([]sline, len(recs))
	for i, r := range recs {
		out[i] = sline{int64(i + 1), seqLine(r, int64(i+1))}
	}
	return out
}

type script struct {
	mu    sync.Mutex
	lines []sline
	ops   []rec // the valid ops, for the audit logs
	calls map[int64]int
	// fault, when set, may answer GET /export?after=after (the call-th
	// request for that after, from 0) itself: it returns true if it did.
	fault func(w http.ResponseWriter, after int64, count, call int) bool
	// audit overrides the audit log of a DID.
	audit map[string]func(w http.ResponseWriter)
	// stream, when set, serves GET /export/stream.
	stream http.HandlerFunc
}

func newScript(t *testing.T, s *script) string {
	t.Helper()
	if s.calls == nil {
		s.calls = map[int64]int{}
	}
	if s.audit == nil {
		s.audit = map[string]func(http.ResponseWriter){}
	}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv.URL
}

func (s *script) set(f func(s *script)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *script) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	switch {
	case path == "/export":
		q := r.URL.Query()
		after, err1 := strconv.ParseInt(q.Get("after"), 10, 64)
		count, err2 := strconv.Atoi(q.Get("count"))
		if err1 != nil || err2 != nil {
			http.Error(w, "bad query", http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		call := s.calls[after]
		s.calls[after]++
		fault := s.fault
		var lines [][]byte
		for _, l := range s.lines {
			if l.seq > after && len(lines) < count {
				lines = append(lines, l.b)
			}
		}
		s.mu.Unlock()
		if fault != nil && fault(w, after, count, call) {
			return
		}
		w.Header().Set("Content-Type", "application/jsonlines")
		w.Write(bytes.Join(lines, []byte{'\n'}))
	case path == "/export/stream":
		s.mu.Lock()
		stream := s.stream
		s.mu.Unlock()
		if stream == nil {
			http.NotFound(w, r)
			return
		}
		stream(w, r)
	case strings.HasSuffix(path, "/log/audit"):
		did := strings.TrimSuffix(strings.TrimPrefix(path, "/"), "/log/audit")
		s.mu.Lock()
		override := s.audit[did]
		body := auditLog(s.ops, did, nil)
		s.mu.Unlock()
		if override != nil {
			override(w)
			return
		}
		if body == nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Write(body)
	default:
		http.NotFound(w, r)
	}
}

// auditEntry is an entry of an audit log the script serves.
type auditEntry struct {
	r         rec
	nullified bool
}

// auditLog renders the audit log of did's ops among ops (nil when it has
// none), through edit if set.
func auditLog(ops []rec, did string, edit func([]auditEntry) []auditEntry) []byte {
	var es []auditEntry
	for _, r := range ops {
		if r.did == did {
			es = append(es, auditEntry{r: r})
		}
	}
	if edit != nil {
		es = edit(es)
	}
	if es == nil {
		return nil
	}
	b := []byte{'['}
	for i, e := range es {
		if i > 0 {
			b = append(b, ',')
		}
		b = validate.AppendAuditEntryJSON(b, e.r.did, e.r.op, e.nullified, e.r.at)
	}
	return append(b, ']')
}

// hostileNow is the mirror's clock in these tests: the createdAt of the
// divergences it records itself.
var hostileNow = t0.Add(time.Hour)

const (
	hostilePage    = 4
	hostileMaxBody = 8 << 10
)

// newHostileMirror builds a mirror of the script at url into a fresh
// SQLite log: pages of four, bodies of at most 8 KiB.
func newHostileMirror(t *testing.T, url string, cfg mirror.Config) (*mirror.Mirror, *oplog.Log) {
	t.Helper()
	l := newSQLiteLog(t)
	cfg.PageSize, cfg.MaxBody = hostilePage, hostileMaxBody
	cfg.Now = func() time.Time { return hostileNow }
	return newMirror(t, url, l, cfg), l
}

// checkAbsent fails unless s has nothing of did.
func checkAbsent(t *testing.T, s oplog.Store, did string) {
	t.Helper()
	es, err := s.Ops(context.Background(), did)
	if err != nil || len(es) != 0 {
		t.Fatalf("Ops(%s): %d ops, %v; want none", did, len(es), err)
	}
	if _, err := s.Record(context.Background(), did); !errors.Is(err, oplog.ErrNotFound) {
		t.Fatalf("Record(%s): %v, want ErrNotFound", did, err)
	}
}

// insert returns recs with r inserted at i.
func insert(recs []rec, i int, r rec) []rec {
	return append(append(append([]rec{}, recs[:i]...), r), recs[i:]...)
}

// stranger is a key no fixture DID has.
var (
	strangerOnce sync.Once
	strangerKey  optest.Key
)

func stranger(t *testing.T) optest.Key {
	strangerOnce.Do(func() { strangerKey = optest.NewKey(t, false) })
	return strangerKey
}

// forgedAfter returns an update of r's DID after r, signed by a key that
// is not among its rotation keys.
func forgedAfter(t *testing.T, r rec, at time.Time) rec {
	o := r.op.Operation()
	o.Sig, o.Prev = "", r.op.CID()
	o.AlsoKnownAs = []string{"at://forged.test"}
	return rec{name: "forged", did: r.did, op: optest.Sign(t, o, stranger(t)), at: at}
}

// newcomer returns the genesis op of a DID the fixture does not have.
func newcomer(t *testing.T, handle string, at time.Time) rec {
	id := optest.NewIdentity(t, handle, 1)
	return rec{name: handle, did: id.DID, op: id.Head, at: at}
}

// checkDivergence fails unless d is of kind k about did and cid, with a
// reason that contains reason, and evidence exactly evidence.
func checkDivergence(t *testing.T, d divergence, k oplog.RejectionKind, did, cid, reason string, evidence []byte) {
	t.Helper()
	if d.Kind != string(k) || d.DID != did || d.CID != cid || !strings.Contains(d.Reason, reason) {
		t.Errorf("divergence #%d: %s did=%q cid=%q reason=%q;\nwant %s did=%q cid=%q reason containing %q",
			d.ID, d.Kind, d.DID, d.CID, d.Reason, k, did, cid, reason)
	}
	if got := d.evidence(t); !bytes.Equal(got, evidence) {
		t.Errorf("divergence #%d (%s): evidence (%d bytes)\n %q\nwant the upstream's bytes (%d)\n %q",
			d.ID, d.Kind, len(got), clip(got), len(evidence), clip(evidence))
	}
}

// clip shortens b for a failure message.
func clip(b []byte) []byte {
	if len(b) > 120 {
		return append(append(b[:60:60], "…"...), b[len(b)-60:]...)
	}
	return b
}

// TestHostilePages: export pages with something wrong in them. Whatever
// the rules reject is a divergence with the line as evidence, and never
// applied; the mirror's log holds exactly the valid ops, in order.
func TestHostilePages(t *testing.T) {
	f := newFixture(t)
	op := f.byID

	t.Run("forged signature", func(t *testing.T) {
		ctx := ctxFor(t)
		// Between A1 and A2 (whose prev is A1, as the forged op's is).
		forged := forgedAfter(t, op["A1"], op["A1"].at.Add(time.Millisecond))
		lines := numbered(insert(f.ops, 4, forged))
		m, l := newHostileMirror(t, newScript(t, &script{lines: lines, ops: f.ops}), mirror.Config{})
		if err := m.Sync(ctx); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		checkStoreHolds(t, l.Store(), f.ops)
		ds := divergences(t, m)
		if len(ds) != 1 {
			t.Fatalf("divergences:%s\nwant one", describe(ds))
		}
		checkDivergence(t, ds[0], oplog.KindInvalidOp, forged.did, forged.op.CID(), "invalid signature", lines[4].b)
	})

	t.Run("wrong cid", func(t *testing.T) {
		ctx := ctxFor(t)
		// A valid op of a new DID, served under A0's CID.
		e := newcomer(t, "e.test", op["B0"].at.Add(time.Millisecond))
		lines := numbered(insert(f.ops, 3, e))
		bad := bytes.Replace(lines[3].b, []byte(`"cid":"`+e.op.CID()+`"`), []byte(`"cid":"`+op["A0"].op.CID()+`"`), 1)
		if bytes.Equal(bad, lines[3].b) {
			t.Fatal("the cid was not replaced")
		}
		lines[3].b = bad
		m, l := newHostileMirror(t, newScript(t, &script{lines: lines, ops: f.ops}), mirror.Config{})
		if err := m.Sync(ctx); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		checkStoreHolds(t, l.Store(), f.ops)
		checkAbsent(t, l.Store(), e.did)
		ds := divergences(t, m)
		if len(ds) != 1 {
			t.Fatalf("divergences:%s\nwant one", describe(ds))
		}
		checkDivergence(t, ds[0], oplog.KindInvalidOp, e.did, op["A0"].op.CID(), "does not match", bad)
	})

	t.Run("not json", func(t *testing.T) {
		ctx := ctxFor(t)
		garbage := []byte("\xff\xfe{not an op\x00")
		// After C0 (seq 2), inside the first page.
		lines := numbered(f.ops)
		lines = append(lines[:2:2], append([]sline{{2, garbage}}, lines[2:]...)...)
		m, l := newHostileMirror(t, newScript(t, &script{lines: lines, ops: f.ops}), mirror.Config{})
		if err := m.Sync(ctx); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		checkStoreHolds(t, l.Store(), f.ops)
		ds := divergences(t, m)
		if len(ds) != 1 || ds[0].EvidenceEncoding != "base64" {
			t.Fatalf("divergences:%s\nwant one, with base64 evidence", describe(ds))
		}
		checkDivergence(t, ds[0], oplog.KindInvalidOp, "", "", "JSON", garbage)
	})

	t.Run("seq backwards in a page", func(t *testing.T) {
		ctx := ctxFor(t)
		// Page one is seq 1, 3, 2, 4: C0 (seq 2) comes after seq 3.
		lines := numbered(f.ops)
		lines[1], lines[2] = lines[2], lines[1]
		m, l := newHostileMirror(t, newScript(t, &script{lines: lines, ops: f.ops}), mirror.Config{})
		if err := m.Sync(ctx); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		checkStoreHolds(t, l.Store(), f.without("C0"))
		ds := divergences(t, m)
		if len(ds) != 1 {
			t.Fatalf("divergences:%s\nwant one", describe(ds))
		}
		checkDivergence(t, ds[0], oplog.KindReordered, op["C0"].did, op["C0"].op.CID(), "out of order", lines[2].b)
	})

	t.Run("seq served again", func(t *testing.T) {
		ctx := ctxFor(t)
		lines := numbered(f.ops)
		// Asked for the ops after seq 4, the upstream serves seq 3 again
		// with other content (a new DID's genesis op), and seq 4 again
		// as it was, before seq 5 and 6.
		e := newcomer(t, "e2.test", op["B0"].at)
		again3, again4 := seqLine(e, 3), lines[3].b
		fault := func(w http.ResponseWriter, after int64, count, call int) bool {
			if after != 4 || call > 0 {
				return false
			}
			w.Write(bytes.Join([][]byte{again3, again4, lines[4].b, lines[5].b}, []byte{'\n'}))
			return true
		}
		s := &script{lines: lines, ops: f.ops, fault: fault}
		m, l := newHostileMirror(t, newScript(t, s), mirror.Config{})
		if err := m.Sync(ctx); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		checkStoreHolds(t, l.Store(), f.ops)
		checkAbsent(t, l.Store(), e.did)
		ds := divergences(t, m)
		if len(ds) != 2 {
			t.Fatalf("divergences:%s\nwant two", describe(ds))
		}
		checkDivergence(t, ds[0], oplog.KindReordered, "", "", "seq 3 again after seq 4", again3)
		checkDivergence(t, ds[1], oplog.KindReordered, "", "", "seq 4 again after seq 4", again4)

		// Later, asked for the ops after seq 8, it serves an old page
		// whole: nothing of it is used.
		s.set(func(s *script) {
			s.fault = func(w http.ResponseWriter, after int64, count, call int) bool {
				w.Write(bytes.Join([][]byte{lines[4].b, lines[5].b, lines[6].b, lines[7].b}, []byte{'\n'}))
				return true
			}
		})
		if err := m.Sync(ctx); err == nil {
			t.Fatal("Sync of an old page succeeded")
		}
		checkStoreHolds(t, l.Store(), f.ops)
		ds = divergences(t, m)
		if len(ds) != 3 {
			t.Fatalf("divergences:%s\nwant three", describe(ds))
		}
		old := append(bytes.Join([][]byte{lines[4].b, lines[5].b, lines[6].b, lines[7].b}, []byte{'\n'}), '\n')
		checkDivergence(t, ds[2], oplog.KindBadResponse, "", "", "ends at seq 8", old)
	})

	// Bad responses: the page is not used at all, the pages before it are
	// kept, and the same page served well later is applied normally.
	good := numbered(f.ops)
	page2 := bytes.Join([][]byte{good[4].b, good[5].b, good[6].b, good[7].b}, []byte{'\n'})
	padded := append(append([]byte{}, page2...), bytes.Repeat([]byte{' '}, 10<<10)...)
	for _, c := range []struct {
		name     string
		serve    func(t *testing.T, w http.ResponseWriter)
		reason   string
		evidence []byte
	}{
		{
			name: "content-length over the body",
			serve: func(t *testing.T, w http.ResponseWriter) {
				conn, buf, err := w.(http.Hijacker).Hijack()
				if err != nil {
					t.Errorf("Hijack: %v", err)
					return
				}
				defer conn.Close()
				fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Type: application/jsonlines\r\nContent-Length: %d\r\n\r\n", len(page2)+500)
				buf.Write(page2)
				buf.Flush()
			},
			reason:   "body cut off",
			evidence: page2,
		},
		{
			name:     "cut mid-line",
			serve:    func(t *testing.T, w http.ResponseWriter) { w.Write(page2[:len(page2)-40]) },
			reason:   "the last line is not a seq-mode export line",
			evidence: page2[:len(page2)-40],
		},
		{
			name:     "oversized",
			serve:    func(t *testing.T, w http.ResponseWriter) { w.Write(padded) },
			reason:   fmt.Sprintf("body over %d bytes", hostileMaxBody),
			evidence: padded[:hostileMaxBody+1],
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := ctxFor(t)
			if c.name == "oversized" && len(padded) <= hostileMaxBody {
				t.Fatalf("the oversized page is %d bytes", len(padded))
			}
			fault := func(w http.ResponseWriter, after int64, count, call int) bool {
				if after != 4 || call > 0 {
					return false
				}
				c.serve(t, w)
				return true
			}
			m, l := newHostileMirror(t, newScript(t, &script{lines: good, ops: f.ops, fault: fault}), mirror.Config{})
			if err := m.Sync(ctx); err == nil {
				t.Fatal("Sync succeeded through a bad page")
			}
			checkStoreHolds(t, l.Store(), f.ops[:4])
			ds := divergences(t, m)
			if len(ds) != 1 {
				t.Fatalf("divergences:%s\nwant one", describe(ds))
			}
			checkDivergence(t, ds[0], oplog.KindBadResponse, "", "", c.reason, c.evidence)
			if want := string(validate.AppendTimestamp(nil, hostileNow)); ds[0].CreatedAt != want {
				t.Errorf("divergence createdAt %s, want the mirror's clock %s", ds[0].CreatedAt, want)
			}
			if err := m.Sync(ctx); err != nil {
				t.Fatalf("Sync after the upstream recovered: %v", err)
			}
			checkStoreHolds(t, l.Store(), f.ops)
			if ds := divergences(t, m); len(ds) != 1 {
				t.Fatalf("divergences:%s\nwant still one", describe(ds))
			}
		})
	}
}

// TestHostileAuditLogs: after a faithful sync, the upstream's audit logs
// contradict what it served. CheckDID records each contradiction, with the
// audit log as evidence, and changes nothing in the mirror's log.
func TestHostileAuditLogs(t *testing.T) {
	f := newFixture(t)
	op := f.byID
	serve := func(status int, body []byte) func(http.ResponseWriter) {
		return func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(status)
			w.Write(body)
		}
	}
	for _, c := range []struct {
		name   string
		did    string
		edit   func([]auditEntry) []auditEntry // of the DID's faithful log
		body   []byte                          // instead of edit
		status int
		kind   oplog.RejectionKind
		cid    string
		reason string
	}{
		{
			name: "op deleted", did: op["A0"].did,
			edit: func(es []auditEntry) []auditEntry { return []auditEntry{es[0], es[2]} },
			kind: oplog.KindHistoryRewrite, cid: op["A1"].op.CID(), reason: "gone from the upstream's audit log",
		},
		{
			name: "history reordered", did: op["A0"].did,
			edit: func(es []auditEntry) []auditEntry { return []auditEntry{es[1], es[0], es[2]} },
			kind: oplog.KindReordered, reason: "another order",
		},
		{
			name: "createdAt changed", did: op["D0"].did,
			edit: func(es []auditEntry) []auditEntry { es[1].r.at = es[1].r.at.Add(time.Second); return es },
			kind: oplog.KindHistoryRewrite, cid: op["D1"].op.CID(), reason: "createdAt",
		},
		{
			name: "nullified flipped", did: op["B0"].did,
			edit: func(es []auditEntry) []auditEntry { es[1].nullified = true; return es },
			kind: oplog.KindNullification, cid: op["B1"].op.CID(), reason: "nullified is false here, true upstream",
		},
		{
			name: "DID gone", did: op["C0"].did, status: http.StatusNotFound,
			body: []byte(`{"message":"DID not registered: ` + op["C0"].did + `"}`),
			kind: oplog.KindHistoryRewrite, reason: "no longer knows",
		},
		{
			name: "not an audit log", did: op["C0"].did, body: []byte(`{"oops":true}`),
			kind: oplog.KindBadResponse, reason: "not a JSON array",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := ctxFor(t)
			s := &script{lines: numbered(f.ops), ops: f.ops}
			m, l := newHostileMirror(t, newScript(t, s), mirror.Config{})
			if err := m.Sync(ctx); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			for _, did := range didsOf(allOps(t, l.Store())) {
				if err := m.CheckDID(ctx, did); err != nil {
					t.Fatalf("CheckDID(%s) of a faithful upstream: %v", did, err)
				}
			}
			if ds := divergences(t, m); len(ds) != 0 {
				t.Fatalf("divergences of a faithful upstream:%s", describe(ds))
			}

			body := c.body
			if body == nil {
				body = auditLog(f.ops, c.did, c.edit)
			}
			status := c.status
			if status == 0 {
				status = http.StatusOK
			}
			s.set(func(s *script) { s.audit[c.did] = serve(status, body) })
			if err := m.CheckDID(ctx, c.did); err != nil {
				t.Fatalf("CheckDID(%s): %v", c.did, err)
			}
			// A DID the mirror does not hold is not checked.
			if err := m.CheckDID(ctx, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"); err != nil {
				t.Fatalf("CheckDID of an unknown DID: %v", err)
			}
			ds := divergences(t, m)
			if len(ds) != 1 {
				t.Fatalf("divergences:%s\nwant one", describe(ds))
			}
			checkDivergence(t, ds[0], c.kind, c.did, c.cid, c.reason, body)
			// Found once, recorded once.
			if err := m.CheckDID(ctx, c.did); err != nil {
				t.Fatalf("CheckDID(%s): %v", c.did, err)
			}
			if ds := divergences(t, m); len(ds) != 1 {
				t.Fatalf("divergences after a second check:%s\nwant still one", describe(ds))
			}
			checkStoreHolds(t, l.Store(), f.ops)
		})
	}

	t.Run("audit sample", func(t *testing.T) {
		ctx := ctxFor(t)
		s := &script{lines: numbered(f.ops), ops: f.ops}
		m, l := newHostileMirror(t, newScript(t, s), mirror.Config{})
		if err := m.Sync(ctx); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		if err := m.AuditSample(ctx, 200); err != nil {
			t.Fatalf("AuditSample: %v", err)
		}
		if ds := divergences(t, m); len(ds) != 0 {
			t.Fatalf("divergences of a faithful upstream:%s", describe(ds))
		}
		body := auditLog(f.ops, op["A0"].did, func(es []auditEntry) []auditEntry { return es[:2] })
		s.set(func(s *script) { s.audit[op["A0"].did] = serve(http.StatusOK, body) })
		// 200 draws among 8 ops miss A's three with probability (5/8)^200.
		if err := m.AuditSample(ctx, 200); err != nil {
			t.Fatalf("AuditSample: %v", err)
		}
		ds := divergences(t, m)
		if len(ds) != 1 {
			t.Fatalf("divergences:%s\nwant one", describe(ds))
		}
		checkDivergence(t, ds[0], oplog.KindHistoryRewrite, op["A0"].did, op["A2"].op.CID(), "gone", body)
		checkStoreHolds(t, l.Store(), f.ops)
	})
}

// streamEvents serves a WebSocket stream that sends events, then stays
// open (quiet) until the client goes.
func streamEvents(t *testing.T, events ...[]byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			t.Errorf("websocket.Accept: %v", err)
			return
		}
		defer c.CloseNow()
		for _, e := range events {
			if err := c.Write(r.Context(), websocket.MessageText, e); err != nil {
				return
			}
		}
		for {
			if _, _, err := c.Read(context.Background()); err != nil {
				return
			}
		}
	}
}

// TestHostileStream: the live stream serves an op already served, a
// forged op and an event without seq between valid ones.
func TestHostileStream(t *testing.T) {
	f := newFixture(t)
	op := f.byID
	ctx := ctxFor(t)
	lines := numbered(f.ops)
	at := f.ops[len(f.ops)-1].at
	e := newcomer(t, "stream-e.test", at.Add(time.Second))
	g := newcomer(t, "stream-g.test", at.Add(2*time.Second))
	h := newcomer(t, "stream-h.test", at.Add(3*time.Second))
	forged := forgedAfter(t, op["A2"], at.Add(2*time.Second))
	events := [][]byte{
		seqLine(e, 9),
		lines[4].b, // seq 5 again
		seqLine(forged, 10),
		validate.AppendAuditEntryJSON(nil, g.did, g.op, false, g.at), // no seq
		seqLine(h, 11),
	}
	s := &script{lines: lines, ops: f.ops, stream: streamEvents(t, events...)}
	url := newScript(t, s)
	l := newSQLiteLog(t)
	m := newMirror(t, url, l, mirror.Config{PageSize: hostilePage})
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	waitCursor(ctx, t, l, m.Source(), 11)
	checkStoreHolds(t, l.Store(), append(append([]rec{}, f.ops...), e, h))
	ds := divergences(t, m)
	if len(ds) != 3 {
		t.Fatalf("divergences:%s\nwant three", describe(ds))
	}
	checkDivergence(t, ds[0], oplog.KindReordered, op["B1"].did, op["B1"].op.CID(), "seq 5 is not after seq 9", events[1])
	checkDivergence(t, ds[1], oplog.KindInvalidOp, forged.did, forged.op.CID(), "invalid signature", events[2])
	checkDivergence(t, ds[2], oplog.KindInvalidOp, g.did, g.op.CID(), "without seq", events[3])
	if st := m.Status(ctx); st.State != "stream" || st.Cursor != 11 || st.LagOps != 0 {
		t.Errorf("status: %+v", st)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestRunBacksOff: while the upstream answers 500, Run waits MinBackoff,
// then twice as long each time up to MaxBackoff, and records the bad
// response once; when the upstream recovers, it catches up and follows.
func TestRunBacksOff(t *testing.T) {
	f := newFixture(t)
	ctx := ctxFor(t)
	var broken atomic.Bool
	broken.Store(true)
	failure := []byte(`{"message":"Internal Server Error"}`)
	s := &script{lines: numbered(f.ops), ops: f.ops, stream: streamEvents(t),
		fault: func(w http.ResponseWriter, after int64, count, call int) bool {
			if !broken.Load() {
				return false
			}
			w.WriteHeader(http.StatusInternalServerError)
			w.Write(failure)
			return true
		}}
	w := newWaiter()
	m, l := newHostileMirror(t, newScript(t, s), mirror.Config{Wait: w.Wait, MinBackoff: time.Second, MaxBackoff: 4 * time.Second})
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	var waits []time.Duration
	for range 4 {
		waits = append(waits, w.next(ctx, t))
		if st := m.Status(ctx); st.State != "backoff" || st.Mode != mirror.ModeUnknown {
			t.Errorf("status while backing off: %+v", st)
		}
		if len(waits) == 4 {
			broken.Store(false)
		}
		w.resume()
	}
	if want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second}; fmt.Sprint(waits) != fmt.Sprint(want) {
		t.Errorf("Run waited %v, want %v", waits, want)
	}
	waitCursor(ctx, t, l, m.Source(), 8)
	checkStoreHolds(t, l.Store(), f.ops)
	ds := divergences(t, m)
	if len(ds) != 1 {
		t.Fatalf("divergences:%s\nwant one", describe(ds))
	}
	checkDivergence(t, ds[0], oplog.KindBadResponse, "", "", "status 500", failure)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestRunStreamClosedAtOnce: an upstream that closes the stream normally
// as soon as it opens (as a directory does with a cursor past its head)
// must not be asked again and again without a wait.
func TestRunStreamClosedAtOnce(t *testing.T) {
	f := newFixture(t)
	ctx := ctxFor(t)
	conns := make(chan struct{}, 100)
	s := &script{lines: numbered(f.ops), ops: f.ops, stream: func(w http.ResponseWriter, r *http.Request) {
		select {
		case conns <- struct{}{}:
		default:
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		c.Close(websocket.StatusNormalClosure, "FutureCursor")
	}}
	w := newWaiter()
	m, l := newHostileMirror(t, newScript(t, s), mirror.Config{Wait: w.Wait, MinBackoff: time.Second, MaxBackoff: time.Minute})
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	// The first round applies the ops, so the next one may start at once;
	// the round after that applied nothing.
	n := 0
	var waits []time.Duration
	for len(waits) < 2 {
		select {
		case <-conns:
			if n++; n > 3 {
				t.Fatalf("the stream was opened %d times, with %d waits between", n, len(waits))
			}
		case d := <-w.calls:
			waits = append(waits, d)
			w.resume()
		case <-ctx.Done():
			t.Fatal("timed out")
		}
	}
	if fmt.Sprint(waits) != fmt.Sprint([]time.Duration{time.Second, 2 * time.Second}) {
		t.Errorf("Run waited %v, want 1s then 2s", waits)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkStoreHolds(t, l.Store(), f.ops)
	if ds := divergences(t, m); len(ds) != 0 {
		t.Fatalf("divergences:%s", describe(ds))
	}
}

// TestRunAudits: Run's audit loop checks a sample of DIDs every
// AuditInterval and records what it finds.
func TestRunAudits(t *testing.T) {
	f := newFixture(t)
	op := f.byID
	ctx := ctxFor(t)
	s := &script{lines: numbered(f.ops), ops: f.ops, stream: streamEvents(t)}
	w := newWaiter()
	m, l := newHostileMirror(t, newScript(t, s), mirror.Config{Wait: w.Wait, AuditInterval: time.Hour, AuditSample: 200})
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	waitCursor(ctx, t, l, m.Source(), 8)
	if d := w.next(ctx, t); d != time.Hour {
		t.Fatalf("Run waited %v, want the audit interval", d)
	}
	body := auditLog(f.ops, op["D0"].did, func(es []auditEntry) []auditEntry { return es[1:] })
	s.set(func(s *script) { s.audit[op["D0"].did] = func(w http.ResponseWriter) { w.Write(body) } })
	w.resume()
	if d := w.next(ctx, t); d != time.Hour {
		t.Fatalf("Run waited %v, want the audit interval", d)
	}
	ds := divergences(t, m)
	if len(ds) != 1 {
		t.Fatalf("divergences:%s\nwant one", describe(ds))
	}
	checkDivergence(t, ds[0], oplog.KindHistoryRewrite, op["D0"].did, op["D0"].op.CID(), "gone", body)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkStoreHolds(t, l.Store(), f.ops)
}

// TestUnreachableUpstream: failing to connect is an error, not a
// divergence (the upstream said nothing).
func TestUnreachableUpstream(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	m, l := newHostileMirror(t, url, mirror.Config{})
	if err := m.Sync(ctxFor(t)); err == nil {
		t.Fatal("Sync of an unreachable upstream succeeded")
	}
	if ds := divergences(t, m); len(ds) != 0 {
		t.Fatalf("divergences:%s", describe(ds))
	}
	checkStoreHolds(t, l.Store(), nil)
}
