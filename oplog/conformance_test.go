package oplog_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plcdir/plc/internal/pgtest"
	"github.com/plcdir/plc/internal/testclock"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/tamper"
	"github.com/plcdir/plc/validate"
)

// The Store conformance suite: every implementation runs the same tests,
// from the contract in store.go up to the sequencer (Log) over the store.

func TestSQLiteStore(t *testing.T) {
	testStore(t, func(t *testing.T) (oplog.Store, string) {
		path := filepath.Join(t.TempDir(), "plc.db")
		s, err := oplog.OpenSQLite(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s, path
	})
}

func TestPostgresStore(t *testing.T) {
	pgtest.URL(t) // skips (or fails under PLC_REQUIRE_POSTGRES=1) without a cluster
	testStore(t, func(t *testing.T) (oplog.Store, string) {
		url := pgtest.URL(t)
		s, err := oplog.OpenPostgres(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s, url
	})
}

// reopen opens a second, independent store on the database dsn: what
// another process sharing the database would have.
func reopen(t *testing.T, dsn string) oplog.Store {
	t.Helper()
	var (
		s   oplog.Store
		err error
	)
	if oplog.IsPostgres(dsn) {
		s, err = oplog.OpenPostgres(context.Background(), dsn)
	} else {
		s, err = oplog.OpenSQLite(dsn)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// testStore runs the conformance suite. open returns a store on a fresh,
// empty (unmigrated) database and the database's DSN for the migration
// functions; the suite migrates it.
func testStore(t *testing.T, open func(t *testing.T) (oplog.Store, string)) {
	ctx := context.Background()
	migrated := func(t *testing.T) (oplog.Store, string) {
		t.Helper()
		s, dsn := open(t)
		st, err := oplog.MigrateUp(dsn)
		if err != nil {
			t.Fatalf("MigrateUp: %v", err)
		}
		if st.Version != st.Latest || st.Dirty {
			t.Fatalf("MigrateUp: status %+v", st)
		}
		return s, dsn
	}
	k := keys(t, 2)

	t.Run("EmptyLog", func(t *testing.T) {
		s, _ := migrated(t)
		if err := s.Ping(ctx); err != nil {
			t.Fatalf("Ping: %v", err)
		}
		if seq, err := s.LatestSeq(ctx); err != nil || seq != 0 {
			t.Fatalf("LatestSeq = %d, %v; want 0", seq, err)
		}
		if _, err := s.Record(ctx, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"); !errors.Is(err, oplog.ErrNotFound) {
			t.Fatalf("Record: %v, want ErrNotFound", err)
		}
		if _, err := s.Op(ctx, 1); !errors.Is(err, oplog.ErrNotFound) {
			t.Fatalf("Op(1): %v, want ErrNotFound", err)
		}
		if es, err := s.Ops(ctx, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"); err != nil || len(es) != 0 {
			t.Fatalf("Ops = %v, %v; want none", seqsOf(es), err)
		}
		if es, err := s.Export(ctx, 0, 10); err != nil || len(es) != 0 {
			t.Fatalf("Export = %v, %v; want none", seqsOf(es), err)
		}
		if es, err := s.ExportByTime(ctx, time.Time{}, 10); err != nil || len(es) != 0 {
			t.Fatalf("ExportByTime = %v, %v; want none", seqsOf(es), err)
		}
		err := s.Append(ctx, "", []string{"did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"}, func(v oplog.View) (oplog.Batch, error) {
			if v.LastSeq != 0 || !v.LastCreatedAt.IsZero() || len(v.Records) != 0 {
				t.Errorf("view of an empty log: %+v", v)
			}
			return oplog.Batch{}, nil
		})
		if err != nil {
			t.Fatalf("Append with no writes: %v", err)
		}
	})

	t.Run("AppendAssignsDenseSeqAndDecideSeesState", func(t *testing.T) {
		s, _ := migrated(t)
		gA, gB := genesis(t, "a.test", k[0], k[1]), genesis(t, "b.test", k[0], k[1])
		a, b := gA.GenesisDID(), gB.GenesisDID()
		es := appendOps(t, s, gen(gA, at(time.Second)), gen(gB, at(2*time.Second)))
		if got := seqsOf(es); !slices.Equal(got, []int64{1, 2}) {
			t.Fatalf("seqs %v, want [1 2]", got)
		}
		uA := update(t, gA, k[1], "a2.test", k[0], k[1])
		es = appendOps(t, s, next(a, uA, at(3*time.Second)))
		if es[0].Seq != 3 {
			t.Fatalf("seq %d, want 3", es[0].Seq)
		}
		unknown := "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"
		called := 0
		err := s.Append(ctx, "", []string{a, unknown, a, b}, func(v oplog.View) (oplog.Batch, error) {
			called++
			if v.LastSeq != 3 || !v.LastCreatedAt.Equal(at(3*time.Second)) {
				t.Errorf("view: LastSeq %d LastCreatedAt %s, want 3 at %s", v.LastSeq, v.LastCreatedAt, at(3*time.Second))
			}
			if len(v.Records) != 2 || v.Records[unknown] != nil {
				t.Errorf("view has records of %v, want %s and %s", slices.Sorted(maps.Keys(v.Records)), a, b)
			}
			if r := v.Records[a]; r == nil || r.HeadSeq != 3 || !slices.Equal(r.Seqs, []int64{1, 3}) {
				t.Errorf("view record of a: %+v", r)
			}
			if r := v.Records[b]; r == nil || r.HeadSeq != 2 || !slices.Equal(r.Seqs, []int64{2}) {
				t.Errorf("view record of b: %+v", r)
			}
			return oplog.Batch{}, nil
		})
		if err != nil || called != 1 {
			t.Fatalf("Append: %v (decide called %d times)", err, called)
		}
		if seq, err := s.LatestSeq(ctx); err != nil || seq != 3 {
			t.Fatalf("LatestSeq = %d, %v; want 3", seq, err)
		}
	})

	t.Run("DecideErrorWritesNothing", func(t *testing.T) {
		s, _ := migrated(t)
		g := genesis(t, "a.test", k[0])
		boom := errors.New("boom")
		err := s.Append(ctx, "", []string{g.GenesisDID()}, func(v oplog.View) (oplog.Batch, error) {
			w, err := buildWrite(g.GenesisDID(), v.LastSeq+1, at(0), g, nil)
			if err != nil {
				t.Fatal(err)
			}
			return oplog.Batch{Writes: []oplog.Write{w}}, boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Append: %v, want %v", err, boom)
		}
		checkEmpty(t, s, g.GenesisDID())
	})

	t.Run("SeqGapRefusedAndWritesNothing", func(t *testing.T) {
		s, _ := migrated(t)
		appendOps(t, s, gen(genesis(t, "first.test", k[0]), at(0)))
		g1, g2 := genesis(t, "a.test", k[0]), genesis(t, "b.test", k[0])
		for _, tc := range []struct {
			name string
			seqs []int64
		}{
			{"Gap", []int64{2, 4}},
			{"Duplicate", []int64{2, 2}},
			{"Reuse", []int64{1, 2}},
			{"FirstNotNext", []int64{3, 4}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := s.Append(ctx, "", []string{g1.GenesisDID(), g2.GenesisDID()}, func(v oplog.View) (oplog.Batch, error) {
					w1, err1 := buildWrite(g1.GenesisDID(), tc.seqs[0], at(time.Second), g1, nil)
					w2, err2 := buildWrite(g2.GenesisDID(), tc.seqs[1], at(time.Second), g2, nil)
					if err := errors.Join(err1, err2); err != nil {
						t.Fatal(err)
					}
					return oplog.Batch{Writes: []oplog.Write{w1, w2}}, nil
				})
				if err == nil {
					t.Fatalf("Append of seqs %v after 1 succeeded", tc.seqs)
				}
				if seq, err := s.LatestSeq(ctx); err != nil || seq != 1 {
					t.Fatalf("LatestSeq = %d, %v; want 1", seq, err)
				}
				checkEmpty(t, s, g1.GenesisDID())
			})
		}
		t.Run("RecordOfAnotherDID", func(t *testing.T) {
			err := s.Append(ctx, "", []string{g1.GenesisDID()}, func(v oplog.View) (oplog.Batch, error) {
				w, err := buildWrite(g1.GenesisDID(), v.LastSeq+1, at(time.Second), g1, nil)
				if err != nil {
					t.Fatal(err)
				}
				w.Record.DID = g2.GenesisDID()
				return oplog.Batch{Writes: []oplog.Write{w}}, nil
			})
			if err == nil {
				t.Fatal("Append of an op with another DID's record succeeded")
			}
			checkEmpty(t, s, g1.GenesisDID())
			checkEmpty(t, s, g2.GenesisDID())
		})
	})

	// A DID's genesis, an update by its second rotation key, and a
	// recovery fork by its first key that nullifies the update.
	recoveryChain := func(t *testing.T) (g, u, f *validate.Op) {
		g = genesis(t, "a.test", k[0], k[1])
		u = update(t, g, k[1], "stolen.test", k[0], k[1])
		f = update(t, g, k[0], "recovered.test", k[0], k[1])
		return g, u, f
	}

	t.Run("OpsAndOpReportLogOrderAndNullification", func(t *testing.T) {
		s, _ := migrated(t)
		g, u, f := recoveryChain(t)
		did := g.GenesisDID()
		other := genesis(t, "other.test", k[1])
		var all []oplog.Entry
		all = append(all, appendOps(t, s, gen(g, at(time.Second)))...)
		all = append(all, appendOps(t, s, gen(other, at(2*time.Second)), next(did, u, at(3*time.Second)))...)
		all = append(all, appendOps(t, s, next(did, f, at(4*time.Second)))...)
		if got := seqsOf(all); !slices.Equal(got, []int64{1, 2, 3, 4}) {
			t.Fatalf("seqs %v", got)
		}
		ops, err := s.Ops(ctx, did)
		if err != nil {
			t.Fatal(err)
		}
		checkEntries(t, "Ops", ops, nullified([]oplog.Entry{all[0], all[2], all[3]}, 3))
		for _, e := range all {
			got, err := s.Op(ctx, e.Seq)
			if err != nil {
				t.Fatalf("Op(%d): %v", e.Seq, err)
			}
			checkEntries(t, fmt.Sprintf("Op(%d)", e.Seq), []oplog.Entry{got}, []oplog.Entry{e})
		}
		if _, err := s.Op(ctx, 5); !errors.Is(err, oplog.ErrNotFound) {
			t.Fatalf("Op(5): %v, want ErrNotFound", err)
		}
		rec, err := s.Record(ctx, did)
		if err != nil {
			t.Fatal(err)
		}
		if rec.HeadSeq != 4 || !slices.Equal(rec.Seqs, []int64{1, 4}) || len(rec.State.Ops) != 2 ||
			rec.State.Ops[0].CID != g.CID() || rec.State.Ops[1].CID != f.CID() {
			t.Fatalf("record after the fork: head %d seqs %v state %v", rec.HeadSeq, rec.Seqs, rec.State.Ops)
		}
	})

	t.Run("ExportPaging", func(t *testing.T) {
		s, _ := migrated(t)
		var all []oplog.Entry
		for i := range 7 {
			all = append(all, appendOps(t, s, gen(genesis(t, fmt.Sprintf("u%d.test", i), k[i%2]), at(time.Duration(i)*time.Second)))...)
		}
		for _, tc := range []struct {
			after int64
			limit int
			want  []oplog.Entry
		}{
			{0, 3, all[0:3]},
			{3, 3, all[3:6]},
			{6, 3, all[6:7]},
			{7, 3, nil},
			{0, 100, all},
			{2, 1, all[2:3]},
			{100, 10, nil},
		} {
			got, err := s.Export(ctx, tc.after, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			checkEntries(t, fmt.Sprintf("Export(%d, %d)", tc.after, tc.limit), got, tc.want)
		}
	})

	t.Run("ExportByTimeOrdersByCreatedAtThenCID", func(t *testing.T) {
		s, _ := migrated(t)
		g, u, f := recoveryChain(t)
		did := g.GenesisDID()
		gB := genesis(t, "b.test", k[0], k[1])
		gC := genesis(t, "c.test", k[1])
		e1 := appendOps(t, s, gen(g, at(5*time.Second)), gen(gB, at(5*time.Second))) // same ms: ordered by CID
		e3 := appendOps(t, s, next(did, u, at(6*time.Second)))
		e4 := appendOps(t, s, next(did, f, at(7*time.Second)))
		e5 := appendOps(t, s, gen(gC, at(time.Second))) // a replayed op: later seq, earlier time
		tied := e1
		if tied[1].CID < tied[0].CID {
			tied = []oplog.Entry{e1[1], e1[0]}
		}
		want := nullified(slices.Concat(e5, tied, e3, e4), 3)
		for _, tc := range []struct {
			after time.Time
			limit int
			want  []oplog.Entry
		}{
			{time.Time{}, 100, want},
			{at(0), 2, want[:2]},
			{at(time.Second), 100, want[1:]}, // strictly after
			{at(time.Second), 1, want[1:2]},
			{at(5*time.Second - time.Millisecond), 100, want[1:]},
			{at(5 * time.Second), 100, want[3:]},
			{at(7 * time.Second), 100, nil},
		} {
			got, err := s.ExportByTime(ctx, tc.after, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			checkEntries(t, fmt.Sprintf("ExportByTime(%s, %d)", tc.after.Format(time.RFC3339Nano), tc.limit), got, tc.want)
		}
	})

	t.Run("RecordRoundTrips", func(t *testing.T) {
		s, _ := migrated(t)
		g := genesis(t, "a.test", k[0], k[1])
		did := g.GenesisDID()
		u := update(t, g, k[1], "a2.test", k[1], k[0])
		tomb := tombstone(t, u, k[0])
		// Two ops of one DID in one batch: the record is the last one's.
		appendOps(t, s, gen(g, at(time.Second)), next(did, u, at(time.Second+time.Millisecond)))
		rec, err := s.Record(ctx, did)
		if err != nil {
			t.Fatal(err)
		}
		want, err := buildWrite(did, 1, at(time.Second), g, nil)
		if err != nil {
			t.Fatal(err)
		}
		want, err = buildWrite(did, 2, at(time.Second+time.Millisecond), u, want.Record)
		if err != nil {
			t.Fatal(err)
		}
		checkRecord(t, rec, want.Record)
		if rec.Tombstoned() || rec.Head == nil || rec.Head.Type() != validate.TypeOperation {
			t.Fatalf("live DID: tombstoned %v, head %v", rec.Tombstoned(), rec.Head)
		}

		appendOps(t, s, next(did, tomb, at(2*time.Second)))
		rec, err = s.Record(ctx, did)
		if err != nil {
			t.Fatal(err)
		}
		want, err = buildWrite(did, 3, at(2*time.Second), tomb, want.Record)
		if err != nil {
			t.Fatal(err)
		}
		checkRecord(t, rec, want.Record)
		if !rec.Tombstoned() || rec.Head == nil || rec.Head.Type() != validate.TypeTombstone {
			t.Fatalf("tombstoned DID: tombstoned %v, head %v", rec.Tombstoned(), rec.Head)
		}
	})

	t.Run("HeadsAnswerWhatHeadAnswers", func(t *testing.T) {
		s, _ := migrated(t)
		// Three DIDs a query, so that five make two queries, the second
		// padded.
		oplog.SetHeadsPerQuery(t, 3)
		g, u, f := recoveryChain(t)
		forked := g.GenesisDID()
		live := genesis(t, "live.test", k[1])
		gone := genesis(t, "gone.test", k[0])
		renamed := genesis(t, "old.test", k[0])
		appendOps(t, s, gen(g, at(time.Second)), gen(live, at(time.Second)), gen(gone, at(time.Second)), gen(renamed, at(time.Second)))
		appendOps(t, s, next(forked, u, at(2*time.Second)), next(gone.GenesisDID(), tombstone(t, gone, k[0]), at(2*time.Second)),
			next(renamed.GenesisDID(), update(t, renamed, k[0], "new.test", k[0]), at(2*time.Second)))
		appendOps(t, s, next(forked, f, at(3*time.Second)))
		unknown := "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
		asked := []string{unknown, forked, live.GenesisDID(), "did:web:example.com", gone.GenesisDID(), forked, renamed.GenesisDID()}
		heads, err := s.Heads(ctx, asked)
		if err != nil {
			t.Fatal(err)
		}
		if len(heads) != 4 {
			t.Fatalf("Heads: %d entries, want 4 (%v)", len(heads), slices.Collect(maps.Keys(heads)))
		}
		for _, did := range asked {
			want, err := s.Head(ctx, did)
			got, ok := heads[did]
			if errors.Is(err, oplog.ErrNotFound) {
				if ok {
					t.Fatalf("Heads has %s, which Head does not find", did)
				}
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if !ok || got.Decoded == nil {
				t.Fatalf("Heads lacks %s (or its decoded op)", did)
			}
			checkEntries(t, "Heads "+did, []oplog.Entry{got}, []oplog.Entry{want})
		}
		if heads[forked].CID != f.CID() {
			t.Fatalf("the head of the forked DID is %s, want the recovering op %s (the nullified op is no head)", heads[forked].CID, f.CID())
		}
		if heads[gone.GenesisDID()].Decoded.Type() != validate.TypeTombstone {
			t.Fatalf("the head of a tombstoned DID is not its tombstone")
		}
		if empty, err := s.Heads(ctx, nil); err != nil || len(empty) != 0 {
			t.Fatalf("Heads of none: %v, %v", empty, err)
		}
	})

	t.Run("HistoryRewriteRefusedByDatabase", func(t *testing.T) {
		s, dsn := migrated(t)
		db := tamper.Open(t, dsn)
		g, u, f := recoveryChain(t)
		did := g.GenesisDID()
		appendOps(t, s, gen(g, at(time.Second)), next(did, u, at(2*time.Second)))
		appendOps(t, s, next(did, f, at(3*time.Second)))
		before := snapshot(t, s, did)
		const cols = `seq, did, cid, created_at, op, type, signer`
		attacks := []string{
			`UPDATE operations SET did = 'did:plc:evil' WHERE seq = 1`,
			`UPDATE operations SET seq = seq + 100`,
			`UPDATE operations SET op = (SELECT op FROM operations WHERE seq = 3) WHERE seq = 2`,
			`DELETE FROM operations WHERE seq = 3`,
			`DELETE FROM operations`,
			`INSERT INTO operations (` + cols + `) SELECT 2, did, cid, created_at, op, type, signer FROM operations WHERE seq = 3
				ON CONFLICT (seq) DO UPDATE SET op = excluded.op, cid = excluded.cid`,
		}
		if oplog.IsPostgres(dsn) {
			attacks = append(attacks,
				`TRUNCATE operations`,
				`TRUNCATE operations CASCADE`,
				`TRUNCATE operations, nullified`,
			)
		} else {
			attacks = append(attacks,
				`INSERT OR REPLACE INTO operations (`+cols+`) SELECT 2, did, cid, created_at, op, type, signer FROM operations WHERE seq = 3`,
				`REPLACE INTO operations (`+cols+`) SELECT 1, 'did:plc:evil', cid, created_at, op, type, signer FROM operations WHERE seq = 1`,
				`UPDATE OR REPLACE operations SET seq = 1 WHERE seq = 2`,
			)
		}
		for _, q := range attacks {
			if _, err := db.ExecContext(ctx, q); err == nil {
				t.Errorf("the database accepted: %s", q)
			}
			if after := snapshot(t, s, did); !slices.EqualFunc(after, before, sameEntry) {
				t.Fatalf("the log changed after: %s\n before %s\n after  %s", q, brief(before), brief(after))
			}
		}
	})

	t.Run("NullificationRewriteRefusedByDatabase", func(t *testing.T) {
		s, dsn := migrated(t)
		db := tamper.Open(t, dsn)
		g, u, f := recoveryChain(t)
		did := g.GenesisDID()
		appendOps(t, s, gen(g, at(time.Second)), next(did, u, at(2*time.Second)))
		appendOps(t, s, next(did, f, at(3*time.Second)))
		before := snapshot(t, s, did)
		attacks := []string{
			`UPDATE nullified SET seq = 3 WHERE seq = 2`,
			`UPDATE nullified SET by_seq = 1`,
			`DELETE FROM nullified WHERE seq = 2`,
			`DELETE FROM nullified`,
			`INSERT INTO nullified (seq, by_seq) SELECT seq, 1 FROM nullified WHERE seq = 2
				ON CONFLICT (seq) DO UPDATE SET by_seq = excluded.by_seq`,
		}
		if oplog.IsPostgres(dsn) {
			attacks = append(attacks, `TRUNCATE nullified`)
		} else {
			attacks = append(attacks,
				`INSERT OR REPLACE INTO nullified (seq, by_seq) VALUES (2, 1)`,
				`UPDATE OR REPLACE nullified SET seq = 2 WHERE seq = 2`,
			)
		}
		for _, q := range attacks {
			if _, err := db.ExecContext(ctx, q); err == nil {
				t.Errorf("the database accepted: %s", q)
			}
			if after := snapshot(t, s, did); !slices.EqualFunc(after, before, sameEntry) {
				t.Fatalf("the nullifications changed after: %s", q)
			}
		}
		var bySeq int64
		if err := db.QueryRowContext(ctx, `SELECT by_seq FROM nullified WHERE seq = 2`).Scan(&bySeq); err != nil || bySeq != 3 {
			t.Fatalf("op 2 is nullified by %d (%v), want 3", bySeq, err)
		}
	})

	t.Run("PrepareMigratesEmptyDatabase", func(t *testing.T) {
		_, dsn := open(t)
		st, err := oplog.Status(dsn)
		if err != nil {
			t.Fatal(err)
		}
		if st.Version != 0 || st.Dirty || st.Latest < 1 {
			t.Fatalf("Status of an empty database: %+v", st)
		}
		st, err = oplog.Prepare(dsn)
		if err != nil {
			t.Fatalf("Prepare: %v", err)
		}
		if st.Version != st.Latest || st.Dirty {
			t.Fatalf("Prepare: %+v", st)
		}
		if st2, err := oplog.Status(dsn); err != nil || st2 != st {
			t.Fatalf("Status after Prepare: %+v, %v; want %+v", st2, err, st)
		}
		if st2, err := oplog.Prepare(dsn); err != nil || st2 != st {
			t.Fatalf("Prepare again: %+v, %v; want %+v", st2, err, st)
		}
	})

	for _, tc := range []struct{ name, sql string }{
		{"NewerSchemaRefused", `UPDATE schema_migrations SET version = version + 1`},
		{"DirtySchemaRefused", `UPDATE schema_migrations SET dirty = true`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, dsn := migrated(t)
			if _, err := tamper.Open(t, dsn).ExecContext(ctx, tc.sql); err != nil {
				t.Fatal(err)
			}
			if st, err := oplog.Prepare(dsn); !errors.Is(err, oplog.ErrSchema) {
				t.Fatalf("Prepare: %+v, %v; want ErrSchema", st, err)
			}
			if st, err := oplog.MigrateUp(dsn); !errors.Is(err, oplog.ErrSchema) {
				t.Fatalf("MigrateUp: %+v, %v; want ErrSchema", st, err)
			}
		})
	}

	testLog(t, migrated)
	testTree(t, migrated)
	testDerived(t, migrated)
	testIngest(t, migrated)
	testTimeAndFailures(t, migrated)
	testHandles(t, migrated)
}

// checkEmpty fails unless the log holds nothing of did.
func checkEmpty(t *testing.T, s oplog.Store, did string) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.Record(ctx, did); !errors.Is(err, oplog.ErrNotFound) {
		t.Fatalf("Record(%s): %v, want ErrNotFound", did, err)
	}
	if es, err := s.Ops(ctx, did); err != nil || len(es) != 0 {
		t.Fatalf("Ops(%s) = %v, %v; want none", did, seqsOf(es), err)
	}
}

// snapshot returns the whole log, with did's nullification flags.
func snapshot(t *testing.T, s oplog.Store, did string) []oplog.Entry {
	t.Helper()
	ctx := context.Background()
	all, err := s.Export(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	ops, err := s.Ops(ctx, did)
	if err != nil {
		t.Fatal(err)
	}
	return append(all, ops...)
}

// brief describes entries by seq, CID and nullification.
func brief(es []oplog.Entry) string {
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, " %d:%s:%v", e.Seq, e.CID, e.Nullified)
	}
	return b.String()
}

func sameEntry(a, b oplog.Entry) bool {
	return a.Seq == b.Seq && a.DID == b.DID && a.CID == b.CID && a.CreatedAt.Equal(b.CreatedAt) &&
		string(a.Op) == string(b.Op) && a.Nullified == b.Nullified
}

func checkRecord(t *testing.T, got, want *oplog.DIDRecord) {
	t.Helper()
	if got.DID != want.DID || got.HeadSeq != want.HeadSeq || !slices.Equal(got.Seqs, want.Seqs) ||
		got.Head == nil || want.Head == nil || string(got.Head.SignedCBOR()) != string(want.Head.SignedCBOR()) {
		t.Fatalf("record:\n got  %s head %d seqs %v head op %v\n want %s head %d seqs %v head op %v",
			got.DID, got.HeadSeq, got.Seqs, got.Head, want.DID, want.HeadSeq, want.Seqs, want.Head)
	}
	checkState(t, got.State, want.State)
}

// testLog runs the sequencer (Log) over stores from migrated.
func testLog(t *testing.T, migrated func(t *testing.T) (oplog.Store, string)) {
	ctx := context.Background()
	k := keys(t, 2)
	newLog := func(t *testing.T, s oplog.Store, c *testclock.Clock) *oplog.Log {
		l := oplog.NewLog(s, oplog.Options{Now: c.Now})
		t.Cleanup(l.Close)
		return l
	}
	submit := func(t *testing.T, l *oplog.Log, did string, op *validate.Op) oplog.Entry {
		t.Helper()
		e, err := l.Submit(ctx, did, op)
		if err != nil {
			t.Fatalf("Submit %s: %v", op.CID(), err)
		}
		return e
	}

	t.Run("TwoLogsOnOneStoreSeeEachOthersWrites", func(t *testing.T) {
		// Two processes sharing a database: each Log keeps the records it
		// read and wrote between transactions, and must not trust them
		// once the other has appended.
		s, _ := migrated(t)
		c := testclock.New(at(time.Second))
		a, b := newLog(t, s, c), newLog(t, s, c)
		g := genesis(t, "a.test", k[0], k[1])
		did := g.GenesisDID()
		submit(t, a, did, g)
		u1 := update(t, g, k[0], "b.test", k[0], k[1])
		c.Set(at(2 * time.Second))
		submit(t, b, did, u1)
		// a's own view of did is g; the store's is u1.
		u2 := update(t, u1, k[0], "c.test", k[0], k[1])
		c.Set(at(3 * time.Second))
		e := submit(t, a, did, u2)
		if e.Seq != 3 {
			t.Fatalf("seq %d, want 3", e.Seq)
		}
		// And through Ingest: b last saw seq 2.
		u3 := update(t, u2, k[1], "d.test", k[0], k[1])
		res, err := b.Ingest(ctx, "export:two-logs", []oplog.IngestItem{ingestItem(1, 0, did, u3, at(4*time.Second))})
		if err != nil || len(res.Entries) != 1 || len(res.Rejected) != 0 {
			t.Fatalf("Ingest after the other log's write: %+v, %v", res, err)
		}
		rec, err := s.Record(ctx, did)
		if err != nil || rec.HeadSeq != 4 || rec.Head.CID() != u3.CID() || len(rec.State.Ops) != 4 {
			t.Fatalf("record %+v, %v", rec, err)
		}
	})

	t.Run("AppendViewLoadReadsMoreRecords", func(t *testing.T) {
		s, _ := migrated(t)
		ga, gb := genesis(t, "a.test", k[0]), genesis(t, "b.test", k[1])
		appendOps(t, s, gen(ga, at(time.Second)), gen(gb, at(time.Second)))
		err := s.Append(ctx, "", []string{ga.GenesisDID()}, func(v oplog.View) (oplog.Batch, error) {
			if len(v.Records) != 1 || v.Records[ga.GenesisDID()] == nil {
				t.Errorf("view records %v", v.Records)
			}
			if err := v.Load([]string{gb.GenesisDID(), "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"}); err != nil {
				return oplog.Batch{}, err
			}
			r := v.Records[gb.GenesisDID()]
			if len(v.Records) != 2 || r == nil || r.HeadSeq != 2 || r.State.Ops[0].CID != gb.CID() {
				t.Errorf("after Load: %v", v.Records)
			}
			return oplog.Batch{}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("LogRegisterUpdateRecoveryFork", func(t *testing.T) {
		s, _ := migrated(t)
		c := testclock.New(at(time.Second))
		l := newLog(t, s, c)
		g := genesis(t, "a.test", k[0], k[1])
		did := g.GenesisDID()
		u := update(t, g, k[1], "stolen.test", k[0], k[1])
		f := update(t, g, k[0], "recovered.test", k[0], k[1])

		changed := l.Changed()
		e1 := submit(t, l, did, g)
		<-changed // closed by the commit (else the test times out)
		c.Set(at(2 * time.Second))
		e2 := submit(t, l, did, u)
		c.Set(at(3 * time.Second))
		e3 := submit(t, l, did, f)
		for i, e := range []oplog.Entry{e1, e2, e3} {
			if want := int64(i + 1); e.Seq != want || e.DID != did || !e.CreatedAt.Equal(at(time.Duration(want)*time.Second)) {
				t.Fatalf("entry %d: seq %d did %s at %s", i, e.Seq, e.DID, e.CreatedAt)
			}
		}
		if e3.CID != f.CID() || string(e3.Op) != string(f.SignedCBOR()) {
			t.Fatalf("entry 3 is not the fork op")
		}
		rec, err := s.Record(ctx, did)
		if err != nil {
			t.Fatal(err)
		}
		if rec.HeadSeq != 3 || !slices.Equal(rec.Seqs, []int64{1, 3}) || rec.Head.CID() != f.CID() {
			t.Fatalf("record: head %d seqs %v head op %v", rec.HeadSeq, rec.Seqs, rec.Head)
		}
		// Head skips the nullified op 2: the fork at seq 3 is the head.
		if h, err := s.Head(ctx, did); err != nil || h.Seq != 3 || h.CID != f.CID() || h.Decoded == nil {
			t.Fatalf("head: seq %d cid %s, %v", h.Seq, h.CID, err)
		}
		if _, err := s.Head(ctx, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"); !errors.Is(err, oplog.ErrNotFound) {
			t.Fatalf("head of an unknown DID: %v", err)
		}
		ops, err := s.Ops(ctx, did)
		if err != nil {
			t.Fatal(err)
		}
		checkEntries(t, "Ops", ops, nullified([]oplog.Entry{e1, e2, e3}, 2))

		// Nothing may build on the nullified op.
		c.Set(at(4 * time.Second))
		if _, err := l.Submit(ctx, did, update(t, u, k[1], "again.test", k[0], k[1])); !errors.Is(err, validate.ErrMisordered) {
			t.Fatalf("op after a nullified op: %v, want ErrMisordered", err)
		}
		verifyLog(t, s)
	})

	t.Run("ForkRaceHasOneWinner", func(t *testing.T) {
		s, _ := migrated(t)
		l := newLog(t, s, testclock.New(at(time.Second)))
		g := genesis(t, "a.test", k[0], k[1])
		did := g.GenesisDID()
		submit(t, l, did, g)
		// Signed by the highest-priority key: no loser may fork the winner.
		ops := make([]*validate.Op, 20)
		for i := range ops {
			ops[i] = update(t, g, k[0], fmt.Sprintf("h%d.test", i), k[0], k[1])
		}
		wins, conflicts := raceSubmit(t, []*oplog.Log{l}, did, ops)
		if wins != 1 {
			t.Fatalf("%d of %d concurrent ops on the same prev were accepted, want 1", wins, len(ops))
		}
		t.Logf("1 winner, %d conflicts (409), %d rejected on the committed state", conflicts, len(ops)-1-conflicts)
		if n := verifyLog(t, s); n != 2 {
			t.Fatalf("log holds %d ops, want 2", n)
		}
	})

	t.Run("ConcurrentCreatesAllCommitDensely", func(t *testing.T) {
		s, _ := migrated(t)
		l := newLog(t, s, testclock.New(at(time.Second)))
		ops := make([]*validate.Op, 200)
		for i := range ops {
			ops[i] = genesis(t, fmt.Sprintf("u%d.test", i), k[i%2])
		}
		createAll(t, []*oplog.Log{l}, ops)
		if n := verifyLog(t, s); n != int64(len(ops)) {
			t.Fatalf("log holds %d ops, want %d", n, len(ops))
		}
	})

	t.Run("TwoProcessesShareOneLog", func(t *testing.T) {
		s1, dsn := migrated(t)
		s2 := reopen(t, dsn)
		c := testclock.New(at(time.Second))
		logs := []*oplog.Log{newLog(t, s1, c), newLog(t, s2, c)}
		g := genesis(t, "a.test", k[0], k[1])
		did := g.GenesisDID()
		submit(t, logs[1], did, g)

		var wg sync.WaitGroup
		wg.Add(2)
		creates := make([]*validate.Op, 100)
		for i := range creates {
			creates[i] = genesis(t, fmt.Sprintf("u%d.test", i), k[i%2])
		}
		forks := make([]*validate.Op, 20)
		for i := range forks {
			forks[i] = update(t, g, k[0], fmt.Sprintf("h%d.test", i), k[0], k[1])
		}
		var wins int
		go func() {
			defer wg.Done()
			createAll(t, logs, creates)
		}()
		go func() {
			defer wg.Done()
			wins, _ = raceSubmit(t, logs, did, forks)
		}()
		wg.Wait()
		if wins != 1 {
			t.Fatalf("%d of %d concurrent ops on the same prev, through two processes, were accepted, want 1", wins, len(forks))
		}
		if n := verifyLog(t, s1); n != int64(1+len(creates)+1) {
			t.Fatalf("log holds %d ops, want %d", n, 1+len(creates)+1)
		}
	})

	t.Run("LaggingClockDoesNotMoveCreatedAtBack", func(t *testing.T) {
		// Two processes whose clocks disagree by 10s: the one behind must
		// not stamp an op older than ops already committed, or a mirror
		// paging the timestamp export past them would never see it.
		s1, dsn := migrated(t)
		s2 := reopen(t, dsn)
		ahead := newLog(t, s1, testclock.New(at(10*time.Second)))
		behind := newLog(t, s2, testclock.New(at(0)))
		gA, gB := genesis(t, "a.test", k[0], k[1]), genesis(t, "b.test", k[1])
		eA := submit(t, ahead, gA.GenesisDID(), gA)
		eB := submit(t, behind, gB.GenesisDID(), gB)
		eU := submit(t, behind, gA.GenesisDID(), update(t, gA, k[1], "a2.test", k[0], k[1]))
		for _, e := range []oplog.Entry{eB, eU} {
			if e.CreatedAt.Before(eA.CreatedAt) {
				t.Fatalf("op %d stamped %s, before op %d at %s", e.Seq, e.CreatedAt, eA.Seq, eA.CreatedAt)
			}
		}
		// A mirror that has paged the timestamp export up to just before
		// op 1 still finds every later op.
		es, err := s1.ExportByTime(ctx, eA.CreatedAt.Add(-time.Millisecond), 10)
		if err != nil {
			t.Fatal(err)
		}
		if got := slices.Sorted(slices.Values(seqsOf(es))); !slices.Equal(got, []int64{1, 2, 3}) {
			t.Fatalf("timestamp export after op 1's time holds %v, want [1 2 3]", got)
		}
		verifyLog(t, s1)
	})

	t.Run("RateLimitAtBoundary", func(t *testing.T) {
		s, _ := migrated(t)
		c := testclock.New(at(0))
		l := newLog(t, s, c)
		g := genesis(t, "a.test", k[0], k[1])
		did := g.GenesisDID()
		ops := []*validate.Op{g}
		submit(t, l, did, g)
		// Ten ops within the hour pass (validate.RateLimitHour)...
		for i := 1; i < validate.RateLimitHour; i++ {
			c.Set(at(time.Duration(i) * time.Millisecond))
			op := update(t, ops[i-1], k[1], fmt.Sprintf("h%d.test", i), k[0], k[1])
			submit(t, l, did, op)
			ops = append(ops, op)
		}
		// ... the eleventh does not.
		c.Set(at(10 * time.Millisecond))
		_, err := l.Submit(ctx, did, update(t, ops[9], k[1], "h10.test", k[0], k[1]))
		checkRateLimited(t, err)
		// A recovery fork is exempt: it replaces op 9 (seq 10).
		fork := update(t, ops[8], k[0], "fork.test", k[0], k[1])
		if e := submit(t, l, did, fork); e.Seq != 11 {
			t.Fatalf("fork seq %d, want 11", e.Seq)
		}
		// Now ten live ops, the oldest at t0: still limited 1ms before it
		// leaves the hour, free once it has.
		after := update(t, fork, k[1], "later.test", k[0], k[1])
		c.Set(at(time.Hour - time.Millisecond))
		_, err = l.Submit(ctx, did, after)
		checkRateLimited(t, err)
		c.Set(at(time.Hour))
		if e := submit(t, l, did, after); e.Seq != 12 || !e.CreatedAt.Equal(at(time.Hour)) {
			t.Fatalf("op after the window: seq %d at %s", e.Seq, e.CreatedAt)
		}
		verifyLog(t, s)
	})
}

func checkRateLimited(t *testing.T, err error) {
	t.Helper()
	var ve *validate.Error
	if !errors.Is(err, validate.ErrRateLimit) || !errors.As(err, &ve) {
		t.Fatalf("got %v, want a rate-limit *validate.Error", err)
	}
	if want := fmt.Sprintf("To many operations within last hour (max %d)", validate.RateLimitHour); ve.Message != want {
		t.Fatalf("message %q, want %q", ve.Message, want)
	}
}

// raceSubmit submits every op for did at once, spread over logs, and
// returns how many were accepted and how many failed as conflicts. Every
// rejection must be a conflict or a chain-rule verdict on the committed
// state.
func raceSubmit(t *testing.T, logs []*oplog.Log, did string, ops []*validate.Op) (wins, conflicts int) {
	errs := make([]error, len(ops))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, op := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = logs[i%len(logs)].Submit(context.Background(), did, op)
		}()
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		var (
			conflict *oplog.ConflictError
			verdict  *validate.Error
		)
		switch {
		case err == nil:
			wins++
		case errors.As(err, &conflict):
			conflicts++
		case errors.As(err, &verdict) && (errors.Is(err, validate.ErrInvalidSignature) || errors.Is(err, validate.ErrMisordered)):
		default:
			t.Errorf("unexpected rejection: %v (%T)", err, err)
		}
	}
	return wins, conflicts
}

// createAll submits the genesis ops at once, spread over logs; all must be
// accepted.
func createAll(t *testing.T, logs []*oplog.Log, ops []*validate.Op) {
	errs := make([]error, len(ops))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, op := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = logs[i%len(logs)].Submit(context.Background(), op.GenesisDID(), op)
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("create %d: %v", i, err)
		}
	}
}

// verifyLog checks the whole log as an auditor would: seq is dense from
// 1, createdAt never decreases along seq, every op re-applies in seq order
// under the chain rules, and each DID's record and nullification flags
// equal that replay's. It returns the number of ops.
func verifyLog(t *testing.T, s oplog.Store) int64 {
	t.Helper()
	ctx := context.Background()
	all, err := s.Export(ctx, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if seq, err := s.LatestSeq(ctx); err != nil || seq != int64(len(all)) {
		t.Fatalf("LatestSeq = %d, %v; the log holds %d ops", seq, err, len(all))
	}
	states := map[string]validate.State{}
	seqs := map[string][]int64{}
	isNullified := map[int64]bool{}
	var last time.Time
	for i, e := range all {
		if e.Seq != int64(i+1) {
			t.Fatalf("op %d has seq %d: the log is not dense", i+1, e.Seq)
		}
		if e.CreatedAt.Before(last) {
			t.Fatalf("op %d at %s is older than op %d at %s", e.Seq, e.CreatedAt, e.Seq-1, last)
		}
		last = e.CreatedAt
		op, err := validate.ParseCBOR(e.Op)
		if err != nil || op.CID() != e.CID {
			t.Fatalf("op %d: parse %v, cid %s", e.Seq, err, e.CID)
		}
		st := states[e.DID]
		st.DID = e.DID
		after, _, err := st.Next(op, e.CreatedAt)
		if err != nil {
			t.Fatalf("op %d does not apply in seq order: %v", e.Seq, err)
		}
		kept := len(after.Ops) - 1
		for _, n := range seqs[e.DID][kept:] {
			isNullified[n] = true
		}
		seqs[e.DID] = append(slices.Clone(seqs[e.DID][:kept]), e.Seq)
		states[e.DID] = after
	}
	for did, st := range states {
		rec, err := s.Record(ctx, did)
		if err != nil {
			t.Fatalf("Record(%s): %v", did, err)
		}
		if !slices.Equal(rec.Seqs, seqs[did]) || rec.HeadSeq != seqs[did][len(seqs[did])-1] {
			t.Fatalf("record of %s: head %d seqs %v, replay gives %v", did, rec.HeadSeq, rec.Seqs, seqs[did])
		}
		checkState(t, rec.State, st)
		ops, err := s.Ops(ctx, did)
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range ops {
			if i > 0 && e.Seq <= ops[i-1].Seq {
				t.Fatalf("Ops(%s) out of order: %v", did, seqsOf(ops))
			}
			if e.Nullified != isNullified[e.Seq] {
				t.Fatalf("op %d: nullified %v, replay says %v", e.Seq, e.Nullified, isNullified[e.Seq])
			}
		}
	}
	return int64(len(all))
}

func TestDatabasePasswordNotInErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://plc:s3cret@db.example:5432/plc?sslmode=require", "postgres://plc:xxxxx@db.example:5432/plc?sslmode=require"},
		{"postgres://plc@/plc?host=/run/pg&password=s3cret", "postgres://plc@/plc?host=%2Frun%2Fpg&password=xxxxx"},
		{"postgresql://db.example/plc", "postgresql://db.example/plc"},
		{"host=db.example password=s3cret", "(database connection string)"},
	} {
		if got := oplog.RedactURL(tc.in); got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	for _, url := range []string{
		"postgres://plc:s3cret@/plc?host=/nonexistent/dir&connect_timeout=5",
		"postgres://plc@/plc?host=/nonexistent/dir&password=s3cret&connect_timeout=5",
		"postgres://plc:s3cret@/plc?host=/nonexistent/dir&bogus_setting",
	} {
		_, err := oplog.OpenPostgres(context.Background(), url)
		if err == nil {
			t.Fatalf("OpenPostgres(%s) succeeded", oplog.RedactURL(url))
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("OpenPostgres error shows the password: %v", err)
		}
	}
}
