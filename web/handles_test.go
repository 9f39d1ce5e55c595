package web_test

import (
	"bytes"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plcdir/plc/internal/optest"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/web"
)

// searchFor runs a search for q.
func (d *directory) searchFor(q string) response {
	d.t.Helper()
	r := d.get("/ui/search?q=" + url.QueryEscape(q))
	checkUIHeaders(d.t, "search "+q, r)
	return r
}

// wantRedirect fails unless searching q redirects to did's page.
func (d *directory) wantRedirect(q, did string) {
	d.t.Helper()
	if r := d.searchFor(q); r.status != http.StatusSeeOther || r.header.Get("Location") != "/ui/"+did {
		d.t.Errorf("search %q: %d to %q, want 303 to /ui/%s\n%s", q, r.status, r.header.Get("Location"), did, r.body)
	}
}

// wantUnknown fails unless searching q answers the page of a handle not
// known here.
func (d *directory) wantUnknown(q string) response {
	d.t.Helper()
	r := d.searchFor(q)
	if r.status != http.StatusNotFound || !bytes.Contains(r.body, []byte("Handle not known here")) ||
		!bytes.Contains(r.body, []byte(".well-known/atproto-did")) {
		d.t.Errorf("search %q: %d, want 404 saying the handle is not known here and how to resolve it\n%s", q, r.status, r.body)
	}
	return r
}

// listed returns the DIDs a handle page links to.
func listed(t *testing.T, r response) []string {
	t.Helper()
	var out []string
	for _, a := range find(doc(t, r.body), "a") {
		if href, _ := attr(a, "href"); strings.HasPrefix(href, "/ui/did:plc:") {
			out = append(out, strings.TrimPrefix(href, "/ui/"))
		}
	}
	return out
}

func TestHandleSearchFindsTheDIDThatClaimsIt(t *testing.T) {
	d := newDirectory(t, dirOptions{noTLog: true})
	id := optest.NewIdentity(t, "Alice.Test", 1)
	d.submit(id.DID, id.Head)
	for _, q := range []string{"alice.test", "ALICE.TEST", "at://alice.test", "@alice.test", "  alice.test\n", "alice.test/"} {
		d.wantRedirect(q, id.DID)
	}
	if r := d.get("/"); !bytes.Contains(r.body, []byte("DID or handle")) {
		t.Errorf("the search box does not offer handles")
	}
}

// TestStaleHandleIsNotFound: the index keeps the pair of a handle a DID
// no longer claims; the search must not lead there.
func TestStaleHandleIsNotFound(t *testing.T) {
	d := newDirectory(t, dirOptions{noTLog: true})
	id := optest.NewIdentity(t, "old.test", 1)
	d.submit(id.DID, id.Head)
	d.clock.Advance(time.Minute)
	u := id.Update(t, nil, 0, "new.test")
	d.submit(id.DID, u)
	id.Accept(u)
	if _, err := oplog.CatchUpHandles(t.Context(), d.store, 0, nil); err != nil {
		t.Fatal(err)
	}
	if dids, err := d.store.DIDsForHandle(t.Context(), "old.test"); err != nil || !slices.Equal(dids, []string{id.DID}) {
		t.Fatalf("the index lost the old pair (%v, %v): the test would prove nothing", dids, err)
	}
	d.wantUnknown("old.test")
	d.wantRedirect("new.test", id.DID)

	// A tombstoned DID claims nothing.
	d.clock.Advance(time.Minute)
	d.submit(id.DID, id.Tombstone(t, nil, 0))
	d.wantUnknown("new.test")
}

// TestNullifiedHandleIsNotFound: a hijack's handle, undone by a
// recovery, is not the DID's.
func TestNullifiedHandleIsNotFound(t *testing.T) {
	d := newDirectory(t, dirOptions{noTLog: true})
	id, _ := forkedDID(t, d)
	d.wantUnknown("mallory.test")
	d.wantUnknown("alice.example.com") // replaced by the last update
	d.wantRedirect("alice.example.org", id.DID)
}

// TestHandleClaimedByTwoDIDsIsListed: alsoKnownAs is a claim anyone can
// write, so a handle two DIDs claim is a list, never a guess.
func TestHandleClaimedByTwoDIDsIsListed(t *testing.T) {
	d := newDirectory(t, dirOptions{noTLog: true})
	a := optest.NewIdentity(t, "shared.test", 1)
	b := optest.NewIdentity(t, "Shared.Test", 1)
	d.submit(a.DID, a.Head)
	d.submit(b.DID, b.Head)
	r := d.searchFor("shared.test")
	if r.status != http.StatusOK {
		t.Fatalf("search: %d, want 200 listing both DIDs\n%s", r.status, r.body)
	}
	want := slices.Sorted(slices.Values([]string{a.DID, b.DID}))
	if got := listed(t, r); !slices.Equal(got, want) {
		t.Errorf("listed %v, want %v", got, want)
	}
	page := doc(t, r.body)
	if !strings.Contains(text(page), "proves nothing") || !strings.Contains(text(page), "_atproto.shared.test") {
		t.Errorf("the list does not say a claim is no proof")
	}
	if in := find(page, "input", "id", "q"); len(in) != 1 {
		t.Errorf("no search box on the list")
	} else if v, _ := attr(in[0], "value"); v != "shared.test" {
		t.Errorf("the box holds %q", v)
	}
	// Once one of them drops the claim, the other is the answer.
	d.clock.Advance(time.Minute)
	u := b.Update(t, nil, 0, "b.test")
	d.submit(b.DID, u)
	d.wantRedirect("shared.test", a.DID)
}

