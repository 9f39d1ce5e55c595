package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/plcdir/plc/oplog"
)

// Tests of /export/stream under abuse: clients that never read, and many
// backfills at once. No sleeps: the streams report their pauses through
// hooks, and slow store reads are held by a gate.

// serveAPI serves env's log through the whole API (gin, /_health) with
// env's Streamer at /export/stream, and returns its URL.
func (env *streamEnv) serveAPI() string {
	env.t.Helper()
	srv := httptest.NewServer(New(Config{Log: env.log, Stream: env.streamer, Version: "test"}))
	env.t.Cleanup(srv.Close)
	return srv.URL
}

// dialAPI opens a stream through the API server at base.
func dialAPI(t *testing.T, base, query string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), streamTimeout)
	defer cancel()
	u := "ws" + strings.TrimPrefix(base, "http") + "/export/stream?" + query
	c, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: &http.Client{}})
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// getHealth returns GET base/_health's status and body.
func getHealth(t *testing.T, base string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), streamTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/_health", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /_health: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Fifty backfills from cursor 0 whose clients never read a byte: each
// stream pauses with at most about MaxUnsent bytes queued (instead of
// reading and rendering the whole log for a client that takes none of it),
// the total the Streamer holds for them is bounded by fifty times that,
// and /_health answers 200 meanwhile.
func TestStreamNeverReadingBackfillClientsHoldBoundedBytes(t *testing.T) {
	const (
		clients   = 50
		maxUnsent = 16 << 10
	)
	var mu sync.Mutex
	pausedAt := map[*stream]int64{} // each stream's largest count at a pause
	all := make(chan struct{})
	hooks := streamHooks{paused: func(st *stream, unsent int64) {
		mu.Lock()
		defer mu.Unlock()
		if _, seen := pausedAt[st]; !seen && len(pausedAt) == clients-1 {
			close(all)
		}
		pausedAt[st] = max(pausedAt[st], unsent)
	}}
	env := newStreamEnv(t, StreamOptions{MaxUnsent: maxUnsent}, hooks, nil)
	// About 600 KB of events: more than a connection's socket buffers
	// and MaxUnsent hold.
	last := env.commitBatch(1000)
	var biggest int64
	for seq := int64(1); seq <= last; seq += 97 {
		biggest = max(biggest, int64(len(env.event(seq))))
	}
	base := env.serveAPI()

	for range clients {
		dialAPI(t, base, "cursor=0")
	}
	select {
	case <-all:
	case <-time.After(streamTimeout):
		mu.Lock()
		n := len(pausedAt)
		mu.Unlock()
		t.Fatalf("%d of %d never-reading streams paused; the Streamer holds %d bytes for them",
			n, clients, env.streamer.unsent.Load())
	}

	// A page is sized to the room left from the mean event size: it may
	// overshoot by a few events of different sizes.
	bound := int64(maxUnsent) + 4*biggest
	mu.Lock()
	for _, unsent := range pausedAt {
		if unsent > bound {
			t.Errorf("a stream paused with %d bytes unsent, want at most %d (MaxUnsent %d)", unsent, bound, maxUnsent)
		}
	}
	mu.Unlock()
	if total := env.streamer.unsent.Load(); total > clients*bound {
		t.Errorf("the Streamer holds %d bytes for %d clients, want at most %d", total, clients, clients*bound)
	}
	if status, body := getHealth(t, base); status != http.StatusOK {
		t.Fatalf("/_health under %d paused streams: %d %s", clients, status, body)
	}
	if open, _ := env.streamer.streamCounts(); open != clients {
		t.Fatalf("%d open streams, want %d (paused, not dropped)", open, clients)
	}
}

// poolStore stands for a database with a small connection pool whose
// reads can be slow: every call takes one of its slots for its duration,
// and while the gate is closed an Export holds its slot until the gate
// opens.
type poolStore struct {
	oplog.Store
	slots   chan struct{}
	gate    chan struct{} // closed: reads go through
	entered atomic.Int64  // Exports called
	holding chan struct{} // an Export holds a slot at the gate
}

