package oplog

import (
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"

	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/database"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	migratesqlite "github.com/golang-migrate/migrate/v4/database/sqlite"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver

	plcsql "github.com/plcdir/plc/sql"
)

// IsPostgres reports whether db names a PostgreSQL database (a postgres://
// or postgresql:// URL) rather than an SQLite file path.
func IsPostgres(db string) bool {
	return strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://")
}

// SchemaStatus describes a database's schema version.
type SchemaStatus struct {
	Version uint // 0 when no migration has run
	Dirty   bool // a migration failed half-way
	Latest  uint // the newest version this binary knows
}

// ErrSchema: the database's schema is not one this binary can run on.
var ErrSchema = errors.New("unusable database schema")

func migrations(db string) (fs.FS, string) {
	if IsPostgres(db) {
		return plcsql.Postgres, "postgres"
	}
	return plcsql.SQLite, "sqlite"
}

func latestVersion(fsys fs.FS, dir string) (uint, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return 0, err
	}
	var latest uint
	for _, e := range entries {
		n, _, ok := strings.Cut(e.Name(), "_")
		if !ok {
			continue
		}
		v, err := strconv.ParseUint(n, 10, 32)
		if err != nil {
			continue
		}
		latest = max(latest, uint(v))
	}
	return latest, nil
}

// withMigrate runs f with a golang-migrate instance on db.
func withMigrate(db string, f func(m *migrate.Migrate, latest uint) error) error {
	fsys, dir := migrations(db)
	latest, err := latestVersion(fsys, dir)
	if err != nil {
		return err
	}
	src, err := iofs.New(fsys, dir)
	if err != nil {
		return err
	}
	var (
		conn   *sql.DB
		driver database.Driver
		name   string
	)
	if IsPostgres(db) {
		conn, err = sql.Open("pgx", db)
		if err == nil {
			driver, err = migratepgx.WithInstance(conn, &migratepgx.Config{})
		}
		name = "pgx5"
	} else {
		conn, err = openSQLiteDB(db)
		if err == nil {
			driver, err = migratesqlite.WithInstance(conn, &migratesqlite.Config{})
		}
		name = "sqlite"
	}
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		return fmt.Errorf("connect for migrations: %w", err)
	}
	m, err := migrate.NewWithInstance("iofs", src, name, driver)
	if err != nil {
		conn.Close()
		return err
	}
	defer m.Close()
	return f(m, latest)
}

func openSQLiteDB(path string) (*sql.DB, error) {
	if err := sqliteDir(path); err != nil {
		return nil, err
	}
	return openSQLitePool(path, 1)
}

// Status reports the schema version of db.
func Status(db string) (SchemaStatus, error) {
	var st SchemaStatus
	err := withMigrate(db, func(m *migrate.Migrate, latest uint) error {
		st.Latest = latest
		v, dirty, err := m.Version()
		if errors.Is(err, migrate.ErrNilVersion) {
			return nil
		}
		st.Version, st.Dirty = v, dirty
		return err
	})
	return st, err
}

// MigrateUp applies every pending migration to db.
func MigrateUp(db string) (SchemaStatus, error) {
	var st SchemaStatus
	err := withMigrate(db, func(m *migrate.Migrate, latest uint) error {
		st.Latest = latest
		if v, dirty, err := m.Version(); err == nil && (dirty || v > latest) {
			return schemaError(v, dirty, latest)
		}
		if err := m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
			return fmt.Errorf("migrate up: %w", err)
		}
		v, dirty, err := m.Version()
		st.Version, st.Dirty = v, dirty
		return err
	})
	return st, err
}

func schemaError(v uint, dirty bool, latest uint) error {
	switch {
	case dirty:
		return fmt.Errorf("%w: version %d is dirty (a migration failed half-way); repair the database, then force the version with the migrate tool", ErrSchema, v)
	case v > latest:
		return fmt.Errorf("%w: version %d is newer than this binary's %d; run a newer plc", ErrSchema, v, latest)
	}
	return fmt.Errorf("%w: version %d is older than this binary's %d; run 'plc migrate up' first", ErrSchema, v, latest)
}

// Prepare readies db for serving: an empty database is migrated to the
// latest schema; any other version than the latest (older, newer or dirty)
// is refused with an error that says what to do.
func Prepare(db string) (SchemaStatus, error) {
	st, err := Status(db)
	if err != nil {
		return st, err
	}
	if st.Version == 0 && !st.Dirty {
		return MigrateUp(db)
	}
	if st.Dirty || st.Version != st.Latest {
		return st, schemaError(st.Version, st.Dirty, st.Latest)
	}
	return st, nil
}
