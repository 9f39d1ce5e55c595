// Package gcbudget lets a batch job (an import, a backfill) trade a
// bounded amount of memory for less garbage-collection work.
//
// The collector's work is proportional to how often it runs: with Go's
// default (GOGC=100) it runs each time the heap has grown by as much as
// the data it found live, and a batch job that allocates fast and keeps
// little (parsed ops, rendered rows) pays for it on every op. Start lets
// the heap grow by up to four times the live data between collections,
// but never by more than the live data plus a fixed headroom: the memory
// given for the saved work is bounded by the headroom.
package gcbudget

import (
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// DefaultHeadroom is the memory, beyond what GOGC=100 would use, that a
// budget lets the heap grow by.
const DefaultHeadroom = 512 << 20

// percent is the growth allowed between collections while the headroom
// holds it (GOGC=400).
const percent = 400

// every is how often the limit follows the live heap.
const every = 100 * time.Millisecond

var (
	mu      sync.Mutex
	running bool
)

// Start applies the budget until the returned stop is called; stop puts
// back the settings it found. It does nothing (and stop does nothing)
// when GOGC or GOMEMLIMIT is set in the environment (the operator's
// choice stands), when headroom is 0 or less, or while another budget
// runs.
func Start(headroom int64) (stop func()) {
	if headroom <= 0 || os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return func() {}
	}
	mu.Lock()
	defer mu.Unlock()
	if running {
		return func() {}
	}
	running = true
	b := &budget{headroom: headroom, done: make(chan struct{}), stopped: make(chan struct{})}
	b.oldPercent = debug.SetGCPercent(percent)
	b.oldLimit = debug.SetMemoryLimit(-1)
	b.follow()
	go b.run()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(b.done)
			<-b.stopped
			debug.SetMemoryLimit(b.oldLimit)
			debug.SetGCPercent(b.oldPercent)
			mu.Lock()
			running = false
			mu.Unlock()
		})
	}
}

type budget struct {
	headroom   int64
	oldPercent int
	oldLimit   int64
	sample     [1]metrics.Sample
	done       chan struct{}
	stopped    chan struct{}
}

func (b *budget) run() {
	defer close(b.stopped)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			b.follow()
		case <-b.done:
			return
		}
	}
}

// follow sets the memory limit to what GOGC=100 would let the heap reach
// from the live data of the last collection, plus the headroom.
func (b *budget) follow() {
	b.sample[0].Name = "/gc/heap/live:bytes"
	metrics.Read(b.sample[:])
	var live int64
	if b.sample[0].Value.Kind() == metrics.KindUint64 {
		live = int64(min(b.sample[0].Value.Uint64(), math.MaxInt64/4))
	}
	debug.SetMemoryLimit(limit(live, b.headroom))
}

// limit is the memory limit a budget of headroom sets when the last
// collection found live bytes live: twice the live data (GOGC=100's
// goal) plus the headroom.
func limit(live, headroom int64) int64 {
	return 2*live + headroom
}
