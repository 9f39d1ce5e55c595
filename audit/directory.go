package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/internal/origin"
)

// DirectoryClient reads the public API of a did:plc directory (plc serve,
// plc mirror, the reference). Every response is bounded in size (the
// limits below) and in time (the http.Client's timeout), and an answer
// other than the one a route documents is a *StatusError. It follows no
// redirect off the directory's origin, and none at all for export pages
// (see package origin): a redirect not followed is a *StatusError with the
// redirect's status.
type DirectoryClient struct {
	base   *url.URL
	client *http.Client
}

// Bounds of the directory's responses.
const (
	// MaxExportPageBytes bounds one /export page (1000 lines of a few KB).
	MaxExportPageBytes = 32 << 20
	// MaxAuditLogBytes bounds one /:did/log/audit response.
	MaxAuditLogBytes = 16 << 20
	// MaxDocumentBytes bounds one /:did response (and /_health's).
	MaxDocumentBytes = 1 << 20
	// DefaultTimeout is the timeout of the client NewDirectoryClient makes
	// when given none.
	DefaultTimeout = time.Minute
)

// ErrDirectoryURL: a directory's base URL is not an http(s) URL without a
// query or fragment.
var ErrDirectoryURL = errors.New("not a directory URL")

// NewDirectoryClient returns a client of the directory at base, an
// http:// or https:// URL (a trailing slash is ignored). A nil client
// means one with DefaultTimeout.
func NewDirectoryClient(base string, client *http.Client) (*DirectoryClient, error) {
	u, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: %q: want an http:// or https:// URL", ErrDirectoryURL, redactURL(base))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%w: %q: want a URL without query or fragment", ErrDirectoryURL, u.Redacted())
	}
	if client == nil {
		client = &http.Client{Timeout: DefaultTimeout}
	}
	return &DirectoryClient{base: u, client: origin.Client(client, u)}, nil
}

// redactURL hides the password of a URL that may not parse.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	if _, rest, ok := strings.Cut(s, "@"); ok {
		return "…@" + rest
	}
	return s
}

// String is the base URL, its password (if any) redacted.
func (d *DirectoryClient) String() string { return d.base.Redacted() }

// StatusError is an answer of a directory that is not the one expected: a
// status a route does not document, or a body over its bound or cut off.
type StatusError struct {
	// URL is the request's URL, its password redacted.
	URL string
	// Status is the HTTP status (0 when the body was the problem).
	Status int
	// Message is the directory's {"message": …}, or what is wrong.
	Message string
}

func (e *StatusError) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("GET %s: %s", e.URL, e.Message)
	}
	if e.Message == "" {
		return fmt.Sprintf("GET %s: the directory answered %d %s", e.URL, e.Status, http.StatusText(e.Status))
	}
	return fmt.Sprintf("GET %s: the directory answered %d %s: %s", e.URL, e.Status, http.StatusText(e.Status), e.Message)
}

func (d *DirectoryClient) url(path string, q url.Values) *url.URL {
	v := *d.base
	v.Path += path
	v.RawPath = ""
	v.RawQuery = q.Encode()
	return &v
}

// get fetches path. It returns the status and the body of a 200 answer, or
// of one of the statuses in also; any other status is a *StatusError. The
// body is bounded by limit.
func (d *DirectoryClient) get(ctx context.Context, path string, q url.Values, limit int64, also ...int) (int, []byte, error) {
	u := d.url(path, q)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := d.client.Do(req) // its errors carry the URL without its password
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return 0, nil, &StatusError{URL: u.Redacted(), Message: fmt.Sprintf("body cut off: %v", err)}
	}
	if int64(len(body)) > limit {
		return 0, nil, &StatusError{URL: u.Redacted(), Message: fmt.Sprintf("body over %d bytes", limit)}
	}
	if resp.StatusCode == http.StatusOK || containsInt(also, resp.StatusCode) {
		return resp.StatusCode, body, nil
	}
	if origin.IsRedirect(resp.StatusCode) {
		return 0, nil, &StatusError{URL: u.Redacted(), Status: resp.StatusCode, Message: origin.Describe(resp) + ", not followed"}
	}
	return 0, nil, &StatusError{URL: u.Redacted(), Status: resp.StatusCode, Message: errorMessage(body)}
}

func containsInt(a []int, v int) bool {
	for _, x := range a {
		if x == v {
			return true
		}
	}
	return false
}

// errorMessage is the message of a {"message": …} error body, or a short
// printable prefix of another body.
func errorMessage(body []byte) string {
	var m struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &m) == nil && m.Message != "" {
		return quoteIfNeeded(m.Message, 200)
	}
	return quoteIfNeeded(string(bytes.TrimSpace(body)), 200)
}

