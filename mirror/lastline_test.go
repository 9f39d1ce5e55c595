package mirror_test

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/plcdir/plc/mirror"
	"github.com/plcdir/plc/oplog"
)

// TestPageEndingInARepeatedSeqIsABadResponse: the last line of a page
// says where the next page starts, so it is read by the ingest's own
// strict rules. A last line with its seq key twice (encoding/json would
// take the second, MaxInt64) or a last seq that repeats one of the page's
// is a bad response: nothing of the page is used, the mirror's idea of
// the upstream's head does not move (no lag of 9×10¹⁸ in /_health), and
// the same page served well later is applied.
func TestPageEndingInARepeatedSeqIsABadResponse(t *testing.T) {
	f := newFixture(t)
	good := numbered(f.ops)
	twice := append(bytes.TrimSuffix(append([]byte{}, good[7].b...), []byte("}")), `,"seq":9223372036854775807}`...)
	for _, c := range []struct {
		name string
		page [][]byte // served after seq 4
	}{
		{"seq key twice", [][]byte{good[4].b, good[5].b, good[6].b, twice}},
		{"seq repeated", [][]byte{good[4].b, good[5].b, good[6].b, good[6].b}},
		{"seq below the page's", [][]byte{good[4].b, good[6].b, good[7].b, good[5].b}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := ctxFor(t)
			body := bytes.Join(c.page, []byte{'\n'})
			fault := func(w http.ResponseWriter, after int64, count, call int) bool {
				if after != 4 || call > 0 {
					return false
				}
				w.Write(body)
				return true
			}
			m, l := newHostileMirror(t, newScript(t, &script{lines: good, ops: f.ops, fault: fault}), mirror.Config{})
			if err := m.Sync(ctx); err == nil {
				t.Fatal("Sync used the page")
			}
			if st := m.Status(ctx); st.LagOps < 0 || st.LagOps > 4 || st.Cursor != 4 {
				t.Errorf("status after the bad page: cursor %d, lagOps %d; want cursor 4, lagOps at most 4", st.Cursor, st.LagOps)
			}
			checkStoreHolds(t, l.Store(), f.ops[:4])
			ds := divergences(t, m)
			if len(ds) != 1 {
				t.Fatalf("divergences:%s\nwant one", describe(ds))
			}
			checkDivergence(t, ds[0], oplog.KindBadResponse, "", "", "the last line", body)
			if err := m.Sync(ctx); err != nil {
				t.Fatalf("Sync after the upstream recovered: %v", err)
			}
			checkStoreHolds(t, l.Store(), f.ops)
			if st := m.Status(ctx); st.LagOps != 0 || st.Cursor != 8 {
				t.Errorf("status after catching up: cursor %d, lagOps %d", st.Cursor, st.LagOps)
			}
		})
	}
}
