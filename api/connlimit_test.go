package api

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// limitedServer serves h on 127.0.0.1 through a ConnLimiter. idle receives
// a value each time a connection becomes idle (after each response), so
// that a test knows the server has finished with a request without
// sleeping.
type limitedServer struct {
	t    *testing.T
	lim  *ConnLimiter
	srv  *httptest.Server
	idle chan struct{}
}

func newLimitedServer(t *testing.T, h http.Handler, limits ConnLimits) *limitedServer {
	t.Helper()
	ls := &limitedServer{t: t, lim: NewConnLimiter(limits), idle: make(chan struct{}, 1024)}
	ls.srv = httptest.NewUnstartedServer(h)
	ln := ls.srv.Listener
	ls.srv.Listener = ls.lim.Listener(ln)
	ls.srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		ls.lim.ConnState(c, s)
		if s == http.StateIdle {
			ls.idle <- struct{}{}
		}
	}
	ls.srv.Start()
	t.Cleanup(ls.srv.Close)
	return ls
}

// dial opens a connection from the loopback address from (127.0.0.x: the
// whole of 127/8 is the loopback interface on Linux).
func (ls *limitedServer) dial(from string) net.Conn {
	ls.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", ls.srv.Listener.Addr().String())
	if err != nil {
		ls.t.Fatalf("dial from %s: %v", from, err)
	}
	ls.t.Cleanup(func() { c.Close() })
	// Bounds a test that fails (a read the server never answers); nothing
	// waits on it when the test passes.
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// refused reports whether a new connection from `from` is refused: the
// dial fails, or the connection is closed instead of being answered.
func (ls *limitedServer) refused(from string) (bool, int) {
	ls.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", ls.srv.Listener.Addr().String())
	if err != nil {
		return true, 0
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	code, err := get(c, bufio.NewReader(c), "/_health")
	return err != nil, code
}

// get sends GET path on c (keep-alive) and returns the status, or an error
// if the server closed the connection instead of answering.
func get(c net.Conn, br *bufio.Reader, path string) (int, error) {
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: plc.test\r\n\r\n", path); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// keepAlive opens a connection from `from`, makes one request on it and
// waits until the server holds it idle (a keep-alive connection between
// requests).
func (ls *limitedServer) keepAlive(from string) (net.Conn, *bufio.Reader) {
	ls.t.Helper()
	c := ls.dial(from)
	br := bufio.NewReader(c)
	if code, err := get(c, br, "/_health"); err != nil || code != http.StatusOK {
		ls.t.Fatalf("request from %s: %d %v", from, code, err)
	}
	<-ls.idle
	return c, br
}

// holdHandler answers /hold only when release is closed (signalling each
// arrival on held), and anything else at once.
func holdHandler(held chan<- struct{}, release <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			held <- struct{}{}
			<-release
		}
		w.Write([]byte("ok"))
	})
}

// One client opening connection after connection (21,000 idle keep-alive
// connections once exhausted the file descriptors) holds at most its
// per-IP bound: with 8 connections busy, its next 12 are closed at once,
// while another client is served.
func TestConnectionFloodFromOneIPIsCappedPerIP(t *testing.T) {
	held, release := make(chan struct{}, 8), make(chan struct{})
	ls := newLimitedServer(t, holdHandler(held, release), ConnLimits{MaxPerIP: 8})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce) // before the server's Cleanup, which waits for handlers
	busy := make([]net.Conn, 8)
	for i := range busy {
		busy[i] = ls.dial("127.0.0.1")
		if _, err := io.WriteString(busy[i], "GET /hold HTTP/1.1\r\nHost: plc.test\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		<-held
	}
	for i := range 12 {
		if refused, code := ls.refused("127.0.0.1"); !refused {
			t.Fatalf("connection %d over the per-IP bound was served (%d)", 9+i, code)
		}
		if open, _ := ls.lim.counts(); open > 8 {
			t.Fatalf("%d connections open, over the per-IP bound of 8", open)
		}
	}
	other := ls.dial("127.0.0.2")
	if code, err := get(other, bufio.NewReader(other), "/_health"); err != nil || code != http.StatusOK {
		t.Fatalf("another client while the first is at its bound: %d %v", code, err)
	}
	releaseOnce()
	for i, c := range busy {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("held request %d: %v", i, err)
		}
	}
}

