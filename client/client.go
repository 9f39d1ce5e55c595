package client

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/validate"
)

// Bounds of a directory's responses.
const (
	// MaxExportPageBytes bounds one /export page (1000 lines of a few KB).
	MaxExportPageBytes = 32 << 20
	// MaxAuditLogBytes bounds one /:did/log/audit response.
	MaxAuditLogBytes = 16 << 20
	// MaxDocumentBytes bounds one /:did response (and /_health's).
	MaxDocumentBytes = 1 << 20
	// DefaultTimeout is the timeout of the http.Client New makes when
	// given none.
	DefaultTimeout = time.Minute
)

// Classes of StatusError (its Err), for errors.Is.
var (
	// ErrURL: a directory's base URL is not an http(s) URL without a
	// query or fragment (returned by New, not in a StatusError).
	ErrURL = errors.New("not a directory URL")
	// ErrTooLong: the body is longer than the route's bound.
	ErrTooLong = errors.New("body too long")
	// ErrCutOff: the body ended before its end (a broken connection, a
	// Content-Length over the body).
	ErrCutOff = errors.New("body cut off")
	// ErrMalformed: the body is not what the route serves.
	ErrMalformed = errors.New("not the route's format")
	// ErrNotRegistered: the directory does not know the DID (a 404 of a
	// DID's route).
	ErrNotRegistered = errors.New("DID not registered")
)

// Client reads the public API of one did:plc directory (plc serve, plc
// mirror, the reference). See the package documentation.
type Client struct {
	base    *url.URL
	hc      *http.Client
	maxBody int64  // 0: each route's own bound
	peer    string // what errors call the server ("": the directory)
}

// New returns a client of the directory at base, an http:// or https://
// URL (a trailing slash is ignored). A nil hc means one with
// DefaultTimeout; whatever hc does with redirects is replaced.
func New(base string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: %q: want an http:// or https:// URL", ErrURL, RedactURL(base))
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return nil, fmt.Errorf("%w: %q: want a URL without query or fragment", ErrURL, u.Redacted())
	}
	hc = cmp.Or(hc, &http.Client{Timeout: DefaultTimeout})
	return &Client{base: u, hc: originClient(hc, u)}, nil
}

// WithMaxBody returns a copy of c whose export pages, audit logs and
// documents are bounded by n bytes instead of their own bounds (n <= 0:
// their own). The transparency log's bounds are exact and stay.
func (c *Client) WithMaxBody(n int64) *Client {
	d := *c
	d.maxBody = max(n, 0)
	return &d
}

// WithPeer returns a copy of c whose errors call the server peer (a
// witness, say) instead of "the directory".
func (c *Client) WithPeer(peer string) *Client {
	d := *c
	d.peer = peer
	return &d
}

// RedactURL hides the password of a URL that may not parse.
func RedactURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	if _, rest, ok := strings.Cut(s, "@"); ok {
		return "…@" + rest
	}
	return s
}

// String is the base URL, its password (if any) redacted.
func (c *Client) String() string { return c.base.Redacted() }

// Base returns the base URL as given (with its password, if any).
func (c *Client) Base() url.URL { return *c.base }

// Endpoint is the URL of path (with query q) at the directory, its
// password redacted: the URL of a StatusError a caller makes itself.
func (c *Client) Endpoint(path string, q url.Values) string { return c.url(path, q).Redacted() }

func (c *Client) url(path string, q url.Values) *url.URL {
	v := *c.base
	v.Path += path
	v.RawPath = ""
	v.RawQuery = q.Encode()
	return &v
}

// StatusError is an answer of a directory that is not the one a route
// documents: a status it does not serve, a redirect not followed, a body
// over its bound, cut off, or not in the route's format.
type StatusError struct {
	// Method is the request's method ("": GET).
	Method string
	// Peer is what the server is called in Error ("": the directory).
	Peer string
	// URL is the request's URL, its password redacted (empty for an
	// answer a caller found unusable itself: its Message names the
	// request).
	URL string
	// Status is the HTTP status (0 when the body was the problem).
	Status int
	// Message is the directory's {"message": …} (printable), or what is
	// wrong.
	Message string
	// Body is the evidence: what the directory sent (of it, what was
	// read: at most the bound + 1 bytes); for a redirect, the whole
	// answer: status line, headers and body.
	Body []byte
	// Err is the class (ErrTooLong, ErrCutOff, ErrMalformed,
	// ErrNotRegistered), or nil.
	Err error
}

