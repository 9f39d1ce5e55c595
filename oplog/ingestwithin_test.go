package oplog_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/plcdir/plc/internal/testclock"
	"github.com/plcdir/plc/oplog"
)

// testIngestWithin: Log.IngestWithin stores rejections up to its limit
// and no further: the first that does not fit, and every one after it, is
// rejected, returned and counted past the cursor, but not stored.
func testIngestWithin(t *testing.T, migrated func(t *testing.T) (oplog.Store, string)) {
	ctx := context.Background()
	const src = "upstream:junk"
	junk := func(from, n int, size int) []oplog.IngestItem {
		var items []oplog.IngestItem
		for i := range n {
			line := int64(from + i)
			items = append(items, oplog.IngestItem{Line: line, Seq: line, Raw: []byte(strings.Repeat("j", size)), Err: errors.New("junk")})
		}
		return items
	}
	for _, c := range []struct {
		name   string
		limit  oplog.RejectionLimit
		sizes  []int // of the raw lines
		stored int
	}{
		{"rows", oplog.RejectionLimit{Rows: 2, Bytes: 1 << 20}, []int{10, 10, 10, 10}, 2},
		// The third does not fit: neither it nor the smaller fourth is stored.
		{"bytes", oplog.RejectionLimit{Rows: 10, Bytes: 2 * (100 + 4)}, []int{100, 100, 200, 1}, 2},
		{"none", oplog.RejectionLimit{}, []int{1}, 0},
		{"unlimited", oplog.NoRejectionLimit, []int{1000, 1000, 1000}, 3},
	} {
		t.Run("IngestWithin/"+c.name, func(t *testing.T) {
			s, _ := migrated(t)
			l := oplog.NewLog(s, oplog.Options{Now: testclock.New(at(time.Hour)).Now})
			t.Cleanup(l.Close)
			var items []oplog.IngestItem
			for i, n := range c.sizes {
				items = append(items, junk(i+1, 1, n)...)
			}
			res, err := l.IngestWithin(ctx, src, items, c.limit)
			if err != nil {
				t.Fatalf("IngestWithin: %v", err)
			}
			if len(res.Rejected) != len(items) || res.Stored != c.stored || res.Cursor.Seq != int64(len(items)) {
				t.Fatalf("%d rejected, %d stored, cursor %+v; want %d, %d, seq %d", len(res.Rejected), res.Stored, res.Cursor, len(items), c.stored, len(items))
			}
			rs, err := s.Rejections(ctx, src, 0, 100)
			if err != nil || len(rs) != c.stored {
				t.Fatalf("%d rejections stored, %v; want %d", len(rs), err, c.stored)
			}
			var bytes int64
			for i, r := range rs {
				if r.Line != int64(i+1) {
					t.Errorf("stored rejection %d is of line %d, want the first ones", i, r.Line)
				}
				bytes += oplog.RejectionBytes(r)
			}
			if bytes > c.limit.Bytes {
				t.Errorf("stored %d bytes, over the limit %d", bytes, c.limit.Bytes)
			}
		})
	}
}
