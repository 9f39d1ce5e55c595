package oplog_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/storetest"
)

// TestSQLiteWritesShareOneConnectionSoOthersDoNotDropItsCache: every
// write of the SQLite store (appends, the tree's and the handle index's
// catch-up, checkpoints, webhooks) runs on the store's one write
// connection, never on a connection of the read pool. A write on another
// connection would make the next append start with an empty page cache:
// a mirror that signed a checkpoint each second read its index pages back
// at about every other batch. Here every connection of the read pool
// refuses writes, and each kind of write must still succeed.
func TestSQLiteWritesShareOneConnectionSoOthersDoNotDropItsCache(t *testing.T) {
	s, _ := storetest.SQLite(t)
	ctx := context.Background()
	var conns []*sql.Conn
	for range 8 { // the read pool's size: each of its connections
		c, err := s.DB().Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.ExecContext(ctx, "PRAGMA query_only = ON"); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Close() // back to the pool, still refusing writes
	}

	k := keys(t, 1)
	g := genesis(t, "writer.test", k[0])
	appendOps(t, s, gen(g, at(time.Second)))
	if _, err := s.ExtendTree(ctx, 100); err != nil {
		t.Fatalf("ExtendTree: %v", err)
	}
	if _, err := s.ExtendHandles(ctx, 100); err != nil {
		t.Fatalf("ExtendHandles: %v", err)
	}
	size, err := s.TreeSize(ctx)
	if err != nil || size != 1 {
		t.Fatalf("TreeSize %d, %v; want 1", size, err)
	}
	cp := oplog.Checkpoint{Size: 1, Note: []byte("a note\n"), SignedAt: at(2 * time.Second)}
	if err := s.SwapCheckpoint(ctx, nil, cp); err != nil {
		t.Fatalf("SwapCheckpoint: %v", err)
	}
	if _, err := s.AddWebhook(ctx, g.GenesisDID(), "https://hooks.example/plc", 10, 100, at(3*time.Second)); err != nil {
		t.Fatalf("AddWebhook: %v", err)
	}
	if ok, err := s.LeaseWebhooks(ctx, "holder", at(3*time.Second), time.Minute); err != nil || !ok {
		t.Fatalf("LeaseWebhooks: %v, %v; want the lease", ok, err)
	}

	// The reads see what the writes stored.
	if n, err := s.LatestSeq(ctx); err != nil || n != 1 {
		t.Fatalf("LatestSeq %d, %v; want 1", n, err)
	}
	if got, err := s.Checkpoint(ctx); err != nil || got.Size != 1 {
		t.Fatalf("Checkpoint %+v, %v; want size 1", got, err)
	}
	if hooks, err := s.Webhooks(ctx); err != nil || len(hooks) != 1 {
		t.Fatalf("Webhooks %v, %v; want 1", hooks, err)
	}
}