// quoteIfNeeded shows s (cut to n bytes) as it is when it is printable
// ASCII, quoted otherwise: nothing a directory sends reaches a terminal
// as escape sequences.
func quoteIfNeeded(s string, n int) string {
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

// ExportPage returns the lines of the seq-mode export page after seq
// after (GET /export?after=<after>&count=<count>), and the seq of its last
// line (after for an empty page). A page whose last line is not a
// seq-mode line, or whose last seq is not its highest (plc.ParseSeqPage),
// is a *StatusError: a cut-off body, a directory without seq mode, or one
// that repeats a seq.
func (d *DirectoryClient) ExportPage(ctx context.Context, after int64, count int) (lines [][]byte, last int64, err error) {
	q := url.Values{"after": {strconv.FormatInt(after, 10)}, "count": {strconv.Itoa(count)}}
	_, body, err := d.get(origin.NoRedirects(ctx), "/export", q, MaxExportPageBytes)
	if err != nil {
		return nil, 0, err
	}
	p, err := plc.ParseSeqPage(body)
	switch {
	case errors.Is(err, plc.ErrPageEnd):
		return nil, 0, &StatusError{URL: d.url("/export", q).Redacted(),
			Message: "the last line is not a seq-mode export line (a cut-off body, or a directory without seq mode)"}
	case err != nil:
		return nil, 0, &StatusError{URL: d.url("/export", q).Redacted(), Message: err.Error()}
	case len(p.Lines) == 0:
		return nil, after, nil
	}
	return p.Lines, p.Last, nil
}

// ExportPageSize is the page size ExportReader asks for: the largest the
// reference serves.
const ExportPageSize = 1000

// ExportReader returns the directory's seq-mode export after seq after,
// end to end, as one stream of lines (joined by "\n") for VerifyExport: it
// asks for the next page (GET /export?after=<last seq>&count=1000) when
// the last one has been read, and ends at an empty page. A page that does
// not move past the last seq is an error (the directory would be asked
// for the same page forever).
func (d *DirectoryClient) ExportReader(ctx context.Context, after int64) io.Reader {
	return &exportPager{ctx: ctx, d: d, after: after}
}

type exportPager struct {
	ctx   context.Context
	d     *DirectoryClient
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
		lines, last, err := p.d.ExportPage(p.ctx, p.after, ExportPageSize)
		if err != nil {
			p.err = err
			return 0, err
		}
		if len(lines) == 0 {
			p.done = true
			continue
		}
		if last <= p.after {
			p.err = &StatusError{URL: p.d.url("/export", url.Values{"after": {strconv.FormatInt(p.after, 10)}}).Redacted(),
				Message: fmt.Sprintf("the page after seq %d ends at seq %d: the export does not move on", p.after, last)}
			// The page's lines are still verified (and their seqs reported).
		}
		p.after = last
		p.buf = append(bytes.Join(lines, []byte{'\n'}), '\n')
	}
	n := copy(b, p.buf)
	p.buf = p.buf[n:]
	return n, nil
}

// ErrNotRegistered is returned for a DID the directory does not know (404).
var ErrNotRegistered = errors.New("DID not registered")

// AuditLog returns a DID's audit log (GET /:did/log/audit), the entries
// decoded leniently (see plc.ReadAuditLog), or ErrNotRegistered on a 404.
func (d *DirectoryClient) AuditLog(ctx context.Context, did string) ([]plc.AuditEntry, error) {
	status, body, err := d.get(ctx, "/"+did+"/log/audit", nil, MaxAuditLogBytes, http.StatusNotFound)
	if err != nil {
		return nil, err
	}
	if status == http.StatusNotFound {
		return nil, ErrNotRegistered
	}
	entries, err := plc.ReadAuditLog(bytes.NewReader(body))
	if err != nil {
		return nil, &StatusError{URL: d.url("/"+did+"/log/audit", nil).Redacted(), Message: err.Error()}
	}
	return entries, nil
}

// Document is a DID's answer to GET /:did: a document (200), or a 404
// (not registered, or not available when tombstoned) with its message.
type Document struct {
	Status int
	Body   []byte
}

// Document fetches GET /:did.
func (d *DirectoryClient) Document(ctx context.Context, did string) (Document, error) {
	status, body, err := d.get(ctx, "/"+did, nil, MaxDocumentBytes, http.StatusNotFound)
	if err != nil {
		return Document{}, err
	}
	return Document{Status: status, Body: body}, nil
}

// LatestSeq returns the seq of the directory's latest op: the seq its
// /_health states when it states one (plc serve and plc mirror do),
// otherwise found by asking for export pages of one line (seq is
// increasing: a search over after values). 0: an empty export.
func (d *DirectoryClient) LatestSeq(ctx context.Context) (int64, error) {
	if _, body, err := d.get(ctx, "/_health", nil, MaxDocumentBytes); err == nil {
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
		lines, last, err := d.ExportPage(ctx, after, 1)
		if err != nil || len(lines) == 0 {
			return 0, err
		}
		if last <= after {
			return 0, &StatusError{URL: d.url("/export", nil).Redacted(),
				Message: fmt.Sprintf("asked for the op after seq %d, got seq %d", after, last)}
		}
		return last, nil
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
			return 0, &StatusError{URL: d.url("/export", nil).Redacted(), Message: "the export does not end"}
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
