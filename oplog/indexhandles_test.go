package oplog_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/plcdir/plc/oplog"
)

// fakeHandleIndex is a handle index that counts the ops it does not cover
// and reports on caught each time it has caught up with them.
type fakeHandleIndex struct {
	mu       sync.Mutex
	behind   int64
	failNext int // HandlesBehind calls that fail before they answer
	calls    []int
	caught   chan struct{}
}

func (f *fakeHandleIndex) DIDsForHandle(context.Context, string) ([]string, error) {
	return nil, nil
}

func (f *fakeHandleIndex) HandlesBehind(context.Context) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failNext > 0 {
		f.failNext--
		return 0, errors.New("database gone")
	}
	return f.behind, nil
}

func (f *fakeHandleIndex) ExtendHandles(_ context.Context, limit int) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := int(min(int64(limit), f.behind))
	f.behind -= int64(n)
	f.calls = append(f.calls, n)
	if n == 0 {
		select {
		case f.caught <- struct{}{}:
		default:
		}
	}
	return n, nil
}

func (f *fakeHandleIndex) add(n int64, fail int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.behind += n
	f.failNext += fail
}

// TestIndexHandlesFillsInThenFollowsTheLog: a database whose index is far
// behind (one upgraded from an earlier plc) is filled in at start, in
// batches; ops appended later are indexed at a following interval, after a
// failing read too; the worker stops with its context.
func TestIndexHandlesFillsInThenFollowsTheLog(t *testing.T) {
	idx := &fakeHandleIndex{behind: 5000, caught: make(chan struct{}, 1)}
	logger := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		oplog.IndexHandles(ctx, idx, time.Millisecond, logger, nil)
	}()
	<-idx.caught
	idx.mu.Lock()
	if len(idx.calls) != 3 || idx.calls[0] != 4096 || idx.calls[1] != 904 {
		t.Errorf("catch-up batches %v, want [4096 904 0]", idx.calls)
	}
	idx.mu.Unlock()

	idx.add(3, 1)
	<-idx.caught
	idx.mu.Lock()
	if idx.behind != 0 || idx.failNext != 0 {
		t.Errorf("%d ops left behind, %d failures not met", idx.behind, idx.failNext)
	}
	idx.mu.Unlock()
	cancel()
	<-done
}

// TestHandleIndexWaitsWhileAMirrorBackfills: the worker leaves the cores
// to a backfill. While hold says so it extends nothing, at start or at any
// interval, and stops a long catch-up between batches; once hold lets go it
// catches up with everything.
func TestHandleIndexWaitsWhileAMirrorBackfills(t *testing.T) {
	idx := &fakeHandleIndex{behind: 20_000, caught: make(chan struct{}, 1)}
	var (
		mu     sync.Mutex
		held   = true
		asked  int
		ticked = make(chan struct{}, 1)
	)
	hold := func() bool {
		mu.Lock()
		defer mu.Unlock()
		asked++
		if asked == 5 {
			ticked <- struct{}{}
		}
		return held
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		oplog.IndexHandles(ctx, idx, time.Millisecond, slog.New(slog.DiscardHandler), hold)
	}()
	<-ticked // held at start and at several intervals since
	idx.mu.Lock()
	if len(idx.calls) != 0 {
		t.Errorf("the index was extended by %v while held", idx.calls)
	}
	idx.mu.Unlock()

	mu.Lock()
	held = false
	mu.Unlock()
	<-idx.caught
	idx.mu.Lock()
	if idx.behind != 0 {
		t.Errorf("%d ops left behind once let go", idx.behind)
	}
	idx.mu.Unlock()
	cancel()
	<-done
}
