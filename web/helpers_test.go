package web_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/plcdir/plc/api"
	"github.com/plcdir/plc/internal/optest"
	"github.com/plcdir/plc/internal/testclock"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/storetest"
	"github.com/plcdir/plc/tlog"
	"github.com/plcdir/plc/validate"
	"github.com/plcdir/plc/web"
)

// Test helpers: a real directory (SQLite store, the log, the API with the
// UI mounted, an httptest server), histories with forks, and an HTML
// reader. Nothing here sleeps or reads the wall clock for what a test
// checks: times come from a settable clock.

// t0 is the clock's start.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// directory is a running directory with the UI.
type directory struct {
	t     *testing.T
	clock *testclock.Clock
	store *oplog.SQLiteStore
	log   *oplog.Log
	tlog  *tlog.TLog
	ui    *web.UI
	srv   *httptest.Server
	logs  *storetest.Buffer
}

type dirOptions struct {
	// mirror, if set, makes the UI a mirror's.
	mirror *web.Mirror
	// noTLog leaves the transparency log out.
	noTLog bool
}

func newDirectory(t *testing.T, o dirOptions) *directory {
	t.Helper()
	store, _ := storetest.SQLite(t)
	d := &directory{t: t, clock: testclock.New(t0), store: store, logs: &storetest.Buffer{}}
	logger := slog.New(slog.NewTextHandler(d.logs, nil))
	d.log = oplog.NewLog(store, oplog.Options{Now: d.clock.Now, NoRateLimit: true})
	t.Cleanup(d.log.Close)
	cfg := web.Config{Store: store, Version: "test", Now: d.clock.Now, Logger: logger, Mirror: o.mirror}
	if !o.noTLog {
		skey, _, err := tlog.GenerateKey("plc.test")
		if err != nil {
			t.Fatal(err)
		}
		key, err := tlog.ParseKey(skey)
		if err != nil {
			t.Fatal(err)
		}
		d.tlog = tlog.New(store, key, tlog.Options{Now: d.clock.Now, Logger: logger})
		cfg.Checkpoints = d.tlog
	}
	d.ui = web.New(cfg)
	apiCfg := api.Config{Log: d.log, Logger: logger, Version: "test", Now: d.clock.Now, UI: d.ui}
	if d.tlog != nil {
		apiCfg.TLog = d.tlog
	}
	if o.mirror != nil {
		apiCfg.ReadOnly = true
	}
	d.srv = httptest.NewServer(api.New(apiCfg))
	t.Cleanup(d.srv.Close)
	return d
}

func (d *directory) logText() string { return d.logs.String() }

// submit appends op to did's log at the clock's time.
func (d *directory) submit(did string, op *validate.Op) oplog.Entry {
	d.t.Helper()
	e, err := d.log.Submit(context.Background(), did, op)
	if err != nil {
		d.t.Fatalf("submit to %s: %v", did, err)
	}
	return e
}

// sign signs a checkpoint of the log as it is.
func (d *directory) sign() oplog.Checkpoint {
	d.t.Helper()
	cp, _, err := d.tlog.Sign(context.Background())
	if err != nil {
		d.t.Fatalf("sign a checkpoint: %v", err)
	}
	return cp
}

// response is a reply read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

// get requests path (raw, possibly escaped) with header pairs; redirects
// are not followed.
func (d *directory) get(path string, header ...string) response {
	d.t.Helper()
	return fetch(d.t, http.MethodGet, d.srv.URL+path, header...)
}

