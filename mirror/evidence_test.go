package mirror_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/plcdir/plc/mirror"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// junkLines are n seq-mode lines from seq first on, each a well-formed
// envelope around an op that is not one, each different, of about 1 KiB.
func junkLines(first int64, n int) []sline {
	at := string(validate.AppendTimestamp(nil, t0.Add(time.Hour)))
	var out []sline
	for i := range n {
		seq := first + int64(i)
		b := fmt.Sprintf(`{"type":"sequenced_op","seq":%d,"did":"did:plc:aaaaaaaaaaaaaaaaaaaaaaaa","operation":{"junk":"%s%d"},"cid":"bafyreiaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","createdAt":"%s"}`,
			seq, strings.Repeat("x", 900), seq, at)
		out = append(out, sline{seq, []byte(b)})
	}
	return out
}

// storedEvidence returns the records of m's source in the store and
// their bytes (as the cap counts them).
func storedEvidence(t *testing.T, l *oplog.Log, source string) (rows, bytes int64) {
	t.Helper()
	for after := int64(0); ; {
		rs, err := l.Store().Rejections(context.Background(), source, after, 100)
		if err != nil {
			t.Fatalf("Rejections: %v", err)
		}
		for _, r := range rs {
			rows++
			bytes += int64(len(r.Raw) + len(r.Reason) + len(r.DID) + len(r.CID))
			after = r.ID
		}
		if len(rs) < 100 {
			return rows, bytes
		}
	}
}

// TestJunkFillingUpstreamCannotExceedEvidenceCap: an upstream serves a
// few valid ops, then page after page of junk, each line different (so
// none is a repeat of a record). The records stored never exceed the cap,
// in rows or in bytes; past it, every rejected line is still counted (and
// /_health says the cap is reached); the valid ops are applied; and every
// page of junk ends the round, so that Run backs off before the next.
func TestJunkFillingUpstreamCannotExceedEvidenceCap(t *testing.T) {
	f := newFixture(t)
	const junk = 200
	for _, c := range []struct {
		name              string
		maxRows, maxBytes int64
	}{
		{"rows", 10, 1 << 20},
		{"bytes", 1000, 8 << 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := ctxFor(t)
			lines := append(numbered(f.ops), junkLines(int64(len(f.ops)+1), junk)...)
			url := newScript(t, &script{lines: lines, ops: f.ops})
			m, l := newHostileMirror(t, url, mirror.Config{MaxEvidenceRows: c.maxRows, MaxEvidenceBytes: c.maxBytes})
			backoffs := 0
			for {
				err := m.Sync(ctx)
				if err == nil {
					break
				}
				if !strings.Contains(err.Error(), "rejected") {
					t.Fatalf("Sync: %v", err)
				}
				if backoffs++; backoffs > junk {
					t.Fatalf("%d rounds ended by junk for %d junk lines", backoffs, junk)
				}
			}
			rows, bytes := storedEvidence(t, l, m.Source())
			if rows > c.maxRows || bytes > c.maxBytes {
				t.Fatalf("stored %d records of %d bytes, over the cap of %d records, %d bytes", rows, bytes, c.maxRows, c.maxBytes)
			}
			checkStoreHolds(t, l.Store(), f.ops)
			if backoffs < junk/hostilePage/2 {
				t.Errorf("%d rounds ended by pages of junk, want about one a page (%d pages)", backoffs, junk/hostilePage)
			}
			st := m.Status(ctx)
			if st.Cursor != int64(len(lines)) {
				t.Errorf("cursor %d, want %d", st.Cursor, len(lines))
			}
			ev := st.Evidence
			if !ev.Full || ev.Rows != rows || ev.Bytes != bytes || ev.Rows+ev.Dropped != junk || ev.MaxRows != c.maxRows || ev.MaxBytes != c.maxBytes {
				t.Errorf("evidence status %+v; want full, %d rows of %d bytes stored, %d dropped", ev, rows, bytes, junk-rows)
			}
			if h, ok := m.Health(ctx)["evidence"].(map[string]any); !ok || h["full"] != true || h["dropped"] != junk-rows {
				t.Errorf("/_health evidence %v", m.Health(ctx)["evidence"])
			}
			// A restarted mirror reads what is stored, and stores no more.
			m2 := newMirror(t, url, l, mirror.Config{PageSize: hostilePage, MaxEvidenceRows: c.maxRows, MaxEvidenceBytes: c.maxBytes})
			if err := m2.Sync(ctx); err != nil {
				t.Fatalf("Sync after a restart: %v", err)
			}
			if ev := m2.Status(ctx).Evidence; ev.Rows != rows || ev.Bytes != bytes || ev.Dropped != 0 {
				t.Errorf("restarted: evidence status %+v, want %d rows of %d bytes, nothing found", ev, rows, bytes)
			}
			if rows2, bytes2 := storedEvidence(t, l, m.Source()); rows2 != rows || bytes2 != bytes {
				t.Errorf("restarted: %d records of %d bytes stored, want still %d of %d", rows2, bytes2, rows, bytes)
			}
		})
	}
}

// TestReplayingUpstreamBacksOff: an upstream whose pages mostly serve
// again ops the mirror already took (each a record to look up and
// store), with one new op at the end of each so that the export still
// moves on. The new op is applied, and the round ends so that Run backs
// off before the next page.
func TestReplayingUpstreamBacksOff(t *testing.T) {
	f := newFixture(t)
	ctx := ctxFor(t)
	lines := numbered(f.ops)
	s := &script{lines: lines, ops: f.ops}
	l := newSQLiteLog(t)
	m := newMirror(t, newScript(t, s), l, mirror.Config{PageSize: 40, Now: func() time.Time { return hostileNow }})
	if err := m.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	e := newcomer(t, "replay-e.test", f.ops[len(f.ops)-1].at.Add(time.Second))
	fresh := seqLine(e, 9)
	s.set(func(s *script) {
		s.lines = append(s.lines, sline{9, fresh})
		s.fault = func(w http.ResponseWriter, after int64, count, call int) bool {
			if after != 8 {
				return false
			}
			var page [][]byte
			for i := range 20 {
				page = append(page, lines[i%8].b)
			}
			w.Write(append(bytes.Join(append(page, fresh), []byte{'\n'}), '\n'))
			return true
		}
	})
	err := m.Sync(ctx)
	if err == nil || !strings.Contains(err.Error(), "served again") {
		t.Fatalf("Sync of a page mostly served again: %v, want the round ended", err)
	}
	checkStoreHolds(t, l.Store(), append(append([]rec{}, f.ops...), e))
	if ds := divergences(t, m); len(ds) != 8 {
		t.Fatalf("divergences:%s\nwant the eight lines served again, once each", describe(ds))
	}
}
