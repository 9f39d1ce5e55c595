package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/coder/websocket"

	"github.com/plcdir/plc/internal/testclock"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// Tests of /export/stream against a real log over SQLite. Nothing here
// sleeps: the races at the cut-over are driven through the Streamer's hooks,
// and the clock is injected.

// streamTimeout bounds every wait of a test, so that a bug fails the test
// instead of hanging it.
const streamTimeout = 20 * time.Second

// streamEnv is a log over a fresh SQLite file, a Streamer over it and an
// HTTP server serving the Streamer.
type streamEnv struct {
	t        *testing.T
	path     string
	clock    *testclock.Clock
	store    oplog.Store
	log      *oplog.Log
	streamer *Streamer
	srv      *httptest.Server
	key      atcrypto.PrivateKey
	rotKey   string
	ops      atomic.Int64 // ops made, to make each genesis distinct
}

// newStreamEnv starts an environment; wrap, if set, wraps the store the log
// and the Streamer use.
func newStreamEnv(t *testing.T, opts StreamOptions, hooks streamHooks, wrap func(oplog.Store) oplog.Store) *streamEnv {
	t.Helper()
	env := &streamEnv{
		t:     t,
		path:  filepath.Join(t.TempDir(), "plc.db"),
		clock: testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
	}
	if _, err := oplog.MigrateUp(env.path); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	sqlite, err := oplog.OpenSQLite(env.path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { sqlite.Close() })
	env.store = sqlite
	if wrap != nil {
		env.store = wrap(sqlite)
	}
	env.log = oplog.NewLog(env.store, oplog.Options{Now: env.clock.Now, NoRateLimit: true})
	t.Cleanup(env.log.Close)

	env.key, err = atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	pub, err := env.key.PublicKey()
	if err != nil {
		t.Fatalf("public key: %v", err)
	}
	env.rotKey = pub.DIDKey()

	if opts.Now == nil {
		opts.Now = env.clock.Now
	}
	env.streamer = newStreamer(env.log, opts, hooks)
	env.srv = httptest.NewServer(env.streamer)
	// Cleanups run last-in first-out: streams end before the server and
	// the log close.
	t.Cleanup(env.srv.Close)
	t.Cleanup(env.streamer.Close)
	return env
}

// streamGenesis returns a new signed genesis op, distinct from every other
// one of env.
func (env *streamEnv) streamGenesis() (*validate.Op, error) {
	n := env.ops.Add(1)
	return validate.Sign(validate.Operation{
		Type:                validate.TypeOperation,
		RotationKeys:        []string{env.rotKey},
		VerificationMethods: []validate.VerificationMethod{{ID: "atproto", Key: env.rotKey}},
		AlsoKnownAs:         []string{fmt.Sprintf("at://stream-%d.test", n)},
		Services:            []validate.Service{{ID: "atproto_pds", Type: "AtprotoPersonalDataServer", Endpoint: "https://pds.test"}},
	}, env.key)
}

// commitErr commits one new op through log. Safe from any goroutine.
func (env *streamEnv) commitErr(log *oplog.Log) (oplog.Entry, error) {
	op, err := env.streamGenesis()
	if err != nil {
		return oplog.Entry{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), streamTimeout)
	defer cancel()
	return log.Submit(ctx, op.GenesisDID(), op)
}

// commit commits n new ops and returns the last seq.
func (env *streamEnv) commit(n int) int64 {
	env.t.Helper()
	var last int64
	for range n {
		e, err := env.commitErr(env.log)
		if err != nil {
			env.t.Fatalf("commit: %v", err)
		}
		last = e.Seq
	}
	return last
}

// commitInHook commits n ops from a hook (a server goroutine), reporting
// failures with Error.
func (env *streamEnv) commitInHook(n int) {
	for range n {
		if _, err := env.commitErr(env.log); err != nil {
			env.t.Errorf("commit in hook: %v", err)
			return
		}
	}
}

