package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// outageStore is a store whose database can be made to fail: record reads
// and append transactions (after the chain rules have run, as a failed
// commit) return err while it is set.
type outageStore struct {
	oplog.Store
	err atomic.Pointer[error]
}

func (s *outageStore) fail(err error) {
	if err == nil {
		s.err.Store(nil)
		return
	}
	s.err.Store(&err)
}

func (s *outageStore) failing() error {
	if e := s.err.Load(); e != nil {
		return *e
	}
	return nil
}

func (s *outageStore) Record(ctx context.Context, did string) (*oplog.DIDRecord, error) {
	if err := s.failing(); err != nil {
		return nil, err
	}
	return s.Store.Record(ctx, did)
}

func (s *outageStore) Append(ctx context.Context, source string, dids []string, decide oplog.DecideFunc) error {
	return s.Store.Append(ctx, source, dids, func(v oplog.View) (oplog.Batch, error) {
		b, err := decide(v)
		if fail := s.failing(); fail != nil {
			return oplog.Batch{}, fail
		}
		return b, err
	})
}

// TestSubmitDuringDatabaseOutageIs503WithRetryAfter: a database that is
// down or full makes a POST answer 503 with Retry-After and a chosen
// message, not a 500 or a 409, and no log line per request.
func TestSubmitDuringDatabaseOutageIs503WithRetryAfter(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		down := &outageStore{}
		env := newAPIEnv(t, b, envOptions{wrap: func(s oplog.Store) oplog.Store { down.Store = s; return down }})
		k := keys(t, 2)
		g := genesisOp(t, "alice.test", k[0], k[0], k[1])
		did := g.GenesisDID()
		env.mustSubmit(did, g)
		env.clock.Advance(time.Minute)
		u := updateOp(t, g, "bob.test", k[1], k[0], k[1])

		for _, tc := range []struct {
			name string
			err  error
		}{
			{"ConnectionRefused", errors.New("dial tcp 127.0.0.1:5432: connect: connection refused")},
			{"PostgresDiskFull", fmt.Errorf("insert: %w", &pgconn.PgError{Code: "53100", Message: "could not extend file"})},
			{"SQLiteFull", sqliteFull{}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				down.fail(tc.err)
				r := env.submit(did, u)
				r.expectMessage(t, http.StatusServiceUnavailable, "Database unavailable, retry later")
				if got := r.header.Get("Retry-After"); got != "5" {
					t.Errorf("Retry-After %q, want 5", got)
				}
			})
		}
		if logs := env.logs.String(); strings.Contains(logs, "request failed") {
			t.Errorf("a storage failure is logged per request:\n%s", logs)
		}
		down.fail(nil)
		env.mustSubmit(did, u)
	})
}

type sqliteFull struct{}

func (sqliteFull) Error() string { return "database or disk is full (13)" }
func (sqliteFull) Code() int     { return 13 }

// TestConcurrentSubmitsDuringOutageAreAll503: many POSTs at once, among
// them updates on the same prev that would conflict: while the database
// fails, every one of them is told 503, none 409 or 400.
func TestConcurrentSubmitsDuringOutageAreAll503(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		down := &outageStore{}
		env := newAPIEnv(t, b, envOptions{wrap: func(s oplog.Store) oplog.Store { down.Store = s; return down }})
		k := keys(t, 2)
		g := genesisOp(t, "alice.test", k[0], k[0], k[1])
		did := g.GenesisDID()
		env.mustSubmit(did, g)
		env.clock.Advance(time.Minute)
		type sub struct {
			did string
			op  *validate.Op
		}
		var subs []sub
		for i := range 8 {
			subs = append(subs, sub{did, updateOp(t, g, fmt.Sprintf("u%d.test", i), k[0], k[0], k[1])})
			n := genesisOp(t, fmt.Sprintf("n%d.test", i), k[1], k[1])
			subs = append(subs, sub{n.GenesisDID(), n})
		}
		down.fail(errors.New("server closed the connection unexpectedly"))
		statuses := make([]int, len(subs))
		var wg sync.WaitGroup
		for i, s := range subs {
			wg.Go(func() { statuses[i] = env.submit(s.did, s.op).status })
		}
		wg.Wait()
		for i, st := range statuses {
			if st != http.StatusServiceUnavailable {
				t.Errorf("POST %d during the outage: %d, want 503", i, st)
			}
		}
	})
}

