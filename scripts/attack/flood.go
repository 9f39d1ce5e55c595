package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The limits the flood runs the server with (plc serve --max-conns,
// --max-conns-per-ip), small enough that the flood passes them.
const (
	floodMaxConns      = 2000
	floodMaxConnsPerIP = 200
)

// floodCloseGrace is how long a held connection is read before it counts
// as open: a connection the server closed to make room for the last ones
// of the flood may not show its end at once (Go closes the descriptor when
// the goroutine reading it wakes, which on busy cores takes a while).
const floodCloseGrace = time.Second

// countOpen returns how many of conns neither end nor send anything within
// grace, reading them all at once. It reads at most one byte of each.
func countOpen(conns []net.Conn, grace time.Duration) int {
	deadline := time.Now().Add(grace)
	var open atomic.Int64
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			_ = c.SetReadDeadline(deadline)
			var b [1]byte
			_, err := c.Read(b[:])
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				open.Add(1)
			}
		})
	}
	wg.Wait()
	return int(open.Load())
}

// runFlood holds thousands of idle keep-alive connections from many
// loopback addresses, then checks that the server kept its limits and
// still answers a newcomer.
func runFlood(ctx context.Context, c *config, r *modeReport) error {
	db := filepath.Join(c.work, "flood.db")
	p, err := start(ctx, c, nil, "serve", "--db", db,
		"--max-conns", strconv.Itoa(floodMaxConns), "--max-conns-per-ip", strconv.Itoa(floodMaxConnsPerIP))
	if err != nil {
		return err
	}
	defer p.stop()
	fdsBefore := p.fds()

	total, ips := 20000, 40
	if c.quick {
		total, ips = 3000, 10
	}
	// Keep descriptors of our own for the checks that follow.
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
		total = min(total, int(lim.Cur)-1000)
	}
	addr := strings.TrimPrefix(p.url, "http://")
	var (
		mu      sync.Mutex
		conns   []net.Conn
		served  atomic.Int64 // connections that got an answer and stayed open
		refused atomic.Int64 // connections refused, closed or answered 503
	)
	work := make(chan int)
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				src := &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(1+i%ips))}
				d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: src}
				conn, err := d.DialContext(ctx, "tcp", addr)
				if err != nil {
					refused.Add(1)
					continue
				}
				_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
				status, err := keepAliveHealth(conn)
				if err != nil || status != 200 {
					refused.Add(1)
					conn.Close()
					continue
				}
				_ = conn.SetDeadline(time.Time{})
				served.Add(1)
				mu.Lock()
				conns = append(conns, conn)
				mu.Unlock()
			}
		}()
	}
	t0 := time.Now()
	for i := range total {
		if ctx.Err() != nil {
			break
		}
		work <- i
	}
	close(work)
	wg.Wait()
	r.figure("connections", "%d dialled from %d addresses in %s: %d served and held, %d refused or closed",
		total, ips, time.Since(t0).Round(time.Millisecond), served.Load(), refused.Load())
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()

	fds := p.fds()
	r.check(fds >= 0 && fds <= floodMaxConns+fdsBefore+64, "fds bounded",
		"the server holds %d file descriptors (limit %d connections, %d before the flood)", fds, floodMaxConns, fdsBefore)
	// The server may have closed held connections to make room for new
	// ones: count those still open.
	open := countOpen(conns, floodCloseGrace)
	r.check(open <= floodMaxConns, "total limit", "%d of the %d connections served are still open (limit %d)", open, served.Load(), floodMaxConns)

	// A newcomer from an address that did not take part.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 2, 1)}}).DialContext,
	}}
	var ok bool
	var last string
	for range 10 { // the server may first have to reclaim idle connections
		resp, err := client.Get(p.url + "/_health")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			last = fmt.Sprint(resp.StatusCode)
			if resp.StatusCode == 200 {
				ok = true
				break
			}
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	r.check(ok, "health under flood", "/_health from a new address while the flood holds: %s", last)
	r.figure("rss", "server RSS under the flood: %s", mb(p.status("VmRSS")))
	r.check(!p.exited(), "alive", "the server is still running")
	return nil
}

// keepAliveHealth sends one keep-alive GET /_health on conn and reads the
// answer, leaving the connection open.
func keepAliveHealth(conn net.Conn) (int, error) {
	if _, err := io.WriteString(conn, "GET /_health HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}