// event returns the stream event of seq as the store renders it.
func (env *streamEnv) event(seq int64) []byte {
	env.t.Helper()
	e, err := env.store.Op(context.Background(), seq)
	if err != nil {
		env.t.Fatalf("op %d: %v", seq, err)
	}
	b, err := appendSequencedEntry(nil, &e)
	if err != nil {
		env.t.Fatalf("render %d: %v", seq, err)
	}
	return b
}

// dial opens a stream with the given query ("" or "cursor=N").
func (env *streamEnv) dial(query string) *websocket.Conn {
	env.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), streamTimeout)
	defer cancel()
	u := "ws" + strings.TrimPrefix(env.srv.URL, "http") + "/export/stream"
	if query != "" {
		u += "?" + query
	}
	c, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		env.t.Fatalf("dial %s: %v", u, err)
	}
	env.t.Cleanup(func() { c.CloseNow() })
	return c
}

// streamCounts returns the open streams and the live ones.
func (s *Streamer) streamCounts() (open, live int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streams, len(s.subs)
}

// streamRecvErr reads one event and its seq.
func streamRecvErr(c *websocket.Conn) (int64, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), streamTimeout)
	defer cancel()
	typ, msg, err := c.Read(ctx)
	if err != nil {
		return 0, nil, err
	}
	if typ != websocket.MessageText {
		return 0, nil, fmt.Errorf("message type %v, want text", typ)
	}
	var ev struct {
		Type string `json:"type"`
		Seq  int64  `json:"seq"`
	}
	if err := json.Unmarshal(msg, &ev); err != nil || ev.Type != "sequenced_op" {
		return 0, nil, fmt.Errorf("not an event: %q (%v)", msg, err)
	}
	return ev.Seq, msg, nil
}

// recv reads the events of seqs from..to and checks each against the
// store's rendering.
func (env *streamEnv) recv(c *websocket.Conn, from, to int64) {
	env.t.Helper()
	for want := from; want <= to; want++ {
		seq, msg, err := streamRecvErr(c)
		if err != nil {
			env.t.Fatalf("waiting for seq %d: %v", want, err)
		}
		if seq != want {
			env.t.Fatalf("received seq %d, want %d (a gap or a duplicate)", seq, want)
		}
		if exp := env.event(seq); string(msg) != string(exp) {
			env.t.Fatalf("seq %d:\n got  %s\n want %s", seq, msg, exp)
		}
	}
}

// streamExpectClose reads until the stream ends and checks that it ended
// with a close frame (code, reason) and no further event.
func streamExpectClose(t *testing.T, c *websocket.Conn, code websocket.StatusCode, reason string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), streamTimeout)
	defer cancel()
	_, msg, err := c.Read(ctx)
	if err == nil {
		t.Fatalf("received %s, want close %d %q", msg, code, reason)
	}
	var ce websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("stream ended with %v, want close %d %q", err, code, reason)
	}
	if ce.Code != code || ce.Reason != reason {
		t.Fatalf("closed with %d %q, want %d %q", ce.Code, ce.Reason, code, reason)
	}
}

// streamSignal returns a hook that reports each call on the returned
// channel.
func streamSignal() (func(), chan struct{}) {
	ch := make(chan struct{}, 64)
	return func() { ch <- struct{}{} }, ch
}

func streamWait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(streamTimeout):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func TestStreamLiveOnlyReceivesOpsCommittedAfterConnecting(t *testing.T) {
	live, liveCh := streamSignal()
	env := newStreamEnv(t, StreamOptions{}, streamHooks{live: live}, nil)
	env.commit(2) // before connecting: not sent

	c := env.dial("")
	streamWait(t, liveCh, "the stream to go live")
	env.commit(3)
	env.recv(c, 3, 5)
}