func (p *poolStore) take(ctx context.Context) error {
	select {
	case p.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *poolStore) give() { <-p.slots }

func (p *poolStore) Export(ctx context.Context, after int64, limit int) ([]oplog.Entry, error) {
	p.entered.Add(1)
	if err := p.take(ctx); err != nil {
		return nil, err
	}
	defer p.give()
	select {
	case <-p.gate:
	default:
		p.holding <- struct{}{}
		select {
		case <-p.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return p.Store.Export(ctx, after, limit)
}

func (p *poolStore) LatestSeq(ctx context.Context) (int64, error) {
	if err := p.take(ctx); err != nil {
		return 0, err
	}
	defer p.give()
	return p.Store.LatestSeq(ctx)
}

func (p *poolStore) Ping(ctx context.Context) error {
	if err := p.take(ctx); err != nil {
		return err
	}
	defer p.give()
	return p.Store.Ping(ctx)
}

// Many backfills whose store reads are slow must not take every database
// connection: the streams read StoreReads at a time, and /_health (and
// the rest of the API) gets a connection at once instead of waiting behind
// them until its timeout (503).
func TestStreamBackfillsDoNotStarveHealthOfConnections(t *testing.T) {
	const (
		clients = 50
		pool    = 4
		reads   = 2 // StoreReads's default
	)
	var ps *poolStore
	env := newStreamEnv(t, StreamOptions{}, streamHooks{}, func(s oplog.Store) oplog.Store {
		ps = &poolStore{Store: s, slots: make(chan struct{}, pool), gate: make(chan struct{}), holding: make(chan struct{}, clients)}
		return ps
	})
	close(ps.gate)
	last := env.commitBatch(10)
	ps.gate = make(chan struct{}) // reads are slow from now on
	base := env.serveAPI()

	conns := make([]*websocket.Conn, clients)
	for i := range conns {
		conns[i] = dialAPI(t, base, "cursor=0")
	}
	for range reads {
		streamWait(t, ps.holding, "a backfill read to reach the database")
	}
	if status, body := getHealth(t, base); status != http.StatusOK {
		t.Fatalf("/_health while %d backfills read: %d %s", clients, status, body)
	}
	if n := ps.entered.Load(); n > reads {
		t.Fatalf("%d store reads of streams at once, want at most StoreReads (%d)", n, reads)
	}

	// The reads go through: every client gets its backfill.
	close(ps.gate)
	for i, c := range conns {
		for want := int64(1); want <= last; want++ {
			seq, _, err := streamRecvErr(c)
			if err != nil || seq != want {
				t.Fatalf("client %d: seq %d (%v), want %d", i, seq, err, want)
			}
		}
	}
}

// A live client that takes nothing while ops keep committing: the pump
// queues its events only up to MaxUnsent bytes (not SendBuffer events of
// any size), then lets it go; once the client reads again, it gets every
// op in order from the store.
func TestStreamStuckLiveClientHoldsAtMostMaxUnsent(t *testing.T) {
	const maxUnsent = 8 << 10
	var env *streamEnv
	live, liveCh := streamSignal()
	send, sending, release := holdFirstSend()
	overflowed := make(chan int64, 4)
	hooks := streamHooks{
		live: live,
		send: send,
		overflow: func() {
			select {
			case overflowed <- env.streamer.unsent.Load():
			default:
			}
		},
	}
	env = newStreamEnv(t, StreamOptions{MaxUnsent: maxUnsent}, hooks, nil)
	var released sync.Once
	unhold := func() { released.Do(func() { close(release) }) }
	t.Cleanup(unhold) // before the Streamer closes, on failure too
	c := env.dial("")
	streamWait(t, liveCh, "the stream to go live")

	env.commit(1)
	if seq := streamWaitSeq(t, sending, "the first live event"); seq != 1 {
		t.Fatalf("first live event %d, want 1", seq)
	}
	// 100 events of about 550 bytes: far within SendBuffer (500 events),
	// far over MaxUnsent.
	env.commitBatch(100)
	var held int64
	select {
	case held = <-overflowed:
	case <-time.After(streamTimeout):
		t.Fatalf("the pump never let the stuck stream go; it holds %d bytes for it", env.streamer.unsent.Load())
	}
	if held > maxUnsent {
		t.Fatalf("the stuck stream held %d bytes, want at most %d", held, maxUnsent)
	}
	unhold()
	env.recv(c, 1, 101)
	streamWait(t, liveCh, "the stream to go live again")
	env.commit(1)
	env.recv(c, 102, 102)
	c.CloseNow()
	env.streamer.Close() // waits for the handler
	if n := env.streamer.unsent.Load(); n != 0 {
		t.Fatalf("%d bytes still counted unsent after the stream ended", n)
	}
}

// The count of unsent bytes goes back to zero when streams end, whatever
// way they end: nothing is leaked per stream.
func TestStreamEndedStreamsLeaveNoUnsentBytes(t *testing.T) {
	done, doneCh := streamSignal()
	env := newStreamEnv(t, StreamOptions{MaxUnsent: 8 << 10}, streamHooks{done: done}, nil)
	env.commitBatch(200)
	base := env.serveAPI()
	for i := range 4 {
		c := dialAPI(t, base, fmt.Sprintf("cursor=%d", i))
		c.CloseNow()
		streamWait(t, doneCh, "the handler to return")
	}
	env.streamer.Close()
	if n := env.streamer.unsent.Load(); n != 0 {
		t.Fatalf("%d bytes counted unsent after every stream ended", n)
	}
}