func fetch(t testing.TB, method, url string, header ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

// forkedDID registers a DID whose history has a nullified fork: rotation
// keys [k0, k1]; a genesis op and a handle change signed by k0; then two
// ops signed by k1 (a hijack: new handle and PDS) an hour apart; then,
// three hours after the first of them, a recovery signed by k0 (higher
// priority) from the handle change, which nullifies both; then one more
// update. Ops: #1 genesis, #2 update, #3 and #4 nullified, #5 recovery, #6
// update.
func forkedDID(t *testing.T, d *directory) (*optest.Identity, []*validate.Op) {
	t.Helper()
	id := optest.NewIdentity(t, "alice.test", 2)
	g := id.Head
	d.submit(id.DID, g)
	d.clock.Advance(time.Hour)
	u1 := id.Update(t, nil, 0, "alice.example.com")
	d.submit(id.DID, u1)
	id.Accept(u1)

	d.clock.Advance(24 * time.Hour)
	body := id.Body
	body.Prev = u1.CID()
	body.AlsoKnownAs = []string{"at://mallory.test"}
	body.Services = []validate.Service{{ID: "atproto_pds", Type: "AtprotoPersonalDataServer", Endpoint: "https://evil.example"}}
	h1 := optest.Sign(t, body, id.Rotation[1])
	d.submit(id.DID, h1)
	d.clock.Advance(time.Hour)
	body.Prev = h1.CID()
	body.RotationKeys = []string{id.Rotation[1].DID}
	h2 := optest.Sign(t, body, id.Rotation[1])
	d.submit(id.DID, h2)

	d.clock.Advance(2 * time.Hour)
	r := id.Update(t, u1, 0, "alice.example.com")
	rb := r.Operation()
	rb.Sig = ""
	rb.VerificationMethods = []validate.VerificationMethod{{ID: "atproto", Key: optest.NewKey(t, true).DID}}
	r = optest.Sign(t, rb, id.Rotation[0])
	d.submit(id.DID, r)
	id.Accept(r)

	d.clock.Advance(48 * time.Hour)
	u2 := id.Update(t, nil, 0, "alice.example.org")
	d.submit(id.DID, u2)
	id.Accept(u2)
	return id, []*validate.Op{g, u1, h1, h2, r, u2}
}

// Reading HTML.

// doc parses an HTML page.
func doc(t testing.TB, b []byte) *html.Node {
	t.Helper()
	n, err := html.Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("parse HTML: %v", err)
	}
	return n
}

// walk calls f on every element of n.
func walk(n *html.Node, f func(*html.Node)) {
	if n.Type == html.ElementNode {
		f(n)
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		walk(c, f)
	}
}

// find returns the elements of n with tag name (any tag when empty) whose
// attributes include every key=value pair of attrs ("class" matches one
// class among several).
func find(n *html.Node, tag string, attrs ...string) []*html.Node {
	var out []*html.Node
	walk(n, func(e *html.Node) {
		if tag != "" && e.Data != tag {
			return
		}
		for i := 0; i+1 < len(attrs); i += 2 {
			v, ok := attr(e, attrs[i])
			if !ok {
				return
			}
			if attrs[i] == "class" {
				if !hasClass(v, attrs[i+1]) {
					return
				}
			} else if v != attrs[i+1] {
				return
			}
		}
		out = append(out, e)
	})
	return out
}

func hasClass(list, c string) bool {
	for _, f := range strings.Fields(list) {
		if f == c {
			return true
		}
	}
	return false
}

func attr(n *html.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

// text returns the text content of n.
func text(n *html.Node) string {
	var b strings.Builder
	var rec func(*html.Node)
	rec = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			rec(c)
		}
	}
	rec(n)
	return b.String()
}

// checkUIHeaders fails unless r carries the headers every UI response
// must.
func checkUIHeaders(t testing.TB, what string, r response) {
	t.Helper()
	for k, want := range map[string]string{
		"Content-Security-Policy": web.CSP,
		"X-Content-Type-Options":  "nosniff",
		"Referrer-Policy":         "no-referrer",
	} {
		if got := r.header.Get(k); got != want {
			t.Errorf("%s: %s = %q, want %q", what, k, got, want)
		}
	}
}

// httptestServer serves h for the test and returns its URL.
func httptestServer(t *testing.T, h http.Handler) string {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.URL
}
