package api

import (
	"context"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/plcdir/plc/oplog"
)

// Reads of DID heads that miss the cache, gathered (for stores with
// oplog.BatchedHeads): the requests that arrive while earlier reads are
// running are read together, in one query of Store.Heads, instead of one
// query each. Under load a round trip to the database server is then paid
// once for many DIDs; alone, a request is read at once, as before.

const (
	// headBatchMax is the most DIDs of one batch (one query of Heads).
	headBatchMax = oplog.HeadsPerQuery
	// headBatchTimeout bounds the read of one batch, which serves several
	// requests and so runs under none of their contexts.
	headBatchTimeout = 5 * time.Second
)

// headBatcher reads the heads of DIDs (Store.Head) in batches.
type headBatcher struct {
	heads func(ctx context.Context, dids []string) (map[string]oplog.Entry, error)
	// flightsMax is how many batches may be read at once: one for every
	// two cores of the process. Fewer flights make larger batches; on two
	// cores one flight resolved 1.8 times as many DIDs a second as one
	// query a request, two flights 1.5 times, four 1.2 (BENCHMARKS.md,
	// "Cold resolutions").
	flightsMax int
	// sizes observes the DIDs of each batch.
	sizes prometheus.Observer

	mu      sync.Mutex
	waiting []*headWait
	flights int
}

// headWait is one request's wait for the head of did.
type headWait struct {
	did  string
	done chan struct{} // closed when e and err are set
	e    oplog.Entry
	err  error
}

func newHeadBatcher(heads func(context.Context, []string) (map[string]oplog.Entry, error), reg prometheus.Registerer) *headBatcher {
	sizes := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "plc_read_head_batch_dids",
		Help:    "DIDs read in one query by the gathered reads of DID heads that missed the cache (PostgreSQL).",
		Buckets: prometheus.ExponentialBuckets(1, 2, 9), // 1 to 256
	})
	if reg != nil {
		reg.MustRegister(sizes)
	}
	return &headBatcher{heads: heads, flightsMax: max(1, runtime.GOMAXPROCS(0)/2), sizes: sizes}
}

// head returns what Store.Head returns for did (oplog.ErrNotFound for a
// DID that is not registered), read in a batch with other requests'.
// The read starts after the call, so it sees every op committed before it;
// its fence to read replicas is taken then too (see oplog.ReadRouter).
func (b *headBatcher) head(ctx context.Context, did string) (oplog.Entry, error) {
	w := &headWait{did: did, done: make(chan struct{})}
	b.mu.Lock()
	b.waiting = append(b.waiting, w)
	if b.flights < b.flightsMax {
		b.flights++
		go b.fly()
	}
	b.mu.Unlock()
	select {
	case <-w.done:
		return w.e, w.err
	case <-ctx.Done():
		return oplog.Entry{}, ctx.Err()
	}
}

// fly reads batches of the waiting requests until none is left.
func (b *headBatcher) fly() {
	for {
		b.mu.Lock()
		n := min(len(b.waiting), headBatchMax)
		if n == 0 {
			b.flights--
			b.mu.Unlock()
			return
		}
		batch := b.waiting[:n:n]
		b.waiting = b.waiting[n:]
		if len(b.waiting) == 0 {
			b.waiting = nil // let the array go
		}
		b.mu.Unlock()
		b.read(batch)
	}
}

func (b *headBatcher) read(batch []*headWait) {
	b.sizes.Observe(float64(len(batch)))
	dids := make([]string, len(batch))
	for i, w := range batch {
		dids[i] = w.did
	}
	ctx, cancel := context.WithTimeout(context.Background(), headBatchTimeout)
	got, err := b.heads(ctx, dids)
	cancel()
	for _, w := range batch {
		switch e, ok := got[w.did]; {
		case err != nil:
			w.err = err
		case ok:
			w.e = e
		default:
			w.err = oplog.ErrNotFound
		}
		close(w.done)
	}
}
