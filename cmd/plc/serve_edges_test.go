package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plcdir/plc/internal/optest"
	"github.com/plcdir/plc/internal/pgtest"
)

// The real `plc serve` bounds each client's connections (a new one takes
// the place of the client's oldest idle one) and answers what net/http
// refuses before any route in JSON.
func TestServeBoundsConnectionsPerIPAndAnswersTransportErrorsInJSON(t *testing.T) {
	s := startServer(t, filepath.Join(t.TempDir(), "plc.sqlite"), "--max-conns-per-ip", "2", "--metrics-listen", "127.0.0.1:0")
	addr := strings.TrimPrefix(s.url, "http://")
	type conn struct {
		c  net.Conn
		br *bufio.Reader
	}
	open := func() conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second)) // bounds a failing test only
		return conn{c, bufio.NewReader(c)}
	}
	health := func(k conn) (int, error) {
		if _, err := io.WriteString(k.c, "GET /_health HTTP/1.1\r\nHost: plc.test\r\n\r\n"); err != nil {
			return 0, err
		}
		resp, err := http.ReadResponse(k.br, nil)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	a, b := open(), open()
	for _, k := range []conn{a, b} {
		if code, err := health(k); err != nil || code != http.StatusOK {
			t.Fatalf("/_health: %d %v", code, err)
		}
	}
	c := open()
	if code, err := health(c); err != nil || code != http.StatusOK {
		t.Fatalf("/_health on a third connection: %d %v", code, err)
	}
	if _, err := health(a); err == nil {
		t.Fatal("a third connection from one client did not replace its oldest idle one (per-IP bound 2)")
	}
	resp, err := http.Get(s.metricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(m), "plc_http_connections_reclaimed_total 1\n") {
		t.Errorf("metrics do not count the reclaimed connection:\n%s", grepLines(string(m), "plc_http_connections"))
	}

	raw := open()
	io.WriteString(raw.c, "GET /_health HTTP/1.1\r\n\r\n")
	r, err := http.ReadResponse(raw.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	if r.StatusCode != http.StatusBadRequest || r.Header.Get("Content-Type") != "application/json; charset=utf-8" ||
		string(body) != `{"message":"Bad Request: missing required Host header"}` {
		t.Fatalf("a request without Host: %d %q %q", r.StatusCode, r.Header.Get("Content-Type"), body)
	}
}

func grepLines(s, substr string) string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return fmt.Sprint(out)
}

// --read-cache-bytes reaches the API: its cache's metrics are there by
// default and absent with 0; a negative size is refused.
func TestServeReadCacheFlag(t *testing.T) {
	did := "/did:plc:" + strings.Repeat("a", 24)
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "plc_read_cache_misses_total 2\n"},
		{[]string{"--read-cache-bytes", "0"}, ""},
	} {
		s := startServer(t, filepath.Join(t.TempDir(), "plc.sqlite"), append(c.args, "--metrics-listen", "127.0.0.1:0")...)
		for range 2 {
			resp, err := http.Get(s.url + did)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Cache-Control") != "no-cache" {
				t.Fatalf("GET %s: %d %q", did, resp.StatusCode, resp.Header.Get("Cache-Control"))
			}
		}
		resp, err := http.Get(s.metricsURL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if c.want == "" {
			if strings.Contains(string(b), "plc_read_cache_") {
				t.Errorf("%v: the cache's metrics are there", c.args)
			}
		} else if !strings.Contains(string(b), c.want) {
			t.Errorf("%v: /metrics has no %q", c.args, c.want)
		}
	}
	var stderr strings.Builder
	code := run(t.Context(), []string{"serve", "--read-cache-bytes", "-1", "--db", filepath.Join(t.TempDir(), "plc.sqlite")},
		env{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: &stderr, Getenv: func(string) string { return "" }})
	if code == 0 || !strings.Contains(stderr.String(), "--read-cache-bytes must not be negative") {
		t.Errorf("--read-cache-bytes -1: exit %d, %q", code, stderr.String())
	}
}

// TestServeReadCacheNotifyFlag: --read-cache-notify is refused where it
// means nothing (SQLite, no cache) and, on PostgreSQL, serves this
// process's writes at once and another process's once noticed.
func TestServeReadCacheNotifyFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--db", filepath.Join(t.TempDir(), "plc.sqlite")}, "--read-cache-notify needs a PostgreSQL --db"},
		{[]string{"--db", "postgres://127.0.0.1:1/plc", "--read-cache-bytes", "0"}, "--read-cache-notify needs the cache of rendered answers"},
	} {
		var stderr strings.Builder
		code := run(t.Context(), append([]string{"serve", "--read-cache-notify"}, c.args...),
			env{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: &stderr, Getenv: func(string) string { return "" }})
		if code != exitUsage || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: exit %d, %q; want %d and %q", c.args, code, stderr.String(), exitUsage, c.want)
		}
	}

	db := pgtest.URL(t)
	a := startServer(t, db, "--no-did-rate-limit", "--read-cache-notify")
	b := startServer(t, db, "--no-did-rate-limit", "--read-cache-notify")
	id := optest.NewIdentity(t, "notify.test", 1)
	get := func(url string) string {
		t.Helper()
		resp, err := http.Get(url + "/" + id.DID + "/log/audit")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	// b answers (and keeps) "not registered" first.
	if got := get(b.url); !strings.Contains(got, "DID not registered") {
		t.Fatalf("before the genesis: %s", got)
	}
	if code, body, err := post(a.url, id.Head, id.DID); err != nil || code != 200 {
		t.Fatalf("genesis: %d %s %v", code, body, err)
	}
	if got := get(a.url); !strings.Contains(got, id.Head.CID()) {
		t.Fatalf("the writing process does not show its own op at once: %s", got)
	}
	// The other process shows it once the notice arrives: poll, bounded.
	for i := 0; !strings.Contains(get(b.url), id.Head.CID()); i++ {
		if i == 10000 {
			t.Fatal("the other process never showed the op")
		}
	}
}
