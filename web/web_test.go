package web_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/plcdir/plc/api"
	"github.com/plcdir/plc/internal/optest"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
	"github.com/plcdir/plc/web"
)

func TestHomeShowsDirectoryStatus(t *testing.T) {
	d := newDirectory(t, dirOptions{})
	r := d.get("/")
	if r.status != http.StatusOK || r.header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET /: %d %q", r.status, r.header.Get("Content-Type"))
	}
	checkUIHeaders(t, "GET /", r)
	if !bytes.Contains(r.body, []byte("No checkpoint has been signed yet.")) {
		t.Errorf("an empty log's page does not say there is no checkpoint:\n%s", r.body)
	}

	// Three ops more than a day ago, two within the day, one within the
	// hour.
	for i := range 6 {
		id := optest.NewIdentity(t, optest.Handle(i), 1)
		d.submit(id.DID, id.Head)
		d.clock.Advance([]time.Duration{time.Minute, time.Minute, 20 * time.Hour, 3 * time.Hour, 2 * time.Hour, 30 * time.Minute}[i])
	}
	// Now: t0 + 25h32m. The ops were accepted at t0, +1m, +2m, +20h2m,
	// +23h2m, +25h2m.
	cp := d.sign()
	d.clock.Advance(statusTTL) // past the cached status of the first view
	page := doc(t, d.get("/").body)
	facts := map[string]string{}
	for _, div := range find(page, "div") {
		dts, dds := find(div, "dt"), find(div, "dd")
		if len(dts) == 1 && len(dds) == 1 {
			facts[strings.TrimSpace(text(dts[0]))] = strings.TrimSpace(text(dds[0]))
		}
	}
	for k, want := range map[string]string{
		"Latest seq":           "6 (accepted 2026-03-02 13:02:00.000 UTC)",
		"Ops in the last hour": "1",
		"Ops in the last day":  "3",
		"Origin":               "plc.test",
		"Tree size":            "6",
		"Root hash":            base64.StdEncoding.EncodeToString(cp.Root[:]),
	} {
		if facts[k] != want {
			t.Errorf("%s: %q, want %q (all: %q)", k, facts[k], want, facts)
		}
	}
	notes := find(page, "pre", "class", "note")
	if len(notes) != 1 || text(notes[0]) != string(cp.Note) {
		t.Errorf("checkpoint note not shown as signed:\n%q\nwant\n%q", text(notes[0]), cp.Note)
	}
	if len(find(page, "form", "action", "/ui/search")) != 1 || len(find(page, "label", "for", "q")) != 1 || len(find(page, "input", "id", "q")) != 1 {
		t.Errorf("the home page has no labelled search box")
	}
	for _, tag := range []string{"header", "nav", "main", "footer"} {
		if len(find(page, tag)) == 0 {
			t.Errorf("no <%s> landmark", tag)
		}
	}
	if bytes.Contains(d.get("/").body, []byte("Mirror")) {
		t.Errorf("a directory that is not a mirror shows a mirror section")
	}
}

const statusTTL = 5 * time.Second

// TestStatusCountsAreCachedBriefly: the status page's reads are reused
// for a few seconds (the page is public), then refreshed.
func TestStatusCountsAreCachedBriefly(t *testing.T) {
	d := newDirectory(t, dirOptions{noTLog: true})
	seq := func() string {
		t.Helper()
		page := doc(t, d.get("/").body)
		for _, div := range find(page, "div") {
			if dt := find(div, "dt"); len(dt) == 1 && text(dt[0]) == "Latest seq" {
				return strings.Fields(text(find(div, "dd")[0]))[0]
			}
		}
		t.Fatal("no latest seq on the page")
		return ""
	}
	if got := seq(); got != "0" {
		t.Fatalf("empty log: seq %s", got)
	}
	id := optest.NewIdentity(t, "a.test", 1)
	d.submit(id.DID, id.Head)
	d.clock.Advance(statusTTL - time.Millisecond)
	if got := seq(); got != "0" {
		t.Errorf("within the cache time: seq %s, want the cached 0", got)
	}
	d.clock.Advance(time.Millisecond)
	if got := seq(); got != "1" {
		t.Errorf("after the cache time: seq %s, want 1", got)
	}
	if !strings.Contains(string(d.get("/").body), "This directory keeps no transparency log.") {
		t.Errorf("no word on the missing transparency log")
	}
}