func (e *StatusError) Error() string {
	if e.URL == "" {
		return e.Message
	}
	method, peer := cmp.Or(e.Method, http.MethodGet), cmp.Or(e.Peer, "the directory")
	if e.Status == 0 {
		return fmt.Sprintf("%s %s: %s", method, e.URL, e.Message)
	}
	if e.Message == "" {
		return fmt.Sprintf("%s %s: %s answered %d %s", method, e.URL, peer, e.Status, http.StatusText(e.Status))
	}
	return fmt.Sprintf("%s %s: %s answered %d %s: %s", method, e.URL, peer, e.Status, http.StatusText(e.Status), e.Message)
}

func (e *StatusError) Unwrap() error { return e.Err }

// Redirect reports whether e is a redirect that was not followed.
func (e *StatusError) Redirect() bool { return isRedirect(e.Status) }

// bound is limit, or the client's maxBody when it has one.
func (c *Client) bound(limit int64) int64 {
	if c.maxBody > 0 {
		return c.maxBody
	}
	return limit
}

// get fetches path. It returns the status and the body of a 200 answer, or
// of one of the statuses in also; any other status is a *StatusError
// (whatever its body), and so is an answer whose body is cut off or over
// limit bytes.
func (c *Client) get(ctx context.Context, path string, q url.Values, limit int64, also ...int) (int, []byte, error) {
	return c.do(ctx, http.MethodGet, path, q, "", nil, limit, also...)
}

// Post sends body (of type contentType) to path under the base URL. Its
// answer is bounded and checked as the reads' are: it returns the status
// and the body of a 200 answer, or of one of the statuses in also; any
// other status, a redirect off the origin, and a body cut off or over
// limit bytes are a *StatusError.
func (c *Client) Post(ctx context.Context, path, contentType string, body []byte, limit int64, also ...int) (int, []byte, error) {
	return c.do(ctx, http.MethodPost, path, nil, contentType, body, limit, also...)
}

func (c *Client) do(ctx context.Context, method, path string, q url.Values, contentType string, reqBody []byte, limit int64, also ...int) (int, []byte, error) {
	u := c.url(path, q)
	var rb io.Reader
	if reqBody != nil {
		rb = bytes.NewReader(reqBody)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rb)
	if err != nil {
		return 0, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.hc.Do(req) // its errors carry the URL without its password
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := readBody(resp.Body, limit)
	se := &StatusError{URL: u.Redacted(), Body: body, Peer: c.peer}
	if method != http.MethodGet {
		se.Method = method
	}
	ok := resp.StatusCode == http.StatusOK || slices.Contains(also, resp.StatusCode)
	switch {
	case !ok && isRedirect(resp.StatusCode):
		se.Status, se.Message, se.Body = resp.StatusCode, describeRedirect(resp)+", not followed", redirectEvidence(resp, body)
	case !ok:
		se.Status, se.Message = resp.StatusCode, errorMessage(body)
	case err != nil:
		se.Message, se.Err = fmt.Sprintf("body cut off: %v", err), ErrCutOff
	case int64(len(body)) > limit:
		se.Message, se.Err = fmt.Sprintf("body over %d bytes", limit), ErrTooLong
	default:
		return resp.StatusCode, body, nil
	}
	return 0, nil, se
}

// bodyBuffers hold the buffers answers are read into before each is
// copied out at its own size: an export page then costs one allocation of
// its length, where io.ReadAll allocates (and zeroes) about twice that in
// growing pieces and copies them together at the end. A mirror reads a
// page of about 700 KB many times a second while every core checks
// signatures (BENCHMARKS.md, "Export pages read into one buffer").
var bodyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBody is the largest buffer kept for the next answer; one grown
// past it (by an answer near a route's bound) is left to the collector.
const maxPooledBody = 4 << 20

// readBody reads r to its end, or to its first limit+1 bytes, and returns
// what it read in a slice of its own.
func readBody(r io.Reader, limit int64) ([]byte, error) {
	buf := bodyBuffers.Get().(*bytes.Buffer)
	buf.Reset()
	_, err := buf.ReadFrom(io.LimitReader(r, limit+1))
	body := append([]byte{}, buf.Bytes()...)
	if buf.Cap() <= maxPooledBody {
		bodyBuffers.Put(buf)
	}
	return body, err
}

// errorMessage is the message of a {"message": …} error body, or a short
// printable prefix of another body.
func errorMessage(body []byte) string {
	var m struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &m) == nil && m.Message != "" {
		return Printable(m.Message, 200)
	}
	return Printable(string(bytes.TrimSpace(body)), 200)
}

