package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// runPLCEnv is runPLC with environment variables.
func runPLCEnv(ctx context.Context, vars map[string]string, args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(ctx, args, env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return vars[k] }})
	return code, out.String(), errb.String()
}

// loggedPollInterval returns the pollInterval of the "mirroring" line of
// a JSON log.
func loggedPollInterval(t *testing.T, log string) string {
	t.Helper()
	for l := range strings.SplitSeq(log, "\n") {
		var line struct {
			Msg          string `json:"msg"`
			PollInterval string `json:"pollInterval"`
		}
		if json.Unmarshal([]byte(l), &line) == nil && line.Msg == "mirroring" {
			return line.PollInterval
		}
	}
	t.Fatalf("no \"mirroring\" line in the log:\n%s", log)
	return ""
}

// TestMirrorPollInterval: --poll-interval (or PLC_MIRROR_POLL_INTERVAL)
// is the wait between polls of an upstream that has nothing new. The
// upstream here is an empty directory: each poll is one GET /export, and
// the mirror asks again after the interval.
func TestMirrorPollInterval(t *testing.T) {
	var exports atomic.Int64
	polled := make(chan struct{}, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/export" {
			http.NotFound(w, r)
			return
		}
		exports.Add(1)
		select {
		case polled <- struct{}{}:
		default:
		}
		w.Header().Set("Content-Type", "application/jsonlines")
	}))
	t.Cleanup(srv.Close)

	for _, tc := range []struct {
		name string
		vars map[string]string
		args []string
		want string
	}{
		{"default", nil, nil, "5s"},
		{"flag", nil, []string{"--poll-interval", "250ms"}, "250ms"},
		{"env", map[string]string{"PLC_MIRROR_POLL_INTERVAL": "2m"}, nil, "2m0s"},
		{"flag over env", map[string]string{"PLC_MIRROR_POLL_INTERVAL": "2m"}, []string{"--poll-interval", "3s"}, "3s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := filepath.Join(t.TempDir(), "plc.sqlite")
			args := append([]string{"mirror", "--once", "--upstream", srv.URL, "--db", db, "--listen", "127.0.0.1:0",
				"--log-format", "json", "--audit-interval", "0"}, tc.args...)
			code, stdout, stderr := runPLCEnv(context.Background(), tc.vars, args...)
			if code != exitOK || !strings.HasPrefix(stdout, "caught up with ") {
				t.Fatalf("exit %d, stdout %q\n%s", code, stdout, stderr)
			}
			if got := loggedPollInterval(t, stderr); got != tc.want {
				t.Fatalf("poll interval %q, want %q", got, tc.want)
			}
		})
	}

	t.Run("polls", func(t *testing.T) {
		for len(polled) > 0 {
			<-polled
		}
		db := filepath.Join(t.TempDir(), "plc.sqlite")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan int, 1)
		go func() {
			code, _, _ := runPLCEnv(ctx, nil, "mirror", "--upstream", srv.URL, "--db", db, "--listen", "127.0.0.1:0",
				"--log-format", "json", "--audit-interval", "0", "--poll-interval", "1ms")
			done <- code
		}()
		// Three polls of the empty upstream come at once with a 1 ms
		// interval; with the default (5 s), the third would come after
		// 10 s, past this deadline.
		deadline := time.After(8 * time.Second)
		for range 3 {
			select {
			case <-polled:
			case code := <-done:
				t.Fatalf("plc mirror exited (%d) while polling", code)
			case <-deadline:
				t.Fatalf("%d polls of an empty upstream in 8 s with --poll-interval 1ms", exports.Load())
			}
		}
		cancel()
		if code := <-done; code != exitOK {
			t.Fatalf("plc mirror exited %d after its context ended, want 0", code)
		}
	})
}