func TestSearch(t *testing.T) {
	d := newDirectory(t, dirOptions{noTLog: true})
	did := "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
	for _, q := range []string{did, "  " + did + "\n", "at://" + did, strings.ToUpper(did), "did:plc:EWVI7nxzyoun6zhxrhs64oiz/"} {
		r := d.get("/ui/search?q=" + url.QueryEscape(q))
		if r.status != http.StatusSeeOther || r.header.Get("Location") != "/ui/"+did {
			t.Errorf("search %q: %d to %q, want 303 to /ui/%s", q, r.status, r.header.Get("Location"), did)
		}
		checkUIHeaders(t, "search", r)
	}
	if r := d.get("/ui/search?q="); r.status != http.StatusSeeOther || r.header.Get("Location") != "/" {
		t.Errorf("empty search: %d to %q", r.status, r.header.Get("Location"))
	}
	for q, want := range map[string]string{
		"alice.bsky.social":                    "Handle not known here",
		"at://alice.bsky.social":               "Handle not known here",
		"did:plc:tooshort":                     "Not a did:plc",
		"did:web:example.com":                  "Not a did:plc",
		"<script>alert(1)</script>":            "Not a did:plc",
		"did:plc:" + strings.Repeat("a", 5000): "Not a did:plc",
	} {
		r := d.get("/ui/search?q=" + url.QueryEscape(q))
		status := http.StatusBadRequest
		if strings.Contains(q, "bsky") {
			status = http.StatusNotFound
		}
		if r.status != status || !bytes.Contains(r.body, []byte(want)) {
			t.Errorf("search %.40q: %d, want %d saying %q", q, r.status, status, want)
		}
		checkUIHeaders(t, "search", r)
		page := doc(t, r.body)
		// The query comes back in the search box, as a value only.
		if in := find(page, "input", "id", "q"); len(in) != 1 {
			t.Errorf("search %.40q: no search box on the error page", q)
		} else if v, _ := attr(in[0], "value"); v != q {
			t.Errorf("search %.40q: box holds %.40q", q, v)
		}
		if len(find(page, "script")) > 0 {
			t.Errorf("search %.40q: a script element made it into the page", q)
		}
	}
}

// TestBadAddressesGetHTMLErrorPagesNeverA500: whatever the path, the
// UI answers a page of its own (404/400/redirect), with its headers.
func TestBadAddressesGetHTMLErrorPagesNeverA500(t *testing.T) {
	d := newDirectory(t, dirOptions{noTLog: true})
	unknown := "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
	for path, want := range map[string]int{
		"/ui/" + unknown: http.StatusNotFound,
		"/ui/" + strings.ReplaceAll(unknown, ":", "%3A"): http.StatusNotFound,
		"/ui/did:plc:AAAAAAAAAAAAAAAAAAAAAAAA":           http.StatusMovedPermanently,
		"/ui/nope":                                       http.StatusNotFound,
		"/ui/%00":                                        http.StatusNotFound,
		"/ui/%FF%FE":                                     http.StatusNotFound,
		"/ui/" + strings.Repeat("x", 5000):               http.StatusNotFound,
		"/ui/%3Cscript%3E":                               http.StatusNotFound,
		"/ui/a/b/c":                                      http.StatusNotFound,
		"/ui/static/nothing.css":                         http.StatusNotFound,
		"/ui/divergences":                                http.StatusNotFound, // not a mirror
		"/ui/search?q=%FF":                               http.StatusBadRequest,
		"/ui":                                            http.StatusMovedPermanently,
		"/ui/":                                           http.StatusMovedPermanently,
	} {
		r := d.get(path)
		if r.status != want {
			t.Errorf("GET %.60s: %d, want %d", path, r.status, want)
		}
		checkUIHeaders(t, path, r)
		if r.status >= 400 && r.header.Get("Content-Type") != "text/html; charset=utf-8" {
			t.Errorf("GET %.60s: content-type %q", path, r.header.Get("Content-Type"))
		}
	}
	if r := d.get("/ui/" + unknown); !bytes.Contains(r.body, []byte("DID not registered")) {
		t.Errorf("unknown DID page: %s", r.body)
	}
	// Other methods on UI paths never reach a page.
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		r := fetch(t, m, d.srv.URL+"/ui/"+unknown)
		if r.status != http.StatusMethodNotAllowed {
			t.Errorf("%s /ui/…: %d, want 405", m, r.status)
		}
	}
	// The UI handler alone answers them with a page of its own.
	rec := httptest.NewRecorder()
	d.ui.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/ui/"+unknown, nil))
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" || rec.Header().Get("Content-Security-Policy") != web.CSP {
		t.Errorf("POST to the UI handler: %d, Allow %q", rec.Code, rec.Header().Get("Allow"))
	}
}

