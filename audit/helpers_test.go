package audit_test

import (
	"bytes"
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/plcdir/plc/internal/corpus"
	"github.com/plcdir/plc/oplog"
	plctlog "github.com/plcdir/plc/tlog"
)

// Test support of the monitor and export tests: corpora, stores, keys
// (the transparency log's tests have their own).

// newStore returns a migrated SQLite store at a fresh path.
func newStore(t testing.TB) (*oplog.SQLiteStore, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "plc.sqlite")
	if _, err := oplog.MigrateUp(path); err != nil {
		t.Fatal(err)
	}
	s, err := oplog.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

var (
	wtCorpusMu sync.Mutex
	wtCorpora  = map[uint64][][]byte{}
)

// wtCorpus returns the lines of a generated seq-mode export of n ops
// (seed selects it), cached per seed.
func wtCorpus(t testing.TB, seed uint64, n int) [][]byte {
	t.Helper()
	wtCorpusMu.Lock()
	defer wtCorpusMu.Unlock()
	if ls, ok := wtCorpora[seed]; ok && len(ls) >= n {
		return ls[:n]
	}
	var buf bytes.Buffer
	if _, err := corpus.Generate(context.Background(), &buf, corpus.Config{Ops: n, Seed: seed}); err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(buf.Bytes(), []byte("\n"))
	if len(lines) != n {
		t.Fatalf("corpus of %d ops has %d lines", n, len(lines))
	}
	wtCorpora[seed] = lines
	return lines
}

// wtLoad imports export lines into s (a source per store: the lines carry
// seqs, so later calls continue).
func wtLoad(t testing.TB, s oplog.Store, lines [][]byte) {
	t.Helper()
	l := oplog.NewLog(s, oplog.Options{})
	defer l.Close()
	st, err := oplog.Import(context.Background(), l, bytes.NewReader(bytes.Join(lines, []byte("\n"))), oplog.ImportOptions{Source: "test", BatchSize: 97})
	if err != nil || st.Rejected != 0 || st.Imported != int64(len(lines)) {
		t.Fatalf("import: %+v, %v", st, err)
	}
}

func wtKey(t testing.TB, origin string) *plctlog.Key {
	t.Helper()
	skey, _, err := plctlog.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	k, err := plctlog.ParseKey(skey)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// wtBuffer is a goroutine-safe log sink.
type wtBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *wtBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *wtBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
