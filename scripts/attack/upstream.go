package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/plcdir/plc/internal/hostile"
)

// upstreamServer serves an upstream directory that misbehaves on purpose
// (internal/hostile), counting what it is asked.
type upstreamServer struct {
	srv     *http.Server
	url     string
	pages   atomic.Int64 // export pages asked for
	streams atomic.Int64 // stream connections attempted
}

func serveHostile(h http.Handler, ip net.IP) (*upstreamServer, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		return nil, err
	}
	u := &upstreamServer{url: "http://" + l.Addr().String()}
	u.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/export":
			u.pages.Add(1)
		case "/export/stream":
			u.streams.Add(1)
		}
		h.ServeHTTP(w, r)
	})}
	go u.srv.Serve(l)
	return u, nil
}

func (u *upstreamServer) close() { u.srv.Close() }

func runUpstream(ctx context.Context, c *config, r *modeReport) error {
	for _, sub := range []struct {
		name string
		run  func(context.Context, *config, *modeReport) error
	}{
		{"redirect", upstreamRedirect},
		{"junk", upstreamJunk},
		{"repeat-seq", upstreamRepeatSeq},
		{"silent-stream", upstreamSilentStream},
		{"long-chain", upstreamLongChain},
	} {
		if err := sub.run(ctx, c, r); err != nil {
			r.fail(sub.name, "%v", err)
		}
	}
	return nil
}

// startMirror runs plc mirror of up into a fresh SQLite file.
func startMirror(ctx context.Context, c *config, name, up string, extra ...string) (*proc, string, error) {
	db := filepath.Join(c.work, "mirror-"+name+".db")
	args := append([]string{"mirror", "--db", db, "--upstream", up, "--audit-interval", "0", "--poll-interval", "200ms"}, extra...)
	p, err := start(ctx, c, nil, args...)
	return p, db, err
}

// upstreamRedirect: every export page redirects to an "internal" address
// whose body must never be fetched, stored or served.
func upstreamRedirect(ctx context.Context, c *config, r *modeReport) error {
	const secret = "INTERNAL-ONLY-7f3a9c"
	var internalHits atomic.Int64
	internal, err := serveHostile(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		internalHits.Add(1)
		fmt.Fprint(w, `{"did":"did:plc:aaaaaaaaaaaaaaaaaaaaaaaa","secret":"`+secret+`","seq":1,"type":"sequenced_op"}`)
	}), net.IPv4(127, 0, 3, 1))
	if err != nil {
		return err
	}
	defer internal.close()
	up, err := serveHostile(hostile.Handler(hostile.Config{Mode: hostile.Redirect, Target: internal.url + "/secret"}), net.IPv4(127, 0, 0, 1))
	if err != nil {
		return err
	}
	defer up.close()
	p, _, err := startMirror(ctx, c, "redirect", up.url)
	if err != nil {
		return err
	}
	defer p.stop()
	time.Sleep(3 * time.Second)
	_, _, body, err := get(p.url+"/_mirror/divergences?limit=1000", 10*time.Second)
	if err != nil {
		return err
	}
	r.check(internalHits.Load() == 0, "redirect not followed", "the internal address was fetched %d times", internalHits.Load())
	r.check(!strings.Contains(string(body), secret) && !strings.Contains(p.out.String(), secret),
		"no foreign bytes published", "the internal body appears neither in /_mirror/divergences nor in the log")
	return nil
}

// Evidence limits the junk upstream runs the mirror with.
const (
	junkEvidenceBytes = 8 << 20
	junkEvidenceRows  = 20000
)

// upstreamJunk: endless pages of large lines the rules reject.
func upstreamJunk(ctx context.Context, c *config, r *modeReport) error {
	const lineBytes = 3000
	up, err := serveHostile(hostile.Handler(hostile.Config{Mode: hostile.Junk, LineBytes: lineBytes}), net.IPv4(127, 0, 0, 1))
	if err != nil {
		return err
	}
	defer up.close()
	p, db, err := startMirror(ctx, c, "junk", up.url,
		"--max-evidence-bytes", strconv.Itoa(junkEvidenceBytes), "--max-evidence-rows", strconv.Itoa(junkEvidenceRows))
	if err != nil {
		return err
	}
	defer p.stop()
	run := 30 * time.Second
	if c.quick {
		run = 10 * time.Second
	}
	time.Sleep(run)
	size := dbBytes(db)
	offered := up.pages.Load() * 1000 * lineBytes
	r.figure("junk", "in %s the upstream served %d pages (%.0f MB of junk); the mirror's database is %.1f MB",
		run, up.pages.Load(), float64(offered)/(1<<20), float64(size)/(1<<20))
	// The database holds the cap's worth of evidence, the schema and the
	// write-ahead log's slack.
	limit := int64(junkEvidenceBytes) + 48<<20
	r.check(size <= limit, "evidence bounded", "database %.1f MB, bound %.1f MB", float64(size)/(1<<20), float64(limit)/(1<<20))
	r.check(!p.exited(), "alive", "the mirror is still running")
	return nil
}