// TestDatabaseFailureIsAnErrorPageWithoutDetails: a failing store gives a
// page that says so, and the details go to the log only.
func TestDatabaseFailureIsAnErrorPageWithoutDetails(t *testing.T) {
	d := newDirectory(t, dirOptions{noTLog: true})
	id := optest.NewIdentity(t, "a.test", 1)
	d.submit(id.DID, id.Head)
	d.store.Close()
	for _, p := range []string{"/", "/ui/" + id.DID} {
		r := d.get(p)
		if r.status != http.StatusInternalServerError || r.header.Get("Content-Type") != "text/html; charset=utf-8" {
			t.Errorf("GET %s with the database closed: %d %q", p, r.status, r.header.Get("Content-Type"))
		}
		checkUIHeaders(t, p, r)
		if bytes.Contains(r.body, []byte("closed")) {
			t.Errorf("GET %s: the page shows the internal error: %s", p, r.body)
		}
	}
	if !strings.Contains(d.logText(), "database is closed") {
		t.Errorf("the error is not logged:\n%s", d.logText())
	}
}

func TestDIDPageShowsDocumentHistoryAndFork(t *testing.T) {
	d := newDirectory(t, dirOptions{noTLog: true})
	id, ops := forkedDID(t, d)
	r := d.get("/ui/" + id.DID)
	if r.status != http.StatusOK {
		t.Fatalf("GET /ui/%s: %d\n%s", id.DID, r.status, r.body)
	}
	checkUIHeaders(t, "DID page", r)
	page := doc(t, r.body)

	// The current document.
	dl := find(page, "dl", "class", "doc")
	if len(dl) != 1 {
		t.Fatalf("no current document")
	}
	docText := text(dl[0])
	for _, want := range []string{"at://alice.example.org", "https://pds.example.com", id.Rotation[0].DID, id.Rotation[1].DID} {
		if !strings.Contains(docText, want) {
			t.Errorf("current document does not show %q:\n%s", want, docText)
		}
	}
	if strings.Contains(docText, "mallory") || strings.Contains(docText, "evil.example") {
		t.Errorf("the current document shows the nullified hijack:\n%s", docText)
	}

	// The graph: six nodes; #3 and #4 on lane 1, nullified; #5 a recovery
	// on lane 0 with its window.
	svg := find(page, "svg", "role", "img")
	if len(svg) != 1 {
		t.Fatalf("want one svg with role img, got %d", len(svg))
	}
	if len(find(svg[0], "title")) == 0 || len(find(svg[0], "desc")) == 0 {
		t.Errorf("the svg has no title or desc")
	}
	nodes := find(svg[0], "g", "class", "op")
	if len(nodes) != 6 {
		t.Fatalf("%d nodes, want 6", len(nodes))
	}
	for i, n := range nodes {
		lane, _ := attr(n, "data-lane")
		class, _ := attr(n, "class")
		seq, _ := attr(n, "data-seq")
		wantLane, wantNull := "0", false
		if i == 2 || i == 3 {
			wantLane, wantNull = "1", true
		}
		if lane != wantLane || hasClass(class, "nullified") != wantNull {
			t.Errorf("node #%d: lane %s class %q, want lane %s nullified %v", i+1, lane, class, wantLane, wantNull)
		}
		if seq != strconv.Itoa(i+1) {
			t.Errorf("node #%d: data-seq %s", i+1, seq)
		}
		if hasClass(class, "recovery") != (i == 4) {
			t.Errorf("node #%d: class %q (recovery only on #5)", i+1, class)
		}
	}
	if branches := find(svg[0], "path", "class", "branch"); len(branches) != 1 {
		t.Errorf("%d branch edges, want 1 (from #2 to #3)", len(branches))
	}
	windows := find(svg[0], "rect", "class", "window")
	if len(windows) != 1 {
		t.Fatalf("%d recovery windows, want 1", len(windows))
	}
	wt := text(windows[0])
	for _, want := range []string{"2026-03-02 13:00:00.000 UTC (op #3", "2026-03-05 13:00:00.000 UTC", "op #5 forked from #2 after 3h 0m"} {
		if !strings.Contains(wt, want) {
			t.Errorf("window title %q does not say %q", wt, want)
		}
	}
	if g := find(svg[0], "rect", "class", "gauge-fill"); len(g) != 1 {
		t.Errorf("no recovery gauge")
	} else if w, _ := attr(g[0], "width"); w != "6" { // 3 h of 72 h of 144 px
		t.Errorf("gauge fill %s px, want 6", w)
	}

	// The table: the same six ops, with signers, changes and the fork.
	rows := find(page, "tr")
	byID := map[string]*html.Node{}
	for _, row := range rows {
		if v, ok := attr(row, "id"); ok {
			byID[v] = row
		}
	}
	for i, op := range ops {
		row := byID[fmt.Sprintf("op-%d", i+1)]
		if row == nil {
			t.Fatalf("no table row for op #%d", i+1)
		}
		if !strings.Contains(text(row), op.CID()) {
			t.Errorf("row #%d does not show its CID", i+1)
		}
	}
	for n, wants := range map[string][]string{
		"op-1": {"rotation key 0", id.Rotation[0].DID, "handle: at://alice.test", "PDS: https://pds.example.com"},
		"op-2": {"rotation key 0", "handle: at://alice.test → at://alice.example.com"},
		"op-3": {"rotation key 1", id.Rotation[1].DID, "handle: at://alice.example.com → at://mallory.test", "PDS: https://pds.example.com → https://evil.example", "nullified by #5"},
		"op-4": {"rotation key 1", "rotation key 0 removed: " + id.Rotation[0].DID, "nullified by #5"},
		"op-5": {"rotation key 0", "verification key atproto", "recovery from #2", "nullified #3, #4", "3h 0m into the 72-hour window"},
		"op-6": {"handle: at://alice.example.com → at://alice.example.org"},
	} {
		got := strings.Join(strings.Fields(text(byID[n])), " ")
		for _, want := range wants {
			if !strings.Contains(got, want) {
				t.Errorf("%s: %q does not say %q", n, got, want)
			}
		}
	}

	// Links to the raw JSON, each answering JSON.
	for _, suffix := range []string{"", "/data", "/log", "/log/audit", "/log/last"} {
		href := "/" + id.DID + suffix
		if len(find(page, "a", "href", href)) == 0 {
			t.Errorf("no link to %s", href)
			continue
		}
		r := d.get(href)
		if r.status != http.StatusOK || !strings.Contains(r.header.Get("Content-Type"), "json") {
			t.Errorf("GET %s: %d %q", href, r.status, r.header.Get("Content-Type"))
		}
	}
}

