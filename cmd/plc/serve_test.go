package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plcdir/plc/oplog"
)

// TestServeRefusesUnusableSchema: a database whose schema is newer than
// the binary, or dirty after a failed migration, is not served; the error
// says what to do.
func TestServeRefusesUnusableSchema(t *testing.T) {
	for _, tc := range []struct {
		name, sql, want string
	}{
		{"newer", `UPDATE schema_migrations SET version = 99`, "version 99 is newer than this binary's 4; run a newer plc"},
		{"dirty", `UPDATE schema_migrations SET dirty = 1`, "dirty (a migration failed half-way)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := filepath.Join(t.TempDir(), "plc.sqlite")
			if _, err := oplog.MigrateUp(db); err != nil {
				t.Fatal(err)
			}
			s, err := oplog.OpenSQLite(db)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.DB().Exec(tc.sql); err != nil {
				t.Fatal(err)
			}
			s.Close()
			var stdout, stderr bytes.Buffer
			// A cancelled context: if serve did not refuse, it would start
			// and stop at once with exit 0.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			code := run(ctx, []string{"serve", "--db", db, "--listen", "127.0.0.1:0", "--log-format", "json"},
				env{strings.NewReader(""), &stdout, &stderr, func(string) string { return "" }})
			if code != exitFailure {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitFailure, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("stderr does not say %q:\n%s", tc.want, stderr.String())
			}
		})
	}
}

// TestServeMigratesEmptyDatabase: the zero-setup start creates the data
// folder and the schema.
func TestServeMigratesEmptyDatabase(t *testing.T) {
	db := filepath.Join(t.TempDir(), "fresh", "plc.sqlite")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr bytes.Buffer
	if code := run(ctx, []string{"serve", "--db", db, "--listen", "127.0.0.1:0"},
		env{strings.NewReader(""), &stdout, &stderr, func(string) string { return "" }}); code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
	}
	st, err := oplog.Status(db)
	if err != nil || st.Version != st.Latest || st.Latest == 0 {
		t.Fatalf("schema after first start: %+v, %v", st, err)
	}
}
