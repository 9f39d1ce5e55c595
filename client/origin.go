package client

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// What a directory answers is published as evidence (a mirror's divergence
// records) or taken as the directory's word (plc audit). An answer fetched
// elsewhere through a redirect is neither: it may come from an address the
// directory chose because only the client can reach it. So a Client never
// follows a redirect off the directory's origin (its scheme, host and
// port): it stops there and hands back the directory's own 3xx answer
// (status, headers and body) in a *StatusError. Requests whose context
// comes from noRedirects (export pages) follow no redirect at all, not
// even on the origin.

// MaxRedirects bounds the redirects one request follows on the origin.
const MaxRedirects = 5

// originClient returns a copy of c (nil: a zero http.Client) whose
// requests follow redirects only on base's origin, at most MaxRedirects of
// them, and none for a request made with a context from noRedirects.
// Whatever c did with redirects is replaced.
func originClient(c *http.Client, base *url.URL) *http.Client {
	var out http.Client
	if c != nil {
		out = *c
	}
	home := *base
	out.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) > 0 && via[0].Context().Value(noRedirectsKey{}) != nil {
			return http.ErrUseLastResponse
		}
		if !sameOrigin(req.URL, &home) || len(via) > MaxRedirects {
			return http.ErrUseLastResponse
		}
		return nil
	}
	return &out
}

type noRedirectsKey struct{}

// noRedirects returns a context whose requests follow no redirect: the
// 3xx answer is returned as it is.
func noRedirects(ctx context.Context) context.Context {
	return context.WithValue(ctx, noRedirectsKey{}, true)
}

// sameOrigin reports whether a and b have the same origin: the same
// scheme (ws counts as http, wss as https), host (case-insensitively) and
// port (an omitted port is the scheme's default).
func sameOrigin(a, b *url.URL) bool {
	sa, sb := scheme(a), scheme(b)
	if sa == "" || sa != sb {
		return false
	}
	return strings.EqualFold(a.Hostname(), b.Hostname()) && port(a, sa) == port(b, sb)
}

func scheme(u *url.URL) string {
	switch s := strings.ToLower(u.Scheme); s {
	case "http", "ws":
		return "http"
	case "https", "wss":
		return "https"
	default:
		return ""
	}
}

func port(u *url.URL, scheme string) string {
	if p := u.Port(); p != "" {
		return p
	}
	if scheme == "https" {
		return "443"
	}
	return "80"
}

// isRedirect reports whether status is a redirect a client would follow.
func isRedirect(status int) bool {
	switch status {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return true
	}
	return false
}

// describeRedirect says where a redirect answer points, for an error
// message: its Location, resolved against the request's URL, password
// redacted.
func describeRedirect(resp *http.Response) string {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return "a redirect without a Location"
	}
	if resp.Request != nil && resp.Request.URL != nil {
		if u, err := resp.Request.URL.Parse(loc); err == nil {
			loc = u.Redacted()
		}
	}
	return "a redirect to " + strconv.Quote(loc)
}

// redirectEvidence is a redirect answer as the directory sent it: its
// status line, its headers and its body.
func redirectEvidence(resp *http.Response, body []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/%d.%d %s\r\n", resp.ProtoMajor, resp.ProtoMinor, resp.Status)
	resp.Header.Write(&b)
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}
