package oplog_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/plcdir/plc/internal/corpus"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/tamper"
)

// testDerived: the startup check of the derived state (nullified and the
// signer indexes) against the edits a database owner can make, on every
// backend.
func testDerived(t *testing.T, migrated func(t *testing.T) (oplog.Store, string)) {
	ctx := context.Background()
	k := keys(t, 2)

	// history appends a DID whose genesis (signed by key 0 of two) is
	// updated by key 1 and recovered by key 0 within the window: seq 1
	// genesis, 2 update (signer 1), 3 recovery (signer 0, nullifies 2);
	// then a DID with keys (1, 0): its genesis at 4 (signer 0) and an
	// update at 5.
	history := func(t *testing.T, s oplog.Store) {
		t.Helper()
		g := genesis(t, "g.test", k[0], k[1])
		did := g.GenesisDID()
		u := update(t, g, k[1], "hostile.test", k[0], k[1])
		r := update(t, g, k[0], "recovered.test", k[0], k[1])
		p := genesis(t, "plain.test", k[1], k[0])
		appendOps(t, s, gen(g, at(0)), next(did, u, at(time.Hour)))
		appendOps(t, s, next(did, r, at(2*time.Hour)), gen(p, at(3*time.Hour)),
			next(p.GenesisDID(), update(t, p, k[1], "plain2.test", k[1], k[0]), at(4*time.Hour)))
	}
	check := func(s oplog.Store, signatures bool) error {
		return oplog.CheckDerived(ctx, s.(oplog.DerivedReader), oplog.DerivedOptions{Quick: !signatures, After: 1 << 40, Workers: 2})
	}

	t.Run("DerivedCheckPassesAnHonestLog", func(t *testing.T) {
		s, dsn := migrated(t)
		history(t, s)
		// And a generated history with recoveries and tombstones, over
		// many pages of the check's reads (DIDs cut by a page's end).
		defer oplog.SetCheckPage(97)()
		var buf bytes.Buffer
		if _, err := corpus.Generate(ctx, &buf, corpus.Config{Ops: 3000, Seed: 3}); err != nil {
			t.Fatal(err)
		}
		l := oplog.NewLog(s, oplog.Options{})
		st, err := oplog.Import(ctx, l, &buf, oplog.ImportOptions{Source: "c", BatchSize: 500})
		l.Close()
		if err != nil || st.Rejected != 0 {
			t.Fatalf("import: %+v %v", st, err)
		}
		last, err := s.LatestSeq(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, sig := range []bool{false, true} {
			var seen int64
			err := oplog.CheckDerived(ctx, reopen(t, dsn).(oplog.DerivedReader), oplog.DerivedOptions{Quick: !sig, After: 1 << 40, Workers: 3, Progress: func(n int64) { seen = n }})
			if err != nil {
				t.Fatalf("CheckDerived (signatures %v) of an honest log: %v", sig, err)
			}
			if seen != last {
				t.Fatalf("progress reached %d ops of %d", seen, last)
			}
		}
	})

	for _, tc := range []struct {
		name string
		// plain: the edit needs no guard switched off (a plain INSERT).
		plain bool
		stmts []string
		// quick: found without signature checks too, with this message
		// (else the full check's).
		quick, want string
	}{
		{"NullifiedRowDeletedRevivesAHostileUpdate", false, []string{`DELETE FROM nullified WHERE seq = 2`}, "",
			"the op is nullified by seq 3, but the nullified table does not say so"},
		{"NullifiedRowInsertedHidesAnOp", true, []string{`INSERT INTO nullified (seq, by_seq) VALUES (5, 4)`}, "",
			"the nullified table says seq 4 nullified it, but nothing did"},
		{"NullifiedRowMovedToAnotherNullifier", false, []string{`UPDATE nullified SET by_seq = 5 WHERE seq = 2`}, "",
			"the nullified table says seq 5 nullified it, but seq 3 did"},
		{"NullifiedRowForNoOp", false, []string{`INSERT INTO nullified (seq, by_seq) VALUES (99, 3)`}, "",
			"seq 99: the nullified table lists it"},
		{"SignerIndexOutOfRange", false, []string{`UPDATE operations SET signer = 7 WHERE seq = 5`}, "signer index 7 is not one of",
			"stored signer index is 7, but the op's signature verifies with rotation key 0"},
		// Key 0 signed the genesis at 1; stored as key 1, a later fork by
		// key 0 against it would look allowed. Only signatures tell.
		{"SignerIndexSwapped", false, []string{`UPDATE operations SET signer = 1 WHERE seq = 1`}, "-",
			"stored signer index is 1, but the op's signature verifies with rotation key 0"},
		{"RecoverySignerDemoted", false, []string{`UPDATE operations SET signer = 1 WHERE seq = 3`}, "only a key of higher priority may",
			"stored signer index is 1, but the op's signature verifies with rotation key 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, dsn := migrated(t)
			history(t, s)
			for _, sig := range []bool{false, true} {
				if err := check(s, sig); err != nil {
					t.Fatalf("CheckDerived before the edit: %v", err)
				}
			}
			if tc.plain {
				db := tamper.Open(t, dsn)
				for _, q := range tc.stmts {
					if _, err := db.ExecContext(ctx, q); err != nil {
						t.Fatalf("%s: %v", q, err)
					}
				}
			} else {
				tamper.Exec(t, dsn, tc.stmts...)
			}
			after := reopen(t, dsn)
			for _, sig := range []bool{false, true} {
				err := check(after, sig)
				want := tc.want
				if !sig && tc.quick == "-" {
					if err != nil {
						t.Fatalf("CheckDerived without signatures: %v (this edit needs them)", err)
					}
					continue
				} else if !sig && tc.quick != "" {
					want = tc.quick
				}
				var de *oplog.DerivedError
				if !errors.As(err, &de) || !strings.Contains(err.Error(), want) {
					t.Fatalf("CheckDerived (signatures %v) after the edit: %v; want a DerivedError with %q", sig, err, want)
				}
			}
		})
	}

	t.Run("SignerIndexSwappedWithinTheRecoveryWindowIsFoundQuick", func(t *testing.T) {
		s, dsn := migrated(t)
		history(t, s)
		tamper.Exec(t, dsn, `UPDATE operations SET signer = 1 WHERE seq = 1`)
		after := reopen(t, dsn)
		// Ops accepted from at(0) on have their signatures checked.
		err := oplog.CheckDerived(ctx, after.(oplog.DerivedReader), oplog.DerivedOptions{Quick: true, After: 1 << 40, Recent: at(0)})
		if err == nil || !strings.Contains(err.Error(), "stored signer index is 1, but the op's signature verifies with rotation key 0") {
			t.Fatalf("quick CheckDerived with Recent at the op: %v", err)
		}
		// From after it on: seq 1's index is never read again.
		if err := oplog.CheckDerived(ctx, after.(oplog.DerivedReader), oplog.DerivedOptions{Quick: true, After: 1 << 40, Recent: at(time.Minute)}); err != nil {
			t.Fatalf("quick CheckDerived with Recent after the op: %v", err)
		}
	})

	t.Run("DIDsWithOpsAfterASeqAreCheckedWithSignatures", func(t *testing.T) {
		s, dsn := migrated(t)
		history(t, s)
		tamper.Exec(t, dsn, `UPDATE operations SET signer = 1 WHERE seq = 4`)
		after := reopen(t, dsn)
		// The DID of seq 4 has ops after seq 3: all of it is checked with
		// signatures.
		err := oplog.CheckDerived(ctx, after.(oplog.DerivedReader), oplog.DerivedOptions{Quick: true, After: 3})
		if err == nil || !strings.Contains(err.Error(), "seq 4 did") {
			t.Fatalf("CheckDerived with After 3: %v", err)
		}
		if err := oplog.CheckDerived(ctx, after.(oplog.DerivedReader), oplog.DerivedOptions{Quick: true, After: 5}); err != nil {
			t.Fatalf("CheckDerived with After 5 (nothing after it): %v", err)
		}
	})
}
