package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"
)

// A malformed request and what must come back.
type badRequest struct {
	name   string
	method string
	path   string
	header map[string]string
	body   []byte
	want   int           // the status it must get; 0: any 4xx; -1: anything but a 5xx
	within time.Duration // the answer must come this fast (0: 10 s)
}

// rawRequest is bytes written on a fresh TCP connection, for the requests
// an HTTP client will not send.
type rawRequest struct {
	name string
	data string
	// The status Go's server answers before the router. Those answers are
	// the documented exceptions: plain text, not JSON (README, "Errors").
	want int
}

const someDID = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"

func malformedRequests() []badRequest {
	var rs []badRequest
	add := func(r badRequest) { rs = append(rs, r) }

	// DIDs of other methods: 400, refused before the database.
	for _, id := range []string{"did:web:example.com", "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme", "did%3Aweb%3Aevil"} {
		for _, suffix := range []string{"", "/data", "/log", "/log/last", "/log/audit"} {
			add(badRequest{name: "get " + clip(id) + suffix, method: "GET", path: "/" + id + suffix, want: 400})
		}
	}
	// Identifiers that are not DIDs at all, or malformed did:plc: a 4xx.
	for _, id := range []string{
		"did:plc:short", "did:plc:AAAAAAAAAAAAAAAAAAAAAAAA", "did:plc:aaaaaaaaaaaaaaaaaaaaaaa1",
		"did:plc:aaaaaaaaaaaaaaaaaaaaaaaaa", "did:plc:", "did:", "x", "%00",
		strings.Repeat("a", 4000), "did:plc:" + strings.Repeat("a", 3000),
	} {
		for _, suffix := range []string{"", "/data", "/log", "/log/last", "/log/audit"} {
			add(badRequest{name: "get " + clip(id) + suffix, method: "GET", path: "/" + id + suffix})
		}
	}
	// A well-formed unknown did:plc stays 404.
	for _, suffix := range []string{"", "/data", "/log", "/log/last", "/log/audit"} {
		add(badRequest{name: "unknown did" + suffix, method: "GET", path: "/" + someDID + suffix, want: 404})
	}
	// Queries.
	for _, q := range []string{
		"count=-1", "count=0", "count=NaN", "count=1e999", "count=99999999999999999999999",
		"after=-1", "after=NaN", "after=not-a-date", "after=99999999999999999999999999",
		"after=2024-13-45T99:99:99Z", "after=%00", "after=" + strings.Repeat("9", 5000),
		"count=1&count=2&count=x",
	} {
		// The reference reads count and after with JavaScript's parseInt
		// and Date: some of these are valid there, and so here.
		add(badRequest{name: "export " + clip(q), method: "GET", path: "/export?" + q, want: -1})
	}
	add(badRequest{name: "audit proof=maybe", method: "GET", path: "/" + someDID + "/log/audit?proof=maybe"})
	add(badRequest{name: "stream without upgrade", method: "GET", path: "/export/stream?cursor=0", want: 426})
	add(badRequest{name: "stream bad cursor", method: "GET", path: "/export/stream?cursor=-5"})
	add(badRequest{name: "stream bad cursor text", method: "GET", path: "/export/stream?cursor=abc"})
	// Tile indexes that overflow int64: no tile, never tile 000's bytes.
	for _, p := range []string{
		"/tlog/tile/0/x999/x999/x999/x999/x999/x999/x999/999",
		"/tlog/tile/0/x009/x223/x372/x036/x854/x775/808",
		"/tlog/tile/entries/x999/x999/x999/x999/x999/x999/x999/999",
		"/tlog/tile/0/x018/x446/x744/x073/x709/x551/616",
		"/tlog/tile/0/x036/x028/x797/x018/x963/968", // 2^55: index × 256 overflows
		"/tlog/tile/1/x036/x028/x797/x018/x963/968",
		"/tlog/tile/entries/x036/x028/x797/x018/x963/968",
	} {
		add(badRequest{name: "tile " + p, method: "GET", path: p, want: 404})
	}
	// Signed, misgrouped and out-of-range numbers.
	for _, p := range []string{
		"/tlog/tile/0/x18446744073709551615",
		"/tlog/tile/0/+01", "/tlog/tile/0/-01", "/tlog/tile/0/0001", "/tlog/tile/0/01",
		"/tlog/tile/0/x1/000", "/tlog/tile/99/000", "/tlog/tile/-1/000", "/tlog/tile/0/000.p/0",
		"/tlog/tile/0/000.p/256", "/tlog/tile/0/000.p/-1", "/tlog/tile/0/000.p/+5",
		"/tlog/tile/entries/000.p/999", "/tlog/tile/0/000/../../../etc/passwd",
	} {
		add(badRequest{name: "tile " + p, method: "GET", path: p})
	}
	// Bodies.
	bodies := map[string]string{
		"empty":         "",
		"truncated":     "{",
		"null":          "null",
		"array":         "[]",
		"number":        "12345678901234567890123456789",
		"string":        `"plc_operation"`,
		"deep nesting":  strings.Repeat("[", 40000) + strings.Repeat("]", 40000),
		"unknown key":   `{"type":"plc_operation","prev":null,"sig":"x","rotationKeys":[],"verificationMethods":{},"alsoKnownAs":[],"services":{},"evil":1}`,
		"duplicate key": `{"type":"plc_tombstone","type":"plc_tombstone","prev":"bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm","sig":"x"}`,
		"bad base64":    `{"type":"plc_tombstone","prev":"bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm","sig":"!!!"}`,
		"bad prev":      `{"type":"plc_tombstone","prev":"not-a-cid","sig":"AAAA"}`,
		"bad utf-8":     "{\"type\":\"plc_tombstone\",\"prev\":\"\xff\xfe\",\"sig\":\"AAAA\"}",
		"legacy create": `{"type":"create","signingKey":"did:key:x","recoveryKey":"did:key:y","handle":"a","service":"b","prev":null,"sig":"AAAA"}`,
	}
	for name, b := range bodies {
		add(badRequest{name: "post " + name, method: "POST", path: "/" + someDID, body: []byte(b), header: map[string]string{"Content-Type": "application/json"}})
	}
	// Bodies over the limit: the declared length is refused at once.
	big := bytes.Repeat([]byte("a"), 200<<10)
	add(badRequest{name: "declared body over limit", method: "POST", path: "/" + someDID, body: big, want: 413, within: 2 * time.Second,
		header: map[string]string{"Content-Type": "application/json"}})
	add(badRequest{name: "declared body over limit, expect 100-continue", method: "POST", path: "/" + someDID, body: big, want: 413, within: 2 * time.Second,
		header: map[string]string{"Content-Type": "application/json", "Expect": "100-continue"}})
	add(badRequest{name: "post bad did", method: "POST", path: "/did:web:evil", body: []byte("{}")})
	// Methods the API does not have.
	for _, m := range []string{"PUT", "DELETE", "PATCH"} {
		add(badRequest{name: strings.ToLower(m) + " did", method: m, path: "/" + someDID})
		add(badRequest{name: strings.ToLower(m) + " export", method: m, path: "/export"})
	}
	add(badRequest{name: "post export", method: "POST", path: "/export", body: []byte("{}")})
	// Divergences on a directory that is not a mirror, with a huge limit.
	add(badRequest{name: "divergences huge limit", method: "GET", path: "/_mirror/divergences?limit=99999999"})
	return rs
}