// TestSubmitWhileClockIsFarBehindTheLogIs503: after the clock steps back
// by more than the allowed skew, a POST is not dated in the future: it
// answers 503 with Retry-After until the clock has caught up.
func TestSubmitWhileClockIsFarBehindTheLogIs503(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		env := newAPIEnv(t, b, envOptions{})
		k := keys(t, 2)
		g := genesisOp(t, "alice.test", k[0], k[0])
		env.clock.Advance(2 * time.Minute)
		env.mustSubmit(g.GenesisDID(), g)
		env.clock.Advance(-2 * time.Minute) // the clock steps back
		n := genesisOp(t, "bob.test", k[1], k[1])
		r := env.submit(n.GenesisDID(), n)
		r.expectMessage(t, http.StatusServiceUnavailable, "Server clock is behind the log, retry later")
		if got := r.header.Get("Retry-After"); got != "91" {
			t.Errorf("Retry-After %q, want 91 (the lead beyond the 30s skew, rounded up)", got)
		}
		env.clock.Advance(90*time.Second + time.Millisecond)
		env.mustSubmit(n.GenesisDID(), n)
	})
}

// readOutageStore also fails the reads the GET routes make.
type readOutageStore struct{ outageStore }

func (s *readOutageStore) Head(ctx context.Context, did string) (oplog.Entry, error) {
	if err := s.failing(); err != nil {
		return oplog.Entry{}, err
	}
	return s.Store.Head(ctx, did)
}

func (s *readOutageStore) Ops(ctx context.Context, did string) ([]oplog.Entry, error) {
	if err := s.failing(); err != nil {
		return nil, err
	}
	return s.Store.Ops(ctx, did)
}

func (s *readOutageStore) Export(ctx context.Context, after int64, limit int) ([]oplog.Entry, error) {
	if err := s.failing(); err != nil {
		return nil, err
	}
	return s.Store.Export(ctx, after, limit)
}

// TestReadsDuringDatabaseOutageAre503: while the database cannot be
// reached, the read routes answer 503 with Retry-After, not a 500 (an
// error of the data itself still is one).
func TestReadsDuringDatabaseOutageAre503(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		down := &readOutageStore{}
		env := newAPIEnv(t, b, envOptions{wrap: func(s oplog.Store) oplog.Store { down.Store = s; return down }})
		k := keys(t, 1)
		g := genesisOp(t, "alice.test", k[0], k[0])
		did := g.GenesisDID()
		env.mustSubmit(did, g)
		paths := []string{"/" + did, "/" + did + "/data", "/" + did + "/log", "/" + did + "/log/last", "/" + did + "/log/audit", "/export?after=0"}
		for _, tc := range []struct {
			name string
			err  error
		}{
			{"ConnectionRefused", fmt.Errorf("acquire: %w", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED})},
			{"PostgresShutdown", fmt.Errorf("query: %w", &pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"})},
			{"PostgresConnectionLost", fmt.Errorf("query: %w", &pgconn.PgError{Code: "08006", Message: "connection failure"})},
			{"SQLiteIOError", sqliteCode(10)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				down.fail(tc.err)
				defer down.fail(nil)
				for _, p := range paths {
					r := env.get(p)
					r.expectMessage(t, http.StatusServiceUnavailable, "Database unavailable, retry later")
					if r.header.Get("Retry-After") == "" {
						t.Errorf("GET %s: no Retry-After", p)
					}
				}
			})
		}
		down.fail(errors.New("decoding a stored op: unexpected tag"))
		if r := env.get("/" + did); r.status != http.StatusInternalServerError {
			t.Errorf("an error of the data itself: status %d, want 500", r.status)
		}
		down.fail(nil)
		if r := env.get("/" + did); r.status != http.StatusOK {
			t.Errorf("after the outage: status %d, want 200", r.status)
		}
	})
}

type sqliteCode int

func (c sqliteCode) Error() string { return fmt.Sprintf("sqlite error %d", int(c)) }
func (c sqliteCode) Code() int     { return int(c) }
