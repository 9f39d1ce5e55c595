package api

import (
	"net/http"
	"slices"
	"testing"
)

// TestUIIsMountedOnlyAtItsPaths: Config.UI gets GET /, /ui and /ui/…,
// nothing else; every API route answers as without it, whatever the
// Accept header asks for, so no API client ever gets HTML.
func TestUIIsMountedOnlyAtItsPaths(t *testing.T) {
	var seen []string
	ui := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.URL.Path)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte("<p>page</p>"))
	})
	with := newAPIEnv(t, backends[0], envOptions{config: func(c *Config) { c.UI = ui }})
	without := newAPIEnv(t, backends[0], envOptions{})
	k := keys(t, 1)[0]
	g := genesisOp(t, "ui.test", k, k)
	did := g.GenesisDID()
	with.mustSubmit(did, g)
	without.mustSubmit(did, g)

	for _, p := range []string{"/", "/ui", "/ui/", "/ui/" + did, "/ui/search?q=x", "/ui/a/b/c"} {
		with.get(p).expect(t, http.StatusOK, "text/html; charset=utf-8", "<p>page</p>")
	}
	if want := []string{"/", "/ui", "/ui", "/ui/" + did, "/ui/search", "/ui/a/b/c"}; !slices.Equal(seen, want) {
		// "/ui/" arrives as "/ui": one trailing slash is ignored, as on
		// every route.
		t.Errorf("the UI saw %q, want %q", seen, want)
	}
	seen = nil
	browser := "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
	for _, p := range []string{"/" + did, "/" + did + "/data", "/" + did + "/log", "/" + did + "/log/audit", "/" + did + "/log/last",
		"/_health", "/export?after=0", "/openapi.yaml", "/did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "/ui:x", "/uix"} {
		for _, accept := range []string{"", "application/json", browser} {
			var h []string
			if accept != "" {
				h = []string{"Accept", accept}
			}
			got, want := with.do(http.MethodGet, p, nil, h...), without.do(http.MethodGet, p, nil, h...)
			if got.status != want.status || got.header.Get("Content-Type") != want.header.Get("Content-Type") || string(got.body) != string(want.body) {
				t.Errorf("GET %s (Accept %q) with a UI: %d %q %.80s; without: %d %q %.80s", p, accept,
					got.status, got.header.Get("Content-Type"), got.body, want.status, want.header.Get("Content-Type"), want.body)
			}
		}
	}
	if len(seen) > 0 {
		t.Errorf("API requests reached the UI: %q", seen)
	}
	// Without a UI, its paths are the API's JSON 404s.
	without.get("/").expectMessage(t, http.StatusNotFound, "Not Found")
	without.get("/ui/"+did).expectMessage(t, http.StatusNotFound, "Not Found")
}
