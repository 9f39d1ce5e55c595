package mirror_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/plcdir/plc/mirror"
	"github.com/plcdir/plc/oplog"
)

// insider is a server only the mirror can reach (a cloud metadata
// service, an admin port): a hostile upstream redirects the mirror there.
// It counts the requests that reach it.
type insider struct {
	URL  string
	hits atomic.Int64
}

// insiderSecret is what the insider serves: it must never be fetched, let
// alone published as evidence.
const insiderSecret = "INSIDER-SECRET-credentials"

func newInsider(t *testing.T) *insider {
	t.Helper()
	in := &insider{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in.hits.Add(1)
		w.Write([]byte(insiderSecret))
	}))
	t.Cleanup(srv.Close)
	in.URL = srv.URL
	return in
}

// redirectTo answers with a 302 to target.
func redirectTo(w http.ResponseWriter, target string) {
	w.Header().Set("Location", target)
	w.WriteHeader(http.StatusFound)
	w.Write([]byte("moved"))
}

// checkRedirectEvidence fails unless d is a bad response whose evidence is
// the upstream's own redirect answer to location, and holds nothing of the
// insider's.
func checkRedirectEvidence(t *testing.T, d divergence, location string) {
	t.Helper()
	ev := string(d.evidence(t))
	if d.Kind != string(oplog.KindBadResponse) || !strings.Contains(d.Reason, "status 302") || !strings.Contains(d.Reason, "not followed") {
		t.Errorf("divergence #%d: %s %q, want a bad response naming the redirect not followed", d.ID, d.Kind, d.Reason)
	}
	if !strings.HasPrefix(ev, "HTTP/1.1 302 Found\r\n") || !strings.Contains(ev, "Location: "+location+"\r\n") || !strings.HasSuffix(ev, "\r\n\r\nmoved") {
		t.Errorf("divergence #%d: evidence %q, want the upstream's redirect answer to %s", d.ID, ev, location)
	}
	if strings.Contains(ev, insiderSecret) || strings.Contains(d.Reason, insiderSecret) {
		t.Errorf("divergence #%d publishes what the redirect pointed at: %q", d.ID, ev)
	}
}

// TestMirrorDoesNotFollowRedirectOffOrigin: an upstream answers with
// redirects to an address only the mirror can reach. The mirror never
// fetches it (export pages, audit logs, the stream's handshake), and what
// it records is the upstream's own redirect answer, nothing fetched
// elsewhere. Export pages follow no redirect at all, not even one on the
// upstream's origin.
func TestMirrorDoesNotFollowRedirectOffOrigin(t *testing.T) {
	f := newFixture(t)
	good := numbered(f.ops)
	secret := func(in *insider) string { return in.URL + "/latest/meta-data/iam" }

	t.Run("export page", func(t *testing.T) {
		ctx := ctxFor(t)
		in := newInsider(t)
		fault := func(w http.ResponseWriter, after int64, count, call int) bool {
			if after != 4 || call > 0 {
				return false
			}
			redirectTo(w, secret(in))
			return true
		}
		m, l := newHostileMirror(t, newScript(t, &script{lines: good, ops: f.ops, fault: fault}), mirror.Config{})
		if err := m.Sync(ctx); err == nil {
			t.Fatal("Sync succeeded through a redirected page")
		}
		if n := in.hits.Load(); n != 0 {
			t.Fatalf("the mirror fetched the redirect's target %d times", n)
		}
		checkStoreHolds(t, l.Store(), f.ops[:4])
		ds := divergences(t, m)
		if len(ds) != 1 {
			t.Fatalf("divergences:%s\nwant one", describe(ds))
		}
		checkRedirectEvidence(t, ds[0], secret(in))
		// The upstream recovers: the page is asked for again and applied.
		if err := m.Sync(ctx); err != nil {
			t.Fatalf("Sync after the upstream recovered: %v", err)
		}
		checkStoreHolds(t, l.Store(), f.ops)
	})

	t.Run("export page on the upstream's origin", func(t *testing.T) {
		ctx := ctxFor(t)
		s := &script{lines: good, ops: f.ops}
		s.fault = func(w http.ResponseWriter, after int64, count, call int) bool {
			if after != 4 || call > 0 {
				return false
			}
			redirectTo(w, "/export?after=4&count=4")
			return true
		}
		m, l := newHostileMirror(t, newScript(t, s), mirror.Config{})
		if err := m.Sync(ctx); err == nil {
			t.Fatal("Sync followed a redirect of an export page")
		}
		s.mu.Lock()
		calls := s.calls[4]
		s.mu.Unlock()
		if calls != 1 {
			t.Fatalf("the page after seq 4 was asked for %d times, want once (the redirect not followed)", calls)
		}
		checkStoreHolds(t, l.Store(), f.ops[:4])
		ds := divergences(t, m)
		if len(ds) != 1 {
			t.Fatalf("divergences:%s\nwant one", describe(ds))
		}
		checkRedirectEvidence(t, ds[0], "/export?after=4&count=4")
	})

	t.Run("audit log", func(t *testing.T) {
		ctx := ctxFor(t)
		in := newInsider(t)
		s := &script{lines: good, ops: f.ops}
		m, _ := newHostileMirror(t, newScript(t, s), mirror.Config{})
		if err := m.Sync(ctx); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		did := f.byID["A0"].did
		s.set(func(s *script) { s.audit[did] = func(w http.ResponseWriter) { redirectTo(w, secret(in)) } })
		if err := m.CheckDID(ctx, did); err == nil {
			t.Fatal("CheckDID succeeded through a redirect")
		}
		if n := in.hits.Load(); n != 0 {
			t.Fatalf("the mirror fetched the redirect's target %d times", n)
		}
		ds := divergences(t, m)
		if len(ds) != 1 {
			t.Fatalf("divergences:%s\nwant one", describe(ds))
		}
		checkRedirectEvidence(t, ds[0], secret(in))
	})

	t.Run("stream handshake", func(t *testing.T) {
		ctx := ctxFor(t)
		in := newInsider(t)
		s := &script{lines: good, ops: f.ops, stream: func(w http.ResponseWriter, r *http.Request) {
			redirectTo(w, secret(in))
		}}
		m, l := newHostileMirror(t, newScript(t, s), mirror.Config{})
		err := m.Step(ctx)
		if err == nil || !strings.Contains(err.Error(), "302") {
			t.Fatalf("Step: %v, want the stream's handshake refused with its 302", err)
		}
		if n := in.hits.Load(); n != 0 {
			t.Fatalf("the mirror followed the stream's redirect %d times", n)
		}
		checkStoreHolds(t, l.Store(), f.ops)
		for _, d := range divergences(t, m) {
			if bytes.Contains(d.evidence(t), []byte(insiderSecret)) {
				t.Fatalf("divergence #%d publishes the redirect's target", d.ID)
			}
		}
	})
}