// Under the total bound, a new connection takes the place of the oldest
// idle keep-alive connection, so /_health keeps answering through a flood
// of idle connections; only when every connection is busy is a new one
// refused, at once.
func TestIdleKeepAliveConnectionsAreReclaimedFirst(t *testing.T) {
	held, release := make(chan struct{}, 8), make(chan struct{})
	ls := newLimitedServer(t, holdHandler(held, release), ConnLimits{MaxConns: 8})
	t.Cleanup(func() { close(release) }) // before the server's Cleanup, which waits for handlers
	conns := make([]net.Conn, 8)
	readers := make([]*bufio.Reader, 8)
	for i := range conns {
		conns[i], readers[i] = ls.keepAlive(fmt.Sprintf("127.0.0.%d", i+1))
	}
	if open, idle := ls.lim.counts(); open != 8 || idle != 8 {
		t.Fatalf("%d open, %d idle; want 8 and 8", open, idle)
	}
	// A ninth client: the oldest idle connection makes room.
	c, br := ls.keepAlive("127.0.0.9")
	if _, err := get(conns[0], readers[0], "/_health"); err == nil {
		t.Fatal("the oldest idle connection was not closed to make room")
	}
	for i := 1; i < 8; i++ {
		if code, err := get(conns[i], readers[i], "/_health"); err != nil || code != http.StatusOK {
			t.Fatalf("connection %d, not the oldest idle one: %d %v", i, code, err)
		}
		<-ls.idle
	}
	if code, err := get(c, br, "/_health"); err != nil || code != http.StatusOK {
		t.Fatalf("the new connection: %d %v", code, err)
	}
	<-ls.idle
	if open, _ := ls.lim.counts(); open != 8 {
		t.Fatalf("%d open, want 8", open)
	}

	// Every connection busy: nothing to reclaim, a new one is refused.
	for i := 1; i < 8; i++ {
		if _, err := io.WriteString(conns[i], "GET /hold HTTP/1.1\r\nHost: plc.test\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		<-held
	}
	if _, err := io.WriteString(c, "GET /hold HTTP/1.1\r\nHost: plc.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	<-held
	if refused, code := ls.refused("127.0.0.10"); !refused {
		t.Fatalf("a connection over the total bound with none idle was served (%d)", code)
	}
}

// Through the directory's own server: a client flooding idle keep-alive
// connections from one address never holds more than its bound, and a
// health check from elsewhere is answered.
func TestHealthAnswersThroughAnIdleConnectionFlood(t *testing.T) {
	env := newAPIEnv(t, backends[0], envOptions{})
	ls := newLimitedServer(t, env.srv, ConnLimits{MaxConns: 16, MaxPerIP: 8})
	type kept struct {
		c  net.Conn
		br *bufio.Reader
	}
	var flood []kept
	for range 40 {
		c, br := ls.keepAlive("127.0.0.1")
		flood = append(flood, kept{c, br})
		if open, _ := ls.lim.counts(); open > 8 {
			t.Fatalf("one client holds %d connections, over its bound of 8", open)
		}
	}
	alive := 0
	for _, k := range flood {
		if _, err := get(k.c, k.br, "/_health"); err == nil {
			alive++
			<-ls.idle
		}
	}
	if alive == 0 || alive > 8 {
		t.Fatalf("%d of the flooding client's 40 connections are still served, want 1 to 8", alive)
	}
	for i := range 16 {
		ls.keepAlive(fmt.Sprintf("127.0.0.%d", 2+i/8))
		if open, _ := ls.lim.counts(); open > 16 {
			t.Fatalf("%d connections open, over the total bound of 16", open)
		}
	}
	c := ls.dial("127.0.0.200")
	br := bufio.NewReader(c)
	if _, err := io.WriteString(c, "GET /_health HTTP/1.1\r\nHost: plc.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("/_health through the flood: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"version":"test-version"`) {
		t.Fatalf("/_health through the flood: %d %s", resp.StatusCode, b)
	}
}

// A connection handed over to the event stream (hijacked: net/http no
// longer reports its state) stays counted while the stream is open and
// gives its place back when it closes; a leak here would end with every
// new connection refused.
func TestStreamConnectionsAreCountedUntilClosed(t *testing.T) {
	env := newAPIEnv(t, backends[0], envOptions{})
	streamer := NewStreamer(env.log, StreamOptions{})
	t.Cleanup(streamer.Close)
	env = newAPIEnv(t, backends[0], envOptions{config: func(c *Config) { c.Stream = streamer }})
	released := make(chan struct{}, 16)
	lim := NewConnLimiter(ConnLimits{MaxConns: 4, MaxPerIP: 2})
	lim.released = func() { released <- struct{}{} }
	srv := httptest.NewUnstartedServer(env.srv)
	srv.Listener = lim.Listener(srv.Listener)
	srv.Config.ConnState = lim.ConnState
	srv.Start()
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := "ws" + strings.TrimPrefix(srv.URL, "http") + "/export/stream"
	var streams []*websocket.Conn
	for range 2 {
		c, _, err := websocket.Dial(ctx, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, c)
	}
	if open, idle := lim.counts(); open != 2 || idle != 0 {
		t.Fatalf("two open streams: %d open, %d idle; want 2 and 0", open, idle)
	}
	// Busy streams are not reclaimed: a third connection from the same
	// client is refused.
	if c, _, err := websocket.Dial(ctx, u, nil); err == nil {
		c.CloseNow()
		t.Fatal("a third stream from one client was let in over the per-IP bound of 2")
	}
	for _, c := range streams {
		c.Close(websocket.StatusNormalClosure, "")
	}
	for range 2 {
		<-released
	}
	if open, _ := lim.counts(); open != 0 {
		t.Fatalf("%d connections counted after every stream closed", open)
	}
	c, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		t.Fatalf("a stream after the others closed: %v", err)
	}
	c.CloseNow()
}
