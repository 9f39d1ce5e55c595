package tlog_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/plcdir/plc/oplog/storetest"
	"github.com/plcdir/plc/tlog"
)

// A tile index so large that the tile's first entry overflows int64 wraps
// around to a small number unless it is checked: the log then served tile
// 000's bytes under the huge index, marked immutable for a year. Such a
// path names a tile no tree can hold: 404, never cached. Every number of a
// tile path is parsed strictly; any other spelling of a tile is a 400.
func TestTileIndexOverflowIsNotTileZero(t *testing.T) {
	s, _ := storetest.SQLite(t)
	load(t, s, corpusLines(t, 300), 100)
	tl := tlog.New(s, newKey(t, "plc.test"), tlog.Options{})
	srv := httptest.NewServer(tl)
	defer srv.Close()
	get := func(path string) (int, http.Header, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	for _, p := range []string{"/tlog/tile/0/000", "/tlog/tile/entries/000", "/tlog/tile/0/001.p/44", "/tlog/tile/1/000.p/1"} {
		if code, _, b := get(p); code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", p, code, b)
		}
	}
	for _, tc := range []struct {
		path string
		code int
	}{
		// 2^56: ·256 wraps to 0.
		{"/tlog/tile/0/x072/x057/x594/x037/x927/936", 404},
		{"/tlog/tile/entries/x072/x057/x594/x037/x927/936", 404},
		{"/tlog/tile/0/x072/x057/x594/x037/x927/936.p/1", 404},
		// 2^48 at level 1, 2^40 at level 2: the level's shift wraps.
		{"/tlog/tile/1/x281/x474/x976/x710/656", 404},
		{"/tlog/tile/2/x001/x099/x511/x627/776", 404},
		// Beyond int64 (2^63), and far beyond.
		{"/tlog/tile/0/x009/x223/x372/x036/x854/x775/808", 404},
		{"/tlog/tile/entries/x999/x999/x999/x999/x999/x999/x999/x999/999", 404},
		// Levels whose first tile spans 2^64 entries or more.
		{"/tlog/tile/8/000", 404},
		{"/tlog/tile/63/000.p/1", 404},
		// Malformed: signs, leading zeros, wrong digit groups, widths and
		// levels out of range.
		{"/tlog/tile/0/+00", 400},
		{"/tlog/tile/0/-01", 400},
		{"/tlog/tile/0/00", 400},
		{"/tlog/tile/0/0000", 400},
		{"/tlog/tile/0/x000/001", 400},
		{"/tlog/tile/0/x01/000", 400},
		{"/tlog/tile/0/001/x001", 400},
		{"/tlog/tile/0/y001/000", 400},
		{"/tlog/tile/0/000.p/0", 400},
		{"/tlog/tile/0/000.p/256", 400},
		{"/tlog/tile/0/000.p/+5", 400},
		{"/tlog/tile/0/000.p/05", 400},
		{"/tlog/tile/0/000.p/", 400},
		{"/tlog/tile/00/000", 400},
		{"/tlog/tile/+0/000", 400},
		{"/tlog/tile/64/000", 400},
		{"/tlog/tile/99999999999999999999/000", 400},
		{"/tlog/tile/0/%20000", 400},
		{"/tlog/tile/0/", 400},
		{"/tlog/tile/entries", 400},
		{"/tlog/proof/consistency?old=%2B5&new=300", 400},
		{"/tlog/proof/consistency?old=05&new=300", 400},
		{"/tlog/proof/consistency?old=5&old=6&new=300", 400},
		{"/tlog/proof/consistency?old=5&new=99999999999999999999", 400},
		{"/tlog/proof/consistency?old=-0&new=300", 400},
		{"/tlog/proof/consistency?old=5&new=300", 200},
	} {
		code, h, b := get(tc.path)
		if code != tc.code {
			t.Errorf("GET %s: %d %.200q, want %d", tc.path, code, b, tc.code)
		}
		if code != http.StatusOK && strings.Contains(h.Get("Cache-Control"), "immutable") {
			t.Errorf("GET %s: %d cached as immutable", tc.path, code)
		}
		if code != http.StatusOK && !strings.HasPrefix(b, `{"message":`) {
			t.Errorf("GET %s: %d body %.200q, want a JSON message", tc.path, code, b)
		}
	}
}

