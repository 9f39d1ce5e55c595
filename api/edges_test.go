package api

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawExchange writes req on a new connection to env's server and reads one
// response. The read deadline only bounds a test that fails (a server
// waiting for a body that never comes); nothing waits on it otherwise.
func rawExchange(t *testing.T, env *apiEnv, req string) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", env.http.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no response to a request whose body was never sent: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// A client that declares a 10 MB body and sends none of it is refused at
// once: 413 with a JSON message, without "100 Continue" (which would ask
// for the body) and without waiting for the body until the read timeout.
func TestDeclaredOversizedBodyIsRefusedAtOnce(t *testing.T) {
	env := newAPIEnv(t, backends[0], envOptions{})
	did := "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
	for _, tc := range []struct{ name, req string }{
		{"expect-continue", "POST /" + did + " HTTP/1.1\r\nHost: plc.test\r\nContent-Type: application/json\r\nContent-Length: 10485760\r\nExpect: 100-continue\r\n\r\n"},
		{"plain", "POST /" + did + " HTTP/1.1\r\nHost: plc.test\r\nContent-Type: application/json\r\nContent-Length: 10485760\r\n\r\n"},
		{"one-over", "POST /" + did + " HTTP/1.1\r\nHost: plc.test\r\nContent-Length: 102401\r\n\r\n"},
		{"other-route", "GET /export HTTP/1.1\r\nHost: plc.test\r\nContent-Length: 10485760\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := rawExchange(t, env, tc.req)
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d %q, want 413 at once", resp.StatusCode, body)
			}
			if got := resp.Header.Get("Content-Type"); got != contentJSON {
				t.Errorf("content-type %q", got)
			}
			if string(body) != messageJSON("request entity too large") {
				t.Errorf("body %q", body)
			}
			if !resp.Close {
				t.Error("the connection is kept open with an unread body on it")
			}
		})
	}
}

// plc mirror --forward-writes passes POST /:did to its upstream: only a
// body within the same 100 KB limit is forwarded, declared or chunked; an
// oversized one is a 413 here and never reaches the upstream.
func TestForwardedWritesAreHeldToTheBodyLimit(t *testing.T) {
	var (
		mu        sync.Mutex
		forwarded [][]byte
	)
	env := newAPIEnv(t, backends[0], envOptions{config: func(c *Config) {
		c.ReadOnly = true
		c.Forward = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(r.Body)
			if err != nil || r.ContentLength != int64(len(b)) {
				t.Errorf("forwarded body: %d bytes, ContentLength %d, %v", len(b), r.ContentLength, err)
			}
			mu.Lock()
			forwarded = append(forwarded, b)
			mu.Unlock()
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Write([]byte("OK"))
		})
	}})
	did := "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
	big := bytes.Repeat([]byte(" "), maxBodyBytes+1)

	env.do(http.MethodPost, "/"+did, big, "Content-Type", "application/json").
		expectMessage(t, http.StatusRequestEntityTooLarge, "request entity too large")

	// Chunked: no Content-Length, the cap applies as the body is read.
	req, err := http.NewRequest(http.MethodPost, env.http.URL+"/"+did, io.MultiReader(bytes.NewReader(big)))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := env.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || string(b) != messageJSON("request entity too large") {
		t.Errorf("chunked oversized body: %d %q, want 413", resp.StatusCode, b)
	}
	mu.Lock()
	n := len(forwarded)
	mu.Unlock()
	if n != 0 {
		t.Fatalf("%d oversized bodies were forwarded upstream", n)
	}

	// Within the limit, chunked or not, the body is forwarded whole.
	ok := append([]byte(`{"type":"plc_tombstone"}`), bytes.Repeat([]byte(" "), maxBodyBytes-24)...)
	env.do(http.MethodPost, "/"+did, ok, "Content-Type", "application/json").expect(t, http.StatusOK, ctText, "OK")
	req, _ = http.NewRequest(http.MethodPost, env.http.URL+"/"+did, io.MultiReader(strings.NewReader(string(ok))))
	resp, err = env.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("chunked body within the limit: %d", resp.StatusCode)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(forwarded) != 2 || !bytes.Equal(forwarded[0], ok) || !bytes.Equal(forwarded[1], ok) {
		t.Fatalf("forwarded %d bodies, want the 2 within the limit, byte for byte", len(forwarded))
	}
}