// TestTombstonedDIDPage: a deactivated DID shows its history and says it
// resolves to nothing; a tombstone nullified by a recovery is drawn on
// the branch.
func TestTombstonedDIDPage(t *testing.T) {
	d := newDirectory(t, dirOptions{noTLog: true})
	id := optest.NewIdentity(t, "gone.test", 2)
	d.submit(id.DID, id.Head)
	g := id.Head
	d.clock.Advance(time.Hour)
	ts := id.Tombstone(t, nil, 1)
	d.submit(id.DID, ts)
	d.clock.Advance(time.Hour)
	back := id.Update(t, g, 0, "back.test")
	d.submit(id.DID, back)
	id.Accept(back)
	d.clock.Advance(time.Hour)
	ts2 := id.Tombstone(t, nil, 0)
	d.submit(id.DID, ts2)

	page := doc(t, d.get("/ui/"+id.DID).body)
	if b := find(page, "span", "class", "tombstone"); len(b) == 0 || !strings.Contains(text(b[0]), "Deactivated") {
		t.Errorf("the page does not say the DID is deactivated")
	}
	if len(find(page, "dl", "class", "doc")) != 0 {
		t.Errorf("a tombstoned DID shows a current document")
	}
	nodes := find(page, "g", "class", "op")
	if len(nodes) != 4 {
		t.Fatalf("%d nodes", len(nodes))
	}
	want := []struct{ tomb, null bool }{{false, false}, {true, true}, {false, false}, {true, false}}
	for i, n := range nodes {
		class, _ := attr(n, "class")
		if hasClass(class, "tombstone") != want[i].tomb || hasClass(class, "nullified") != want[i].null {
			t.Errorf("node #%d: class %q, want tombstone %v nullified %v", i+1, class, want[i].tomb, want[i].null)
		}
		if want[i].tomb && len(find(n, "path", "class", "cross")) != 1 {
			t.Errorf("node #%d: a tombstone without its mark", i+1)
		}
	}
}

