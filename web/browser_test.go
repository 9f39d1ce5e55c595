package web_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/plcdir/plc/internal/optest"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/web"
)

// The end-to-end test in a real headless Chromium: a person searches a
// DID, sees its history with the nullified fork drawn as a branch, and
// follows the link to the raw audit log. Screenshots of the pages are
// written as test artifacts.
//
// The browser is $PLC_CHROMIUM, else chromium (or chromium-browser) on
// PATH. Without one the test skips, unless PLC_REQUIRE_BROWSER=1 (as in
// CI), where it fails. Screenshots go to $PLC_ARTIFACTS, else artifacts/
// at the repository's root.

const (
	envChromium       = "PLC_CHROMIUM"
	envRequireBrowser = "PLC_REQUIRE_BROWSER"
	envArtifacts      = "PLC_ARTIFACTS"
	// browserTimeout bounds the whole browser session.
	browserTimeout = 2 * time.Minute
)

func findBrowser(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("drives a real browser")
	}
	if p := os.Getenv(envChromium); p != "" {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s=%s: %v", envChromium, p, err)
		}
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv(envRequireBrowser) == "1" {
		t.Fatalf("no chromium on PATH and %s is not set, but %s=1: the browser tests must run (apt-get install chromium)", envChromium, envRequireBrowser)
	}
	t.Skipf("no chromium on PATH (set %s, or apt-get install chromium): skipping the browser test", envChromium)
	return ""
}

// artifactDir is where screenshots go.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(envArtifacts)
	if dir == "" {
		root, err := filepath.Abs("..")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
			t.Fatalf("the repository root is not %s: %v", root, err)
		}
		dir = filepath.Join(root, "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// console collects what the pages write to the browser's console.
type console struct {
	mu   sync.Mutex
	msgs []chromedp.ConsoleMessage
}

func (c *console) add(m chromedp.ConsoleMessage) {
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.mu.Unlock()
}

func (c *console) all() []chromedp.ConsoleMessage {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]chromedp.ConsoleMessage(nil), c.msgs...)
}

