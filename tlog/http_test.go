package tlog_test

import (
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
