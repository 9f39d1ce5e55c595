package mirror_test

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/plcdir/plc/mirror"
	"github.com/plcdir/plc/oplog"
)

// ingestHook is a store whose first Append of source calls first (in the
// ingest's goroutine) before it goes ahead.
type ingestHook struct {
	oplog.Store
	source string
	once   sync.Once
	first  func()
}

func (s *ingestHook) Append(ctx context.Context, source string, dids []string, decide oplog.DecideFunc) error {
	if source == s.source {
		s.once.Do(s.first)
	}
	return s.Store.Append(ctx, source, dids, decide)
}

// TestBackfillFetchesNextPageWhileIngesting: the backfill asks for page
// k+1 while page k is being ingested. The upstream answers page 2 only
// once the ingest of page 1 has started, and that ingest goes ahead only
// once page 2 has been asked for: a backfill that reads its pages one
// after another (or ingests nothing until a whole batch of pages is in)
// never gets past this.
func TestBackfillFetchesNextPageWhileIngesting(t *testing.T) {
	f := newFixture(t)
	ctx := ctxFor(t)
	page2Asked, ingestStarted := make(chan struct{}), make(chan struct{})
	wait := func(ch <-chan struct{}, what string) {
		select {
		case <-ch:
		case <-ctx.Done():
			t.Errorf("timed out waiting for %s", what)
		}
	}
	lines := numbered(f.ops)
	s := &script{lines: lines, ops: f.ops, fault: func(w http.ResponseWriter, after int64, count, call int) bool {
		if after == hostilePage && call == 0 {
			close(page2Asked)
			wait(ingestStarted, "the ingest of page 1")
		}
		return false // the page as it is
	}}
	url := newScript(t, s)
	hook := &ingestHook{Store: openStore(t, sqliteBackend.dsn(t)), first: func() {
		close(ingestStarted)
		wait(page2Asked, "page 2 to be asked for")
	}}
	l := newLog(t, hook)
	var imported []int64
	m := newMirror(t, url, l, mirror.Config{PageSize: hostilePage, Progress: func(st oplog.ImportStats) { imported = append(imported, st.Imported) }})
	hook.source = m.Source()
	if err := m.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if t.Failed() {
		t.FailNow()
	}
	checkStoreHolds(t, l.Store(), f.ops)
	if len(imported) < 2 || imported[0] != hostilePage || imported[len(imported)-1] != int64(len(f.ops)) {
		t.Fatalf("ops imported after each batch: %v, want page 1 (%d ops) committed alone first, %d in all", imported, hostilePage, len(f.ops))
	}
	if ds := divergences(t, m); len(ds) != 0 {
		t.Fatalf("divergences of a faithful upstream:%s", describe(ds))
	}
}