// hostileStrings are what an attacker may put in a DID's alsoKnownAs,
// service ids, types and endpoints, and verification method ids: the
// chain rules set no charset.
var hostileStrings = []string{
	`at://<script>alert("aka")</script>`,
	`"><img src=x onerror=alert(1)>`,
	`javascript:alert(document.domain)`,
	`' onmouseover='alert(1)`,
	"at://\u202eevil\u202c.test",
	`</title><script>alert(2)</script>`,
	`]]><svg onload=alert(3)>`,
}

// hostileDID registers a DID whose every free-text field is hostile.
func hostileDID(t *testing.T, d *directory) (*optest.Identity, validate.Operation) {
	t.Helper()
	id := optest.NewIdentity(t, "x.test", 1)
	body := id.Body
	body.AlsoKnownAs = hostileStrings
	body.Services = []validate.Service{
		{ID: "atproto_pds", Type: `<b onclick="x()">PDS</b>`, Endpoint: `javascript:alert("pds")`},
		{ID: `x"><script>1</script>`, Type: "t", Endpoint: `JaVaScRiPt:alert(1)`},
		{ID: "data", Type: "t", Endpoint: `data:text/html,<script>alert(1)</script>`},
		{ID: "ok", Type: "t", Endpoint: `https://pds.example/"><script>alert(4)</script>`},
		{ID: "vb", Type: "t", Endpoint: ` vbscript:msgbox(1)`},
	}
	body.VerificationMethods = []validate.VerificationMethod{{ID: `<img src=x onerror=alert(5)>`, Key: id.Signing.DID}}
	g := optest.Sign(t, body, id.Rotation[0])
	id.DID = g.GenesisDID()
	d.submit(id.DID, g)
	id.Accept(g)
	// An update, so the values also go through the diff and the graph.
	d.clock.Advance(time.Minute)
	body.Prev = g.CID()
	body.AlsoKnownAs = append([]string{`at://"onfocus="alert(6)`}, hostileStrings[:3]...)
	d.submit(id.DID, optest.Sign(t, body, id.Rotation[0]))
	return id, body
}

// TestHostileDIDRendersInert: no field of an op can add an element, an
// attribute, a script or a javascript: link to the page; every value is
// shown as text.
func TestHostileDIDRendersInert(t *testing.T) {
	d := newDirectory(t, dirOptions{noTLog: true})
	id, _ := hostileDID(t, d)
	r := d.get("/ui/" + id.DID)
	if r.status != http.StatusOK {
		t.Fatalf("%d\n%s", r.status, r.body)
	}
	checkUIHeaders(t, "hostile DID page", r)
	page := doc(t, r.body)
	checkInert(t, page)
	// The values are there, as text; a direction override is shown, not
	// obeyed.
	all := text(page)
	for _, s := range hostileStrings {
		s = strings.NewReplacer("\u202e", "⟨U+202E⟩", "\u202c", "⟨U+202C⟩").Replace(s)
		if !strings.Contains(all, s) {
			t.Errorf("value %q is not shown as text", s)
		}
	}
	if strings.ContainsRune(all, '\u202e') {
		t.Errorf("a right-to-left override reaches the page")
	}
	// Only the http(s) endpoint is a link.
	var external []string
	for _, a := range find(page, "a", "class", "endpoint") {
		href, _ := attr(a, "href")
		external = append(external, href)
	}
	if len(external) != 1 || !strings.HasPrefix(external[0], "https://pds.example/") {
		t.Errorf("endpoint links %q, want only the https one", external)
	}
}

