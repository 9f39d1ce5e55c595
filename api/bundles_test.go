package api

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/plcdir/plc/bundle"
)

// TestBundlesRouteServesTheFolderOnly: GET /bundles/<file> serves the
// folder's index and bundles, with their cache headers, and nothing
// outside it; without a folder every name is a JSON 404.
func TestBundlesRouteServesTheFolderOnly(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, bundle.IndexName), []byte(`{}`), 0o644)
	os.WriteFile(filepath.Join(dir, bundle.FileName(1)), []byte("zstd"), 0o644)
	os.WriteFile(filepath.Join(filepath.Dir(dir), "secret"), []byte("x"), 0o644)
	env := newAPIEnv(t, backends[0], envOptions{config: func(c *Config) { c.Bundles = bundle.Handler(dir) }})
	r := env.get("/bundles/" + bundle.IndexName)
	r.expect(t, http.StatusOK, "application/json", `{}`)
	if got := r.header.Get("Cache-Control"); got != "no-cache" {
		t.Errorf("index: Cache-Control %q", got)
	}
	r = env.get("/bundles/000001.jsonl.zst")
	r.expect(t, http.StatusOK, "application/zstd", "zstd")
	if got := r.header.Get("Cache-Control"); got != "public, max-age=31536000, immutable" {
		t.Errorf("bundle: Cache-Control %q", got)
	}
	for _, p := range []string{"/bundles/..%2fsecret", "/bundles/%2e%2e/secret", "/bundles/000002.jsonl.zst", "/bundles/x/" + bundle.IndexName} {
		if r := env.get(p); r.status != http.StatusNotFound {
			t.Errorf("%s: %d %s, want 404", p, r.status, r.body)
		}
	}

	none := newAPIEnv(t, backends[0], envOptions{})
	none.get("/bundles/"+bundle.IndexName).expectMessage(t, http.StatusNotFound, "Not Found: this directory serves no bundles")
}
