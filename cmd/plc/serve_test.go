package main

import (
	"bytes"
	"context"
	"log/slog"
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
		{"newer", `UPDATE schema_migrations SET version = 99`, "version 99 is newer than this binary's 6; run a newer plc"},
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
				env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }})
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
		env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }}); code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
	}
	st, err := oplog.Status(db)
	if err != nil || st.Version != st.Latest || st.Latest == 0 {
		t.Fatalf("schema after first start: %+v, %v", st, err)
	}
}

// The API's connection bounds: per client IP 256 by default, none behind a
// trusted proxy (every connection is the proxy's), and a total that always
// fits in the file descriptor limit (21,000 idle connections once took
// them all).
func TestServeConnectionBoundsFitTheFileLimit(t *testing.T) {
	defer func(f func() (uint64, bool)) { fileLimit = f }(fileLimit)
	logger := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		name             string
		c                serveConfig
		fds              uint64
		total, perClient int
	}{
		{"defaults", serveConfig{MaxConns: defaultMaxConns, MaxConnsPerIP: -1}, 1 << 20, defaultMaxConns, defaultMaxConnsPerIP},
		{"behind a proxy", serveConfig{MaxConns: defaultMaxConns, MaxConnsPerIP: -1, TrustProxy: true}, 1 << 20, defaultMaxConns, 0},
		{"explicit", serveConfig{MaxConns: 100, MaxConnsPerIP: 7, TrustProxy: true}, 1 << 20, 100, 7},
		{"over the file limit", serveConfig{MaxConns: defaultMaxConns, MaxConnsPerIP: -1}, 4096, 4096 - fdReserve, defaultMaxConnsPerIP},
		{"unbounded within a file limit", serveConfig{MaxConns: 0, MaxConnsPerIP: 0}, 20000, 20000 - fdReserve, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fileLimit = func() (uint64, bool) { return tc.fds, true }
			total, perIP := tc.c.connLimits(logger)
			if total != tc.total || perIP != tc.perClient {
				t.Fatalf("bounds %d total, %d per IP; want %d, %d", total, perIP, tc.total, tc.perClient)
			}
		})
	}
}