func TestBrowserSearchHistoryForkAndRawLog(t *testing.T) {
	bin := findBrowser(t)
	shots := artifactDir(t)
	start := time.Now()

	const source = "upstream:https://plc.upstream.example"
	m := &web.Mirror{
		Source: source,
		Status: func(context.Context) web.MirrorStatus {
			return web.MirrorStatus{Upstream: "https://plc.upstream.example", Mode: "seq", State: "stream", Cursor: 7, LagOps: 0}
		},
	}
	d := newDirectory(t, dirOptions{mirror: m})
	id, ops := forkedDID(t, d)
	hostile, _ := hostileDID(t, d)
	twins := []*optest.Identity{optest.NewIdentity(t, "twin.test", 1), optest.NewIdentity(t, "Twin.Test", 1)}
	for _, tw := range twins {
		d.submit(tw.DID, tw.Head)
	}
	recordDivergences(t, d, source)
	d.sign()

	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	defer cancel()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.NoSandbox, // CI runs as root
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-gpu", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	var dialogs atomic.Int32
	bctx, cancelBrowser := chromedp.NewContext(actx,
		chromedp.WithListener(func(ev any) {
			if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
				dialogs.Add(1)
			}
		}),
		chromedp.WithLogf(t.Logf))
	defer cancelBrowser()
	if err := chromedp.Do(bctx); err != nil { // starts the browser
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Logf("browser started in %s", time.Since(start).Round(time.Millisecond))

	var cons console
	cctx, stopConsole := context.WithCancel(bctx)
	consoleDone := make(chan struct{})
	messages := chromedp.Console(cctx)
	go func() {
		defer close(consoleDone)
		for msg, err := range messages {
			if err != nil {
				return
			}
			cons.add(msg)
		}
	}()

	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	screenshot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	eval := func(expr string) string {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return v
	}

	// The home page: the status, and a search box reached by keyboard.
	run("open the home page", chromedp.Navigate(d.srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#q")))
	screenshot("home.png")
	run("press Tab", chromedp.KeyEvent("\t"))
	if got := eval(`document.activeElement.getAttribute("href") || ""`); got != "#main" {
		t.Errorf("the first Tab focuses %q, want the skip link", got)
	}
	if got := eval(`document.querySelector("label[for=q]").textContent`); got != "DID or handle" {
		t.Errorf("search label %q", got)
	}

	// Search: type the DID and press Enter.
	run("search for the DID",
		chromedp.Focus(chromedp.CSS("#q")),
		chromedp.SendKeys(chromedp.CSS("#q"), id.DID+"\n"),
		chromedp.WaitVisible(chromedp.CSS("svg.timeline")))
	loc, err := chromedp.Run(bctx, chromedp.Location())
	if err != nil || loc != d.srv.URL+"/ui/"+id.DID {
		t.Fatalf("after the search the browser is at %q (%v), want /ui/%s", loc, err, id.DID)
	}

	// The fork: the two nullified ops on a second lane, to the right of
	// the main chain, and a branch edge leading to them.
	nodes, err := chromedp.Run(bctx, chromedp.AttributesAll(chromedp.CSSAll("svg.timeline g.op")))
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != len(ops) {
		t.Fatalf("%d nodes drawn, want %d", len(nodes), len(ops))
	}
	for i, n := range nodes {
		nullified := hasClass(n["class"], "nullified")
		if want := i == 2 || i == 3; nullified != want || (n["data-lane"] == "1") != want {
			t.Errorf("node #%d: class %q lane %s; want nullified on lane 1: %v", i+1, n["class"], n["data-lane"], want)
		}
	}
	geometry := eval(`JSON.stringify([...document.querySelectorAll("svg.timeline g.op .marker")].map(m => Math.round(m.getBoundingClientRect().x)))`)
	var xs []int
	if err := json.Unmarshal([]byte(geometry), &xs); err != nil || len(xs) != 6 {
		t.Fatalf("node positions %s: %v", geometry, err)
	}
	if !(xs[2] > xs[1] && xs[3] == xs[2] && xs[4] == xs[1] && xs[0] == xs[1]) {
		t.Errorf("node x positions %v: the nullified #3 and #4 are not drawn on a branch right of the chain", xs)
	}
	if got := eval(`String(document.querySelectorAll("svg.timeline path.branch").length) + "/" + String(document.querySelectorAll("svg.timeline rect.window").length)`); got != "1/1" {
		t.Errorf("branch edges / recovery windows: %s, want 1/1", got)
	}
	if got := eval(`document.querySelector("svg.timeline").getAttribute("role") + " " + document.querySelector("svg.timeline title").textContent`); !strings.HasPrefix(got, "img History graph of "+id.DID) {
		t.Errorf("svg role and title: %q", got)
	}
	screenshot("did-fork.png")

	// Follow the link to the raw audit log: JSON with the same history.
	run("open the raw audit log", chromedp.Click(chromedp.CSS("#raw-audit")), chromedp.WaitVisible(chromedp.CSS("pre")))
	if loc, _ := chromedp.Run(bctx, chromedp.Location()); loc != d.srv.URL+"/"+id.DID+"/log/audit" {
		t.Errorf("the link led to %q", loc)
	}
	raw, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("pre")))
	if err != nil {
		t.Fatal(err)
	}
	var audit []struct {
		CID       string `json:"cid"`
		Nullified bool   `json:"nullified"`
	}
	if err := json.Unmarshal([]byte(raw), &audit); err != nil {
		t.Fatalf("the audit log page is not JSON: %v\n%.300s", err, raw)
	}
	if len(audit) != len(ops) {
		t.Fatalf("audit log has %d entries, want %d", len(audit), len(ops))
	}
	for i, e := range audit {
		if e.CID != ops[i].CID() || e.Nullified != (i == 2 || i == 3) {
			t.Errorf("audit entry %d: %s nullified=%v", i, e.CID, e.Nullified)
		}
	}

	// A DID full of markup: shown as text, nothing runs.
	run("open the hostile DID", chromedp.Navigate(d.srv.URL+"/ui/"+hostile.DID), chromedp.WaitVisible(chromedp.CSS("svg.timeline")))
	if got := eval(`String(document.querySelectorAll("script, img, iframe, object, embed, [onerror], [onclick], [onload], [onmouseover], [onfocus]").length)`); got != "0" {
		t.Errorf("%s active elements in the hostile DID's page", got)
	}
	if got := eval(`[...document.querySelectorAll("a[href]")].map(a => a.protocol).filter(p => p !== "http:" && p !== "https:").join(",")`); got != "" {
		t.Errorf("links with schemes %q in the hostile DID's page", got)
	}
	screenshot("did-hostile.png")

	// Search a handle, typed in capitals: the one DID that claims it.
	run("search for a handle",
		chromedp.Navigate(d.srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#q")),
		chromedp.Focus(chromedp.CSS("#q")),
		chromedp.SendKeys(chromedp.CSS("#q"), "Alice.Example.Org\n"),
		chromedp.WaitVisible(chromedp.CSS("svg.timeline")))
	if loc, err := chromedp.Run(bctx, chromedp.Location()); err != nil || loc != d.srv.URL+"/ui/"+id.DID {
		t.Errorf("after the handle search the browser is at %q (%v), want /ui/%s", loc, err, id.DID)
	}
	// A handle two DIDs claim: a list of both.
	run("search for a handle two DIDs claim",
		chromedp.Navigate(d.srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#q")),
		chromedp.Focus(chromedp.CSS("#q")),
		chromedp.SendKeys(chromedp.CSS("#q"), "twin.test\n"),
		chromedp.WaitVisible(chromedp.CSS("ul.claims")))
	if got := eval(`[...document.querySelectorAll("ul.claims a")].map(a => a.getAttribute("href")).sort().join(" ")`); got != "/ui/"+min(twins[0].DID, twins[1].DID)+" /ui/"+max(twins[0].DID, twins[1].DID) {
		t.Errorf("the list of claimants links %q", got)
	}
	screenshot("handle-claims.png")

	// The divergences page of the mirror.
	run("open the divergences", chromedp.Navigate(d.srv.URL+"/"), chromedp.Click(chromedp.CSS(`header nav a[href="/ui/divergences"]`)),
		chromedp.WaitVisible(chromedp.CSS("table.divergences")))
	screenshot("divergences.png")

	stopConsole()
	<-consoleDone
	if n := dialogs.Load(); n > 0 {
		t.Errorf("%d JavaScript dialogs opened: a script ran", n)
	}
	for _, msg := range cons.all() {
		if strings.HasSuffix(msg.URL, "/favicon.ico") {
			continue // the browser asks for it; the directory has none
		}
		if msg.IsException() || strings.Contains(msg.Text, "Content Security Policy") || msg.Type == chromedp.ConsoleError {
			t.Errorf("console: %s (%s)", msg, msg.URL)
		}
	}
	if err := chromedp.Cancel(bctx); err != nil && !errors.Is(err, context.Canceled) {
		t.Logf("closing the browser: %v", err)
	}
	t.Logf("browser test took %s; screenshots in %s", time.Since(start).Round(time.Millisecond), shots)
}

// recordDivergences stores a few divergence records of source, one with
// hostile evidence.
func recordDivergences(t *testing.T, d *directory, source string) {
	t.Helper()
	recs := []struct{ did, reason, raw string }{
		{"did:plc:ewvi7nxzyoun6zhxrhs64oiz", "invalid signature: no rotation key of the previous op verifies it", `{"did":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","operation":{"sig":"AAAA"}}`},
		{"did:plc:ewvi7nxzyoun6zhxrhs64oiz", "history_rewrite: bafyreib… is gone from the upstream's audit log", `[{"cid":"bafyreib…"}]`},
		{"", "bad_response: GET /export?after=7: status 502", `<html><script>alert("evidence")</script></html>`},
	}
	var rejections []oplog.Rejection
	for i, r := range recs {
		rejections = append(rejections, oplog.Rejection{Source: source, Line: int64(i + 1), DID: r.did, Raw: []byte(r.raw), Reason: r.reason, CreatedAt: d.clock.Now()})
	}
	err := d.store.Append(context.Background(), source, nil, func(v oplog.View) (oplog.Batch, error) {
		c := v.Cursor
		c.Line += int64(len(recs))
		return oplog.Batch{Cursor: c, Rejections: rejections}, nil
	})
	if err != nil {
		t.Fatalf("record divergences: %v", err)
	}
}
