package api

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// readPaths are the read routes of a DID, as path suffixes.
var readPaths = []string{"", "/data", "/log", "/log/audit", "/log/last"}

// cacheModes run a test without and with the cache of rendered answers:
// HTTP caching must not depend on it.
var cacheModes = []struct {
	name  string
	bytes int64
}{{"nocache", 0}, {"cache", 1 << 20}}

func forEachBackendAndCache(t *testing.T, f func(t *testing.T, env *apiEnv)) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, m := range cacheModes {
			t.Run(m.name, func(t *testing.T) {
				f(t, newAPIEnv(t, b, envOptions{config: func(c *Config) { c.ReadCacheBytes = m.bytes }}))
			})
		}
	})
}

// etags returns the ETag of each read route of did, checking each 200's
// Cache-Control.
func etags(t *testing.T, env *apiEnv, did string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, p := range readPaths {
		r := env.get("/" + did + p)
		if r.status != http.StatusOK {
			continue
		}
		tag := r.header.Get("ETag")
		if !strings.HasPrefix(tag, `"`) || !strings.HasSuffix(tag, `"`) || len(tag) < 3 {
			t.Errorf("GET /%s%s: ETag %q, want a strong entity tag", did, p, tag)
		}
		if cc := r.header.Get("Cache-Control"); cc != "public, max-age=5" {
			t.Errorf("GET /%s%s: Cache-Control %q", did, p, cc)
		}
		out[p] = tag
	}
	return out
}

func TestReadRoutesAnswer304ToTheirETag(t *testing.T) {
	forEachBackendAndCache(t, func(t *testing.T, env *apiEnv) {
		ks := keys(t, 2)
		g := genesisOp(t, "alice.test", ks[0], ks[0], ks[1])
		did := g.GenesisDID()
		env.mustSubmit(did, g)
		tags := etags(t, env, did)
		if len(tags) != len(readPaths) {
			t.Fatalf("ETags of %d routes, want %d", len(tags), len(readPaths))
		}
		seen := map[string]string{}
		for _, p := range readPaths {
			tag := tags[p]
			if q, dup := seen[tag]; dup {
				t.Errorf("routes %q and %q share the ETag %s", q, p, tag)
			}
			seen[tag] = p
			path := "/" + did + p
			full := env.get(path)
			for _, inm := range []string{tag, "W/" + tag, "*", `"other", ` + tag, `"a",W/` + tag + `,"b"`} {
				for _, method := range []string{http.MethodGet, http.MethodHead} {
					r := env.do(method, path, nil, "If-None-Match", inm)
					if r.status != http.StatusNotModified || len(r.body) != 0 {
						t.Errorf("%s %s If-None-Match %s: %d %q, want 304 without a body", method, path, inm, r.status, r.body)
					}
					if r.header.Get("ETag") != tag || r.header.Get("Cache-Control") != "public, max-age=5" {
						t.Errorf("%s %s 304: ETag %q Cache-Control %q", method, path, r.header.Get("ETag"), r.header.Get("Cache-Control"))
					}
				}
			}
			for _, inm := range []string{`"other"`, strings.TrimSuffix(tag, `"`) + `x"`, `W/"x", "y"`, "garbage " + tag} {
				r := env.do(http.MethodGet, path, nil, "If-None-Match", inm)
				if r.status != http.StatusOK || string(r.body) != string(full.body) || r.header.Get("ETag") != tag {
					t.Errorf("GET %s If-None-Match %s: %d, want the full 200", path, inm, r.status)
				}
			}
			h := env.do(http.MethodHead, path, nil)
			if h.status != http.StatusOK || len(h.body) != 0 || h.header.Get("ETag") != tag {
				t.Errorf("HEAD %s: %d ETag %q body %q", path, h.status, h.header.Get("ETag"), h.body)
			}
		}
	})
}

func TestETagChangesAfterUpdateAndNullification(t *testing.T) {
	forEachBackendAndCache(t, func(t *testing.T, env *apiEnv) {
		did, g, _, ks := recoverySetup(t, env)
		before := etags(t, env, did)
		// The recovery op nullifies u1: every route's answer changes,
		// /log/audit's by u1's nullified flag.
		env.clock.Advance(time.Hour)
		r := updateOp(t, g, "alice.test", ks[0], ks[0])
		env.mustSubmit(did, r)
		after := etags(t, env, did)
		for _, p := range readPaths {
			if before[p] == after[p] {
				t.Errorf("%s: ETag %s unchanged by a nullification", p, after[p])
			}
			res := env.do(http.MethodGet, "/"+did+p, nil, "If-None-Match", before[p])
			if res.status != http.StatusOK {
				t.Errorf("%s with the ETag from before the nullification: %d, want 200", p, res.status)
			}
			if !strings.Contains(string(env.get("/"+did+"/log/audit").body), `"nullified":true`) {
				t.Errorf("audit log does not show the nullification")
			}
		}
		// An update with nothing nullified.
		env.clock.Advance(time.Minute)
		u := updateOp(t, r, "carol.test", ks[0], ks[0])
		env.mustSubmit(did, u)
		updated := etags(t, env, did)
		for _, p := range readPaths {
			if updated[p] == after[p] {
				t.Errorf("%s: ETag %s unchanged by an update", p, updated[p])
			}
		}
	})
}

