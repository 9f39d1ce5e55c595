package mirror_test

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plcdir/plc/internal/hostile"
	"github.com/plcdir/plc/mirror"
	"github.com/plcdir/plc/oplog"
)

// hostileMirror is a mirror of the hostile directory of cfg, into a fresh
// SQLite log. Its stream timeouts fire at once, but the first (the
// handshake's): the modes that attack the stream are met without waiting.
func hostileMirror(t *testing.T, cfg hostile.Config, mc mirror.Config) *mirror.Mirror {
	t.Helper()
	release := make(chan struct{})
	cfg.Release = release
	srv := httptest.NewServer(hostile.Handler(cfg))
	t.Cleanup(func() { close(release); srv.Close() })
	path := filepath.Join(t.TempDir(), "plc.db")
	if _, err := oplog.Prepare(path); err != nil {
		t.Fatal(err)
	}
	s, err := oplog.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	l := oplog.NewLog(s, oplog.Options{NoRateLimit: true})
	t.Cleanup(l.Close)
	var (
		mu    sync.Mutex
		dials int
	)
	mc.Upstream, mc.Log, mc.PageSize, mc.AuditInterval = srv.URL, l, 10, -1
	mc.StreamTimeout, mc.StreamIdle = 30*time.Second, time.Minute
	mc.After = func(d time.Duration) <-chan time.Time {
		c := make(chan time.Time, 1)
		mu.Lock()
		defer mu.Unlock()
		if d == mc.StreamTimeout && dials == 0 && cfg.Mode != hostile.StalledHandshake {
			dials++
			return c // the handshake: not cut
		}
		c <- time.Time{}
		return c
	}
	m, err := mirror.New(mc)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestHostileUpstreamModes runs a mirror against each mode of package hostile and checks that it holds.
func TestHostileUpstreamModes(t *testing.T) {
	t.Run(string(hostile.Redirect), func(t *testing.T) {
		var hits atomic.Int64
		inside := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
		defer inside.Close()
		m := hostileMirror(t, hostile.Config{Mode: hostile.Redirect, Target: inside.URL + "/secret"}, mirror.Config{})
		if err := m.Sync(ctxFor(t)); err == nil || !strings.Contains(err.Error(), "not followed") {
			t.Fatalf("Sync: %v", err)
		}
		if hits.Load() != 0 {
			t.Fatalf("the redirect was followed %d times", hits.Load())
		}
	})
	t.Run(string(hostile.Junk), func(t *testing.T) {
		m := hostileMirror(t, hostile.Config{Mode: hostile.Junk}, mirror.Config{MaxEvidenceRows: 5})
		for range 20 {
			if err := m.Sync(ctxFor(t)); err == nil || !strings.Contains(err.Error(), "rejected") {
				t.Fatalf("Sync of a page of junk: %v, want it to end the round", err)
			}
		}
		if ev := m.Status(ctxFor(t)).Evidence; ev.Rows > 5 || !ev.Full || ev.Dropped < 100 {
			t.Fatalf("evidence %+v", ev)
		}
	})
	t.Run(string(hostile.RepeatedSeq), func(t *testing.T) {
		m := hostileMirror(t, hostile.Config{Mode: hostile.RepeatedSeq}, mirror.Config{})
		if err := m.Sync(ctxFor(t)); err == nil || !strings.Contains(err.Error(), "last line") {
			t.Fatalf("Sync: %v", err)
		}
		if st := m.Status(ctxFor(t)); st.LagOps > 10 {
			t.Fatalf("lagOps %d", st.LagOps)
		}
	})
	t.Run(string(hostile.SilentStream), func(t *testing.T) {
		m := hostileMirror(t, hostile.Config{Mode: hostile.SilentStream}, mirror.Config{})
		if err := m.Step(ctxFor(t)); err == nil || !strings.Contains(err.Error(), "no pong") {
			t.Fatalf("Step: %v", err)
		}
	})
	t.Run(string(hostile.StalledHandshake), func(t *testing.T) {
		m := hostileMirror(t, hostile.Config{Mode: hostile.StalledHandshake}, mirror.Config{})
		if err := m.Step(ctxFor(t)); err == nil || !strings.Contains(err.Error(), "no handshake") {
			t.Fatalf("Step: %v", err)
		}
	})
}