func TestStreamBackfillCutOverHasNoGapNoDuplicate(t *testing.T) {
	var env *streamEnv
	live, liveCh := streamSignal()
	var pages atomic.Int64
	hooks := streamHooks{
		pageSize: 2,
		// Ops committed while the backfill runs: after the first two pages.
		backfillPage: func(int64) {
			if pages.Add(1) <= 2 {
				env.commitInHook(1)
			}
		},
		// Ops committed after the backfill read its last page but before
		// the stream is live: neither the backfill nor the pump has them.
		beforeLive: func() { env.commitInHook(3) },
		live:       live,
	}
	env = newStreamEnv(t, StreamOptions{}, hooks, nil)
	env.commit(5)

	c := env.dial("cursor=0")
	// 5 before, 2 during the backfill, 3 at the cut-over.
	env.recv(c, 1, 10)
	streamWait(t, liveCh, "the stream to go live")
	env.commit(2)
	env.recv(c, 11, 12)
	// Nothing was sent twice: the next event is the next op.
	env.commit(1)
	env.recv(c, 13, 13)
}

// A stream that goes live while the pump, serving another stream, is
// already past the stream's position reads the missed ops from the store.
func TestStreamJoiningBehindPumpCatchesUpFromStore(t *testing.T) {
	var env *streamEnv
	var a *websocket.Conn
	live, liveCh := streamSignal()
	var calls atomic.Int64
	hooks := streamHooks{
		live: live,
		beforeLive: func() {
			if calls.Add(1) != 2 {
				return // the first call is stream A's
			}
			// Stream B backfilled to 4. Commit 5..7 and wait until A
			// received them: the pump's head is now 7.
			env.commitInHook(3)
			for want := int64(5); want <= 7; want++ {
				seq, _, err := streamRecvErr(a)
				if err != nil || seq != want {
					t.Errorf("stream A: seq %d (%v), want %d", seq, err, want)
					return
				}
			}
		},
	}
	env = newStreamEnv(t, StreamOptions{}, hooks, nil)
	a = env.dial("")
	streamWait(t, liveCh, "stream A to go live")
	env.commit(4)
	env.recv(a, 1, 4)

	b := env.dial("cursor=2")
	env.recv(b, 3, 7)
	streamWait(t, liveCh, "stream B to go live")
	env.commit(1)
	env.recv(b, 8, 8)
	env.recv(a, 8, 8)
}

// A stream that goes live while the pump is behind it (the pump has not
// yet read ops the stream backfilled) skips what the pump then delivers.
func TestStreamJoiningAheadOfPumpSkipsDuplicates(t *testing.T) {
	live, liveCh := streamSignal()
	var hold atomic.Bool
	reading := make(chan struct{}, 1)
	release := make(chan struct{})
	hooks := streamHooks{
		live: live,
		pumpRead: func() {
			if hold.CompareAndSwap(true, false) {
				reading <- struct{}{}
				<-release
			}
		},
	}
	env := newStreamEnv(t, StreamOptions{}, hooks, nil)
	a := env.dial("")
	streamWait(t, liveCh, "stream A to go live")

	// The pump is woken by the commit and held before it reads op 1.
	hold.Store(true)
	env.commit(1)
	streamWait(t, reading, "the pump to read")
	b := env.dial("cursor=0")
	env.recv(b, 1, 1)
	streamWait(t, liveCh, "stream B to go live")
	close(release)

	env.recv(a, 1, 1)
	env.commit(1)
	env.recv(a, 2, 2)
	env.recv(b, 2, 2) // not 1 again
}

// Ops committed while no stream was live are not pushed through the send
// buffer of the next live stream (which would overflow it).
func TestStreamIdleHistoryIsNotReplayedToNewStreams(t *testing.T) {
	live, liveCh := streamSignal()
	env := newStreamEnv(t, StreamOptions{SendBuffer: 2}, streamHooks{live: live}, nil)
	for round := range 2 {
		env.commit(5)
		c := env.dial("")
		streamWait(t, liveCh, "the stream to go live")
		env.commit(1)
		last := int64(6 * (round + 1))
		env.recv(c, last, last)
		c.Close(websocket.StatusNormalClosure, "")
	}
}

