package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/internal/origin"
)

// errResponse: the upstream answered, but not with something usable (a
// bad status, an oversized or cut-off body). Such answers are bad_response
// divergences; the page is not used and is asked for again later.
var errResponse = errors.New("bad upstream response")

type responseError struct {
	msg  string
	body []byte // what the upstream sent (of it, what was read), as evidence
}

func (e *responseError) Error() string { return e.msg }
func (e *responseError) Is(t error) bool {
	return t == errResponse
}

func badResponse(body []byte, format string, args ...any) error {
	return &responseError{msg: fmt.Sprintf(format, args...), body: body}
}

// upstream is the HTTP client of the directory being mirrored. Every
// response is bounded: its size (maxBody), its duration (the client's
// timeout). Its client follows no redirect off the upstream's origin, and
// none at all for export pages (see package origin): what it returns, and
// what becomes evidence, is only ever what the upstream itself sent.
type upstream struct {
	base    *url.URL
	client  *http.Client
	maxBody int64
}

func newUpstream(raw string, client *http.Client, maxBody int64) (*upstream, error) {
	u, err := url.Parse(strings.TrimRight(raw, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("upstream %q: want an http:// or https:// URL", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("upstream %q: want a URL without query or fragment", raw)
	}
	return &upstream{base: u, client: origin.Client(client, u), maxBody: maxBody}, nil
}

func (u *upstream) url(path string, q url.Values) string {
	v := *u.base
	v.Path += path
	v.RawPath = ""
	v.RawQuery = q.Encode()
	return v.String()
}

// export fetches a page of the upstream's /export: as get, following no
// redirect, even on the upstream's origin.
func (u *upstream) export(ctx context.Context, q url.Values) ([]byte, error) {
	return u.get(origin.NoRedirects(ctx), "/export", q)
}

// get fetches path and returns the whole body of a 200 answer. A body over
// maxBody, one shorter than its Content-Length, or another status is an
// errResponse; a failure to connect is returned as it is. A redirect that
// is not followed is an errResponse whose evidence is the redirect answer
// itself: its status line, headers and body.
func (u *upstream) get(ctx context.Context, path string, q url.Values) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.url(path, q), nil)
	if err != nil {
		return nil, err
	}
	resp, err := u.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, u.maxBody+1))
	if err != nil {
		return nil, badResponse(body, "GET %s: body cut off: %v", path, err)
	}
	if int64(len(body)) > u.maxBody {
		return nil, badResponse(body, "GET %s: body over %d bytes", path, u.maxBody)
	}
	if origin.IsRedirect(resp.StatusCode) {
		return nil, badResponse(redirectEvidence(resp, body), "GET %s: status %d, %s, not followed", path, resp.StatusCode, origin.Describe(resp))
	}
	if resp.StatusCode != http.StatusOK {
		return body, badResponse(body, "GET %s: status %d", path, resp.StatusCode)
	}
	return body, nil
}

// redirectEvidence is a redirect answer as the upstream sent it: its
// status line, its headers and its body.
func redirectEvidence(resp *http.Response, body []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/%d.%d %s\r\n", resp.ProtoMajor, resp.ProtoMinor, resp.Status)
	resp.Header.Write(&b)
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// exportPage is one page of the upstream's /export: its lines, and what
// the mirror needs to ask for the next page.
type exportPage struct {
	lines [][]byte
	// seq-mode: the seq of each line, as plc.ReadLineHead reads it (0:
	// none, or the line cannot be read), and the last line's.
	seqs    []int64
	lastSeq int64
}

// splitLines returns body's non-blank lines. A body that does not end
// with a newline after its last line is cut off: its last line is not
// trusted unless it parses as JSON.
func splitLines(body []byte) [][]byte {
	var out [][]byte
	for len(body) > 0 {
		i := bytes.IndexByte(body, '\n')
		var l []byte
		if i < 0 {
			l, body = body, nil
		} else {
			l, body = body[:i], body[i+1:]
		}
		if len(bytes.TrimSpace(l)) > 0 {
			out = append(out, l)
		}
	}
	return out
}

// seqPage fetches the seq-mode export page after seq after. Each line's
// seq is read by the ingest's own rules (plc.ReadLineHead); the last
// line's must be readable and above every other seq of the page, for it
// is where the next page starts: else the page is a bad response.
func (u *upstream) seqPage(ctx context.Context, after int64, count int) (exportPage, error) {
	q := url.Values{"after": {strconv.FormatInt(after, 10)}, "count": {strconv.Itoa(count)}}
	body, err := u.export(ctx, q)
	if err != nil {
		return exportPage{}, err
	}
	p := exportPage{lines: splitLines(body), lastSeq: after}
	n := len(p.lines)
	if n == 0 {
		return p, nil
	}
	p.seqs = make([]int64, n)
	for i, l := range p.lines {
		if h, err := plc.ReadLineHead(l); err == nil {
			p.seqs[i] = h.Seq
		} else if i == n-1 {
			return exportPage{}, badResponse(body, "GET /export?after=%d: the last line is not a seq-mode export line (cut off?): %v", after, err)
		}
	}
	p.lastSeq = p.seqs[n-1]
	if p.lastSeq == 0 {
		return exportPage{}, badResponse(body, "GET /export?after=%d: the last line is not a seq-mode export line: it has no seq", after)
	}
	for _, s := range p.seqs[:n-1] {
		if s >= p.lastSeq {
			return exportPage{}, badResponse(body, "GET /export?after=%d: the last line's seq %d is not above the page's seq %d", after, p.lastSeq, s)
		}
	}
	return p, nil
}

// detect asks for the first op of the upstream's export and reports
// whether it speaks seq mode. An empty export says nothing (ok false).
func (u *upstream) detect(ctx context.Context) (seqMode, ok bool, err error) {
	body, err := u.export(ctx, url.Values{"after": {"0"}, "count": {"1"}})
	if err != nil {
		return false, false, err
	}
	lines := splitLines(body)
	if len(lines) == 0 {
		return false, false, nil
	}
	h, err := plc.ReadLineHead(lines[0])
	if err != nil {
		return false, false, badResponse(body, "GET /export: the first line is not an export line: %v", err)
	}
	return h.Seq != 0, true, nil
}