func TestReadErrorsCarryNoETagAndNoCache(t *testing.T) {
	forEachBackendAndCache(t, func(t *testing.T, env *apiEnv) {
		ks := keys(t, 2)
		g := genesisOp(t, "alice.test", ks[0], ks[0], ks[1])
		did := g.GenesisDID()
		check := func(path string, status int) {
			t.Helper()
			for _, inm := range []string{"", "*"} {
				r := env.do(http.MethodGet, path, nil, "If-None-Match", inm)
				if r.status != status || r.header.Get("ETag") != "" || r.header.Get("Cache-Control") != "no-cache" {
					t.Errorf("GET %s (If-None-Match %q): %d ETag %q Cache-Control %q, want %d, no ETag, no-cache",
						path, inm, r.status, r.header.Get("ETag"), r.header.Get("Cache-Control"), status)
				}
			}
		}
		for _, p := range readPaths {
			check("/"+did+p, http.StatusNotFound)
			check("/did:web:example.com"+p, http.StatusBadRequest)
		}
		check("/"+did+"/log/audit?proof=maybe", http.StatusBadRequest)

		// A tombstoned DID: no document (404, no ETag), its logs as ever.
		env.mustSubmit(did, g)
		env.clock.Advance(time.Minute)
		env.mustSubmit(did, tombstoneOp(t, g, ks[1]))
		check("/"+did, http.StatusNotFound)
		check("/"+did+"/data", http.StatusNotFound)
		for _, p := range []string{"/log", "/log/audit", "/log/last"} {
			r := env.get("/" + did + p)
			if r.status != http.StatusOK || r.header.Get("ETag") == "" {
				t.Errorf("GET %s of a tombstoned DID: %d ETag %q", p, r.status, r.header.Get("ETag"))
			}
		}
	})
}

func TestExportCacheControl(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		env := newAPIEnv(t, b, envOptions{noRateLimit: true})
		ks := keys(t, 1)
		for i := range 3 {
			g := genesisOp(t, fmt.Sprintf("u%d.test", i), ks[0], ks[0])
			env.mustSubmit(g.GenesisDID(), g)
		}
		for _, c := range []struct {
			path, want string
		}{
			{"/export?after=0&count=3", "public, max-age=31536000, immutable"},
			{"/export?after=1&count=2", "public, max-age=31536000, immutable"},
			{"/export?after=0&count=4", "no-cache"},
			{"/export?after=0", "no-cache"},
			{"/export?after=3&count=1", "no-cache"},
			{"/export?count=3", "no-cache"}, // legacy mode: nullified may change
			{"/export?after=2026-01-01T00:00:00Z&count=1", "no-cache"},
			{"/export?count=x", "no-cache"},
		} {
			r := env.get(c.path)
			if got := r.header.Get("Cache-Control"); got != c.want {
				t.Errorf("GET %s: Cache-Control %q, want %q", c.path, got, c.want)
			}
		}
	})
}

func TestNoneMatch(t *testing.T) {
	const tag = `"doc-7-bafy"`
	for _, c := range []struct {
		fields []string
		want   bool
	}{
		{nil, false},
		{[]string{""}, false},
		{[]string{tag}, true},
		{[]string{"W/" + tag}, true},
		{[]string{" * "}, true},
		{[]string{`"a"`, tag}, true},
		{[]string{`"a", "b"`}, false},
		{[]string{`"a",` + tag}, true},
		{[]string{`"a,b", ` + tag}, true},
		{[]string{`"doc-7-bafy`}, false},
		{[]string{`doc-7-bafy`}, false},
		{[]string{`"x" junk ` + tag}, false},
		{[]string{`"doc-7-baf"`}, false},
		{[]string{`W/"doc-7-bafyx"`}, false},
	} {
		if got := noneMatch(c.fields, tag); got != c.want {
			t.Errorf("noneMatch(%q) = %t, want %t", c.fields, got, c.want)
		}
	}
}
