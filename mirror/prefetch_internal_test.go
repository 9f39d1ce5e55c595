package mirror

import (
	"context"
	"testing"
	"time"
)

// TestPrefetchBudgetHoldsTheFetcherUntilPagesAreTaken: the fetcher asks
// for no page while the pages waiting hold the budget, and goes on once
// the pipeline takes one.
func TestPrefetchBudgetHoldsTheFetcherUntilPagesAreTaken(t *testing.T) {
	b := newByteBudget(100)
	page := [][]byte{make([]byte, 36)} // 60 bytes with its slice header
	b.hold(pageBytes(page))
	if !b.room() {
		t.Fatal("no room at 60 of 100 bytes")
	}
	b.hold(pageBytes(page))
	if b.room() {
		t.Fatal("room at 120 of 100 bytes")
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if b.wait(done) {
		t.Fatal("wait returned true with no room")
	}

	waited := make(chan bool, 1)
	go func() { waited <- b.wait(context.Background()) }()
	b.release(pageBytes(page))
	select {
	case ok := <-waited:
		if !ok {
			t.Fatal("wait returned false after a page was taken")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the fetcher still waits after a page was taken")
	}
}
