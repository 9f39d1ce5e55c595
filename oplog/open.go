package oplog

import (
	"context"
	"fmt"
)

// Open prepares the schema of the database db names (a postgres:// URL or
// an SQLite file path), migrating an empty one, and opens its store. A
// schema this binary cannot run on is an ErrSchema.
func Open(ctx context.Context, db string) (Store, SchemaStatus, error) {
	st, err := Prepare(db)
	if err != nil {
		return nil, st, fmt.Errorf("database %s: %w", RedactDB(db), err)
	}
	if IsPostgres(db) {
		s, err := OpenPostgres(ctx, db)
		return s, st, err
	}
	s, err := OpenSQLite(db)
	return s, st, err
}

// RedactDB returns db fit for logs: a URL's password is replaced; a file
// path is returned as it is.
func RedactDB(db string) string {
	if !IsPostgres(db) {
		return db
	}
	return RedactURL(db)
}