func TestStreamCursorInTheMiddle(t *testing.T) {
	live, liveCh := streamSignal()
	env := newStreamEnv(t, StreamOptions{}, streamHooks{live: live}, nil)
	env.commit(6)
	c := env.dial("cursor=3")
	env.recv(c, 4, 6)
	streamWait(t, liveCh, "the stream to go live")
	env.commit(1)
	env.recv(c, 7, 7)
}

func TestStreamFutureCursorIsClosed(t *testing.T) {
	live, liveCh := streamSignal()
	env := newStreamEnv(t, StreamOptions{}, streamHooks{live: live}, nil)
	env.commit(2)
	streamExpectClose(t, env.dial("cursor=3"), websocket.StatusNormalClosure, "FutureCursor")

	// The latest seq itself is not in the future.
	c := env.dial("cursor=2")
	streamWait(t, liveCh, "the stream to go live")
	env.commit(1)
	env.recv(c, 3, 3)
}

func TestStreamOutdatedCursorIsClosed(t *testing.T) {
	live, liveCh := streamSignal()
	env := newStreamEnv(t, StreamOptions{}, streamHooks{live: live}, nil)
	env.commit(3)

	env.clock.Advance(6 * 24 * time.Hour) // within the 7-day window
	c := env.dial("cursor=0")
	env.recv(c, 1, 3)
	streamWait(t, liveCh, "the stream to go live")
	c.Close(websocket.StatusNormalClosure, "")

	env.clock.Advance(2 * 24 * time.Hour) // now 8 days after the ops
	streamExpectClose(t, env.dial("cursor=0"), websocket.StatusNormalClosure, "OutdatedCursor")
	streamExpectClose(t, env.dial("cursor=2"), websocket.StatusNormalClosure, "OutdatedCursor")

	// A cursor at the head has no backfill, so nothing to be outdated.
	c = env.dial("cursor=3")
	streamWait(t, liveCh, "the stream to go live")
	env.commit(1)
	env.recv(c, 4, 4)
}

// commitBatch commits n new ops in one transaction, as a mirror's or an
// import's ingest batch does, and returns the last seq.
func (env *streamEnv) commitBatch(n int) int64 {
	env.t.Helper()
	items := make([]oplog.IngestItem, n)
	for i := range items {
		op, err := env.streamGenesis()
		if err != nil {
			env.t.Fatalf("genesis: %v", err)
		}
		items[i] = oplog.IngestItem{Line: int64(i + 1), DID: op.GenesisDID(), CID: op.CID(), Op: op, CreatedAt: env.clock.Now()}
	}
	ctx, cancel := context.WithTimeout(context.Background(), streamTimeout)
	defer cancel()
	res, err := env.log.Ingest(ctx, fmt.Sprintf("batch:%d", env.ops.Load()), items)
	if err != nil || len(res.Entries) != n {
		env.t.Fatalf("ingest of a batch of %d: %d entries, rejected %v, %v", n, len(res.Entries), res.Rejected, err)
	}
	return res.Entries[n-1].Seq
}

// holdFirstSend returns a send hook that holds the writer on the first live
// event (as a client busy reading would, for a while) until release is
// closed, and reports that event's seq on the returned channel.
func holdFirstSend() (hook func(int64), sending chan int64, release chan struct{}) {
	sending, release = make(chan int64, 1), make(chan struct{})
	var once sync.Once
	hook = func(seq int64) {
		once.Do(func() {
			sending <- seq
			<-release
		})
	}
	return hook, sending, release
}

func streamWaitSeq(t *testing.T, ch <-chan int64, what string) int64 {
	t.Helper()
	select {
	case seq := <-ch:
		return seq
	case <-time.After(streamTimeout):
		t.Fatalf("timed out waiting for %s", what)
		return 0
	}
}

