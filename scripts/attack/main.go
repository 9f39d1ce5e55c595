// Command attack tries the plc binary the way a hostile client, upstream or
// intruder would, and checks that every attack is refused, bounded and
// survived. It starts each target itself (plc serve or plc mirror, in a
// temporary directory, on 127.0.0.1) and only ever sends traffic to
// loopback addresses. Every loop it runs is bounded in count and time.
//
//	go run ./scripts/attack [-plc BIN] [-modes malformed,flood,...] [-quick]
//
// Modes (all by default):
//
//	malformed  hundreds of malformed requests: bad DIDs, bodies, queries,
//	           tile paths, methods and raw HTTP; no 5xx, JSON errors, the
//	           server stays healthy and its log unchanged
//	flood      thousands of idle keep-alive connections from many loopback
//	           addresses; the connection limits hold, /_health answers
//	stream     200 /export/stream clients that never read; the server's
//	           memory stays bounded and /_health answers
//	upstream   hostile upstreams for plc mirror: a redirect to an internal
//	           address, a junk-filling upstream, a page whose last line
//	           repeats seq, a silent WebSocket; a long chain of one DID
//	tamper     rows added or edited behind the log's back; the next start
//	           refuses with a message that names them
//	dbkill     PostgreSQL stopped under writes: 503 with Retry-After, no
//	           acknowledged op lost (needs PLC_TEST_POSTGRES, PLC_TEST_PGDATA
//	           and PLC_TEST_PGBIN: run under scripts/with-postgres.sh)
//	diskfull   SQLite on a full file system: 503 with Retry-After, no
//	           acknowledged op lost, writes resume when space returns (needs
//	           root to mount a small tmpfs; skipped otherwise)
//
// The exit status is 0 when every check passed (skipped modes say why),
// 1 when one failed.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

type config struct {
	plc   string // the plc binary
	quick bool   // smaller counts, for the test suite
	work  string // a temporary directory for this run
}

type mode struct {
	name string
	run  func(ctx context.Context, c *config, r *modeReport) error
}

var modes = []mode{
	{"malformed", runMalformed},
	{"flood", runFlood},
	{"stream", runStream},
	{"upstream", runUpstream},
	{"tamper", runTamper},
	{"dbkill", runDBKill},
	{"diskfull", runDiskFull},
}

func main() {
	os.Exit(run())
}

func run() int {
	var (
		bin   = flag.String("plc", "", "the plc binary to attack (default: built from ./cmd/plc)")
		which = flag.String("modes", "all", "comma-separated modes, or all")
		quick = flag.Bool("quick", false, "smaller counts (what the test suite runs)")
	)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	raiseFileLimit()
	work, err := os.MkdirTemp("", "plcattack.")
	if err != nil {
		fmt.Fprintln(os.Stderr, "attack:", err)
		return 1
	}
	defer os.RemoveAll(work)
	c := &config{plc: *bin, quick: *quick, work: work}
	if c.plc == "" {
		c.plc = filepath.Join(work, "plc")
		build := exec.CommandContext(ctx, "go", "build", "-o", c.plc, "./cmd/plc")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "attack: building plc:", err)
			return 1
		}
	}
	selected, err := selectModes(*which)
	if err != nil {
		fmt.Fprintln(os.Stderr, "attack:", err)
		return 2
	}
	r := &report{out: os.Stdout}
	for _, m := range selected {
		start := time.Now()
		fmt.Fprintf(os.Stdout, "== %s\n", m.name)
		mctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		err := m.run(mctx, c, r.mode(m.name))
		cancel()
		if err != nil {
			r.mode(m.name).fail("run", "%v", err)
		}
		fmt.Fprintf(os.Stdout, "   (%s in %s)\n", m.name, time.Since(start).Round(time.Millisecond))
	}
	return r.summary()
}

func selectModes(s string) ([]mode, error) {
	if s == "all" || s == "" {
		return modes, nil
	}
	var out []mode
	for _, name := range strings.Split(s, ",") {
		found := false
		for _, m := range modes {
			if m.name == strings.TrimSpace(name) {
				out = append(out, m)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown mode %q", name)
		}
	}
	return out, nil
}

// raiseFileLimit lets the attacker hold as many connections as the
// machine allows (the target raises its own limit the same way).
func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}
