package oplog_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/plcdir/plc/internal/optest"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/storetest"
)

// TestChangeTokenChangesWithEveryCommitOfAnotherConnection: the SQLite
// store's token stays while nothing is committed and changes when another
// store on the same file (another process) commits.
func TestChangeTokenChangesWithEveryCommitOfAnotherConnection(t *testing.T) {
	first, path := storetest.SQLite(t)
	second, err := oplog.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	other := oplog.NewLog(second, oplog.Options{NoRateLimit: true})
	defer other.Close()

	probe, ok := oplog.Store(first).(oplog.ChangeProbe)
	if !ok {
		t.Fatal("the SQLite store is not a ChangeProbe")
	}
	token := func() oplog.ChangeToken {
		t.Helper()
		tok, ok := probe.ChangeToken()
		if !ok {
			t.Fatal("the probe cannot tell on a WAL-mode database")
		}
		return tok
	}
	// A first commit, so that SQLite has built its WAL index.
	g := optest.NewIdentity(t, "a.test", 1).Head
	if _, err := other.Submit(context.Background(), g.GenesisDID(), g); err != nil {
		t.Fatal(err)
	}
	before := token()
	if _, err := first.LatestSeq(context.Background()); err != nil {
		t.Fatal(err)
	}
	if again := token(); again != before {
		t.Fatal("the token changed without a commit")
	}
	for i := range 3 {
		g := optest.NewIdentity(t, optest.Handle(i), 1).Head
		if _, err := other.Submit(context.Background(), g.GenesisDID(), g); err != nil {
			t.Fatal(err)
		}
		after := token()
		if after == before {
			t.Fatalf("commit %d: the token did not change", i)
		}
		before = after
	}
}

// fakeHeader is a WAL-index header whose two copies are equal, with
// isInit set and frame count n.
func fakeHeader(n byte) []byte {
	h := make([]byte, 48)
	h[12] = 1
	h[16] = n
	return append(h, h...)
}

// TestChangeTokenIsNotTakenFromARemovedWALIndex: SQLite removes the
// "-shm" file when the last connection of every process closes and makes
// a new one at the next; a probe that kept reading the removed file would
// never see a commit again.
func TestChangeTokenIsNotTakenFromARemovedWALIndex(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db-shm")
	if err := os.WriteFile(path, fakeHeader(1), 0o600); err != nil {
		t.Fatal(err)
	}
	p := oplog.NewWALProbeForTest(path)
	old, ok := p.ChangeToken()
	if !ok {
		t.Fatal("no token from a written header")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, fakeHeader(2), 0o600); err != nil {
		t.Fatal(err)
	}
	if tok, ok := p.ChangeToken(); ok && tok == old {
		t.Fatal("the token of the removed file was given after a new one was made")
	}
	tok, ok := p.ChangeToken()
	if !ok || !bytes.Equal(tok[:], fakeHeader(2)[:48]) {
		t.Fatalf("the new file's header was not read: ok %v", ok)
	}
}

// TestChangeTokenIsUnknownWhileAHeaderIsHalfWritten: two copies that
// differ are a commit being recorded.
func TestChangeTokenIsUnknownWhileAHeaderIsHalfWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db-shm")
	h := fakeHeader(1)
	h[48+16] = 2
	if err := os.WriteFile(path, h, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, ok := oplog.NewWALProbeForTest(path).ChangeToken(); ok {
		t.Error("a token from a header whose copies differ")
	}
	h = fakeHeader(1)
	h[12], h[48+12] = 0, 0
	if err := os.WriteFile(path, h, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, ok := oplog.NewWALProbeForTest(path).ChangeToken(); ok {
		t.Error("a token from a header never initialised")
	}
	if _, ok := oplog.NewWALProbeForTest(path + ".missing").ChangeToken(); ok {
		t.Error("a token from a missing file")
	}
}