// checkInert fails if page has a script, an event handler attribute, an
// element an attacker could only have added, or a link to anything but
// http(s), a path or a fragment.
func checkInert(t *testing.T, page *html.Node) {
	t.Helper()
	walk(page, func(n *html.Node) {
		switch n.Data {
		case "script", "img", "iframe", "object", "embed", "b", "foreignObject", "base", "meta":
			if n.Data == "meta" {
				if _, ok := attr(n, "http-equiv"); !ok {
					return
				}
			}
			t.Errorf("element <%s> in the page", n.Data)
		}
		for _, a := range n.Attr {
			if strings.HasPrefix(strings.ToLower(a.Key), "on") {
				t.Errorf("<%s %s=%q>: an event handler attribute", n.Data, a.Key, a.Val)
			}
			if a.Key == "style" {
				t.Errorf("<%s style=%q>: inline style", n.Data, a.Val)
			}
			if a.Key == "href" || a.Key == "src" || a.Key == "action" || a.Key == "xlink:href" {
				v := strings.ToLower(strings.TrimSpace(a.Val))
				if !(strings.HasPrefix(v, "/") || strings.HasPrefix(v, "#") || strings.HasPrefix(v, "https://") || strings.HasPrefix(v, "http://")) {
					t.Errorf("<%s %s=%q>: not a path, fragment or http(s) URL", n.Data, a.Key, a.Val)
				}
			}
		}
	})
}

// TestContentNegotiationIsUnchanged: with the UI mounted, GET /:did is the
// JSON document whatever the Accept header, byte for byte what the API
// without a UI sends; the HTML lives under /ui/ only.
func TestContentNegotiationIsUnchanged(t *testing.T) {
	d := newDirectory(t, dirOptions{noTLog: true})
	id, _ := forkedDID(t, d)
	plain := httptestServer(t, api.New(api.Config{Log: d.log}))
	headers := [][]string{
		nil,
		{"Accept", "application/json"},
		{"Accept", "application/did+ld+json"},
		{"Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"},
		{"Accept", "text/html"},
		{"Accept", "*/*"},
	}
	for _, suffix := range []string{"", "/data", "/log", "/log/audit", "/log/last"} {
		want := fetch(t, http.MethodGet, plain+"/"+id.DID+suffix)
		if want.status != http.StatusOK {
			t.Fatalf("without UI: GET %s: %d", suffix, want.status)
		}
		for _, h := range headers {
			got := d.get("/"+id.DID+suffix, h...)
			if got.status != want.status || got.header.Get("Content-Type") != want.header.Get("Content-Type") || !bytes.Equal(got.body, want.body) {
				t.Errorf("GET /:did%s %q: %d %q %.80s\nwant %d %q %.80s", suffix, h, got.status, got.header.Get("Content-Type"), got.body,
					want.status, want.header.Get("Content-Type"), want.body)
			}
			if got.header.Get("Content-Security-Policy") != "" {
				t.Errorf("GET /:did%s: an API response carries the UI's headers", suffix)
			}
		}
	}
	// The document is the reference's rendering of the current op.
	data, _ := d.mustOp(t, id.DID).Data()
	if got := d.get("/"+id.DID, "Accept", "text/html"); string(got.body) != string(validate.AppendDocumentJSON(nil, id.DID, data)) {
		t.Errorf("document: %s", got.body)
	}
	// Without a UI, / stays the API's 404.
	if r := fetch(t, http.MethodGet, plain+"/"); r.status != http.StatusNotFound || r.header.Get("Content-Type") != "application/json; charset=utf-8" {
		t.Errorf("GET / without a UI: %d %q", r.status, r.header.Get("Content-Type"))
	}
}

func (d *directory) mustOp(t *testing.T, did string) *validate.Op {
	t.Helper()
	e, err := d.store.Head(context.Background(), did)
	if err != nil {
		t.Fatal(err)
	}
	return e.Decoded
}