// A commit of more ops at once than the send buffer holds, to a client that
// keeps up but is still writing out the event before: the pump lets the
// stream go, and the stream sends what it missed from the store and goes
// live again. The client receives every op once, in order, and is not
// closed.
func TestStreamBatchLargerThanSendBufferIsCaughtUp(t *testing.T) {
	var env *streamEnv
	live, liveCh := streamSignal()
	overflow, overflowCh := streamSignal()
	send, sending, release := holdFirstSend()
	var pages []int64
	var grew sync.Once
	hooks := streamHooks{
		pageSize: 7, // the catch-up reads several pages
		live:     live,
		overflow: overflow,
		send:     send,
		catchUp: func(last int64) {
			pages = append(pages, last)
			// The log grows while the stream catches up: the catch-up
			// goes on to the new latest op.
			grew.Do(func() { env.commitInHook(3) })
		},
	}
	env = newStreamEnv(t, StreamOptions{SendBuffer: 4}, hooks, nil)
	c := env.dial("")
	streamWait(t, liveCh, "the stream to go live")

	env.commit(1)
	if seq := streamWaitSeq(t, sending, "the first live event"); seq != 1 {
		t.Fatalf("first live event %d, want 1", seq)
	}
	// One transaction of 40 ops while the writer is busy with op 1.
	if last := env.commitBatch(40); last != 41 {
		t.Fatalf("the batch ends at seq %d, want 41", last)
	}
	streamWait(t, overflowCh, "the send buffer to overflow")
	close(release)

	env.recv(c, 1, 44) // op 1, the batch, the 3 ops committed while catching up
	streamWait(t, liveCh, "the stream to go live again")
	if len(pages) < 2 {
		t.Fatalf("the catch-up read %d store pages (%v), want several", len(pages), pages)
	}
	if open, live := env.streamer.streamCounts(); open != 1 || live != 1 {
		t.Fatalf("after catching up: %d open, %d live streams; want 1, 1", open, live)
	}
	// Live again, from where it was: nothing missed, nothing twice.
	env.commit(2)
	env.recv(c, 45, 46)
	env.commitBatch(9) // over the buffer again: caught up again, if need be
	env.recv(c, 47, 55)
	env.commit(1)
	env.recv(c, 56, 56)
}

// A client that does not keep up at all falls further and further behind:
// once it is more than MaxLag ops behind the latest, it is closed with
// ConsumerTooSlow, after the events it was sent, which are in order.
func TestStreamStalledConsumerIsClosed(t *testing.T) {
	live, liveCh := streamSignal()
	overflow, overflowCh := streamSignal()
	done, doneCh := streamSignal()
	send, sending, release := holdFirstSend()
	hooks := streamHooks{live: live, overflow: overflow, done: done, send: send}
	env := newStreamEnv(t, StreamOptions{SendBuffer: 2, MaxLag: 5}, hooks, nil)
	c := env.dial("")
	streamWait(t, liveCh, "the stream to go live")

	env.commit(1)
	if seq := streamWaitSeq(t, sending, "the first live event"); seq != 1 {
		t.Fatalf("first live event %d, want 1", seq)
	}
	// The client is stuck on op 1 while 10 more are committed: more than
	// MaxLag behind.
	env.commitBatch(10)
	streamWait(t, overflowCh, "the send buffer to overflow")
	if _, live := env.streamer.streamCounts(); live != 0 {
		t.Fatalf("%d live streams after the overflow, want 0", live)
	}
	close(release)

	// Op 1 (held), perhaps ops 2 and 3 (buffered), then the close.
	var want int64 = 1
	ctx, cancel := context.WithTimeout(context.Background(), streamTimeout)
	defer cancel()
	for {
		_, msg, err := c.Read(ctx)
		if err != nil {
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.StatusNormalClosure || ce.Reason != "ConsumerTooSlow" {
				t.Fatalf("stream ended with %v, want close 1000 ConsumerTooSlow", err)
			}
			break
		}
		var ev struct {
			Seq int64 `json:"seq"`
		}
		if err := json.Unmarshal(msg, &ev); err != nil || ev.Seq != want {
			t.Fatalf("received %s, want seq %d", msg, want)
		}
		want++
	}
	if want < 2 || want > 4 {
		t.Fatalf("received seqs 1..%d before the close, want 1 to 3 at most", want-1)
	}
	streamWait(t, doneCh, "the handler to return")
	if open, _ := env.streamer.streamCounts(); open != 0 {
		t.Fatalf("%d open streams, want 0", open)
	}
}

