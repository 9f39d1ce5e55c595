package oplog

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrStorage: the database failed to read or commit (unreachable, out of
// space, a broken connection). Nothing of the op's batch was written; the
// op may be submitted again later. Every error of this class is a
// *StorageError.
var ErrStorage = errors.New("storage failure")

// Storage failure kinds, the values of StorageError.Kind (and of the
// metric label).
const (
	// StorageFull: the database or its disk is out of space (SQLite
	// SQLITE_FULL, PostgreSQL class 53 insufficient_resources such as 53100
	// disk_full, ENOSPC).
	StorageFull = "full"
	// StorageUnavailable: any other failure of the database.
	StorageUnavailable = "unavailable"
)

// StorageError is a failure of the database behind the log, with its
// kind. It wraps ErrStorage and the store's error.
type StorageError struct {
	Kind string
	Err  error
}

func (e *StorageError) Error() string {
	if e.Kind == StorageFull {
		return "storage full: " + e.Err.Error()
	}
	return "storage unavailable: " + e.Err.Error()
}

func (e *StorageError) Unwrap() []error { return []error{ErrStorage, e.Err} }

// storageError classifies err, an error of the store: nil stays nil, a
// context's end (the caller gave up) is returned as it is, and anything
// else becomes a *StorageError.
func storageError(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, ErrStorage) {
		return err
	}
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return err
	}
	return &StorageError{Kind: storageKind(err), Err: err}
}

// storageKind tells a database that is out of space from other failures,
// from the drivers' error codes: SQLite's result code (modernc.org/sqlite
// errors have Code), PostgreSQL's SQLSTATE (pgconn.PgError has SQLState),
// or the operating system's ENOSPC.
func storageKind(err error) string {
	const sqliteFull = 13 // SQLITE_FULL; extended codes keep it in the low byte
	var coded interface{ Code() int }
	if errors.As(err, &coded) && coded.Code()&0xff == sqliteFull {
		return StorageFull
	}
	var state interface{ SQLState() string }
	if errors.As(err, &state) {
		// Class 53, insufficient resources: 53100 disk_full, 53200
		// out_of_memory, 53300 too_many_connections, 53400
		// configuration_limit_exceeded. Only disk_full is "full".
		if state.SQLState() == "53100" {
			return StorageFull
		}
	}
	if errors.Is(err, syscall.ENOSPC) {
		return StorageFull
	}
	return StorageUnavailable
}

// DefaultMaxClockSkew is the default of Options.MaxClockSkew.
const DefaultMaxClockSkew = 30 * time.Second

// ClockBehindError: the log's latest op (or the DID's) is dated more than
// Options.MaxClockSkew after this process's clock, so an op accepted now
// would have to be dated too far in the future. It passes when the clock
// catches up; it is answered 503 with Retry-After.
type ClockBehindError struct {
	// Ahead is how far the latest op is dated after the clock.
	Ahead time.Duration
	// Skew is the largest lead the log takes up itself.
	Skew time.Duration
}

func (e *ClockBehindError) Error() string {
	return fmt.Sprintf("the log's latest op is dated %s after this server's clock (more than %s)", e.Ahead, e.Skew)
}

// RetryAfter is how long until the clock is back within the skew.
func (e *ClockBehindError) RetryAfter() time.Duration {
	return max(e.Ahead-e.Skew, time.Second)
}

// DefaultFailureLogInterval is the default of Options.FailureLogInterval.
const DefaultFailureLogInterval = 10 * time.Second

// failureLog logs storage failures at a bounded rate: the first failure at
// once, then at most one line per interval with the number of failures
// since the last line, and one line when the database works again. Every
// failure is counted in the metrics.
type failureLog struct {
	logger   *slog.Logger // nil: count only
	metrics  *Metrics
	now      func() time.Time
	interval time.Duration

	mu         sync.Mutex
	failing    bool
	failures   int64 // since the outage began
	unlogged   int64 // since the last line
	lastLogged time.Time
}

func (f *failureLog) failed(op string, err error) {
	var se *StorageError
	if !errors.As(err, &se) {
		return
	}
	f.metrics.storageFailed(se.Kind)
	if f.logger == nil {
		return
	}
	f.mu.Lock()
	now := f.now()
	f.failures++
	f.unlogged++
	log := !f.failing || now.Sub(f.lastLogged) >= f.interval
	n := f.unlogged
	f.failing = true
	if log {
		f.lastLogged, f.unlogged = now, 0
	}
	f.mu.Unlock()
	if log {
		f.logger.Error("storage failure", "op", op, "kind", se.Kind, "failures", n, "error", se.Err.Error())
	}
}

func (f *failureLog) succeeded() {
	if f.logger == nil {
		return
	}
	f.mu.Lock()
	was, n := f.failing, f.failures
	f.failing, f.failures, f.unlogged = false, 0, 0
	f.mu.Unlock()
	if was {
		f.logger.Info("storage works again", "failures", n)
	}
}

// Unavailable reports whether err says that the database could not be
// reached or ran out of resources, rather than that a query or its data
// was wrong: a *StorageError, a network or connection error, a PostgreSQL
// error of class 08 (connection exception), 53 (insufficient resources)
// or 57 (operator intervention, such as a shutdown), a connection the
// driver gave up, or an SQLite result of busy, locked, I/O error, full or
// cannot open. Reads use it to answer 503 rather than 500 while the
// database is down; the write path classifies its failures itself
// (StorageError).
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrStorage) || storageKind(err) == StorageFull ||
		errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	var (
		netErr  net.Error
		connErr *pgconn.ConnectError
		pgErr   *pgconn.PgError
		coded   interface{ Code() int }
	)
	switch {
	case errors.As(err, &connErr), errors.As(err, &netErr):
		return true
	case errors.As(err, &pgErr):
		class := pgErr.Code[:min(2, len(pgErr.Code))]
		return class == "08" || class == "53" || class == "57"
	case errors.As(err, &coded):
		switch coded.Code() & 0xff {
		case 5, 6, 10, 14: // SQLITE_BUSY, LOCKED, IOERR, CANTOPEN (FULL: storageKind)
			return true
		}
	}
	return pgconn.SafeToRetry(err) || pgconn.Timeout(err)
}
