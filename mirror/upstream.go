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

// seqPage fetches the seq-mode export page after seq after
// (plc.ParseSeqPage: a page whose last seq cannot be read or is not its
// highest is a bad response). An empty page's Last is after.
func (u *upstream) seqPage(ctx context.Context, after int64, count int) (plc.SeqPage, error) {
	q := url.Values{"after": {strconv.FormatInt(after, 10)}, "count": {strconv.Itoa(count)}}
	body, err := u.export(ctx, q)
	if err != nil {
		return plc.SeqPage{}, err
	}
	p, err := plc.ParseSeqPage(body)
	if err != nil {
		return p, badResponse(body, "GET /export?after=%d: %v", after, err)
	}
	if len(p.Lines) == 0 {
		p.Last = after
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
	lines := plc.ExportLines(body)
	if len(lines) == 0 {
		return false, false, nil
	}
	h, err := plc.ReadLineHead(lines[0])
	if err != nil {
		return false, false, badResponse(body, "GET /export: the first line is not an export line: %v", err)
	}
	return h.Seq != 0, true, nil
}