// Printable shows s (cut to n bytes) as it is when it is printable ASCII,
// quoted otherwise: nothing a directory sends reaches a terminal as
// escape sequences.
func Printable(s string, n int) string {
	cut := ""
	if len(s) > n {
		s, cut = s[:n], "…"
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return strconv.Quote(s) + cut
		}
	}
	return s + cut
}

// Export returns the body of an export page (GET /export?after=<after>&
// count=<count>; no after when it is empty), as the directory sent it. It
// follows no redirect, even on the directory's origin.
func (c *Client) Export(ctx context.Context, after string, count int) ([]byte, error) {
	q := url.Values{"count": {strconv.Itoa(count)}}
	if after != "" {
		q.Set("after", after)
	}
	_, body, err := c.get(noRedirects(ctx), "/export", q, c.bound(MaxExportPageBytes))
	return body, err
}

// LegacyPage returns the body of the legacy-mode export page of ops after
// the time after (the zero time: from the start).
func (c *Client) LegacyPage(ctx context.Context, after time.Time, count int) ([]byte, error) {
	var a string
	if !after.IsZero() {
		a = string(validate.AppendTimestamp(nil, after))
	}
	return c.Export(ctx, a, count)
}

// SeqPage returns the seq-mode export page after seq after, parsed by
// plc.ParseSeqPage (an empty page's Last is after). A page whose last line
// is not a seq-mode line, or whose last seq is not its highest, is a
// *StatusError (ErrMalformed, the page as its Body): a cut-off body, a
// directory without seq mode, or one that repeats a seq.
func (c *Client) SeqPage(ctx context.Context, after int64, count int) (plc.SeqPage, error) {
	body, err := c.Export(ctx, strconv.FormatInt(after, 10), count)
	if err != nil {
		return plc.SeqPage{}, err
	}
	p, err := plc.ParseSeqPage(body)
	if err != nil {
		q := url.Values{"after": {strconv.FormatInt(after, 10)}, "count": {strconv.Itoa(count)}}
		return p, &StatusError{URL: c.Endpoint("/export", q), Message: err.Error(), Body: body, Err: ErrMalformed}
	}
	if len(p.Lines) == 0 {
		p.Last = after
	}
	return p, nil
}

// ExportPageSize is the page size ExportReader asks for: the largest the
// reference serves.
const ExportPageSize = 1000

// ExportReader returns the directory's seq-mode export after seq after,
// end to end, as one stream of lines (joined by "\n"): it asks for the
// next page (GET /export?after=<last seq>&count=1000) when the last one
// has been read, and ends at an empty page. A page that does not move past
// the last seq is an error after its lines (the directory would be asked
// for the same page forever).
func (c *Client) ExportReader(ctx context.Context, after int64) io.Reader {
	return &exportPager{ctx: ctx, c: c, after: after}
}

type exportPager struct {
	ctx   context.Context
	c     *Client
	after int64
	buf   []byte
	done  bool
	err   error
}

func (p *exportPager) Read(b []byte) (int, error) {
	for len(p.buf) == 0 {
		if p.err != nil {
			return 0, p.err
		}
		if p.done {
			return 0, io.EOF
		}
		page, err := p.c.SeqPage(p.ctx, p.after, ExportPageSize)
		if err != nil {
			p.err = err
			return 0, err
		}
		if len(page.Lines) == 0 {
			p.done = true
			continue
		}
		if page.Last <= p.after {
			p.err = &StatusError{URL: p.c.Endpoint("/export", url.Values{"after": {strconv.FormatInt(p.after, 10)}}), Err: ErrMalformed,
				Message: fmt.Sprintf("the page after seq %d ends at seq %d: the export does not move on", p.after, page.Last)}
			// The page's lines are still read (and their seqs reported).
		}
		p.after = page.Last
		p.buf = append(bytes.Join(page.Lines, []byte{'\n'}), '\n')
	}
	n := copy(b, p.buf)
	p.buf = p.buf[n:]
	return n, nil
}

