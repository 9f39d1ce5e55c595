package oplog

import (
	"context"
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
