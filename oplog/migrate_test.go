package oplog

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-migrate/migrate/v4"

	"github.com/plcdir/plc/internal/pgtest"
)

// TestImportMigrationDownKeepsEvidence: migration 2 goes down only while
// no cursor and no rejected line is recorded; with one, the migration
// fails and the tables stay.
func TestImportMigrationDownKeepsEvidence(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		testMigrationDown(t, func(t testing.TB) string { return filepath.Join(t.TempDir(), "plc.sqlite") })
	})
	t.Run("postgres", func(t *testing.T) { testMigrationDown(t, pgtest.URL) })
}

func testMigrationDown(t *testing.T, fresh func(t testing.TB) string) {
	ctx := context.Background()
	down := func(db string) error {
		return withMigrate(db, func(m *migrate.Migrate, _ uint) error { return m.Migrate(1) })
	}
	open := func(t *testing.T, db string) Store {
		var (
			s   Store
			err error
		)
		if IsPostgres(db) {
			s, err = OpenPostgres(ctx, db)
		} else {
			s, err = OpenSQLite(db)
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}

	t.Run("Empty", func(t *testing.T) {
		db := fresh(t)
		if _, err := MigrateUp(db); err != nil {
			t.Fatal(err)
		}
		if err := down(db); err != nil {
			t.Fatalf("down to 1 with nothing recorded: %v", err)
		}
		if st, err := Status(db); err != nil || st.Version != 1 || st.Dirty {
			t.Fatalf("after down: %+v, %v", st, err)
		}
		if st, err := MigrateUp(db); err != nil || st.Version != st.Latest {
			t.Fatalf("up again: %+v, %v", st, err)
		}
	})

	t.Run("WithARejectedLine", func(t *testing.T) {
		db := fresh(t)
		if _, err := MigrateUp(db); err != nil {
			t.Fatal(err)
		}
		s := open(t, db)
		const src = "export:test"
		err := s.Append(ctx, src, nil, func(View) (Batch, error) {
			return Batch{
				Rejections: []Rejection{{Source: src, Line: 1, Raw: []byte("x"), Reason: "r", CreatedAt: time.UnixMilli(0)}},
				Cursor:     Cursor{Source: src, Line: 1, UpdatedAt: time.UnixMilli(0)},
			}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := down(db); err == nil {
			t.Fatal("down to 1 dropped a recorded rejection")
		}
		if rs, err := s.Rejections(ctx, "", 0, 10); err != nil || len(rs) != 1 {
			t.Fatalf("rejections after the refused down: %v, %v", rs, err)
		}
	})
}

// TestRejectionKindMigrationReadsTheOldReasons: migration 5 gives the
// rejections stored before it the kinds the mirror read from their reasons
// (a kind's prefix, else "out of order" anywhere means reordered), and the
// table refuses UPDATE again after it.
func TestRejectionKindMigrationReadsTheOldReasons(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		testRejectionKindMigration(t, filepath.Join(t.TempDir(), "plc.sqlite"))
	})
	t.Run("postgres", func(t *testing.T) { testRejectionKindMigration(t, pgtest.URL(t)) })
}

func testRejectionKindMigration(t *testing.T, db string) {
	ctx := context.Background()
	if err := withMigrate(db, func(m *migrate.Migrate, _ uint) error { return m.Migrate(4) }); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		reason string
		kind   RejectionKind
	}{
		{"bad JSON", KindInvalidOp},
		{"reordered: seq 3 is not after seq 5: out of order", KindReordered},
		{"seq 3 is not after seq 5: the export is out of order", KindReordered},
		{"history_rewrite: gone", KindHistoryRewrite},
		{"nullification_mismatch: differs", KindNullification},
		{"bad_response: status 500", KindBadResponse},
		{"invalid_op: the line is out of order", KindInvalidOp},
		{"historyXrewrite: not a prefix", KindInvalidOp},
		{"OUT OF ORDER", KindInvalidOp},
	}
	var s Store
	var exec func(q string) error
	if IsPostgres(db) {
		ps, err := OpenPostgres(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		s, exec = ps, func(q string) error { _, err := ps.Pool().Exec(ctx, q); return err }
	} else {
		ss, err := OpenSQLite(db)
		if err != nil {
			t.Fatal(err)
		}
		s, exec = ss, func(q string) error { _, err := ss.DB().ExecContext(ctx, q); return err }
	}
	t.Cleanup(func() { s.Close() })
	for i, w := range want {
		q := fmt.Sprintf(`INSERT INTO rejected (source, line, did, cid, raw, reason, created_at) VALUES ('upstream:x', %d, '', '', '', '%s', 0)`, i+1, w.reason)
		if err := exec(q); err != nil {
			t.Fatal(err)
		}
	}
	if st, err := MigrateUp(db); err != nil || st.Version < 5 {
		t.Fatalf("up: %+v, %v", st, err)
	}
	rs, err := s.Rejections(ctx, "", 0, 100)
	if err != nil || len(rs) != len(want) {
		t.Fatalf("Rejections = %+v, %v", rs, err)
	}
	for i, r := range rs {
		if r.Reason != want[i].reason || r.Kind != want[i].kind {
			t.Errorf("rejection %d: kind %q reason %q, want kind %q reason %q", i, r.Kind, r.Reason, want[i].kind, want[i].reason)
		}
	}
	if err := exec(`UPDATE rejected SET kind = 'reordered'`); err == nil {
		t.Error("UPDATE of rejected succeeded after migration 5")
	}
}
