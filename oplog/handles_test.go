package oplog_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plcdir/plc/internal/testclock"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// The handle index, on both stores (run by the conformance suite).

// candidates returns DIDsForHandle(handle), failing on an error.
func candidates(t *testing.T, s oplog.Store, handle string) []string {
	t.Helper()
	dids, err := s.(oplog.HandleIndex).DIDsForHandle(context.Background(), handle)
	if err != nil {
		t.Fatalf("DIDsForHandle(%q): %v", handle, err)
	}
	return dids
}

// checkHandles brings the index up to the log, then fails unless every
// handle of want has exactly its DIDs as candidates (in DID order).
func checkHandles(t *testing.T, s oplog.Store, want map[string][]string) {
	t.Helper()
	if _, err := oplog.CatchUpHandles(context.Background(), s.(oplog.HandleIndex), 0, nil); err != nil {
		t.Fatalf("CatchUpHandles: %v", err)
	}
	for h, dids := range want {
		w := slices.Sorted(slices.Values(dids))
		if got := candidates(t, s, h); !slices.Equal(got, w) {
			t.Errorf("DIDsForHandle(%q) = %v, want %v", h, got, w)
		}
	}
}

// legacyCreate returns a signed legacy create op with the given handle.
func legacyCreate(t *testing.T, handle string, k testKey) *validate.Op {
	t.Helper()
	return sign(t, validate.Operation{
		Type: validate.TypeCreate, SigningKey: k.did, RecoveryKey: k.did, Handle: handle, Service: "pds.example.com",
	}, k)
}

// historyHandles is what the index holds for newHistory: every handle any
// op listed, the nullified one and the one before the tombstone included.
func historyHandles(h *history) map[string][]string {
	a, b, c := h.ops[0].did, h.ops[1].did, h.ops[6].did
	return map[string][]string{
		"a.test": {a}, "stolen.test": {a}, "recovered.test": {a},
		"b.test": {b}, "b2.test": {b},
		"c.test": {c},
	}
}