// AuditLog returns a DID's audit log (GET /:did/log/audit), the entries
// decoded leniently (plc.ReadAuditLog), and the body as the directory sent
// it. A 404 is a *StatusError of class ErrNotRegistered; a body that is
// not an audit log one of class ErrMalformed.
func (c *Client) AuditLog(ctx context.Context, did string) ([]plc.AuditEntry, []byte, error) {
	path := "/" + did + "/log/audit"
	status, body, err := c.get(ctx, path, nil, c.bound(MaxAuditLogBytes), http.StatusNotFound)
	if err != nil {
		return nil, nil, err
	}
	if status == http.StatusNotFound {
		return nil, body, &StatusError{URL: c.Endpoint(path, nil), Status: status, Message: errorMessage(body), Body: body, Err: ErrNotRegistered}
	}
	entries, err := plc.ReadAuditLog(bytes.NewReader(body))
	if err != nil {
		return nil, body, &StatusError{URL: c.Endpoint(path, nil), Message: err.Error(), Body: body, Err: ErrMalformed}
	}
	return entries, body, nil
}

// Document is a DID's answer to GET /:did: a document (200), or a 404
// (not registered, or not available when tombstoned) with its message.
type Document struct {
	Status int
	Body   []byte
}

// Message is the message of a 404's {"message": …}, or a short printable
// prefix of the body.
func (d Document) Message() string { return errorMessage(d.Body) }

// Document fetches GET /:did.
func (c *Client) Document(ctx context.Context, did string) (Document, error) {
	status, body, err := c.get(ctx, "/"+did, nil, c.bound(MaxDocumentBytes), http.StatusNotFound)
	if err != nil {
		return Document{}, err
	}
	return Document{Status: status, Body: body}, nil
}

// LatestSeq returns the seq of the directory's latest op: the seq its
// /_health states when it states one (plc serve and plc mirror do),
// otherwise found by asking for export pages of one line (seq is
// increasing: a search over after values). 0: an empty export.
func (c *Client) LatestSeq(ctx context.Context) (int64, error) {
	if _, body, err := c.get(ctx, "/_health", nil, c.bound(MaxDocumentBytes)); err == nil {
		var h struct {
			Seq *int64 `json:"seq"`
		}
		if json.Unmarshal(body, &h) == nil && h.Seq != nil && *h.Seq >= 0 {
			return *h.Seq, nil
		}
	} else if ctx.Err() != nil {
		return 0, err
	}
	// next is the seq of the first op after after (0: none). The latest
	// seq L is the least after with nothing after it.
	next := func(after int64) (int64, error) {
		p, err := c.SeqPage(ctx, after, 1)
		if err != nil || len(p.Lines) == 0 {
			return 0, err
		}
		if p.Last <= after {
			return 0, &StatusError{URL: c.Endpoint("/export", nil), Err: ErrMalformed,
				Message: fmt.Sprintf("asked for the op after seq %d, got seq %d", after, p.Last)}
		}
		return p.Last, nil
	}
	s, err := next(0)
	if err != nil || s == 0 {
		return 0, err
	}
	// L is in (lo, hi]: something after lo, nothing after hi.
	lo, hi := s-1, max(2*s, 1024)
	for {
		s, err := next(hi)
		if err != nil {
			return 0, err
		}
		if s == 0 {
			break
		}
		if hi > 1<<52 {
			return 0, &StatusError{URL: c.Endpoint("/export", nil), Message: "the export does not end", Err: ErrMalformed}
		}
		lo, hi = s-1, 2*s
	}
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		s, err := next(mid)
		if err != nil {
			return 0, err
		}
		if s == 0 {
			hi = mid
		} else {
			lo = s - 1
		}
	}
	return hi, nil
}
