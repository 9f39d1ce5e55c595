// Command stream abuses a directory's /export/stream WebSocket and reports
// what the server spent and whether it kept answering.
//
// Modes:
//
//	stream flood -url URL [-clients 200] [-cursor 0] [-hold 30s] [-pid PID]
//
// opens -clients streams with the given cursor (a backfill of the whole log
// with cursor 0) and never reads a byte from them, for -hold. Meanwhile it
// asks GET /_health every -health-every and, with -pid, samples the
// server's resident memory (VmRSS, VmHWM from /proc) and the kernel's TCP
// buffer memory (/proc/net/sockstat). It prints one summary; the exit
// status is 1 when /_health answered anything but 200 (or not at all
// within -health-timeout), 0 otherwise.
//
//	stream redate [-start TIME] < corpus.jsonl > recent.jsonl
//
// rewrites the createdAt of every line of a seq-mode export (such as
// `plc bench gen`'s corpus) to -start (default: an hour ago) plus one
// millisecond per line, so that a stream from cursor 0 is inside the
// backfill window (7 days) and is served rather than closed with
// OutdatedCursor. createdAt is not signed, so the ops stay valid; the order
// of the lines (and so every op's place after its prev) is kept.
//
// A run against a fresh SQLite directory of 100 000 ops:
//
//	plc bench gen --ops 100000 --out /tmp/c.jsonl
//	go run ./scripts/attack/stream redate < /tmp/c.jsonl > /tmp/r.jsonl
//	plc import --db /tmp/a.db /tmp/r.jsonl
//	plc serve --db /tmp/a.db --listen 127.0.0.1:2582 & pid=$!
//	go run ./scripts/attack/stream flood -url http://127.0.0.1:2582 -pid $pid
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	redatepkg "github.com/plcdir/plc/scripts/attack/redate"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: stream flood|redate [flags] (see the package doc)")
		os.Exit(2)
	}
	var err error
	var failed bool
	switch os.Args[1] {
	case "flood":
		failed, err = flood(os.Args[2:])
	case "redate":
		err = redate(os.Args[2:], os.Stdin, os.Stdout)
	default:
		err = fmt.Errorf("unknown mode %q: want flood or redate", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "stream:", err)
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}