func TestStreamRejectsPlainAndMalformedRequests(t *testing.T) {
	env := newStreamEnv(t, StreamOptions{}, streamHooks{}, nil)
	upgrade := func(r *http.Request) {
		r.Header.Set("Connection", "Upgrade")
		r.Header.Set("Upgrade", "websocket")
		r.Header.Set("Sec-WebSocket-Version", "13")
		r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	}
	for _, tc := range []struct {
		name    string
		query   string
		upgrade bool
		status  int
		body    string
	}{
		{"no upgrade", "", false, 426, `{"message":"upgrade required"}`},
		{"no upgrade, with cursor", "cursor=1", false, 426, `{"message":"upgrade required"}`},
		{"cursor not a number", "cursor=abc", true, 400, `{"message":"Invalid cursor parameter"}`},
		{"negative cursor", "cursor=-1", true, 400, `{"message":"Invalid cursor parameter"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/export/stream?"+tc.query, nil)
			if tc.upgrade {
				upgrade(r)
			}
			w := httptest.NewRecorder()
			env.streamer.ServeHTTP(w, r)
			if w.Code != tc.status || w.Body.String() != tc.body {
				t.Fatalf("got %d %s, want %d %s", w.Code, w.Body, tc.status, tc.body)
			}
			if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Fatalf("content-type %q", ct)
			}
		})
	}
}

func TestStreamCursorParsesLikeParseInt(t *testing.T) {
	for _, tc := range []struct {
		in     string
		cursor int64
		ok     bool
	}{
		{"0", 0, true},
		{"42", 42, true},
		{"  7", 7, true},
		{"12abc", 12, true},
		{"1e3", 1, true},
		{"3.9", 3, true},
		{"+5", 5, true},
		{"-0", 0, true},
		{"0x10", 0, true}, // parseInt(s, 10): no hex
		{"0x", 0, true},
		{"99999999999999999999999", 1<<63 - 1, true},
		{"abc", 0, false},
		{"-1", 0, false},
		{"- 1", 0, false},
		{"NaN", 0, false},
	} {
		cursor, present, ok := parseStreamCursor(map[string][]string{"cursor": {tc.in}})
		if !present || ok != tc.ok || (ok && cursor != tc.cursor) {
			t.Errorf("cursor %q: got (%d, %v, %v), want (%d, true, %v)", tc.in, cursor, present, ok, tc.cursor, tc.ok)
		}
	}
	for _, q := range []map[string][]string{{}, {"cursor": {""}}} {
		// cursorParam ? parseInt(…) : undefined — empty means live only.
		if _, present, ok := parseStreamCursor(q); present || !ok {
			t.Errorf("%v: got present=%v ok=%v, want live only", q, present, ok)
		}
	}
}

func TestStreamCloseEndsOpenStreams(t *testing.T) {
	live, liveCh := streamSignal()
	env := newStreamEnv(t, StreamOptions{}, streamHooks{live: live}, nil)
	env.commit(2)
	a := env.dial("")
	b := env.dial("cursor=0")
	env.recv(b, 1, 2)
	streamWait(t, liveCh, "stream A to go live")
	streamWait(t, liveCh, "stream B to go live")

	closed := make(chan struct{})
	go func() {
		env.streamer.Close()
		close(closed)
	}()
	streamExpectClose(t, a, websocket.StatusGoingAway, "")
	streamExpectClose(t, b, websocket.StatusGoingAway, "")
	streamWait(t, closed, "Close to return")
	if open, live := env.streamer.streamCounts(); open != 0 || live != 0 {
		t.Fatalf("after Close: %d open, %d live streams", open, live)
	}
	env.streamer.Close() // idempotent

	// New streams are refused.
	r := httptest.NewRequest("GET", "/export/stream", nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	w := httptest.NewRecorder()
	env.streamer.ServeHTTP(w, r)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Fatalf("after Close: %d, Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
}

func TestStreamDisconnectedClientLeavesNothingBehind(t *testing.T) {
	live, liveCh := streamSignal()
	done, doneCh := streamSignal()
	env := newStreamEnv(t, StreamOptions{}, streamHooks{live: live, done: done}, nil)
	for _, closeNow := range []bool{false, true} {
		c := env.dial("cursor=0")
		streamWait(t, liveCh, "the stream to go live")
		if open, live := env.streamer.streamCounts(); open != 1 || live != 1 {
			t.Fatalf("while connected: %d open, %d live streams", open, live)
		}
		if closeNow {
			c.CloseNow() // the TCP connection drops, no close frame
		} else {
			c.Close(websocket.StatusNormalClosure, "bye")
		}
		streamWait(t, doneCh, "the handler to return")
		if open, live := env.streamer.streamCounts(); open != 0 || live != 0 {
			t.Fatalf("after disconnect: %d open, %d live streams", open, live)
		}
	}
}

func TestStreamIgnoresClientMessages(t *testing.T) {
	live, liveCh := streamSignal()
	env := newStreamEnv(t, StreamOptions{}, streamHooks{live: live}, nil)
	c := env.dial("")
	streamWait(t, liveCh, "the stream to go live")
	ctx, cancel := context.WithTimeout(context.Background(), streamTimeout)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"hello":"server"}`)); err != nil {
		t.Fatal(err)
	}
	// A pong is read by the client's reader: keep one reading meanwhile.
	type result struct {
		seq int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		seq, _, err := streamRecvErr(c)
		got <- result{seq, err}
	}()
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	env.commit(1)
	if r := <-got; r.err != nil || r.seq != 1 {
		t.Fatalf("received seq %d (%v), want 1", r.seq, r.err)
	}
}

