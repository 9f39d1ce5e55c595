package mirror_test

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/plcdir/plc/mirror"
)

// timers is the mirror's After in these tests: each timer it starts is
// announced on started, and fires only when the test fires it.
type timers struct {
	started chan timer
}

type timer struct {
	d time.Duration
	c chan time.Time
}

func newTimers() *timers { return &timers{started: make(chan timer, 10000)} }

func (ts *timers) After(d time.Duration) <-chan time.Time {
	c := make(chan time.Time, 1)
	select {
	case ts.started <- timer{d, c}:
	default:
		panic("timers: too many timers started")
	}
	return c
}

// next waits for a timer of d to start (passing over others).
func (ts *timers) next(ctx context.Context, t *testing.T, d time.Duration) timer {
	t.Helper()
	for {
		select {
		case tm := <-ts.started:
			if tm.d == d {
				return tm
			}
		case <-ctx.Done():
			t.Fatalf("no timer of %v started", d)
		}
	}
}

func (tm timer) fire() { tm.c <- time.Time{} }

// fire waits for a timer of d to start, and fires it.
func (ts *timers) fire(ctx context.Context, t *testing.T, d time.Duration) {
	t.Helper()
	ts.next(ctx, t, d).fire()
}

const (
	testStreamTimeout = 17 * time.Second
	testStreamIdle    = 43 * time.Second
)

// TestSilentUpstreamDoesNotStallMirror: an upstream's stream that never
// completes its handshake, or accepts it and then sends nothing, does not
// hold the mirror: the handshake is cut after StreamTimeout; a silent
// stream is pinged after StreamIdle, and ended when the ping is not
// answered, or when the upstream's export has ops the stream did not
// send (which /_health then shows as lagOps). The timeouts run on the
// test's timers.
func TestSilentUpstreamDoesNotStallMirror(t *testing.T) {
	f := newFixture(t)
	start := func(t *testing.T, s *script) (*mirror.Mirror, *timers) {
		ts := newTimers()
		m, _ := newHostileMirror(t, newScript(t, s), mirror.Config{StreamTimeout: testStreamTimeout, StreamIdle: testStreamIdle, After: ts.After})
		return m, ts
	}
	step := func(ctx context.Context, m *mirror.Mirror) chan error {
		done := make(chan error, 1)
		go func() { done <- m.Step(ctx) }()
		return done
	}
	result := func(ctx context.Context, t *testing.T, done chan error) error {
		t.Helper()
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			t.Fatal("Step is still stuck on the silent upstream")
			return nil
		}
	}

	t.Run("handshake never completes", func(t *testing.T) {
		ctx := ctxFor(t)
		var held atomic.Int64
		hijacked := make(chan struct{}, 1)
		release := make(chan struct{})
		defer close(release)
		s := &script{lines: numbered(f.ops), ops: f.ops, stream: func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			held.Add(1)
			hijacked <- struct{}{}
			<-release // never answers the upgrade
			conn.Close()
		}}
		m, ts := start(t, s)
		done := step(ctx, m)
		tm := ts.next(ctx, t, testStreamTimeout)
		select {
		case <-hijacked:
		case <-ctx.Done():
			t.Fatal("the handshake never reached the upstream")
		}
		tm.fire()
		err := result(ctx, t, done)
		if err == nil || !strings.Contains(err.Error(), "no handshake within 17s") {
			t.Fatalf("Step: %v, want the handshake cut after the stream timeout", err)
		}
		if held.Load() != 1 {
			t.Fatalf("the upstream saw %d handshakes", held.Load())
		}
		if st := m.Status(ctx); st.State == "stream" {
			t.Errorf("status %+v: following a stream that never opened", st)
		}
	})

	t.Run("silent, pings unanswered", func(t *testing.T) {
		ctx := ctxFor(t)
		release := make(chan struct{})
		defer close(release)
		s := &script{lines: numbered(f.ops), ops: f.ops, stream: func(w http.ResponseWriter, r *http.Request) {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			<-release // sends nothing, reads nothing: no pong
		}}
		m, ts := start(t, s)
		done := step(ctx, m)
		ts.fire(ctx, t, testStreamIdle)
		ts.fire(ctx, t, testStreamTimeout)
		err := result(ctx, t, done)
		if err == nil || !strings.Contains(err.Error(), "no pong within 17s") {
			t.Fatalf("Step: %v, want the stream ended for want of a pong", err)
		}
	})

	t.Run("silent while the export moves on", func(t *testing.T) {
		ctx := ctxFor(t)
		e := newcomer(t, "stalled-e.test", f.ops[len(f.ops)-1].at.Add(time.Second))
		s := &script{lines: numbered(f.ops), ops: f.ops, stream: streamEvents(t)} // answers pings, sends nothing
		m, ts := start(t, s)
		done := step(ctx, m)
		// Quiet and nothing new upstream: the mirror keeps following (a
		// new idle timer starts once a check is done).
		ts.fire(ctx, t, testStreamIdle)
		ts.fire(ctx, t, testStreamIdle)
		tm := ts.next(ctx, t, testStreamIdle)
		if st := m.Status(ctx); st.State != "stream" || st.LagOps != 0 {
			t.Fatalf("status of a quiet, alive upstream: %+v", st)
		}
		// The export has an op the stream does not send.
		s.set(func(s *script) { s.lines = append(s.lines, sline{9, seqLine(e, 9)}) })
		tm.fire()
		err := result(ctx, t, done)
		if err == nil || !strings.Contains(err.Error(), "stalled") {
			t.Fatalf("Step: %v, want the stream found stalled", err)
		}
		if st := m.Status(ctx); st.LagOps != 1 || st.Cursor != 8 {
			t.Errorf("status after the stall: %+v, want cursor 8 and lagOps 1", st)
		}
		if err := m.Sync(ctx); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		if st := m.Status(ctx); st.LagOps != 0 || st.Cursor != 9 {
			t.Errorf("status after paging: %+v, want cursor 9 and lagOps 0", st)
		}
	})
}