// redate rewrites each line's createdAt to start + i ms.
func redate(args []string, in io.Reader, out io.Writer) error {
	fs := flag.NewFlagSet("redate", flag.ContinueOnError)
	start := fs.String("start", "", "createdAt of the first line, RFC 3339 (default: an hour ago)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	t := time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)
	if *start != "" {
		var err error
		if t, err = time.Parse(time.RFC3339Nano, *start); err != nil {
			return fmt.Errorf("-start: %w", err)
		}
	}
	return redatepkg.Lines(in, out, t)
}

// flood opens never-reading streams and watches the server.
func flood(args []string) (failed bool, err error) {
	fs := flag.NewFlagSet("flood", flag.ContinueOnError)
	base := fs.String("url", "http://127.0.0.1:2582", "directory URL")
	clients := fs.Int("clients", 200, "streams to open")
	cursor := fs.String("cursor", "0", "cursor of every stream (empty: live only)")
	hold := fs.Duration("hold", 30*time.Second, "how long to hold the streams open")
	every := fs.Duration("health-every", time.Second, "interval between GET /_health")
	healthTimeout := fs.Duration("health-timeout", 10*time.Second, "a /_health slower than this counts as failed")
	pid := fs.Int("pid", 0, "server process to sample memory of (0: none)")
	if err := fs.Parse(args); err != nil {
		return false, err
	}
	u := strings.TrimRight(*base, "/")
	wsURL := "ws" + strings.TrimPrefix(u, "http") + "/export/stream"
	if *cursor != "" {
		wsURL += "?cursor=" + *cursor
	}

	ctx, cancel := context.WithTimeout(context.Background(), *hold+time.Minute)
	defer cancel()
	hc := &http.Client{Timeout: *healthTimeout}

	var mem memSampler
	mem.pid = *pid
	mem.sample()

	start := time.Now()
	var conns []*websocket.Conn
	var mu sync.Mutex
	var refused atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for range *clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
			defer dcancel()
			c, _, err := websocket.Dial(dctx, wsURL, &websocket.DialOptions{HTTPClient: &http.Client{}})
			if err != nil {
				refused.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	opened := time.Since(start)

	var health healthStats
	tick := time.NewTicker(*every)
	defer tick.Stop()
	deadline := time.After(*hold)
loop:
	for {
		health.probe(ctx, hc, u+"/_health")
		mem.sample()
		select {
		case <-tick.C:
		case <-deadline:
			break loop
		}
	}
	mem.sample()
	for _, c := range conns {
		c.CloseNow()
	}

	fmt.Printf("streams          %d opened, %d refused (in %s)\n", len(conns), refused.Load(), opened.Round(time.Millisecond))
	if e := firstErr.Load(); e != nil {
		fmt.Printf("first refusal    %s\n", e)
	}
	fmt.Printf("held             %s, never reading\n", hold.String())
	fmt.Printf("/_health         %d probes: %d × 200, %d other (%s), slowest %s\n",
		health.n, health.ok, health.n-health.ok, health.others(), health.slowest.Round(time.Millisecond))
	if *pid != 0 {
		fmt.Printf("server RSS       start %s, end %s, peak sampled %s, VmHWM %s\n",
			mib(mem.first), mib(mem.last), mib(mem.peak), mib(mem.hwm))
	}
	fmt.Printf("kernel TCP mem   start %s, peak sampled %s\n", mib(mem.tcpFirst), mib(mem.tcpPeak))
	return health.ok != health.n, nil
}

type healthStats struct {
	n, ok   int
	codes   map[string]int
	slowest time.Duration
}

func (h *healthStats) probe(ctx context.Context, hc *http.Client, url string) {
	h.n++
	t := time.Now()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := hc.Do(req)
	d := time.Since(t)
	h.slowest = max(h.slowest, d)
	if h.codes == nil {
		h.codes = map[string]int{}
	}
	if err != nil {
		h.codes["error"]++
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		h.ok++
		return
	}
	h.codes[strconv.Itoa(resp.StatusCode)]++
}

func (h *healthStats) others() string {
	if h.n == h.ok {
		return "none"
	}
	var parts []string
	for k, v := range h.codes {
		parts = append(parts, fmt.Sprintf("%s×%d", k, v))
	}
	return strings.Join(parts, " ")
}

// memSampler reads a process's VmRSS/VmHWM and the kernel's TCP buffer
// pages. Values in bytes; zero when unavailable.
type memSampler struct {
	pid                        int
	first, last, peak, hwm     int64
	tcpFirst, tcpPeak, samples int64
}

func (m *memSampler) sample() {
	if m.pid != 0 {
		rss, hwm := procStatus(m.pid)
		if m.samples == 0 {
			m.first = rss
		}
		m.last = rss
		m.peak = max(m.peak, rss)
		m.hwm = max(m.hwm, hwm)
	}
	tcp := tcpMem()
	if m.samples == 0 {
		m.tcpFirst = tcp
	}
	m.tcpPeak = max(m.tcpPeak, tcp)
	m.samples++
}

func procStatus(pid int) (rss, hwm int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = n << 10
		case "VmHWM:":
			hwm = n << 10
		}
	}
	return rss, hwm
}

// tcpMem is the memory of every TCP socket buffer on the machine
// (/proc/net/sockstat "TCP: … mem N", in pages).
func tcpMem() int64 {
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if !strings.HasPrefix(line, "TCP:") {
			continue
		}
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "mem" {
				n, _ := strconv.ParseInt(f[i+1], 10, 64)
				return n * int64(os.Getpagesize())
			}
		}
	}
	return 0
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