// rawGet fetches path without the transport's transparent gzip handling,
// so the test sees the bytes and the Content-Encoding the log sent.
func rawGet(t *testing.T, url, acceptEncoding string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if acceptEncoding != "" {
		req.Header.Set("Accept-Encoding", acceptEncoding)
	}
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// A partial tile or entry bundle is named by its width: its bytes never
// change, like a full one's. The log served them with max-age=1, so every
// CDN and client fetched them again and again; C2SP tlog-tiles asks for
// long-lived caching headers on the whole tile endpoint.
func TestPartialTilesAreNotServedAsMutable(t *testing.T) {
	s, _ := storetest.SQLite(t)
	load(t, s, corpusLines(t, 300), 100)
	srv := httptest.NewServer(tlog.New(s, newKey(t, "plc.test/tlog"), tlog.Options{}))
	defer srv.Close()
	for _, p := range []string{
		"/tlog/tile/0/000", "/tlog/tile/0/001.p/44", "/tlog/tile/1/000.p/1",
		"/tlog/tile/entries/000", "/tlog/tile/entries/001.p/44",
	} {
		// Twice: the second answer of a full tile comes from the cache.
		for range 2 {
			resp, b := rawGet(t, srv.URL+p, "")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s: %d %s", p, resp.StatusCode, b)
			}
			if cc := resp.Header.Get("Cache-Control"); cc != "public, max-age=31536000, immutable" {
				t.Errorf("GET %s: Cache-Control %q, want it immutable", p, cc)
			}
		}
	}
}

// C2SP tlog-tiles: entry bundles SHOULD be compressed at the HTTP layer.
// A client that accepts gzip gets the bundle gzip-encoded (the same bytes
// once decompressed), one that does not, or refuses it with q=0, gets it
// as it is; hash tiles, which do not compress, are never encoded.
func TestEntryBundlesAreGzipEncodedWhenAccepted(t *testing.T) {
	s, _ := storetest.SQLite(t)
	load(t, s, corpusLines(t, 300), 100)
	srv := httptest.NewServer(tlog.New(s, newKey(t, "plc.test/tlog"), tlog.Options{}))
	defer srv.Close()
	for _, p := range []string{"/tlog/tile/entries/000", "/tlog/tile/entries/001.p/44"} {
		_, plain := rawGet(t, srv.URL+p, "")
		for _, tc := range []struct {
			accept string
			gzip   bool
		}{
			{"", false},
			{"identity", false},
			{"gzip", true},
			{"gzip, identity", true},
			{"br;q=1.0, GZIP;q=0.5", true},
			{"*", true},
			{"gzip;q=0", false},
			{"gzip;q=0, *", false},
			{"*;q=0", false},
			{"deflate", false},
		} {
			// Twice: a full bundle's second answer comes from the cache,
			// which keeps each encoding apart.
			for range 2 {
				resp, b := rawGet(t, srv.URL+p, tc.accept)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("GET %s: %d %s", p, resp.StatusCode, b)
				}
				if v := resp.Header.Get("Vary"); v != "Accept-Encoding" {
					t.Errorf("GET %s: Vary %q, want Accept-Encoding", p, v)
				}
				enc := resp.Header.Get("Content-Encoding")
				if !tc.gzip {
					if enc != "" || !bytes.Equal(b, plain) {
						t.Fatalf("GET %s, Accept-Encoding %q: Content-Encoding %q, want the bundle unencoded", p, tc.accept, enc)
					}
					continue
				}
				if enc != "gzip" {
					t.Fatalf("GET %s, Accept-Encoding %q: Content-Encoding %q, want gzip", p, tc.accept, enc)
				}
				zr, err := gzip.NewReader(bytes.NewReader(b))
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(zr)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, plain) {
					t.Fatalf("GET %s: the gzip body holds other bytes than the bundle", p)
				}
				if len(b) >= len(plain) {
					t.Errorf("GET %s: gzip body of %d bytes for a bundle of %d", p, len(b), len(plain))
				}
			}
		}
	}
	resp, _ := rawGet(t, srv.URL+"/tlog/tile/0/000", "gzip")
	if enc := resp.Header.Get("Content-Encoding"); enc != "" {
		t.Errorf("hash tile: Content-Encoding %q, want none", enc)
	}
}