func testHandles(t *testing.T, migrated func(t *testing.T) (oplog.Store, string)) {
	ctx := context.Background()
	k := keys(t, 3)

	t.Run("AppendIndexesEveryAtHandle", func(t *testing.T) {
		s, _ := migrated(t)
		gA := genesis(t, "Alice.Test", k[0])
		a := gA.GenesisDID()
		gM := genesis(t, "alice.test", k[1]) // another DID claims the same handle
		m := gM.GenesisDID()
		o := body("other.test", k[2])
		o.AlsoKnownAs = []string{"https://alice.example", "at://did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "at://multi.test", "at://bad..handle", "at://Multi.Test"}
		gO := sign(t, o, k[2])
		oDID := gO.GenesisDID()
		lc := legacyCreate(t, "Legacy.Test", k[2])
		l := lc.GenesisDID()
		appendOps(t, s, gen(gA, at(time.Second)), gen(gM, at(time.Second)), gen(gO, at(time.Second)), gen(lc, at(time.Second)))
		uA := update(t, gA, k[0], "alice.example.com", k[0])
		appendOps(t, s, next(a, uA, at(2*time.Second)), next(m, tombstone(t, gM, k[1]), at(2*time.Second)))
		// No append writes the index: it follows the log behind it.
		if n, err := s.(oplog.HandleIndex).HandlesBehind(ctx); err != nil || n != 6 {
			t.Errorf("HandlesBehind after 6 appends = %d, %v; want 6", n, err)
		}
		if got := candidates(t, s, "alice.test"); len(got) != 0 {
			t.Errorf("alice.test indexed by the append: %v", got)
		}
		checkHandles(t, s, map[string][]string{
			"alice.test":        {a, m}, // the old pair and the tombstoned DID's stay: readers filter them
			"ALICE.TEST":        {a, m},
			"at://alice.test":   {a, m},
			"alice.example.com": {a},
			"multi.test":        {oDID},
			"legacy.test":       {l},
			"alice.example":     nil, // not an at:// entry
			"nobody.test":       nil,
		})
		for _, bad := range []string{"", "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "bad..handle", "<script>.test", "alice", strings.Repeat("a.", 200) + "test", "at://", "' OR 1=1 --"} {
			if dids, err := s.(oplog.HandleIndex).DIDsForHandle(ctx, bad); !errors.Is(err, oplog.ErrBadHandle) {
				t.Errorf("DIDsForHandle(%.30q) = %v, %v; want ErrBadHandle", bad, dids, err)
			}
		}
		if n, err := s.(oplog.HandleIndex).HandlesBehind(ctx); err != nil || n != 0 {
			t.Errorf("HandlesBehind after the catch-up = %d, %v", n, err)
		}
	})

	t.Run("IngestAndImportIndexHandles", func(t *testing.T) {
		h := newHistory(t, k)
		mirrored, _ := migrated(t)
		l := oplog.NewLog(mirrored, oplog.Options{Now: testclock.New(at(time.Hour)).Now})
		t.Cleanup(l.Close)
		if _, err := l.Ingest(ctx, "upstream:test", h.items()); err != nil {
			t.Fatal(err)
		}
		checkHandles(t, mirrored, historyHandles(h))

		imported, _ := migrated(t)
		il := oplog.NewLog(imported, oplog.Options{Now: testclock.New(at(time.Hour)).Now})
		t.Cleanup(il.Close)
		st, err := oplog.Import(ctx, il, strings.NewReader(h.export(t)), oplog.ImportOptions{BatchSize: 3})
		if err != nil || st.Imported != int64(len(h.ops)) {
			t.Fatalf("Import: %+v, %v", st, err)
		}
		checkHandles(t, imported, historyHandles(h))

		submitted := h.want(t, migrated)
		checkHandles(t, submitted, historyHandles(h))
	})

	t.Run("CatchUpIndexesADatabaseWrittenBeforeTheIndex", func(t *testing.T) {
		h := newHistory(t, k)
		s, dsn := migrated(t)
		h.submitAll(t, s)
		n := int64(len(h.ops))
		// The database as plc left it before the index: ops, no handles.
		if err := oplog.MigrateTo(dsn, 3); err != nil {
			t.Fatal(err)
		}
		if _, err := oplog.MigrateUp(dsn); err != nil {
			t.Fatal(err)
		}
		old := reopen(t, dsn).(oplog.HandleIndex)
		if got, err := old.HandlesBehind(ctx); err != nil || got != n {
			t.Fatalf("HandlesBehind after the upgrade = %d, %v; want %d", got, err, n)
		}
		if got := candidates(t, old.(oplog.Store), "a.test"); len(got) != 0 {
			t.Fatalf("a.test indexed before the catch-up: %v", got)
		}
		// An op appended meanwhile is one more to index.
		late := genesis(t, "late.test", k[0])
		appendOps(t, old.(oplog.Store), gen(late, at(time.Minute)))
		n++
		if got, err := old.HandlesBehind(ctx); err != nil || got != n {
			t.Fatalf("HandlesBehind after an append = %d, %v; want %d", got, err, n)
		}

		// One batch, then a stop: the rest is resumed by another process.
		if got, err := old.ExtendHandles(ctx, 3); err != nil || got != 3 {
			t.Fatalf("ExtendHandles(3) = %d, %v", got, err)
		}
		if got, err := old.HandlesBehind(ctx); err != nil || got != n-3 {
			t.Fatalf("HandlesBehind after one batch = %d, %v; want %d", got, err, n-3)
		}
		other := reopen(t, dsn).(oplog.HandleIndex)
		var seen []int64
		total, err := oplog.CatchUpHandles(ctx, other, 2, func(done int64) bool { seen = append(seen, done); return true })
		if err != nil || total != n-3 {
			t.Fatalf("CatchUpHandles = %d, %v; want %d", total, err, n-3)
		}
		var wantSeen []int64
		for d := int64(2); d < n-3; d += 2 {
			wantSeen = append(wantSeen, d)
		}
		if want := append(wantSeen, n-3); !slices.Equal(seen, want) {
			t.Errorf("progress %v, want %v", seen, want)
		}
		want := historyHandles(h)
		want["late.test"] = []string{late.GenesisDID()}
		checkHandles(t, other.(oplog.Store), want)
		if got, err := other.HandlesBehind(ctx); err != nil || got != 0 {
			t.Fatalf("HandlesBehind after the catch-up = %d, %v", got, err)
		}
		if total, err := oplog.CatchUpHandles(ctx, old, 0, nil); err != nil || total != 0 {
			t.Fatalf("a second catch-up = %d, %v; want 0", total, err)
		}
	})

	t.Run("DownAndUpAgainRebuildsTheIndex", func(t *testing.T) {
		h := newHistory(t, k)
		s, dsn := migrated(t)
		h.submitAll(t, s)
		if err := oplog.MigrateTo(dsn, 3); err != nil {
			t.Fatalf("down to 3: %v", err)
		}
		if st, err := oplog.Status(dsn); err != nil || st.Version != 3 || st.Dirty {
			t.Fatalf("after down: %+v, %v", st, err)
		}
		if _, err := oplog.MigrateUp(dsn); err != nil {
			t.Fatal(err)
		}
		again := reopen(t, dsn)
		if _, err := oplog.CatchUpHandles(ctx, again.(oplog.HandleIndex), 0, nil); err != nil {
			t.Fatal(err)
		}
		checkHandles(t, again, historyHandles(h))
		if got := verifyLog(t, again); got != int64(len(h.ops)) {
			t.Fatalf("the log holds %d ops after down and up, want %d", got, len(h.ops))
		}
	})
}