// TestPagesStayUnder100KB: the page skeleton is small, and even a DID
// with a long history (50 ops) makes a page, with its stylesheet, under
// 100 KB.
func TestPagesStayUnder100KB(t *testing.T) {
	d := newDirectory(t, dirOptions{})
	id := optest.NewIdentity(t, "long.test", 2)
	d.submit(id.DID, id.Head)
	for i := 1; i < 50; i++ {
		d.clock.Advance(time.Hour)
		var op *validate.Op
		if i%10 == 5 {
			// A hijack by the lower-priority key, recovered at once.
			bad := id.Update(t, nil, 1, "hijack"+strconv.Itoa(i)+".test")
			d.submit(id.DID, bad)
			d.clock.Advance(time.Hour)
			i++
			op = id.Update(t, nil, 0, optest.Handle(i))
		} else {
			op = id.Update(t, nil, 0, optest.Handle(i))
		}
		d.submit(id.DID, op)
		id.Accept(op)
	}
	d.sign()
	css := d.get("/ui/static/style.css")
	if css.status != http.StatusOK || css.header.Get("Content-Type") != "text/css; charset=utf-8" {
		t.Fatalf("stylesheet: %d %q", css.status, css.header.Get("Content-Type"))
	}
	checkUIHeaders(t, "stylesheet", css)
	if len(css.body) > 16<<10 {
		t.Errorf("stylesheet is %d bytes, want at most 16 KiB", len(css.body))
	}
	ops, err := d.store.Ops(context.Background(), id.DID)
	if err != nil || len(ops) != 50 {
		t.Fatalf("%d ops, %v", len(ops), err)
	}
	for _, p := range []string{"/", "/ui/" + id.DID, "/ui/did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "/ui/search?q=x.test"} {
		r := d.get(p)
		if total := len(r.body) + len(css.body); total >= 100_000 {
			t.Errorf("GET %s: %d bytes with the stylesheet, want < 100 KB", p, total)
		}
		t.Logf("GET %s: %d bytes", p, len(r.body))
	}
	page := doc(t, d.get("/ui/"+id.DID).body)
	if n := len(find(page, "g", "class", "op")); n != 50 {
		t.Errorf("%d nodes drawn, want 50", n)
	}
	if n := len(find(page, "g", "class", "nullified")); n != 5 {
		t.Errorf("%d nullified nodes, want 5", n)
	}
	// Everything the page loads is its stylesheet.
	var loads []string
	walk(page, func(n *html.Node) {
		for _, a := range n.Attr {
			if a.Key == "src" || (n.Data == "link" && a.Key == "href") {
				loads = append(loads, a.Val)
			}
		}
	})
	if len(loads) != 1 || !strings.HasPrefix(loads[0], "/ui/static/style.css?v=") {
		t.Errorf("the page loads %q, want only its stylesheet", loads)
	}
	// A stylesheet version the page names is served (and cached).
	r := d.get(loads[0])
	if r.status != http.StatusOK || !strings.Contains(r.header.Get("Cache-Control"), "max-age") {
		t.Errorf("GET %s: %d, Cache-Control %q", loads[0], r.status, r.header.Get("Cache-Control"))
	}
	if nm := d.get(loads[0], "If-None-Match", r.header.Get("ETag")); nm.status != http.StatusNotModified {
		t.Errorf("revalidation: %d, want 304", nm.status)
	}
}

// TestLongHistoryShowsTheLatestOps: past the drawing limit the page shows
// the latest ops and says where the rest are.
func TestLongHistoryShowsTheLatestOps(t *testing.T) {
	if testing.Short() {
		t.Skip("signs 260 ops")
	}
	d := newDirectory(t, dirOptions{noTLog: true})
	id := optest.NewIdentity(t, "long.test", 1)
	d.submit(id.DID, id.Head)
	for i := 1; i < 260; i++ {
		d.clock.Advance(time.Minute)
		op := id.Update(t, nil, 0, optest.Handle(i))
		d.submit(id.DID, op)
		id.Accept(op)
	}
	r := d.get("/ui/" + id.DID)
	page := doc(t, r.body)
	nodes := find(page, "g", "class", "op")
	if len(nodes) != 250 {
		t.Fatalf("%d nodes, want the latest 250", len(nodes))
	}
	if n, _ := attr(nodes[0], "data-n"); n != "11" {
		t.Errorf("first node drawn is #%s, want #11", n)
	}
	if !bytes.Contains(r.body, []byte("The 10 oldest operations are not shown here")) {
		t.Errorf("no word on the ops not shown")
	}
	if stubs := find(page, "path", "class", "stub"); len(stubs) != 1 {
		t.Errorf("%d stub edges, want 1 (to #10, not drawn)", len(stubs))
	}
}