// dbBytes is the size of an SQLite database with its WAL.
func dbBytes(db string) int64 {
	var n int64
	for _, f := range []string{db, db + "-wal", db + "-shm"} {
		if st, err := os.Stat(f); err == nil {
			n += st.Size()
		}
	}
	return n
}

// upstreamRepeatSeq: a page whose last line repeats the seq before it.
func upstreamRepeatSeq(ctx context.Context, c *config, r *modeReport) error {
	up, err := serveHostile(hostile.Handler(hostile.Config{Mode: hostile.RepeatedSeq}), net.IPv4(127, 0, 0, 1))
	if err != nil {
		return err
	}
	defer up.close()
	p, _, err := startMirror(ctx, c, "repeatseq", up.url)
	if err != nil {
		return err
	}
	defer p.stop()
	time.Sleep(3 * time.Second)
	_, _, body, err := get(p.url+"/_health", 5*time.Second)
	if err != nil {
		return err
	}
	var h any
	if err := json.Unmarshal(body, &h); err != nil {
		return fmt.Errorf("/_health: %v: %s", err, body)
	}
	big := largestNumber(h)
	r.check(big < 1e12, "sane lag", "the largest number in /_health is %.0f (%s)", big, clip(string(body)))
	return nil
}

func largestNumber(v any) float64 {
	switch v := v.(type) {
	case float64:
		return v
	case map[string]any:
		m := 0.0
		for _, x := range v {
			m = max(m, largestNumber(x))
		}
		return m
	case []any:
		m := 0.0
		for _, x := range v {
			m = max(m, largestNumber(x))
		}
		return m
	}
	return 0
}

// upstreamSilentStream: after one line, /export/stream accepts the
// upgrade and then says nothing (SilentStream), or never answers the
// handshake (StalledHandshake); the mirror must give up and try again.
func upstreamSilentStream(ctx context.Context, c *config, r *modeReport) error {
	for _, mode := range []hostile.Mode{hostile.SilentStream, hostile.StalledHandshake} {
		release := make(chan struct{})
		up, err := serveHostile(hostile.Handler(hostile.Config{Mode: mode, Release: release}), net.IPv4(127, 0, 0, 1))
		if err != nil {
			return err
		}
		p, _, err := startMirror(ctx, c, string(mode), up.url, "--stream-timeout", "2s", "--stream-idle", "2s")
		if err != nil {
			close(release)
			up.close()
			return err
		}
		deadline := time.Now().Add(40 * time.Second)
		for time.Now().Before(deadline) && up.streams.Load() < 2 {
			time.Sleep(250 * time.Millisecond)
		}
		r.check(up.streams.Load() >= 2, string(mode),
			"the mirror gave up on the silent stream and tried again (%d attempts in at most 40 s)", up.streams.Load())
		p.stop()
		close(release)
		up.close()
	}
	return nil
}

// upstreamLongChain: a real upstream holding one DID with a long history;
// plc import of it and plc mirror of it must stay within memory bounds.
func upstreamLongChain(ctx context.Context, c *config, r *modeReport) error {
	n := 20000
	if c.quick {
		n = 3000
	}
	file, err := corpus(ctx, c, n, "--shape", "longchain")
	if err != nil {
		return err
	}
	db := filepath.Join(c.work, "longchain-upstream.db")
	rss, out, err := peakRSS(ctx, c, "import", "--db", db, file)
	if err != nil {
		return fmt.Errorf("plc import: %v\n%s", err, tail(out, 2000))
	}
	r.figure("import rss", "plc import of one DID with %d ops: peak RSS %s", n, mb(rss))
	r.check(rss < 512<<10, "import memory", "peak RSS %s (goal < 512 MB)", mb(rss))

	up, err := start(ctx, c, nil, "serve", "--db", db)
	if err != nil {
		return err
	}
	defer up.stop()
	mdb := filepath.Join(c.work, "longchain-mirror.db")
	rss, out, err = peakRSS(ctx, c, "mirror", "--once", "--db", mdb, "--upstream", up.url, "--listen", "127.0.0.1:0", "--audit-interval", "0")
	if err != nil {
		return fmt.Errorf("plc mirror --once: %v\n%s", err, tail(out, 2000))
	}
	r.figure("mirror rss", "plc mirror --once of one DID with %d ops: peak RSS %s", n, mb(rss))
	r.check(rss < 512<<10, "mirror memory", "peak RSS %s (goal < 512 MB)", mb(rss))
	return nil
}

// peakRSS runs plc to its end and returns its peak RSS in kB.
func peakRSS(ctx context.Context, c *config, args ...string) (int64, string, error) {
	cmd := exec.CommandContext(ctx, c.plc, args...)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var rss int64
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			rss = ru.Maxrss
		}
	}
	return rss, out.String(), err
}
