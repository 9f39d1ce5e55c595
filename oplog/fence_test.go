package oplog

import (
	"context"
	"runtime"
	"testing"
)

// TestFenceNeverAnswersFromARoundStartedBeforeTheCall: a caller that
// arrives while a round is running must not take that round's value (it
// may predate a commit the caller was told of), but the next round's.
func TestFenceNeverAnswersFromARoundStartedBeforeTheCall(t *testing.T) {
	started := make(chan int64, 4)
	release := make(chan struct{}, 4)
	n := int64(0)
	f := fence{query: func() (int64, error) {
		n++
		started <- n
		<-release
		return n * 10, nil
	}}
	ctx := context.Background()
	first := make(chan int64, 1)
	go func() { v, _ := f.wait(ctx); first <- v }()
	if r := <-started; r != 1 {
		t.Fatalf("round %d started, want 1", r)
	}
	// Two callers arrive while round 1 runs: they share round 2.
	later := make(chan int64, 2)
	for range 2 {
		go func() { v, _ := f.wait(ctx); later <- v }()
	}
	waitJoined(t, &f, 2)
	release <- struct{}{}
	if v := <-first; v != 10 {
		t.Fatalf("first caller got %d, want round 1's 10", v)
	}
	if r := <-started; r != 2 {
		t.Fatalf("round %d started, want 2", r)
	}
	release <- struct{}{}
	for range 2 {
		if v := <-later; v != 20 {
			t.Fatalf("a caller that arrived during round 1 got %d, want round 2's 20", v)
		}
	}
	select {
	case r := <-started:
		t.Fatalf("round %d started with no caller waiting", r)
	default:
	}
}

// waitJoined waits until n callers have joined the fence's next round.
func waitJoined(t *testing.T, f *fence, n int) {
	t.Helper()
	for {
		f.mu.Lock()
		joined := f.next != nil && f.next.waiters >= n
		f.mu.Unlock()
		if joined {
			return
		}
		runtime.Gosched()
	}
}
