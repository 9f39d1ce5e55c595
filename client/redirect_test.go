package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/plcdir/plc/client"
)

// TestDirectoryClientDoesNotFollowRedirectOffOrigin: a directory redirects
// a client's requests to an address only the auditor can reach. The
// client never fetches it: the answer is the directory's own redirect, an
// error with its status. A redirect on the directory's origin is followed,
// except for export pages, which follow none.
func TestDirectoryClientDoesNotFollowRedirectOffOrigin(t *testing.T) {
	var insiderHits atomic.Int64
	insider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		insiderHits.Add(1)
		w.Write([]byte(`[]`))
	}))
	defer insider.Close()
	const did = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
	var moved atomic.Int64
	dir := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/export":
			if r.URL.Query().Get("moved") == "" {
				http.Redirect(w, r, "/export?moved=1&"+r.URL.RawQuery, http.StatusFound)
				return
			}
			moved.Add(1)
			w.Write([]byte(`{"seq":1}` + "\n"))
		case "/" + did + "/log/audit":
			http.Redirect(w, r, insider.URL+"/latest/meta-data", http.StatusFound)
		case "/" + did:
			http.Redirect(w, r, "/moved/"+did, http.StatusMovedPermanently)
		case "/moved/" + did:
			w.Write([]byte(`{"id":"` + did + `"}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer dir.Close()
	c, err := client.New(dir.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var se *client.StatusError

	_, _, err = c.AuditLog(ctx, did)
	if !errors.As(err, &se) || se.Status != http.StatusFound || !strings.Contains(err.Error(), "not followed") {
		t.Errorf("AuditLog through an off-origin redirect: %v, want a StatusError 302", err)
	}
	if n := insiderHits.Load(); n != 0 {
		t.Errorf("the client fetched the redirect's target %d times", n)
	}

	_, err = c.SeqPage(ctx, 0, 10)
	if !errors.As(err, &se) || se.Status != http.StatusFound {
		t.Errorf("ExportPage through a redirect: %v, want a StatusError 302", err)
	}
	if n := moved.Load(); n != 0 {
		t.Errorf("an export page followed a redirect on the origin (%d requests)", n)
	}

	doc, err := c.Document(ctx, did)
	if err != nil || doc.Status != http.StatusOK || !strings.Contains(string(doc.Body), did) {
		t.Errorf("Document through a redirect on the origin: %+v, %v; want it followed", doc, err)
	}
}
