package oplog_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plcdir/plc/internal/testclock"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/tamper"
	"github.com/plcdir/plc/validate"
)

// The conformance cases of replayed history: Store.Append with a source, cursors and
// rejections, then Log.Ingest and Import over them.

func testIngest(t *testing.T, migrated func(t *testing.T) (oplog.Store, string)) {
	ctx := context.Background()
	k := keys(t, 3)
	const src = "export:test"

	t.Run("IngestCommitsOpsRejectionsAndCursorTogether", func(t *testing.T) {
		s, _ := migrated(t)
		if c, err := s.Cursor(ctx, src); err != nil || c != (oplog.Cursor{Source: src}) {
			t.Fatalf("Cursor of a new source = %+v, %v", c, err)
		}
		gA, gB := genesis(t, "a.test", k[0]), genesis(t, "b.test", k[1])
		rej := oplog.Rejection{Source: src, Line: 2, DID: "did:plc:x", CID: "bafyx", Raw: []byte(`{"bad"`), Reason: "invalid JSON", CreatedAt: at(time.Minute)}
		c1 := oplog.Cursor{Source: src, Line: 3, Seq: 30, UpdatedAt: at(time.Minute)}
		err := s.Append(ctx, src, []string{gA.GenesisDID(), gB.GenesisDID()}, func(v oplog.View) (oplog.Batch, error) {
			if v.Cursor != (oplog.Cursor{Source: src}) || v.LastSeq != 0 {
				t.Errorf("view: %+v", v)
			}
			w1, err1 := buildWrite(gA.GenesisDID(), 1, at(0), gA, nil)
			w2, err2 := buildWrite(gB.GenesisDID(), 2, at(0), gB, nil)
			if err := errors.Join(err1, err2); err != nil {
				t.Fatal(err)
			}
			return oplog.Batch{Writes: []oplog.Write{w1, w2}, Rejections: []oplog.Rejection{rej}, Cursor: c1}, nil
		})
		if err != nil {
			t.Fatalf("Ingest: %v", err)
		}
		if seq, err := s.LatestSeq(ctx); err != nil || seq != 2 {
			t.Fatalf("LatestSeq = %d, %v; want 2", seq, err)
		}
		if c, err := s.Cursor(ctx, src); err != nil || c != c1 {
			t.Fatalf("Cursor = %+v, %v; want %+v", c, err, c1)
		}
		rej.ID = 1
		checkRejections(t, s, src, rej)
		checkRejections(t, s, "", rej)
		checkRejections(t, s, "export:other")

		// Rejections and a cursor move alone are written; the view shows
		// the committed cursor.
		rej2 := oplog.Rejection{Source: src, Line: 5, Raw: []byte{}, Reason: "no did", CreatedAt: at(2 * time.Minute)}
		c2 := oplog.Cursor{Source: src, Line: 6, Seq: 30, UpdatedAt: at(2 * time.Minute)}
		err = s.Append(ctx, src, nil, func(v oplog.View) (oplog.Batch, error) {
			if v.Cursor != c1 || v.LastSeq != 2 {
				t.Errorf("view: cursor %+v last seq %d; want %+v, 2", v.Cursor, v.LastSeq, c1)
			}
			return oplog.Batch{Rejections: []oplog.Rejection{rej2}, Cursor: c2}, nil
		})
		if err != nil {
			t.Fatalf("Ingest: %v", err)
		}
		rej2.ID = 2
		checkRejections(t, s, src, rej, rej2)
		if c, err := s.Cursor(ctx, src); err != nil || c != c2 {
			t.Fatalf("Cursor = %+v, %v; want %+v", c, err, c2)
		}
		// Paging.
		if got, err := s.Rejections(ctx, src, 1, 10); err != nil || len(got) != 1 || got[0].ID != 2 {
			t.Fatalf("Rejections after 1: %+v, %v", got, err)
		}
		if got, err := s.Rejections(ctx, src, 0, 1); err != nil || len(got) != 1 || got[0].ID != 1 {
			t.Fatalf("Rejections limit 1: %+v, %v", got, err)
		}

		// Nothing changed: nothing written (UpdatedAt stays).
		err = s.Append(ctx, src, nil, func(v oplog.View) (oplog.Batch, error) {
			c := v.Cursor
			return oplog.Batch{Cursor: c}, nil
		})
		if err != nil {
			t.Fatalf("Ingest of nothing: %v", err)
		}
		if c, err := s.Cursor(ctx, src); err != nil || c != c2 {
			t.Fatalf("Cursor = %+v, %v; want %+v", c, err, c2)
		}
		// Append leaves cursors alone and sees ops written by Ingest.
		appendOps(t, s, gen(genesis(t, "c.test", k[2]), at(time.Second)))
		if c, err := s.Cursor(ctx, src); err != nil || c != c2 {
			t.Fatalf("Cursor after Append = %+v, %v; want %+v", c, err, c2)
		}
		verifyLog(t, s)
	})

	t.Run("IngestFailureWritesNothing", func(t *testing.T) {
		s, _ := migrated(t)
		g := genesis(t, "a.test", k[0])
		boom := errors.New("boom")
		batch := func(v oplog.View) oplog.Batch {
			w, err := buildWrite(g.GenesisDID(), v.LastSeq+1, at(0), g, nil)
			if err != nil {
				t.Fatal(err)
			}
			return oplog.Batch{
				Writes:     []oplog.Write{w},
				Rejections: []oplog.Rejection{{Source: src, Line: 1, Raw: []byte("x"), Reason: "r", CreatedAt: at(0)}},
				Cursor:     oplog.Cursor{Source: src, Line: 2, UpdatedAt: at(0)},
			}
		}
		for _, tc := range []struct {
			name   string
			mangle func(*oplog.Batch) error
		}{
			{"DecideError", func(*oplog.Batch) error { return boom }},
			{"CursorOfAnotherSource", func(b *oplog.Batch) error { b.Cursor.Source = "export:other"; return nil }},
			{"RejectionOfAnotherSource", func(b *oplog.Batch) error { b.Rejections[0].Source = "export:other"; return nil }},
			{"SeqGap", func(b *oplog.Batch) error { b.Writes[0].Entry.Seq++; return nil }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := s.Append(ctx, src, []string{g.GenesisDID()}, func(v oplog.View) (oplog.Batch, error) {
					b := batch(v)
					return b, tc.mangle(&b)
				})
				if err == nil {
					t.Fatal("Ingest succeeded")
				}
				checkEmpty(t, s, g.GenesisDID())
				checkRejections(t, s, "")
				if c, err := s.Cursor(ctx, src); err != nil || c != (oplog.Cursor{Source: src}) {
					t.Fatalf("Cursor = %+v, %v; want none", c, err)
				}
			})
		}
		for _, b := range []oplog.Batch{
			{Rejections: []oplog.Rejection{{Line: 1, Raw: []byte("x"), Reason: "r", CreatedAt: at(0)}}},
			{Cursor: oplog.Cursor{Line: 1, UpdatedAt: at(0)}},
		} {
			if err := s.Append(ctx, "", nil, func(oplog.View) (oplog.Batch, error) { return b, nil }); err == nil {
				t.Fatalf("Append of %+v without a source succeeded", b)
			}
		}
		checkRejections(t, s, "")
	})

	t.Run("CursorNeverMovesBack", func(t *testing.T) {
		s, dsn := migrated(t)
		move := func(line, seq int64) error {
			return s.Append(ctx, src, nil, func(v oplog.View) (oplog.Batch, error) {
				return oplog.Batch{Cursor: oplog.Cursor{Source: src, Line: line, Seq: seq, UpdatedAt: at(0)}}, nil
			})
		}
		if err := move(10, 100); err != nil {
			t.Fatal(err)
		}
		for _, back := range [][2]int64{{9, 100}, {10, 99}, {0, 0}} {
			if err := move(back[0], back[1]); err == nil {
				t.Errorf("the cursor moved back to line %d seq %d", back[0], back[1])
			}
		}
		db := tamper.Open(t, dsn)
		attacks := []string{
			`UPDATE cursors SET line = line - 1`,
			`UPDATE cursors SET seq = 0`,
			`UPDATE cursors SET source = 'export:other'`,
			`DELETE FROM cursors`,
		}
		if oplog.IsPostgres(dsn) {
			attacks = append(attacks, `TRUNCATE cursors`)
		} else {
			attacks = append(attacks,
				`INSERT OR REPLACE INTO cursors (source, line, seq, updated_at) VALUES ('`+src+`', 0, 0, 0)`,
				`REPLACE INTO cursors (source, line, seq, updated_at) VALUES ('`+src+`', 0, 0, 0)`,
			)
		}
		for _, q := range attacks {
			if _, err := db.ExecContext(ctx, q); err == nil {
				t.Errorf("the database accepted: %s", q)
			}
		}
		if c, err := s.Cursor(ctx, src); err != nil || c.Line != 10 || c.Seq != 100 {
			t.Fatalf("Cursor = %+v, %v; want line 10 seq 100", c, err)
		}
	})

	t.Run("RejectionRewriteRefusedByDatabase", func(t *testing.T) {
		s, dsn := migrated(t)
		want := oplog.Rejection{ID: 1, Source: src, Line: 1, DID: "did:plc:a", CID: "c", Raw: []byte("raw"), Reason: "forged", CreatedAt: at(0)}
		err := s.Append(ctx, src, nil, func(v oplog.View) (oplog.Batch, error) {
			return oplog.Batch{Rejections: []oplog.Rejection{want}, Cursor: oplog.Cursor{Source: src, Line: 1, UpdatedAt: at(0)}}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		db := tamper.Open(t, dsn)
		attacks := []string{
			`UPDATE rejected SET reason = 'fine'`,
			`UPDATE rejected SET raw = raw || raw`,
			`DELETE FROM rejected`,
		}
		if oplog.IsPostgres(dsn) {
			attacks = append(attacks, `TRUNCATE rejected`, `TRUNCATE rejected, cursors`)
		} else {
			attacks = append(attacks,
				`INSERT OR REPLACE INTO rejected (id, source, line, did, cid, raw, reason, created_at) VALUES (1, 'x', 1, '', '', x'', 'fine', 0)`,
				`REPLACE INTO rejected (id, source, line, did, cid, raw, reason, created_at) VALUES (1, 'x', 1, '', '', x'', 'fine', 0)`,
				`UPDATE OR REPLACE rejected SET id = 1 WHERE id = 1`,
			)
		}
		for _, q := range attacks {
			if _, err := db.ExecContext(ctx, q); err == nil {
				t.Errorf("the database accepted: %s", q)
			}
			checkRejections(t, s, "", want)
		}
	})

	testLogIngest(t, migrated)
	testRejectionLookups(t, migrated)
	testImportParts(t, migrated)
	testIngestWithin(t, migrated)
}

func testLogIngest(t *testing.T, migrated func(t *testing.T) (oplog.Store, string)) {
	ctx := context.Background()
	k := keys(t, 3)
	const src = "export:test"
	newLog := func(t *testing.T, s oplog.Store, now time.Time) *oplog.Log {
		l := oplog.NewLog(s, oplog.Options{Now: testclock.New(now).Now})
		t.Cleanup(l.Close)
		return l
	}

	t.Run("RejectionKindIsTypedNotReadFromTheText", func(t *testing.T) {
		s, _ := migrated(t)
		l := newLog(t, s, at(time.Hour))
		items := []oplog.IngestItem{
			{Line: 1, Raw: []byte("a"), Err: oplog.Reordered(fmt.Errorf("%w: seq 2 is not after seq 3", oplog.ErrBadLine))},
			{Line: 2, Raw: []byte("b"), Err: fmt.Errorf("%w: a field says out of order", oplog.ErrBadLine)},
		}
		res, err := l.Ingest(ctx, src, items)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := s.Rejections(ctx, src, 0, 10)
		if err != nil || len(rs) != 2 || len(res.Rejected) != 2 {
			t.Fatalf("Rejections = %+v, %v; result %+v", rs, err, res.Rejected)
		}
		for i, want := range []oplog.RejectionKind{oplog.KindReordered, oplog.KindInvalidOp} {
			if rs[i].Kind != want || res.Rejected[i].Kind != want {
				t.Errorf("line %d: stored kind %q, returned %q; want %q", i+1, rs[i].Kind, res.Rejected[i].Kind, want)
			}
		}
		if rs[0].Reason != items[0].Err.Error() {
			t.Errorf("reason %q, want the error's text %q", rs[0].Reason, items[0].Err.Error())
		}
	})

	t.Run("RejectKeepsTheCursorAndStopsAtClose", func(t *testing.T) {
		s, _ := migrated(t)
		l := newLog(t, s, at(time.Hour))
		if _, err := l.Ingest(ctx, src, []oplog.IngestItem{{Line: 3, Raw: []byte("x"), Err: oplog.ErrBadLine}}); err != nil {
			t.Fatal(err)
		}
		before, err := s.Cursor(ctx, src)
		if err != nil {
			t.Fatal(err)
		}
		rj := oplog.Rejection{Source: src, DID: "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", Raw: []byte("evidence"), Kind: oplog.KindHistoryRewrite, Reason: "found", CreatedAt: at(time.Hour)}
		if err := l.Reject(ctx, rj); err != nil {
			t.Fatal(err)
		}
		if c, err := s.Cursor(ctx, src); err != nil || c != before {
			t.Fatalf("Cursor after Reject = %+v, %v; want %+v", c, err, before)
		}
		rs, err := s.Rejections(ctx, src, 0, 10)
		want := rj
		want.ID = 2
		if err != nil || len(rs) != 2 || !sameRejection(rs[1], want) || rs[1].Kind != oplog.KindHistoryRewrite || rs[0].Kind != oplog.KindInvalidOp {
			t.Fatalf("Rejections = %+v, %v; want the line's, then %+v", rs, err, want)
		}
		if err := l.Reject(ctx, oplog.Rejection{Raw: []byte("x"), Reason: "r"}); err == nil {
			t.Fatal("Reject without a source succeeded")
		}
		l.Close()
		if err := l.Reject(ctx, rj); !errors.Is(err, oplog.ErrClosed) {
			t.Fatalf("Reject after Close: %v, want ErrClosed", err)
		}
	})

	t.Run("IngestEqualsSubmittingOpByOp", func(t *testing.T) {
		h := newHistory(t, k)
		want, _ := migrated(t)
		h.submitAll(t, want)
		got, _ := migrated(t)
		l := newLog(t, got, at(time.Hour))
		changed := l.Changed()
		res, err := l.Ingest(ctx, src, h.items())
		if err != nil {
			t.Fatal(err)
		}
		<-changed // the commit woke the stream (else the test times out)
		if len(res.Entries) != len(h.ops) || len(res.Rejected) != 0 || res.Skipped != 0 {
			t.Fatalf("result: %d entries, rejected %+v, %d skipped", len(res.Entries), res.Rejected, res.Skipped)
		}
		if res.Cursor.Line != int64(len(h.ops)) || res.Cursor.Seq != int64(len(h.ops)) || !res.Cursor.UpdatedAt.Equal(at(time.Hour)) {
			t.Fatalf("cursor %+v", res.Cursor)
		}
		checkSameLog(t, got, want)
		verifyLog(t, got)
	})

	t.Run("IngestRejectsAndGoesOn", func(t *testing.T) {
		s, _ := migrated(t)
		l := newLog(t, s, at(time.Hour))
		g := genesis(t, "a.test", k[0], k[1])
		did := g.GenesisDID()
		u := update(t, g, k[1], "stolen.test", k[0], k[1])
		f := update(t, g, k[0], "recovered.test", k[0], k[1])
		forged := update(t, f, k[2], "forged.test", k[0], k[1]) // k[2] is no rotation key
		afterNull := update(t, u, k[1], "after.test", k[0], k[1])
		late := update(t, f, k[1], "late.test", k[0], k[1])
		items := []oplog.IngestItem{
			ingestItem(1, 0, did, g, at(time.Second)),
			ingestItem(2, 0, did, u, at(2*time.Second)),
			{Line: 3, Raw: []byte("{not json"), Err: fmt.Errorf("%w: invalid JSON", oplog.ErrBadLine)},
			ingestItem(4, 0, did, f, at(3*time.Second)),
			ingestItem(5, 0, did, forged, at(4*time.Second)),
			ingestItem(6, 0, did, afterNull, at(5*time.Second)),
			ingestItem(7, 0, did, late, at(6*time.Second)), // after rejected ops: judged against the state as it is
			ingestItem(8, 0, genesis(t, "b.test", k[1]).GenesisDID(), g, at(7*time.Second)),
		}
		res, err := l.Ingest(ctx, src, items)
		if err != nil {
			t.Fatal(err)
		}
		if got := seqsOf(res.Entries); !slices.Equal(got, []int64{1, 2, 3, 4}) {
			t.Fatalf("appended seqs %v, want [1 2 3 4]", got)
		}
		wantReasons := map[int64]string{
			3: "invalid JSON",
			5: "invalid signature",
			6: "Operations not correctly ordered",
			8: "Hash of genesis operation does not match DID identifier",
		}
		var lines []int64
		for _, r := range res.Rejected {
			lines = append(lines, r.Line)
			if !strings.Contains(r.Reason, wantReasons[r.Line]) {
				t.Errorf("line %d rejected for %q, want %q", r.Line, r.Reason, wantReasons[r.Line])
			}
			if it := items[r.Line-1]; !bytes.Equal(r.Raw, it.Raw) || r.DID != it.DID || r.CID != it.CID || !r.CreatedAt.Equal(at(time.Hour)) {
				t.Errorf("rejection of line %d: %+v", r.Line, r)
			}
		}
		if !slices.Equal(lines, []int64{3, 5, 6, 8}) {
			t.Fatalf("rejected lines %v, want [3 5 6 8]", lines)
		}
		stored, err := s.Rejections(ctx, src, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		for i := range stored {
			stored[i].ID = 0
		}
		if !slices.EqualFunc(stored, res.Rejected, sameRejection) {
			t.Fatalf("stored rejections:\n %+v\nwant\n %+v", stored, res.Rejected)
		}
		ops, err := s.Ops(ctx, did)
		if err != nil {
			t.Fatal(err)
		}
		if len(ops) != 4 || ops[3].CID != late.CID() || !ops[1].Nullified || ops[3].Nullified {
			t.Fatalf("ops of the DID: %s", brief(ops))
		}
		verifyLog(t, s)
	})

	t.Run("IngestSkipsWhatIsDone", func(t *testing.T) {
		h := newHistory(t, k)
		s, _ := migrated(t)
		l := newLog(t, s, at(time.Hour))
		all := h.items()
		res, err := l.Ingest(ctx, src, all[:3])
		if err != nil || len(res.Entries) != 3 {
			t.Fatalf("first ingest: %d entries, %v", len(res.Entries), err)
		}
		res, err = l.Ingest(ctx, src, all)
		if err != nil {
			t.Fatal(err)
		}
		if res.Skipped != 3 || len(res.Entries) != len(all)-3 || len(res.Rejected) != 0 {
			t.Fatalf("second ingest: %d entries, %d rejected, %d skipped", len(res.Entries), len(res.Rejected), res.Skipped)
		}
		// Seq-mode items are positioned by seq, whatever their line: the
		// same ops on other lines (a longer export) are still done.
		shifted := h.items()
		for i := range shifted {
			shifted[i].Line += 100
		}
		res, err = l.Ingest(ctx, src, shifted)
		if err != nil || res.Skipped != len(all) || len(res.Entries)+len(res.Rejected) != 0 {
			t.Fatalf("third ingest: %+v, %v", res, err)
		}
		if c, err := s.Cursor(ctx, src); err != nil || c.Line != int64(len(all)) || c.Seq != int64(len(all)) {
			t.Fatalf("cursor %+v, %v", c, err)
		}
		verifyLog(t, s)
		if n, _ := s.LatestSeq(ctx); n != int64(len(all)) {
			t.Fatalf("%d ops in the log, want %d", n, len(all))
		}
	})

	t.Run("IngestRefusesBadItems", func(t *testing.T) {
		s, _ := migrated(t)
		l := newLog(t, s, at(time.Hour))
		g := genesis(t, "a.test", k[0])
		for name, items := range map[string][]oplog.IngestItem{
			"LinesOutOfOrder": {ingestItem(2, 0, g.GenesisDID(), g, at(0)), ingestItem(1, 0, g.GenesisDID(), g, at(0))},
			"SeqsOutOfOrder":  {ingestItem(1, 5, g.GenesisDID(), g, at(0)), ingestItem(2, 5, g.GenesisDID(), g, at(0))},
			"NeitherOpNorErr": {{Line: 1, DID: g.GenesisDID()}},
		} {
			if _, err := l.Ingest(ctx, src, items); err == nil {
				t.Errorf("%s: Ingest succeeded", name)
			}
		}
		if _, err := l.Ingest(ctx, "", []oplog.IngestItem{ingestItem(1, 0, g.GenesisDID(), g, at(0))}); err == nil {
			t.Error("Ingest without a source succeeded")
		}
		checkEmpty(t, s, g.GenesisDID())
	})

	t.Run("ConcurrentIngestsOfOneSourceApplyEachLineOnce", func(t *testing.T) {
		// Two processes import the same export at once: every op is
		// appended once, no line is rejected as a replay of itself.
		h := newHistory(t, k)
		s1, dsn := migrated(t)
		logs := []*oplog.Log{newLog(t, s1, at(time.Hour)), newLog(t, reopen(t, dsn), at(time.Hour))}
		all := h.items()
		var wg sync.WaitGroup
		errs := make([]error, len(logs))
		for i, l := range logs {
			wg.Go(func() {
				for j := range all {
					// One item per call: the most interleaving.
					if _, err := l.Ingest(ctx, src, all[j:j+1]); err != nil {
						errs[i] = err
						return
					}
				}
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		if n := verifyLog(t, s1); n != int64(len(all)) {
			t.Fatalf("%d ops in the log, want %d", n, len(all))
		}
		checkRejections(t, s1, "")
	})

	t.Run("ImportInterruptedResumesToTheSameState", func(t *testing.T) {
		h := newHistory(t, k)
		export := h.export(t)
		whole, _ := migrated(t)
		st, err := oplog.Import(ctx, newLog(t, whole, at(time.Hour)), strings.NewReader(export), oplog.ImportOptions{BatchSize: 2})
		if err != nil || st.Imported != int64(len(h.ops)) || st.Rejected != 0 || st.Skipped != 0 {
			t.Fatalf("uninterrupted import: %+v, %v", st, err)
		}
		checkSameLog(t, whole, h.want(t, migrated))

		for cut := 1; cut <= 3; cut++ {
			t.Run(strconv.Itoa(cut), func(t *testing.T) {
				s, _ := migrated(t)
				l := newLog(t, s, at(time.Hour))
				ictx, cancel := context.WithCancel(ctx)
				defer cancel()
				st, err := oplog.Import(ictx, l, strings.NewReader(export), oplog.ImportOptions{
					BatchSize: 2,
					Progress: func(st oplog.ImportStats) {
						if st.Batches == int64(cut) {
							cancel()
						}
					},
				})
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("interrupted import: %+v, %v", st, err)
				}
				if st.Imported != int64(2*cut) {
					t.Fatalf("interrupted after %d batches with %d imported", cut, st.Imported)
				}
				st, err = oplog.Import(ctx, l, strings.NewReader(export), oplog.ImportOptions{BatchSize: 2})
				if err != nil || st.Skipped != int64(2*cut) || st.Imported != int64(len(h.ops)-2*cut) || st.Rejected != 0 {
					t.Fatalf("resumed import: %+v, %v", st, err)
				}
				checkSameLog(t, s, whole)
				st, err = oplog.Import(ctx, l, strings.NewReader(export), oplog.ImportOptions{BatchSize: 3})
				if err != nil || st.Skipped != int64(len(h.ops)) || st.Imported != 0 || st.Batches != 0 {
					t.Fatalf("third import: %+v, %v", st, err)
				}
				checkSameLog(t, s, whole)
			})
		}
	})
}

func ingestItem(line, seq int64, did string, op *validate.Op, t time.Time) oplog.IngestItem {
	return oplog.IngestItem{Line: line, Seq: seq, DID: did, CID: op.CID(), Op: op, CreatedAt: t, Raw: op.AppendJSON(nil)}
}

func sameRejection(a, b oplog.Rejection) bool {
	return a.ID == b.ID && a.Source == b.Source && a.Line == b.Line && a.DID == b.DID && a.CID == b.CID &&
		bytes.Equal(a.Raw, b.Raw) && a.Reason == b.Reason && a.CreatedAt.Equal(b.CreatedAt)
}

func checkRejections(t *testing.T, s oplog.Store, source string, want ...oplog.Rejection) {
	t.Helper()
	got, err := s.Rejections(context.Background(), source, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(got, want, sameRejection) {
		t.Fatalf("rejections of %q:\n got  %+v\n want %+v", source, got, want)
	}
}

// history is a small log with every kind of op: genesis ops, updates, a
// recovery fork that nullifies an update, a tombstone.
type history struct {
	ops []histOp
}

type histOp struct {
	did string
	op  *validate.Op
	at  time.Time
}

func newHistory(t *testing.T, k []testKey) *history {
	h := &history{}
	add := func(did string, op *validate.Op) *validate.Op {
		h.ops = append(h.ops, histOp{did, op, at(time.Duration(len(h.ops)+1) * time.Second)})
		return op
	}
	gA := genesis(t, "a.test", k[0], k[1])
	a := gA.GenesisDID()
	add(a, gA)
	gB := genesis(t, "b.test", k[1], k[0])
	b := gB.GenesisDID()
	add(b, gB)
	uA := add(a, update(t, gA, k[1], "stolen.test", k[0], k[1]))
	add(a, update(t, gA, k[0], "recovered.test", k[0], k[1])) // nullifies uA
	_ = uA
	uB := add(b, update(t, gB, k[0], "b2.test", k[1], k[0]))
	add(b, tombstone(t, uB, k[1]))
	gC := genesis(t, "c.test", k[2])
	add(gC.GenesisDID(), gC)
	return h
}

// items returns the history as seq-mode ingest items, line n holding seq n.
func (h *history) items() []oplog.IngestItem {
	out := make([]oplog.IngestItem, len(h.ops))
	for i, o := range h.ops {
		out[i] = ingestItem(int64(i+1), int64(i+1), o.did, o.op, o.at)
	}
	return out
}

// export renders the history as a seq-mode export (no trailing newline).
func (h *history) export(t *testing.T) string {
	var b []byte
	for i, o := range h.ops {
		if i > 0 {
			b = append(b, '\n')
		}
		b = append(b, `{"type":"sequenced_op","did":`...)
		b = validate.AppendJSONString(b, o.did)
		b = append(b, `,"operation":`...)
		b = o.op.AppendJSON(b)
		b = append(b, `,"cid":`...)
		b = validate.AppendJSONString(b, o.op.CID())
		b = append(b, `,"createdAt":"`...)
		b = validate.AppendTimestamp(b, o.at)
		b = append(b, `","seq":`...)
		b = strconv.AppendInt(b, int64(i+1), 10)
		b = append(b, '}')
	}
	return string(b)
}

// submitAll submits the history through a Log, op by op, each at its time.
func (h *history) submitAll(t *testing.T, s oplog.Store) {
	c := testclock.New(t0)
	l := oplog.NewLog(s, oplog.Options{Now: c.Now, NoRateLimit: true})
	defer l.Close()
	for _, o := range h.ops {
		c.Set(o.at)
		if _, err := l.Submit(context.Background(), o.did, o.op); err != nil {
			t.Fatalf("Submit: %v", err)
		}
	}
}

// want returns a store holding the history submitted op by op.
func (h *history) want(t *testing.T, migrated func(t *testing.T) (oplog.Store, string)) oplog.Store {
	s, _ := migrated(t)
	h.submitAll(t, s)
	return s
}

// checkSameLog fails unless got and want hold the same log: the same
// entries in seq order, and for every DID the same ops with the same
// nullification flags and the same record.
func checkSameLog(t *testing.T, got, want oplog.Store) {
	t.Helper()
	ctx := context.Background()
	g, err := got.Export(ctx, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	w, err := want.Export(ctx, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	checkEntries(t, "Export", g, w)
	dids := map[string]bool{}
	for _, e := range w {
		dids[e.DID] = true
	}
	for did := range dids {
		g, err1 := got.Ops(ctx, did)
		w, err2 := want.Ops(ctx, did)
		if err := errors.Join(err1, err2); err != nil {
			t.Fatal(err)
		}
		checkEntries(t, "Ops("+did+")", g, w)
		gr, err1 := got.Record(ctx, did)
		wr, err2 := want.Record(ctx, did)
		if err := errors.Join(err1, err2); err != nil {
			t.Fatal(err)
		}
		checkRecord(t, gr, wr)
	}
}
