package tlog_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/storetest"
	"github.com/plcdir/plc/tlog"
)

// swapHook runs before its first SwapCheckpoint.
type swapHook struct {
	oplog.Store
	once   sync.Once
	before func()
}

func (s *swapHook) SwapCheckpoint(ctx context.Context, old *oplog.Checkpoint, next oplog.Checkpoint) error {
	s.once.Do(s.before)
	return s.Store.SwapCheckpoint(ctx, old, next)
}

// staleTree reports a tree size read before the latest commits.
type staleTree struct {
	oplog.Store
	size int64
}

func (s staleTree) TreeSize(context.Context) (int64, error) { return s.size, nil }

// TestProofOfAnOpIsNotNullWhenAStaleSignerWinsTheRace: a proof request
// for a new op signs a checkpoint, but another caller that read the tree
// before the op was committed stores a smaller one first; the request must
// sign again rather than answer without the op's proof.
func TestProofOfAnOpIsNotNullWhenAStaleSignerWinsTheRace(t *testing.T) {
	ctx := context.Background()
	lines := storetest.Corpus(t, 21, 60)
	s, _ := storetest.SQLite(t)
	key := newKey(t, "plc.test")
	storetest.Load(t, s, lines[:50])
	if _, _, err := tlog.New(s, key, tlog.Options{}).Sign(ctx); err != nil {
		t.Fatal(err)
	}
	storetest.Load(t, s, lines[50:])
	hooked := &swapHook{Store: s, before: func() {
		if cp, signed, err := tlog.New(staleTree{s, 55}, key, tlog.Options{Interval: time.Nanosecond}).Sign(ctx); err != nil || !signed || cp.Size != 55 {
			t.Errorf("the stale signer: %d %v %v", cp.Size, signed, err)
		}
	}}
	tl := tlog.New(hooked, key, tlog.Options{Interval: time.Nanosecond})
	cp, proofs, err := tl.InclusionProofs(ctx, []int64{60})
	if err != nil || cp.Size != 60 || proofs[60] == nil {
		t.Fatalf("InclusionProofs(60): checkpoint of size %d, proof %v, %v", cp.Size, proofs[60], err)
	}
}