// A WebSocket handshake the library would refuse (a missing or bad
// Sec-WebSocket-Key, a version other than 13, HTTP/1.0) is answered with
// the API's JSON error, not the library's plain text.
func TestFailedWebSocketUpgradesAnswerJSON(t *testing.T) {
	env := newAPIEnv(t, backends[0], envOptions{})
	streamer := NewStreamer(env.log, StreamOptions{})
	t.Cleanup(streamer.Close)
	env = newAPIEnv(t, backends[0], envOptions{config: func(c *Config) { c.Stream = streamer }})
	const key = "dGhlIHNhbXBsZSBub25jZQ=="
	for _, tc := range []struct {
		name    string
		headers []string
		msg     string
	}{
		{"no version", []string{"Sec-WebSocket-Key", key}, "unsupported WebSocket version: only 13 is"},
		{"version 8", []string{"Sec-WebSocket-Version", "8", "Sec-WebSocket-Key", key}, "unsupported WebSocket version: only 13 is"},
		{"no key", []string{"Sec-WebSocket-Version", "13"}, "a WebSocket handshake needs exactly one Sec-WebSocket-Key"},
		{"short key", []string{"Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "YWJj"}, "Sec-WebSocket-Key must be 16 bytes in base64"},
		{"bad key", []string{"Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "not base64!"}, "Sec-WebSocket-Key must be 16 bytes in base64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := append([]string{"Connection", "Upgrade", "Upgrade", "websocket"}, tc.headers...)
			r := env.do(http.MethodGet, "/export/stream", nil, h...)
			r.expectMessage(t, http.StatusBadRequest, tc.msg)
		})
	}
	resp, body := rawExchange(t, env, "GET /export/stream HTTP/1.0\r\nHost: plc.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "+key+"\r\n\r\n")
	if resp.StatusCode != http.StatusUpgradeRequired || resp.Header.Get("Content-Type") != contentJSON ||
		string(body) != messageJSON("WebSocket upgrade needs HTTP/1.1") {
		t.Fatalf("HTTP/1.0 upgrade: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
}

// What net/http answers itself before any handler — a malformed request
// (400), headers over the limit (431), an unknown transfer coding (501), an
// HTTP version other than 1.x (505), an Expect other than 100-continue
// (417, with an empty body) — is sent as the API's JSON error too.
func TestTransportErrorsAnswerJSON(t *testing.T) {
	env := newAPIEnv(t, backends[0], envOptions{})
	srv := httptest.NewUnstartedServer(env.srv)
	srv.Listener = TransportErrorsAsJSON(srv.Listener)
	srv.Config.MaxHeaderBytes = 1024
	srv.Start()
	t.Cleanup(srv.Close)
	exchange := func(req string) (*http.Response, []byte) {
		t.Helper()
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(conn, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%.40q: %v", req, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	for _, tc := range []struct {
		name, req string
		status    int
		msg       string
	}{
		{"no host", "GET /_health HTTP/1.1\r\n\r\n", 400, "Bad Request: missing required Host header"},
		{"bad header name", "GET /_health HTTP/1.1\r\nHost: plc.test\r\nBad Header: x\r\n\r\n", 400, "Bad Request: invalid header name"},
		{"bad request line", "GET\r\n\r\n", 400, "Bad Request"},
		{"header too large", "GET /_health HTTP/1.1\r\nHost: plc.test\r\nX-Big: " + strings.Repeat("a", 16<<10) + "\r\n\r\n", 431, "Request Header Fields Too Large"},
		{"transfer coding", "POST /did:plc:aaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: plc.test\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "Unsupported transfer encoding"},
		{"http version", "GET /_health HTTP/2.5\r\nHost: plc.test\r\n\r\n", 505, "HTTP Version Not Supported: unsupported protocol version"},
		{"expectation", "GET /_health HTTP/1.1\r\nHost: plc.test\r\nExpect: the-unexpected\r\n\r\n", 417, "Expectation Failed: only 100-continue is supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := exchange(tc.req)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d %q, want %d", resp.StatusCode, body, tc.status)
			}
			if got := resp.Header.Get("Content-Type"); got != contentJSON {
				t.Errorf("content-type %q, want JSON", got)
			}
			if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "*" {
				t.Errorf("Access-Control-Allow-Origin %q", got)
			}
			if string(body) != messageJSON(tc.msg) {
				t.Errorf("body %q, want %q", body, messageJSON(tc.msg))
			}
		})
	}
	// Handlers' answers are untouched, a plain-text 200 included.
	resp, body := exchange("GET /_health HTTP/1.1\r\nHost: plc.test\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"version":"test-version"`) {
		t.Fatalf("/_health through the wrapper: %d %q", resp.StatusCode, body)
	}
}
