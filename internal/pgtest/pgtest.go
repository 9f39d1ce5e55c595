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
	// EnvReplicaURL is the URL of the same database on a streaming
	// replica of the test cluster (scripts/with-postgres.sh makes one).
	EnvReplicaURL = "PLC_TEST_POSTGRES_REPLICA"
)

// URL returns the URL of a new, empty database on the test cluster, which
// is dropped when the test ends. It skips the test when no cluster is
// configured, or fails it if PLC_REQUIRE_POSTGRES=1.
func URL(t testing.TB) string {
	t.Helper()
	base, u := configured(t, EnvURL, "PostgreSQL")
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

// ReplicaURL returns the URL, on the test cluster's streaming replica, of
// the database primary (a URL from URL) names, once the replica has
// replayed its creation. It skips the test when no replica is configured,
// or fails it if PLC_REQUIRE_POSTGRES=1.
func ReplicaURL(t testing.TB, primary string) string {
	t.Helper()
	_, u := configured(t, EnvReplicaURL, "replica")
	p, err := url.Parse(primary)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	u.Path = p.Path
	// The database appears on the replica when its creation is replayed.
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn, err := pgx.Connect(ctx, u.String())
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return u.String()
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgtest: the replica has no database %s after a minute: %v", p.Path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// configured returns the URL in the environment variable env, as given
// and parsed, skipping
// the test when it is not set (or failing it if PLC_REQUIRE_POSTGRES=1);
// what names the tests in the messages.
func configured(t testing.TB, env, what string) (string, *url.URL) {
	t.Helper()
	base := os.Getenv(env)
	if base == "" {
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("%s is not set and %s=1: %s tests must run (use scripts/with-postgres.sh)", env, EnvRequire, what)
		}
		t.Skipf("%s is not set: skipping %s test (run under scripts/with-postgres.sh)", env, what)
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s is not a URL: %v", env, err.(*url.Error).Err)
	}
	return base, u
}
