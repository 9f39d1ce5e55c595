package main

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plcdir/plc/internal/optest"
	"github.com/plcdir/plc/oplog/tamper"
	"github.com/plcdir/plc/web"
)

// getPage fetches url with a browser's Accept header.
func getPage(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// checkPage fails unless the response is a UI page with status and the
// UI's headers, containing every want.
func checkPage(t *testing.T, url string, status int, wants ...string) {
	t.Helper()
	resp, body := getPage(t, url)
	if resp.StatusCode != status || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" || resp.Header.Get("Content-Security-Policy") != web.CSP {
		t.Fatalf("GET %s: %d %q, CSP %q", url, resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Security-Policy"))
	}
	for _, w := range wants {
		if !strings.Contains(body, w) {
			t.Errorf("GET %s: the page does not say %q", url, w)
		}
	}
}

// TestServeAndMirrorServeTheWebUI: the real binary serves the UI on /
// and /ui/… (plc serve and plc mirror alike), resolution stays JSON, and
// --no-ui turns the pages off.
func TestServeAndMirrorServeTheWebUI(t *testing.T) {
	dir := t.TempDir()
	a := startServer(t, filepath.Join(dir, "a.sqlite"))
	id := optest.NewIdentity(t, "web.test", 1)
	if code, body, err := post(a.url, id.Head, id.DID); err != nil || code != 200 {
		t.Fatalf("genesis: %d %s %v", code, body, err)
	}
	checkPage(t, a.url+"/", http.StatusOK, "Directory status", "Transparency log")
	checkPage(t, a.url+"/ui/"+id.DID, http.StatusOK, id.DID, "at://web.test", "History")
	checkPage(t, a.url+"/ui/did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", http.StatusNotFound, "DID not registered")
	checkPage(t, a.url+"/ui/divergences", http.StatusNotFound, "Not a mirror")
	if resp, body := getPage(t, a.url+"/"+id.DID); resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/did+ld+json; charset=utf-8" ||
		!strings.HasPrefix(body, `{"@context":`) {
		t.Errorf("GET /:did from a browser: %d %q %.60s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}

	m := startMirror(t, a.url, filepath.Join(dir, "m.sqlite"))
	m.await(t, "mirror: following the upstream's stream")
	checkPage(t, m.url+"/", http.StatusOK, "Mirror", a.url, "/ui/divergences")
	checkPage(t, m.url+"/ui/divergences", http.StatusOK, "No divergence recorded")
	checkPage(t, m.url+"/ui/"+id.DID, http.StatusOK, id.DID, "at://web.test")
	// The mirror indexed the handle as it ingested the op: the search
	// redirects to the DID's page.
	checkPage(t, a.url+"/ui/search?q=WEB.test", http.StatusOK, id.DID, "at://web.test")
	checkPage(t, m.url+"/ui/search?q=web.test", http.StatusOK, id.DID, "at://web.test")
	checkPage(t, m.url+"/ui/search?q=nobody.test", http.StatusNotFound, "Handle not known here")

	off := startServer(t, filepath.Join(dir, "off.sqlite"), "--no-ui")
	for _, p := range []string{"/", "/ui/" + id.DID} {
		resp, body := getPage(t, off.url+p)
		if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Content-Type") != "application/json; charset=utf-8" {
			t.Errorf("--no-ui: GET %s: %d %q %s", p, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}
}

// TestServeFillsInTheHandleIndexOfAnOlderDatabase: a database written
// before the handle index (its ops, no handles) gets its index filled in
// beside the running directory, after which the search finds the handle.
func TestServeFillsInTheHandleIndexOfAnOlderDatabase(t *testing.T) {
	backends(t, func(t *testing.T, db string) {
		first := startProc(t, "serve", "--db", db, "--listen", "127.0.0.1:0", "--log-format", "json")
		handles := []string{"early.test", "Second.test", "third.test"}
		var ids []*optest.Identity
		for _, h := range handles {
			id := optest.NewIdentity(t, h, 1)
			if code, body, err := post(first.url, id.Head, id.DID); err != nil || code != 200 {
				t.Fatalf("genesis: %d %s %v", code, body, err)
			}
			ids = append(ids, id)
		}
		first.kill()
		// The database as migration 4 leaves one an earlier plc wrote: ops,
		// no handles, all of them to index.
		tamper.Exec(t, db, `DELETE FROM handles`, `UPDATE handles_backfill SET done = 0`)
		p := startProc(t, "serve", "--db", db, "--listen", "127.0.0.1:0", "--log-format", "json")
		if line := p.await(t, "handle index filled in"); line["ops"] != float64(len(ids)) {
			t.Errorf("the catch-up indexed %v ops, want %d", line["ops"], len(ids))
		}
		for i, id := range ids {
			checkPage(t, p.url+"/ui/search?q="+handles[i], http.StatusOK, id.DID)
		}
	})
}
