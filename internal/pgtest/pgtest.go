// Package pgtest gives tests a fresh PostgreSQL database of their own.
//
// The cluster comes from the environment: PLC_TEST_POSTGRES is the URL of
// a database on a server the tests may create databases on (see
// scripts/with-postgres.sh, which starts a throwaway cluster and sets it).
// Without it, tests that need PostgreSQL skip; with PLC_REQUIRE_POSTGRES=1
// (as in CI) they fail instead, so a missing database cannot pass
// silently.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Environment variables read by URL.
const (
	EnvURL     = "PLC_TEST_POSTGRES"
	EnvRequire = "PLC_REQUIRE_POSTGRES"
)

// URL returns the URL of a new, empty database on the test cluster, which
// is dropped when the test ends. It skips the test when no cluster is
// configured, or fails it if PLC_REQUIRE_POSTGRES=1.
func URL(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvURL)
	if base == "" {
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("%s is not set and %s=1: PostgreSQL tests must run (use scripts/with-postgres.sh)", EnvURL, EnvRequire)
		}
		t.Skipf("%s is not set: skipping PostgreSQL test (run under scripts/with-postgres.sh)", EnvURL)
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s is not a URL: %v", EnvURL, err.(*url.Error).Err)
	}
	var b [8]byte
	rand.Read(b[:])
	name := "plctest_" + hex.EncodeToString(b[:])

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("pgtest: connect to the test cluster: %v", err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		admin, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
			return
		}
		defer admin.Close(context.Background())
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	u.Path = "/" + name
	return u.String()
}
