package oplog_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plcdir/plc/internal/corpus"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// longChain returns a seq-mode export of one DID with n valid ops.
func longChain(t *testing.T, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := corpus.Generate(context.Background(), &buf, corpus.Config{Ops: n, Seed: 1, Shape: corpus.ShapeLongChain}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// importAllocs imports export into a fresh SQLite log in one batch and
// returns the bytes the import allocated.
func importAllocs(t *testing.T, export []byte, n int) uint64 {
	t.Helper()
	path := filepath.Join(t.TempDir(), "plc.db")
	s, err := oplog.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oplog.MigrateUp(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l := oplog.NewLog(s, oplog.Options{NoRateLimit: true})
	defer l.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	st, err := oplog.Import(context.Background(), l, bytes.NewReader(export), oplog.ImportOptions{BatchSize: n})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if st.Imported != int64(n) || st.Batches != 1 {
		t.Fatalf("imported %d ops in %d batches, want %d in 1", st.Imported, st.Batches, n)
	}
	return after.TotalAlloc - before.TotalAlloc
}

// TestImportOfOneLongChainIsLinearInMemory: a batch of ops of one DID
// costs memory in proportion to the batch and the DID's history, not to
// their product. When each op of the batch kept (or copied) the DID's
// whole state, importing one DID with 10,000 ops took gigabytes: here the
// bytes allocated per op of a chain twice as long would double.
func TestImportOfOneLongChainIsLinearInMemory(t *testing.T) {
	const short, long = 1200, 2400
	shortExport, longExport := longChain(t, short), longChain(t, long)
	perOpShort := float64(importAllocs(t, shortExport, short)) / short
	perOpLong := float64(importAllocs(t, longExport, long)) / long
	t.Logf("allocated per op: %.0f bytes in a chain of %d ops, %.0f in one of %d", perOpShort, short, perOpLong, long)
	// Linear: about the same per op (the long chain's ops carry no more
	// data). Quadratic: half as much again as the short chain's, and more.
	if perOpLong > 1.3*perOpShort {
		t.Fatalf("importing one DID's chain allocates %.0f bytes per op at %d ops but %.0f at %d: "+
			"memory grows with the square of the DID's history", perOpShort, short, perOpLong, long)
	}
}

// countingStore counts the record reads of a store.
type countingStore struct {
	oplog.Store
	records atomic.Int64
}

func (s *countingStore) Record(ctx context.Context, did string) (*oplog.DIDRecord, error) {
	s.records.Add(1)
	return s.Store.Record(ctx, did)
}

// TestImportOfOpsWithUnknownPrevReadsTheDIDOncePerBatch: lines of a DID
// whose prev is not in the batches being imported make the import look up
// the DID's committed history, to check their signatures ahead of the
// append lock. A batch full of such lines (an upstream sending ops with
// unknown prevs for a DID with a long history) must read and index that
// history once, not once per line: that made the batch cost its lines
// times the DID's history.
func TestImportOfOpsWithUnknownPrevReadsTheDIDOncePerBatch(t *testing.T) {
	const chain, unknown = 40, 60
	k := keys(t, 2)
	h := &history{}
	g := genesis(t, "a.test", k[0], k[1])
	did := g.GenesisDID()
	add := func(op *validate.Op) {
		h.ops = append(h.ops, histOp{did, op, at(time.Duration(len(h.ops)+1) * time.Second)})
	}
	add(g)
	for prev := g; len(h.ops) < chain; {
		prev = update(t, prev, k[0], fmt.Sprintf("a%d.test", len(h.ops)), k[0], k[1])
		add(prev)
	}
	// An op the log never sees: the prev of the next lines.
	stray := update(t, g, k[0], "stray.test", k[0], k[1])
	for i := range unknown {
		add(update(t, stray, k[0], fmt.Sprintf("b%d.test", i), k[0], k[1]))
	}

	path := filepath.Join(t.TempDir(), "plc.db")
	s, err := oplog.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := oplog.MigrateUp(path); err != nil {
		t.Fatal(err)
	}
	cs := &countingStore{Store: s}
	// No record cache: every lookup of committed history goes to the store.
	l := oplog.NewLog(cs, oplog.Options{NoRateLimit: true, RecordCache: -1})
	defer l.Close()
	st, err := oplog.Import(context.Background(), l, strings.NewReader(h.export(t)), oplog.ImportOptions{BatchSize: chain})
	if err != nil {
		t.Fatal(err)
	}
	if st.Imported != chain || st.Rejected != unknown {
		t.Fatalf("imported %d, rejected %d; want %d and %d", st.Imported, st.Rejected, chain, unknown)
	}
	// The first batch is the chain (every prev in it); the next two hold
	// the lines with an unknown prev: one read of the DID each.
	if n := cs.records.Load(); n > st.Batches {
		t.Fatalf("the import read the DID's record %d times in %d batches: once per line, not per batch", n, st.Batches)
	}
}
