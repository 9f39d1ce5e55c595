package tlog_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plcdir/plc/internal/pgtest"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/tamper"
	"github.com/plcdir/plc/tlog"
)

// backends runs test against a migrated store on SQLite and on
// PostgreSQL (skipped without a cluster); open opens the same database
// again, as a restarted process would.
func backends(t *testing.T, test func(t *testing.T, s oplog.Store, dsn string, open func() oplog.Store)) {
	for _, b := range []string{"SQLite", "PostgreSQL"} {
		t.Run(b, func(t *testing.T) {
			var dsn string
			if b == "SQLite" {
				dsn = filepath.Join(t.TempDir(), "plc.sqlite")
			} else {
				dsn = pgtest.URL(t)
			}
			if _, err := oplog.MigrateUp(dsn); err != nil {
				t.Fatal(err)
			}
			open := func() oplog.Store {
				t.Helper()
				s, _, err := oplog.Open(context.Background(), dsn)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				return s
			}
			test(t, open(), dsn, open)
		})
	}
}

// TestStartupRefusesOpsInsertedBehindTheLog: a row added to operations
// with a plain INSERT (no guard to switch off) once checkpoints are signed
// is refused at startup, named by seq, DID and CID, rather than adopted
// into the tree and signed; a row below seq 1, which the tree never
// numbers, is refused whether or not a checkpoint exists. Ops the log
// itself committed (with their tree hashes) after the latest checkpoint —
// a process stopped between a commit and the next signing — start fine
// and are signed.
func TestStartupRefusesOpsInsertedBehindTheLog(t *testing.T) {
	ctx := context.Background()
	lines := corpusLines(t, 300)
	half := strings.Index(string(lines[len(lines)/2:]), "\n") + len(lines)/2 + 1
	key := newKey(t, "plc.test")
	sign := func(t *testing.T, s oplog.Store) oplog.Checkpoint {
		t.Helper()
		tl := tlog.New(s, key, tlog.Options{})
		if err := tl.Check(ctx, nil); err != nil {
			t.Fatalf("Check of an honest log: %v", err)
		}
		cp, _, err := tl.Sign(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return cp
	}
	// copyOp inserts a copy of the op with seq from at seq to, as a plain
	// INSERT through the database's own access.
	copyOp := func(t *testing.T, dsn string, open func() oplog.Store, from, to int64) oplog.Entry {
		t.Helper()
		db := tamper.Open(t, dsn)
		q := fmt.Sprintf(`INSERT INTO operations (seq, did, created_at, op, signer) SELECT %d, did, created_at + 1, op, signer FROM operations WHERE seq = %d`, to, from)
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		e, err := open().Op(ctx, to)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	refused := func(t *testing.T, s oplog.Store, e oplog.Entry) {
		t.Helper()
		err := tlog.New(s, key, tlog.Options{}).Check(ctx, nil)
		var se *tlog.StartupError
		want := fmt.Sprintf("seq %d did %s cid %s", e.Seq, e.DID, e.CID)
		if !errors.As(err, &se) || !strings.Contains(err.Error(), want) {
			t.Fatalf("Check after an op was inserted behind the log: %v; want a StartupError naming %q", err, want)
		}
		if size, err := s.TreeSize(ctx); err != nil || size >= e.Seq && e.Seq > 0 {
			t.Fatalf("the refused op was taken into the tree: size %d, %v", size, err)
		}
	}

	t.Run("InsertedAfterTheTree", func(t *testing.T) {
		backends(t, func(t *testing.T, s oplog.Store, dsn string, open func() oplog.Store) {
			load(t, s, lines, 50)
			cp := sign(t, s)
			e := copyOp(t, dsn, open, 7, cp.Size+1)
			refused(t, open(), e)
		})
	})
	t.Run("InsertedBelowSeqOne", func(t *testing.T) {
		backends(t, func(t *testing.T, s oplog.Store, dsn string, open func() oplog.Store) {
			load(t, s, lines, 50)
			e := copyOp(t, dsn, open, 3, 0) // no checkpoint yet: still refused
			refused(t, open(), e)
		})
	})
	t.Run("CommittedButNotYetSignedStarts", func(t *testing.T) {
		backends(t, func(t *testing.T, s oplog.Store, dsn string, open func() oplog.Store) {
			load(t, s, lines[:half], 50)
			cp := sign(t, s)
			// The log commits more ops (with their tree hashes) and stops
			// before its next checkpoint.
			load(t, s, lines, 50)
			s2 := open()
			// A second later (the least time between two checkpoints).
			c := &clock{t: cp.SignedAt.Add(time.Second)}
			tl := tlog.New(s2, key, tlog.Options{Now: c.Now})
			if err := tl.Check(ctx, nil); err != nil {
				t.Fatalf("Check after a stop between a commit and a checkpoint: %v", err)
			}
			last, _ := s2.LatestSeq(ctx)
			next, signed, err := tl.Sign(ctx)
			if err != nil || !signed || next.Size != last || next.Size <= cp.Size {
				t.Fatalf("checkpoint after the restart: %+v %v %v; want size %d", next, signed, err, last)
			}
		})
	})
}
