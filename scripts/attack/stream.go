package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/plcdir/plc/scripts/attack/redate"
)

// corpus writes a generated corpus of n ops (or returns the one already
// written) and returns its path.
func corpus(ctx context.Context, c *config, n int, extra ...string) (string, error) {
	name := "corpus-" + strconv.Itoa(n) + strings.Join(extra, "") + ".jsonl"
	path := filepath.Join(c.work, strings.NewReplacer("-", "", " ", "").Replace(name))
	args := append([]string{"bench", "gen", "--ops", strconv.Itoa(n), "--seed", "1", "--out", path}, extra...)
	if out, err := runPLC(ctx, c, nil, args...); err != nil {
		return "", fmt.Errorf("plc %s: %v\n%s", strings.Join(args, " "), err, tail(out, 2000))
	}
	return path, nil
}

// importInto imports the corpus file into db.
func importInto(ctx context.Context, c *config, db, file string) error {
	if out, err := runPLC(ctx, c, nil, "import", "--db", db, file); err != nil {
		return fmt.Errorf("plc import: %v\n%s", err, tail(out, 2000))
	}
	return nil
}

// recent writes a copy of the corpus file dated from an hour ago on.
func recent(file string) (string, error) {
	in, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.Create(strings.TrimSuffix(file, ".jsonl") + "-recent.jsonl")
	if err != nil {
		return "", err
	}
	defer out.Close()
	if err := redate.Lines(in, out, time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)); err != nil {
		return "", err
	}
	return out.Name(), out.Close()
}

// runStream opens many /export/stream clients asking for the whole log
// that never read, and checks the server's memory and health.
func runStream(ctx context.Context, c *config, r *modeReport) error {
	ops, clients := 100000, 200
	if c.quick {
		ops, clients = 20000, 100
	}
	file, err := corpus(ctx, c, ops)
	if err != nil {
		return err
	}
	// Inside the stream's backfill window, or every stream from cursor 0
	// would be closed at once as outdated.
	if file, err = recent(file); err != nil {
		return err
	}
	db := filepath.Join(c.work, "stream.db")
	if err := importInto(ctx, c, db, file); err != nil {
		return err
	}
	p, err := start(ctx, c, nil, "serve", "--db", db)
	if err != nil {
		return err
	}
	defer p.stop()
	rssBefore := p.status("VmRSS")

	wsURL := "ws" + strings.TrimPrefix(p.url, "http") + "/export/stream?cursor=0"
	var (
		mu    sync.Mutex
		conns []*websocket.Conn
		fails int
	)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			conn, _, err := websocket.Dial(dctx, wsURL, nil)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fails++
				return
			}
			conns = append(conns, conn) // never read
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			c.CloseNow()
		}
	}()
	r.figure("clients", "%d never-reading stream clients connected, %d refused", len(conns), fails)

	// A client that does read is still served, from the start of the log.
	rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
	reader, _, err := websocket.Dial(rctx, wsURL, nil)
	read := 0
	if err == nil {
		for read < 100 {
			if _, _, err := reader.Read(rctx); err != nil {
				break
			}
			read++
		}
		reader.CloseNow()
	}
	rcancel()
	r.check(read == 100, "reader served", "a reading client got %d of the first 100 events", read)

	// Let the server fill what it will: sample health and memory for a while.
	healthy, samples := 0, 0
	var peak int64
	client := &http.Client{Timeout: 5 * time.Second}
	for i := 0; i < 20; i++ {
		time.Sleep(500 * time.Millisecond)
		samples++
		if resp, err := client.Get(p.url + "/_health"); err == nil {
			if resp.StatusCode == 200 {
				healthy++
			}
			resp.Body.Close()
		}
		if rss := p.status("VmRSS"); rss > peak {
			peak = rss
		}
	}
	r.figure("rss", "server RSS %s before, peak %s with %d never-reading clients (%d ops in the log)",
		mb(rssBefore), mb(peak), len(conns), ops)
	r.check(healthy == samples, "health under stream load", "/_health answered 200 %d of %d times", healthy, samples)
	// Each client may hold its unsent-bytes cap (256 KB) plus socket buffers.
	limit := rssBefore + int64(clients)*(256+512) + 128<<10
	r.check(peak <= limit, "memory bounded", "peak RSS %s, bound %s", mb(peak), mb(limit))
	r.check(!p.exited(), "alive", "the server is still running")
	return nil
}
