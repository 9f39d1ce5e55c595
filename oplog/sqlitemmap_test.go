package oplog_test

import (
	"context"
	"testing"

	"github.com/plcdir/plc/oplog/storetest"
)

// TestSQLiteReadsMapTheFileInsteadOfAReadPerPage: every connection of the
// SQLite store's pool reads through a memory map of at least 1 GiB, so a
// cold resolution at scale does not cost a pread system call for each
// B-tree page its cache of 16 MiB misses.
func TestSQLiteReadsMapTheFileInsteadOfAReadPerPage(t *testing.T) {
	s, _ := storetest.SQLite(t)
	ctx := context.Background()
	db := s.DB()
	// Hold several connections at once so that the pool opens new ones:
	// the setting must come with the DSN, not a one-off PRAGMA.
	for i := range 3 {
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var n int64
		if err := c.QueryRowContext(ctx, "PRAGMA mmap_size").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n < 1<<30 {
			t.Fatalf("connection %d: mmap_size is %d bytes, want at least 1 GiB", i, n)
		}
	}
}