func TestDivergencesPage(t *testing.T) {
	const source = "upstream:https://up.example"
	m := &web.Mirror{
		Source: source,
		Status: func(context.Context) web.MirrorStatus {
			return web.MirrorStatus{Upstream: "https://up.example", Mode: "seq", State: "stream", Cursor: 42, LagOps: 3}
		},
	}
	d := newDirectory(t, dirOptions{mirror: m, noTLog: true})
	if r := d.get("/ui/divergences"); r.status != http.StatusOK || !bytes.Contains(r.body, []byte("No divergence recorded")) {
		t.Errorf("no records: %d\n%s", r.status, r.body)
	}
	did := "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
	var recs []oplog.Rejection
	for i := range 120 {
		rj := oplog.Rejection{Source: source, Line: int64(i + 1), DID: did, CID: "bafyreib", Raw: []byte(`{"op":"bad"}`),
			Reason: "history_rewrite: an op is gone", CreatedAt: t0}
		switch i {
		case 0:
			rj.DID, rj.Reason, rj.Raw = hostileStrings[0], hostileStrings[1], []byte(hostileStrings[5])
		case 1:
			rj.DID, rj.Raw, rj.Reason = "", append([]byte{0xff, 0xfe, 0}, bytes.Repeat([]byte("z"), 5000)...), "bad_response: not JSON"
		}
		recs = append(recs, rj)
	}
	err := d.store.Append(context.Background(), source, nil, func(v oplog.View) (oplog.Batch, error) {
		c := v.Cursor
		c.Line = 120
		return oplog.Batch{Cursor: c, Rejections: recs}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A rejection of another source is not the mirror's.
	if err := d.store.Append(context.Background(), "import:x", nil, func(v oplog.View) (oplog.Batch, error) {
		return oplog.Batch{Cursor: oplog.Cursor{Source: "import:x", Line: 1}, Rejections: []oplog.Rejection{{Source: "import:x", Line: 1, Raw: []byte("x"), Reason: "other", CreatedAt: t0}}}, nil
	}); err != nil {
		t.Fatal(err)
	}

	r := d.get("/ui/divergences")
	if r.status != http.StatusOK {
		t.Fatalf("%d\n%s", r.status, r.body)
	}
	checkUIHeaders(t, "divergences", r)
	page := doc(t, r.body)
	checkInert(t, page)
	rows := find(page, "tbody")[0]
	if n := len(find(rows, "tr")); n != 50 {
		t.Errorf("%d records on the first page, want 50", n)
	}
	all := text(page)
	for _, want := range []string{hostileStrings[0], hostileStrings[1], hostileStrings[5], "120 records in all", "5003 bytes, base64, the last 2955 not shown", "https://up.example"} {
		if !strings.Contains(all, want) {
			t.Errorf("page does not show %q", want)
		}
	}
	if strings.Contains(all, "other") {
		t.Errorf("another source's rejection is listed")
	}
	if len(find(page, "a", "href", "/ui/"+did)) == 0 {
		t.Errorf("no link to the DID's page")
	}
	next := find(page, "a", "rel", "next")
	if len(next) != 1 {
		t.Fatalf("no link to the next page")
	}
	href, _ := attr(next[0], "href")
	if href != "/ui/divergences?after=50" {
		t.Errorf("next page %q", href)
	}
	page3 := doc(t, d.get("/ui/divergences?after=100").body)
	if n := len(find(find(page3, "tbody")[0], "tr")); n != 20 || len(find(page3, "a", "rel", "next")) != 0 {
		t.Errorf("last page: %d records, next link %v", n, len(find(page3, "a", "rel", "next")))
	}
	for _, bad := range []string{"-1", "x", "1e3", "99999999999999999999"} {
		if r := d.get("/ui/divergences?after=" + bad); r.status != http.StatusBadRequest {
			t.Errorf("after=%s: %d, want 400", bad, r.status)
		}
	}

	// The status page shows the mirror and its count.
	home := doc(t, d.get("/").body)
	mirrorText := strings.Join(strings.Fields(text(find(home, "section", "aria-labelledby", "mirror-heading")[0])), " ")
	for _, want := range []string{"https://up.example", "seq", "stream", "42", "3 ops behind", "120 records"} {
		if !strings.Contains(mirrorText, want) {
			t.Errorf("mirror section %q does not say %q", mirrorText, want)
		}
	}
	if len(find(home, "a", "href", "/ui/divergences")) < 2 {
		t.Errorf("no link to the divergences from the header and the status")
	}
}