// TestMaliciousHandleQueriesAreRejected: what is not a handle never
// reaches the database, and comes back only as the search box's value.
func TestMaliciousHandleQueriesAreRejected(t *testing.T) {
	d := newDirectory(t, dirOptions{noTLog: true})
	for _, q := range []string{
		`<script>alert(1)</script>.test`,
		`evil.test"><script>alert(1)</script>`,
		"evil\u202e.test",
		"evil.test\x00",
		"a..test",
		"-evil.test",
		"evil.test/../../etc/passwd",
		"evil.test' OR '1'='1",
		strings.Repeat("a.", 130) + "test",
		"did:web:evil.test",
	} {
		r := d.searchFor(q)
		if r.status != http.StatusBadRequest || !bytes.Contains(r.body, []byte("Not a did:plc or a handle")) {
			t.Errorf("search %.40q: %d, want 400\n%s", q, r.status, r.body)
			continue
		}
		page := doc(t, r.body)
		if len(find(page, "script")) > 0 {
			t.Errorf("search %.40q: a script element made it into the page", q)
		}
		if in := find(page, "input", "id", "q"); len(in) != 1 {
			t.Errorf("search %.40q: no search box", q)
		} else if v, _ := attr(in[0], "value"); v != strings.ToValidUTF8(q, "\uFFFD") && !strings.Contains(q, "\x00") {
			t.Errorf("search %.40q: box holds %.40q", q, v)
		}
	}
}

// TestHandleSearchCatchesTheIndexUp: the index follows the log behind it;
// a search brings it up to date when that is little work, and says how
// far behind it is otherwise (a whole upgraded database being filled in).
func TestHandleSearchCatchesTheIndexUp(t *testing.T) {
	d := newDirectory(t, dirOptions{noTLog: true})
	id := optest.NewIdentity(t, "early.test", 1)
	d.submit(id.DID, id.Head)
	if n, err := d.store.HandlesBehind(t.Context()); err != nil || n != 1 {
		t.Fatalf("HandlesBehind after a submission = %d, %v; want 1 (no append writes the index)", n, err)
	}
	d.wantRedirect("early.test", id.DID)
	if n, err := d.store.HandlesBehind(t.Context()); err != nil || n != 0 {
		t.Fatalf("HandlesBehind after the search = %d, %v", n, err)
	}

	late := optest.NewIdentity(t, "late.test", 1)
	d.submit(late.DID, late.Head)
	far := httptestServer(t, web.New(web.Config{Store: d.store, HandleCatchUp: -1}))
	r := fetch(t, http.MethodGet, far+"/ui/search?q=late.test")
	if r.status != http.StatusNotFound || !bytes.Contains(r.body, []byte("(1 to go)")) {
		t.Errorf("a search that does not catch up: %d, the page does not say the index is behind\n%s", r.status, r.body)
	}
	if n, err := oplog.CatchUpHandles(t.Context(), d.store, 0, nil); err != nil || n != 1 {
		t.Fatalf("CatchUpHandles = %d, %v", n, err)
	}
	if r := fetch(t, http.MethodGet, far+"/ui/search?q=late.test"); r.status != http.StatusSeeOther {
		t.Errorf("after the catch-up: %d", r.status)
	}
}

// bareStore is a store without the handle index.
type bareStore struct{ oplog.Store }

func TestStoreWithoutHandleIndexSaysSo(t *testing.T) {
	d := newDirectory(t, dirOptions{noTLog: true})
	ui := web.New(web.Config{Store: bareStore{d.store}})
	srv := httptestServer(t, ui)
	r := fetch(t, http.MethodGet, srv+"/ui/search?q=alice.test")
	if r.status != http.StatusBadRequest || !bytes.Contains(r.body, []byte("Handles are not indexed")) {
		t.Errorf("search without an index: %d\n%s", r.status, r.body)
	}
	if r := fetch(t, http.MethodGet, srv+"/"); bytes.Contains(r.body, []byte("DID or handle")) {
		t.Errorf("the search box offers handles without an index")
	}
}
