package oplog_test

import (
	"bytes"
	"context"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/plcdir/plc/corpus"
	"github.com/plcdir/plc/oplog"
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
