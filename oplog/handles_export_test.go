package oplog

import "github.com/golang-migrate/migrate/v4"

// MigrateTo moves the schema of db to version v, up or down: tests use it
// to make a database as an earlier version of plc left it.
func MigrateTo(db string, v uint) error {
	return withMigrate(db, func(m *migrate.Migrate, _ uint) error { return m.Migrate(v) })
}
