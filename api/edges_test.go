package api

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
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