func rawRequests() []rawRequest {
	return []rawRequest{
		{"HTTP version 9.9", "GET /_health HTTP/9.9\r\nHost: x\r\n\r\n", 505},
		{"garbage request line", "GARBAGE\r\n\r\n", 400},
		{"header too large", "GET /_health HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 100<<10) + "\r\n\r\n", 431},
		{"unsupported transfer-encoding", "POST /" + someDID + " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"no Host header", "GET /_health HTTP/1.1\r\n\r\n", 400},
		{"two content lengths", "POST /" + someDID + " HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
		{"bad header line", "GET /_health HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400},
	}
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

func runMalformed(ctx context.Context, c *config, r *modeReport) error {
	db := filepath.Join(c.work, "malformed.db")
	// A few ops, so that tiles and DIDs exist.
	p, _, err := serveWritten(ctx, c, db, 3, 9)
	if err != nil {
		return err
	}
	defer p.stop()
	if status, _, body, err := get(p.url+"/tlog/checkpoint", 10*time.Second); err != nil || status != 200 {
		return fmt.Errorf("GET /tlog/checkpoint: %d %s %v", status, body, err)
	}
	_, _, before, err := get(p.url+"/export?after=0", 10*time.Second)
	if err != nil {
		return err
	}

	client := &http.Client{Timeout: 15 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	reqs := malformedRequests()
	bad := 0
	for _, br := range reqs {
		var body io.Reader
		if br.body != nil {
			body = bytes.NewReader(br.body)
		}
		req, err := http.NewRequestWithContext(ctx, br.method, p.url+br.path, body)
		if err != nil {
			r.fail(br.name, "building the request: %v", err)
			bad++
			continue
		}
		for k, v := range br.header {
			req.Header.Set(k, v)
		}
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			r.fail(br.name, "no answer: %v", err)
			bad++
			continue
		}
		rb, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		took := time.Since(t0)
		within := br.within
		if within == 0 {
			within = 10 * time.Second
		}
		var problems []string
		switch {
		case resp.StatusCode >= 500:
			problems = append(problems, fmt.Sprintf("status %d", resp.StatusCode))
		case br.want > 0 && resp.StatusCode != br.want:
			problems = append(problems, fmt.Sprintf("status %d, want %d", resp.StatusCode, br.want))
		case br.want == 0 && resp.StatusCode < 400:
			problems = append(problems, fmt.Sprintf("status %d, want a 4xx", resp.StatusCode))
		}
		if resp.StatusCode >= 400 && !isJSONMessage(rb) {
			problems = append(problems, fmt.Sprintf("body is not a JSON message: %q", clip(string(rb))))
		}
		if took > within {
			problems = append(problems, fmt.Sprintf("answered after %s (limit %s)", took.Round(time.Millisecond), within))
		}
		if len(problems) > 0 {
			r.fail(br.name, "%s", strings.Join(problems, "; "))
			bad++
		}
	}
	r.check(bad == 0, "http", "%d malformed requests, %d answered wrongly", len(reqs), bad)

	badRaw := 0
	for _, rr := range rawRequests() {
		status, err := rawStatus(p.url, rr.data)
		if err != nil {
			r.fail(rr.name, "%v", err)
			badRaw++
			continue
		}
		if status != rr.want {
			r.fail(rr.name, "status %d, want %d", status, rr.want)
			badRaw++
		}
	}
	r.check(badRaw == 0, "raw", "%d raw malformed requests answered by the transport as documented", len(rawRequests()))

	status, _, _, err := get(p.url+"/_health", 5*time.Second)
	r.check(err == nil && status == 200, "health", "/_health after the attack: %d %v", status, err)
	_, _, after, err := get(p.url+"/export?after=0", 10*time.Second)
	r.check(err == nil && bytes.Equal(before, after), "log unchanged", "the log is what it was before the attack")
	r.check(!p.exited(), "alive", "the server is still running")
	return nil
}

// rawStatus writes data on a new connection and reads the status code of
// the answer.
func rawStatus(base, data string) (int, error) {
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, data); err != nil {
		return 0, err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("reading the status line: %w", err)
	}
	var proto string
	var status int
	if _, err := fmt.Sscanf(line, "%s %d", &proto, &status); err != nil {
		return 0, fmt.Errorf("status line %q: %w", line, err)
	}
	return status, nil
}
