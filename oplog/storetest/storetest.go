// Package storetest gives tests an operation log to work on: a fresh,
// migrated SQLite store, generated seq-mode exports (cached per seed), their
// import, and a goroutine-safe sink for the logs of what runs in the
// background. A failure fails the test; a store is closed when its test
// ends.
package storetest

import (
	"bytes"
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/plcdir/plc/internal/corpus"
	"github.com/plcdir/plc/oplog"
)

// SQLite returns a migrated SQLite store in a new file, and the file's path.
func SQLite(t testing.TB) (*oplog.SQLiteStore, string) {
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
	corpusMu sync.Mutex
	corpora  = map[uint64][][]byte{}
)

// Corpus returns the lines of a generated seq-mode export of n ops (seed
// selects it), cached per seed: generating signs every op.
func Corpus(t testing.TB, seed uint64, n int) [][]byte {
	t.Helper()
	corpusMu.Lock()
	defer corpusMu.Unlock()
	if ls, ok := corpora[seed]; ok && len(ls) >= n {
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
	corpora[seed] = lines
	return lines
}

// Load imports export lines into s, every one of them (the lines carry
// seqs, so a later call goes on from them).
func Load(t testing.TB, s oplog.Store, lines [][]byte) {
	t.Helper()
	l := oplog.NewLog(s, oplog.Options{})
	defer l.Close()
	st, err := oplog.Import(context.Background(), l, bytes.NewReader(bytes.Join(lines, []byte("\n"))), oplog.ImportOptions{Source: "test", BatchSize: 97})
	if err != nil || st.Rejected != 0 || st.Imported != int64(len(lines)) {
		t.Fatalf("import: %+v, %v", st, err)
	}
}

// Buffer is a log sink that goroutines may write to at once.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
