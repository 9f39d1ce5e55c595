package oplog_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/plcdir/plc/internal/pgtest"
	"github.com/plcdir/plc/oplog"
)

// The Stats conformance tests: the same counts from both stores.

func TestSQLiteStats(t *testing.T) {
	testStats(t, func(t *testing.T) oplog.Store {
		path := filepath.Join(t.TempDir(), "plc.db")
		if _, err := oplog.MigrateUp(path); err != nil {
			t.Fatal(err)
		}
		s, err := oplog.OpenSQLite(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestPostgresStats(t *testing.T) {
	pgtest.URL(t) // skips (or fails under PLC_REQUIRE_POSTGRES=1) without a cluster
	testStats(t, func(t *testing.T) oplog.Store {
		url := pgtest.URL(t)
		if _, err := oplog.MigrateUp(url); err != nil {
			t.Fatal(err)
		}
		s, err := oplog.OpenPostgres(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func testStats(t *testing.T, open func(t *testing.T) oplog.Store) {
	ctx := context.Background()
	k := keys(t, 2)

	t.Run("CountOpsAfter", func(t *testing.T) {
		s := open(t)
		st := s.(oplog.Stats)
		if n, err := st.CountOpsAfter(ctx, time.Time{}); err != nil || n != 0 {
			t.Fatalf("empty log: CountOpsAfter = %d, %v; want 0", n, err)
		}
		a := genesis(t, "a.test", k[0])
		b := genesis(t, "b.test", k[1])
		a2 := update(t, a, k[0], "a2.test", k[0])
		a3 := update(t, a2, k[0], "a3.test", k[0])
		// Log order is not time order across DIDs: a mirror keeps the
		// upstream's createdAt, so counts must not lean on seq.
		appendOps(t, s, gen(a, at(0)), gen(b, at(25*time.Hour)))
		appendOps(t, s, next(a.GenesisDID(), a2, at(time.Millisecond)), next(a.GenesisDID(), a3, at(time.Hour)))
		for _, tc := range []struct {
			after time.Time
			want  int64
		}{
			{time.Time{}, 4},
			{at(-time.Millisecond), 4},
			{at(0), 3}, // strictly after
			{at(time.Microsecond), 3},
			{at(999 * time.Microsecond), 3}, // 1 ms is after 0.999 ms
			{at(time.Millisecond), 2},
			{at(time.Hour - time.Millisecond), 2},
			{at(time.Hour), 1},
			{at(25*time.Hour - time.Nanosecond), 1},
			{at(25 * time.Hour), 0},
			{at(100 * time.Hour), 0},
		} {
			if n, err := st.CountOpsAfter(ctx, tc.after); err != nil || n != tc.want {
				t.Errorf("CountOpsAfter(%s) = %d, %v; want %d", tc.after.Format(time.RFC3339Nano), n, err, tc.want)
			}
		}
	})

	t.Run("CountRejections", func(t *testing.T) {
		s := open(t)
		st := s.(oplog.Stats)
		reject := func(source string, n int) {
			t.Helper()
			err := s.Append(ctx, source, nil, func(v oplog.View) (oplog.Batch, error) {
				b := oplog.Batch{Cursor: v.Cursor}
				b.Cursor.Line += int64(n)
				for i := range n {
					b.Rejections = append(b.Rejections, oplog.Rejection{
						Source: source, Line: v.Cursor.Line + int64(i) + 1, Raw: []byte("x"), Reason: "bad", CreatedAt: at(0),
					})
				}
				return b, nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		if n, err := st.CountRejections(ctx, "upstream:a"); err != nil || n != 0 {
			t.Fatalf("no rejections: %d, %v", n, err)
		}
		reject("upstream:a", 3)
		reject("import:b", 2)
		reject("upstream:a", 1)
		for source, want := range map[string]int64{"upstream:a": 4, "import:b": 2, "upstream:c": 0, "": 0} {
			if n, err := st.CountRejections(ctx, source); err != nil || n != want {
				t.Errorf("CountRejections(%q) = %d, %v; want %d", source, n, err, want)
			}
		}
	})

	t.Run("RejectionSize", func(t *testing.T) {
		s := open(t)
		st := s.(oplog.Stats)
		// Bytes that are not UTF-8, a reason and DID beyond ASCII, a
		// backslash (which a text-to-bytea cast would read as an escape).
		rs := []oplog.Rejection{
			{Source: "upstream:a", Line: 1, DID: "did:plc:\u00e9", CID: "bafy", Raw: []byte("\\\xff\xfe\x00{"), Reason: "bad: \u00fcnicode \\x00", CreatedAt: at(0)},
			{Source: "upstream:a", Line: 2, Raw: nil, Reason: "empty", CreatedAt: at(0)},
			{Source: "import:b", Line: 1, Raw: []byte("other source"), Reason: "x", CreatedAt: at(0)},
		}
		for _, r := range rs {
			err := s.Append(ctx, r.Source, nil, func(v oplog.View) (oplog.Batch, error) {
				b := oplog.Batch{Cursor: v.Cursor, Rejections: []oplog.Rejection{r}}
				b.Cursor.Line = r.Line
				return b, nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		want := oplog.RejectionBytes(rs[0]) + oplog.RejectionBytes(rs[1])
		if n, b, err := st.RejectionSize(ctx, "upstream:a"); err != nil || n != 2 || b != want {
			t.Errorf("RejectionSize = %d rows, %d bytes, %v; want 2 rows, %d bytes", n, b, err, want)
		}
		if n, b, err := st.RejectionSize(ctx, "upstream:none"); err != nil || n != 0 || b != 0 {
			t.Errorf("RejectionSize of no rejections = %d, %d, %v", n, b, err)
		}
	})
}