// streamCountingStore counts the store reads that found new ops.
type streamCountingStore struct {
	oplog.Store
	nonEmptyExports atomic.Int64
}

func (s *streamCountingStore) Export(ctx context.Context, after int64, limit int) ([]oplog.Entry, error) {
	es, err := s.Store.Export(ctx, after, limit)
	if len(es) > 0 {
		s.nonEmptyExports.Add(1)
	}
	return es, err
}

// Live streams share one store read per commit: the fan-out does not turn
// into one database poll per client.
func TestStreamFanOutReadsEachOpOnce(t *testing.T) {
	var counter *streamCountingStore
	live, liveCh := streamSignal()
	env := newStreamEnv(t, StreamOptions{PollInterval: time.Hour}, streamHooks{live: live},
		func(s oplog.Store) oplog.Store {
			counter = &streamCountingStore{Store: s}
			return counter
		})
	const clients = 8
	conns := make([]*websocket.Conn, clients)
	for i := range conns {
		conns[i] = env.dial("")
		streamWait(t, liveCh, "a stream to go live")
	}
	env.commit(1)
	for _, c := range conns {
		env.recv(c, 1, 1)
	}
	if n := counter.nonEmptyExports.Load(); n != 1 {
		t.Fatalf("the op was read from the store %d times for %d clients, want once", n, clients)
	}
}

// Ops committed by another process sharing the database reach live streams
// through the poll.
func TestStreamSeesCommitsOfAnotherProcess(t *testing.T) {
	live, liveCh := streamSignal()
	env := newStreamEnv(t, StreamOptions{PollInterval: 5 * time.Millisecond}, streamHooks{live: live}, nil)
	other, err := oplog.OpenSQLite(env.path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	otherLog := oplog.NewLog(other, oplog.Options{Now: env.clock.Now, NoRateLimit: true})
	defer otherLog.Close()

	c := env.dial("")
	streamWait(t, liveCh, "the stream to go live")
	if _, err := env.commitErr(otherLog); err != nil {
		t.Fatal(err)
	}
	env.recv(c, 1, 1)
}
