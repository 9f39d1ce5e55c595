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
