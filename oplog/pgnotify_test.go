package oplog_test

import (
	"context"
	"testing"
	"time"

	"github.com/plcdir/plc/internal/optest"
	"github.com/plcdir/plc/internal/pgtest"
	"github.com/plcdir/plc/oplog"
)

// openListening opens two stores on one fresh PostgreSQL database: the
// first listens for changes, the second stands for another process.
func openListening(t *testing.T) (listening *oplog.PostgresStore, other *oplog.Log) {
	t.Helper()
	u := pgtest.URL(t)
	if _, err := oplog.Prepare(u); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	first, err := oplog.OpenPostgres(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { first.Close() })
	oplog.SetListenRetryForTest(first, time.Millisecond)
	second, err := oplog.OpenPostgres(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { second.Close() })
	if _, ok := first.ChangeToken(); ok {
		t.Fatal("a token before the listener runs")
	}
	if err := first.ListenForChanges(ctx); err != nil {
		t.Fatal(err)
	}
	other = oplog.NewLog(second, oplog.Options{NoRateLimit: true})
	t.Cleanup(other.Close)
	return first, other
}

// await waits for ch, failing the test after a generous bound.
func await(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("no %s within 30 s", what)
	}
}

func mustToken(t *testing.T, s *oplog.PostgresStore) oplog.ChangeToken {
	t.Helper()
	tok, ok := s.ChangeToken()
	if !ok {
		t.Fatal("the listening store cannot tell")
	}
	return tok
}

// TestListenForChangesSeesOtherProcessesCommits: another process's commit
// changes the token once its notice arrives; a read does not.
func TestListenForChangesSeesOtherProcessesCommits(t *testing.T) {
	s, other := openListening(t)
	before := mustToken(t, s)
	if _, err := s.LatestSeq(context.Background()); err != nil {
		t.Fatal(err)
	}
	if mustToken(t, s) != before {
		t.Fatal("the token changed without a commit")
	}
	changed := s.TokenChanged()
	id := optest.NewIdentity(t, "a.test", 1)
	if _, err := other.Submit(context.Background(), id.DID, id.Head); err != nil {
		t.Fatal(err)
	}
	await(t, changed, "notice of the other process's commit")
	if mustToken(t, s) == before {
		t.Fatal("the token did not change after the notice")
	}
}

// TestListenForChangesCountsOwnAppendsAtOnce: this process's own append
// changes the token before Append returns, without waiting for the notice.
func TestListenForChangesCountsOwnAppendsAtOnce(t *testing.T) {
	s, _ := openListening(t)
	log := oplog.NewLog(s, oplog.Options{NoRateLimit: true})
	defer log.Close()
	before := mustToken(t, s)
	id := optest.NewIdentity(t, "b.test", 1)
	if _, err := log.Submit(context.Background(), id.DID, id.Head); err != nil {
		t.Fatal(err)
	}
	if tok, ok := s.ChangeToken(); ok && tok == before {
		t.Fatal("the token is unchanged after this process's own append returned")
	}
}

// TestListenForChangesIsUnknownWhileItsConnectionIsLost: a listener whose
// connection is lost cannot tell (a notice may be missed meanwhile), and
// after it listens again its tokens differ from every earlier one.
func TestListenForChangesIsUnknownWhileItsConnectionIsLost(t *testing.T) {
	s, other := openListening(t)
	before := mustToken(t, s)
	changed := s.TokenChanged()
	if _, err := other.Store().(*oplog.PostgresStore).Pool().Exec(context.Background(),
		`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'LISTEN plc_log' AND datname = current_database()`); err != nil {
		t.Fatal(err)
	}
	await(t, changed, "loss of the listening connection")
	for {
		next := s.TokenChanged()
		tok, ok := s.ChangeToken()
		if ok {
			if tok == before {
				t.Fatal("after listening again, a token of the lost connection")
			}
			break
		}
		// Unknown until it listens again: wait for that change.
		await(t, next, "the listener's reconnection")
	}
}
