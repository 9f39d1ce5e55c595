// Package tamper lets tests change a log's database the way its owner
// could: with the append-only guards (triggers, foreign keys) off. It is
// how tests produce the tampering the transparency log exists to expose.
package tamper

import (
	"context"
	"database/sql"
	"testing"

	"github.com/plcdir/plc/oplog"
)

// guarded are the tables whose triggers refuse changes.
var guarded = []string{"operations", "nullified", "tree_hashes"}

// Open opens the database dsn (a postgres:// URL or an SQLite path) with
// database/sql, bypassing the store: the access its owner, an attacker
// with its credentials or a buggy tool has. It is closed when the test
// ends.
func Open(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	db := dial(t, dsn)
	t.Cleanup(func() { db.Close() })
	return db
}

func dial(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	var (
		db  *sql.DB
		err error
	)
	if oplog.IsPostgres(dsn) {
		db, err = sql.Open("pgx", dsn)
	} else {
		db, err = sql.Open("sqlite", oplog.SQLiteDSN(dsn))
	}
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// Exec runs stmts on the database dsn (a postgres:// URL or an SQLite
// path) with the guards off, and puts them back afterwards.
func Exec(t testing.TB, dsn string, stmts ...string) {
	t.Helper()
	ctx := context.Background()
	db := dial(t, dsn)
	defer db.Close()
	db.SetMaxOpenConns(1) // PRAGMAs hold per connection
	var pre, post []string
	if oplog.IsPostgres(dsn) {
		for _, tbl := range guarded {
			pre = append(pre, `ALTER TABLE `+tbl+` DISABLE TRIGGER ALL`)
			post = append(post, `ALTER TABLE `+tbl+` ENABLE TRIGGER ALL`)
		}
	} else {
		pre = []string{`PRAGMA foreign_keys = OFF`}
		rows, err := db.QueryContext(ctx, `SELECT name, sql FROM sqlite_master WHERE type = 'trigger'`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var name, q string
			if err := rows.Scan(&name, &q); err != nil {
				t.Fatal(err)
			}
			pre = append(pre, `DROP TRIGGER `+name)
			post = append(post, q)
		}
		rows.Close()
		post = append(post, `PRAGMA foreign_keys = ON`)
	}
	for _, q := range append(append(pre, stmts...), post...) {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}
