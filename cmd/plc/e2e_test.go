package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/audit"
	"github.com/plcdir/plc/internal/optest"
	"github.com/plcdir/plc/internal/pgtest"
	"github.com/plcdir/plc/validate"
)

// End-to-end tests of the real binary: built once, run as a child
// process, killed with SIGKILL.

var (
	buildOnce sync.Once
	builtPLC  string
	buildErr  error
)

func plcBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "plc-e2e-")
		if err != nil {
			buildErr = err
			return
		}
		builtPLC = filepath.Join(dir, "plc")
		out, err := exec.Command("go", "build", "-o", builtPLC, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtPLC
}

// server is a running `plc serve` child process.
type server struct {
	cmd        *exec.Cmd
	url        string
	metricsURL string
	done       chan struct{}
	mu         sync.Mutex
	msgs       []string // log messages seen
}

func (s *server) sawLog(msg string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.msgs, msg)
}

// startServer runs `plc serve` on db and returns once it listens: the
// address is read from its "listening" log line (no polling, no sleeps).
func startServer(t *testing.T, db string, extra ...string) *server {
	t.Helper()
	args := append([]string{"serve", "--db", db, "--listen", "127.0.0.1:0", "--log-format", "json"}, extra...)
	cmd := exec.Command(plcBinary(t), args...)
	cmd.Dir = filepath.Dir(plcBinary(t)) // a PostgreSQL log's default key goes to ./plc-data
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{cmd: cmd, done: make(chan struct{})}
	addr := make(chan string, 1)
	wantMetrics := slices.Contains(extra, "--metrics-listen")
	go func(out chan string) {
		sc := bufio.NewScanner(stderr)
		var apiAddr, metricsAddr string
		for sc.Scan() {
			var line struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, line.Msg)
			s.mu.Unlock()
			switch line.Msg {
			case "plc serve listening":
				apiAddr = line.Addr
			case "metrics listening":
				metricsAddr = line.Addr
			}
			if apiAddr != "" && (metricsAddr != "" || !wantMetrics) && out != nil {
				if metricsAddr != "" {
					s.metricsURL = "http://" + metricsAddr
				}
				out <- apiAddr
				close(out)
				out = nil
			}
		}
		if out != nil {
			close(out)
		}
		cmd.Wait()
		close(s.done)
	}(addr)
	a, ok := <-addr
	if !ok {
		t.Fatalf("plc serve exited before listening")
	}
	s.url = "http://" + a
	t.Cleanup(func() { s.kill() })
	return s
}

func (s *server) kill() {
	s.cmd.Process.Kill()
	<-s.done
}

func post(url string, op *validate.Op, did string) (int, string, error) {
	resp, err := http.Post(url+"/"+did, "application/json", bytes.NewReader(op.AppendJSON(nil)))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(body), nil
}

func getAudit(t *testing.T, url, did string) []plc.AuditEntry {
	t.Helper()
	resp, err := http.Get(url + "/" + did + "/log/audit")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("audit log of %s: status %d", did, resp.StatusCode)
	}
	entries, err := plc.ReadAuditLog(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

// exportAll pages through /export in seq mode and returns every line.
func exportAll(t *testing.T, url string) []map[string]any {
	t.Helper()
	var all []map[string]any
	after := 0
	for {
		resp, err := http.Get(url + "/export?count=1000&after=" + strconv.Itoa(after))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("export: status %d: %s", resp.StatusCode, body)
		}
		if len(body) == 0 {
			return all
		}
		for _, line := range strings.Split(string(body), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("export line %q: %v", line, err)
			}
			all = append(all, m)
			after = int(m["seq"].(float64))
		}
	}
}

// checkLogIntact asserts that seq is dense from 1, that every acknowledged
// op is present exactly once, and that every DID's audit log replays clean.
func checkLogIntact(t *testing.T, url string, acked map[string][]string) {
	t.Helper()
	lines := exportAll(t, url)
	count := map[string]int{}
	for i, l := range lines {
		if seq := int(l["seq"].(float64)); seq != i+1 {
			t.Fatalf("export line %d has seq %d: the log has a gap or a duplicate", i, seq)
		}
		count[l["cid"].(string)]++
	}
	for did, cids := range acked {
		for _, c := range cids {
			if count[c] != 1 {
				t.Fatalf("acknowledged op %s of %s appears %d times", c, did, count[c])
			}
		}
		res := audit.VerifyLog(getAudit(t, url, did))
		if res.Failure != nil {
			t.Fatalf("audit log of %s does not replay: %v", did, res.Failure)
		}
	}
	for c, n := range count {
		if n != 1 {
			t.Fatalf("op %s appears %d times in the export", c, n)
		}
	}
}

func backends(t *testing.T, f func(t *testing.T, db string)) {
	t.Run("sqlite", func(t *testing.T) { f(t, filepath.Join(t.TempDir(), "plc.sqlite")) })
	t.Run("postgres", func(t *testing.T) { f(t, pgtest.URL(t)) })
}

// TestAcknowledgedOpsSurviveSIGKILL kills the server while writers stream
// ops at it; after a restart, every op that got a 200 is there exactly
// once and the log replays clean.
func TestAcknowledgedOpsSurviveSIGKILL(t *testing.T) {
	backends(t, func(t *testing.T, db string) {
		s := startServer(t, db, "--no-did-rate-limit")
		const writers, killAfter = 8, 500
		var (
			mu     sync.Mutex
			acked  = map[string][]string{}
			nacked atomic.Int64
			wg     sync.WaitGroup
			killed = make(chan struct{})
			once   sync.Once
		)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-killed:
						return
					default:
					}
					id := optest.NewIdentity(t, optest.Handle(w*100000+i), 2)
					ops := []*validate.Op{id.Head}
					upd := id.Update(t, id.Head, 0, optest.Handle(w*100000+i)+".next")
					ops = append(ops, upd)
					for _, op := range ops {
						code, _, err := post(s.url, op, id.DID)
						if err != nil {
							return // the server is gone
						}
						if code != 200 {
							continue
						}
						mu.Lock()
						acked[id.DID] = append(acked[id.DID], op.CID())
						mu.Unlock()
						if nacked.Add(1) >= killAfter {
							once.Do(func() { s.kill(); close(killed) })
						}
					}
				}
			}()
		}
		wg.Wait()
		if nacked.Load() < killAfter {
			t.Fatalf("only %d ops acknowledged before the writers stopped", nacked.Load())
		}
		s2 := startServer(t, db)
		checkLogIntact(t, s2.url, acked)
		t.Logf("%d ops acknowledged on %d DIDs before SIGKILL; %d ops in the log after restart",
			nacked.Load(), len(acked), len(exportAll(t, s2.url)))
	})
}

// TestTwoProcessesOnePostgres runs two servers on one database: of 20
// concurrent updates with the same prev spread over both, exactly one
// wins; 200 concurrent creates all succeed; seq stays dense.
func TestTwoProcessesOnePostgres(t *testing.T) {
	db := pgtest.URL(t)
	a := startServer(t, db, "--no-did-rate-limit")
	b := startServer(t, db, "--no-did-rate-limit")
	urls := []string{a.url, b.url}

	id := optest.NewIdentity(t, "race.test", 2)
	if code, body, err := post(a.url, id.Head, id.DID); err != nil || code != 200 {
		t.Fatalf("genesis: %d %s %v", code, body, err)
	}
	var wg sync.WaitGroup
	codes := make([]int, 20)
	updates := make([]*validate.Op, 20)
	for i := range updates {
		updates[i] = id.Update(t, id.Head, 0, fmt.Sprintf("racer%d.test", i))
	}
	for i := range updates {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _, err := post(urls[i%2], updates[i], id.DID)
			if err != nil {
				t.Error(err)
			}
			codes[i] = code
		}()
	}
	wg.Wait()
	wins := 0
	for i, c := range codes {
		switch c {
		case 200:
			wins++
		case 400, 409:
		default:
			t.Errorf("update %d: status %d", i, c)
		}
	}
	if wins != 1 {
		t.Fatalf("%d of 20 conflicting updates succeeded, want exactly 1", wins)
	}

	acked := map[string][]string{id.DID: {id.Head.CID()}}
	var mu sync.Mutex
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nid := optest.NewIdentity(t, optest.Handle(i), 1)
			code, body, err := post(urls[i%2], nid.Head, nid.DID)
			if err != nil || code != 200 {
				t.Errorf("create %d: %d %s %v", i, code, body, err)
				return
			}
			mu.Lock()
			acked[nid.DID] = []string{nid.Head.CID()}
			mu.Unlock()
		}()
	}
	wg.Wait()
	checkLogIntact(t, a.url, acked)
	if got := len(exportAll(t, b.url)); got != 1+1+200 {
		t.Fatalf("the log holds %d ops, want %d", got, 202)
	}
}

// TestIndigoResolvesFromOurServer: indigo's identity directory, the client
// atproto apps use, resolves DIDs from the running binary.
func TestIndigoResolvesFromOurServer(t *testing.T) {
	s := startServer(t, filepath.Join(t.TempDir(), "plc.sqlite"))
	id := optest.NewIdentity(t, "alice.test", 2)
	if code, body, err := post(s.url, id.Head, id.DID); err != nil || code != 200 {
		t.Fatalf("genesis: %d %s %v", code, body, err)
	}
	dir := identity.BaseDirectory{PLCURL: s.url, HTTPClient: http.Client{}, SkipHandleVerification: true}
	ctx := t.Context()
	ident, err := dir.LookupDID(ctx, syntax.DID(id.DID))
	if err != nil {
		t.Fatal(err)
	}
	if got := ident.PDSEndpoint(); got != "https://pds.example.com" {
		t.Errorf("PDS endpoint %q", got)
	}
	if h, err := ident.DeclaredHandle(); err != nil || h.String() != "alice.test" {
		t.Errorf("declared handle %q, %v", h, err)
	}
	pub, err := ident.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	if pub.DIDKey() != id.Signing.DID {
		t.Errorf("atproto key %s, want %s", pub.DIDKey(), id.Signing.DID)
	}

	// After a tombstone the DID no longer resolves.
	tomb := id.Tombstone(t, nil, 0)
	if code, body, err := post(s.url, tomb, id.DID); err != nil || code != 200 {
		t.Fatalf("tombstone: %d %s %v", code, body, err)
	}
	if _, err := dir.ResolveDID(ctx, syntax.DID(id.DID)); !errors.Is(err, identity.ErrDIDNotFound) {
		t.Fatalf("tombstoned DID: got %v, want ErrDIDNotFound", err)
	}
	if _, err := dir.ResolveDID(ctx, syntax.DID("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")); !errors.Is(err, identity.ErrDIDNotFound) {
		t.Fatalf("unknown DID: got %v, want ErrDIDNotFound", err)
	}
}

// TestSIGTERMDrainsAndExitsCleanly: on SIGTERM the server finishes the
// requests in flight, logs its stop and exits 0; every acknowledged op is
// there after a restart. /metrics (on its own listener) counts them first.
func TestSIGTERMDrainsAndExitsCleanly(t *testing.T) {
	db := filepath.Join(t.TempDir(), "plc.sqlite")
	s := startServer(t, db, "--metrics-listen", "127.0.0.1:0")
	acked := map[string][]string{}
	for i := range 20 {
		id := optest.NewIdentity(t, optest.Handle(i), 1)
		if code, body, err := post(s.url, id.Head, id.DID); err != nil || code != 200 {
			t.Fatalf("create %d: %d %s %v", i, code, body, err)
		}
		acked[id.DID] = []string{id.Head.CID()}
	}
	resp, err := http.Get(s.metricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(metrics, []byte("plc_ops_accepted_total 20")) {
		t.Fatalf("metrics do not count the 20 accepted ops:\n%s", metrics)
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-s.done
	if code := s.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	if !s.sawLog("stopped") {
		t.Fatal(`no "stopped" log line after SIGTERM`)
	}
	checkLogIntact(t, startServer(t, db).url, acked)
}

// TestBenchScenariosAgainstRealServer drives the bench scenarios against
// the binary: they must count what the server did, not just run.
func TestBenchScenariosAgainstRealServer(t *testing.T) {
	s := startServer(t, filepath.Join(t.TempDir(), "plc.sqlite"))
	runCLI := func(args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if code := run(t.Context(), args, env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }}); code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", args, code, stdout.String(), stderr.String())
		}
		return stdout.String()
	}
	out := runCLI("bench", "write", "--url", s.url, "--ops", "60", "--concurrency", "4")
	if !strings.Contains(out, "60 accepted, 0 failed") {
		t.Fatalf("bench write:\n%s", out)
	}
	if got := len(exportAll(t, s.url)); got != 60 {
		t.Fatalf("the server holds %d ops after bench write --ops 60", got)
	}
	out = runCLI("bench", "resolve", "--url", s.url, "--requests", "200", "--concurrency", "4")
	if !strings.Contains(out, "DIDs         60 (uniform)\n") || !strings.Contains(out, "requests     200 (0 failed, 0 tombstoned, 0 not modified)") {
		t.Fatalf("bench resolve:\n%s", out)
	}
	// Bulk against single reads: both resolve every DID of the set, and
	// both rates and their ratio are printed.
	out = runCLI("bench", "resolve", "--url", s.url, "--bulk", "--batch", "100", "--rounds", "2", "--concurrency", "2")
	if !strings.Contains(out, "DIDs         100 per set (of 60 listed)\n") || strings.Count(out, "0 failed)") != 4 ||
		!strings.Contains(out, "concurrency  1\n") || !strings.Contains(out, "concurrency  2\n") || strings.Count(out, "ratio ") != 2 ||
		!strings.Contains(out, "POST /dids  ") || !strings.Contains(out, "(400 DIDs in ") {
		t.Fatalf("bench resolve --bulk:\n%s", out)
	}
	// A hot set of 5 DIDs with their ETags: at most 5 answers in flight
	// per DID are full ones, the rest 304.
	didsFile := filepath.Join(t.TempDir(), "dids")
	out = runCLI("bench", "resolve", "--url", s.url, "--requests", "200", "--concurrency", "4", "--hot", "5", "--etag", "--save-dids", didsFile)
	var notModified int
	if _, err := fmt.Sscanf(out[strings.Index(out, "tombstoned, ")+len("tombstoned, "):], "%d not modified", &notModified); err != nil || notModified < 200-5*4 ||
		!strings.Contains(out, "DIDs         60 (hot set of 5)\n") {
		t.Fatalf("bench resolve --hot 5 --etag (%d not modified):\n%s", notModified, out)
	}
	// Two URLs (the same process twice) and a warm-up pass first.
	out = runCLI("bench", "resolve", "--url", s.url+","+s.url+"/", "--dids", didsFile, "--warm", "--requests", "100", "--concurrency", "2")
	if !strings.Contains(out, "requests     100 (0 failed, 0 tombstoned") {
		t.Fatalf("bench resolve --warm with two URLs:\n%s", out)
	}
	// The baseline server, resolved with the DIDs saved: it prints its
	// address once it listens.
	ctx, stop := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	served := make(chan int, 1)
	go func() {
		served <- run(ctx, []string{"bench", "static", "--listen", "127.0.0.1:0"}, env{Stdin: strings.NewReader(""), Stdout: pw, Stderr: io.Discard, Getenv: func(string) string { return "" }})
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	var addr string
	if _, serr := fmt.Sscanf(line, "serving 536 bytes at http://%s", &addr); err != nil || serr != nil {
		t.Fatalf("bench static: %q %v %v", line, err, serr)
	}
	go io.Copy(io.Discard, pr)
	out = runCLI("bench", "resolve", "--url", "http://"+addr, "--dids", didsFile, "--requests", "100", "--concurrency", "2")
	if !strings.Contains(out, "DIDs         60 (uniform)\n") || !strings.Contains(out, "requests     100 (0 failed") {
		t.Fatalf("bench resolve against bench static:\n%s", out)
	}
	stop()
	if code := <-served; code != 0 {
		t.Fatalf("bench static: exit %d", code)
	}
	out = runCLI("bench", "export", "--url", s.url)
	if !strings.Contains(out, "ops              60\n") {
		t.Fatalf("bench export:\n%s", out)
	}
	// The stand-in upstream serves the directory's export from a file,
	// and a mirror of it holds the directory's log.
	exportFile := filepath.Join(t.TempDir(), "export.jsonl")
	if err := os.WriteFile(exportFile, servedExport(t, s.url), 0o600); err != nil {
		t.Fatal(err)
	}
	upCtx, stopUp := context.WithCancel(t.Context())
	upServed := make(chan int, 1)
	upR, upW := io.Pipe()
	go func() {
		upServed <- run(upCtx, []string{"bench", "upstream", "--listen", "127.0.0.1:0", exportFile}, env{Stdin: strings.NewReader(""), Stdout: upW, Stderr: io.Discard, Getenv: func(string) string { return "" }})
		upW.Close()
	}()
	line, err = bufio.NewReader(upR).ReadString('\n')
	if _, serr := fmt.Sscanf(line, "serving 60 ops at http://%s", &addr); err != nil || serr != nil {
		t.Fatalf("bench upstream: %q %v %v", line, err, serr)
	}
	go io.Copy(io.Discard, upR)
	mdb := filepath.Join(t.TempDir(), "mirror.sqlite")
	if code, stdout, stderr := runPLC(t, t.Context(), nil, "mirror", "--once", "--upstream", "http://"+addr, "--db", mdb,
		"--listen", "127.0.0.1:0", "--audit-interval", "0", "--page-size", "7"); code != exitOK || !strings.Contains(stdout, "cursor 60") {
		t.Fatalf("mirror of bench upstream: exit %d %q\n%s", code, stdout, stderr)
	}
	if got, want := servedExport(t, serveDB(t, openDB(t, mdb))), servedExport(t, s.url); !bytes.Equal(got, want) {
		t.Fatalf("the mirror of bench upstream holds %d bytes of export, the directory %d", len(got), len(want))
	}
	stopUp()
	if code := <-upServed; code != 0 {
		t.Fatalf("bench upstream: exit %d", code)
	}
}

// TestTwoProcessesCachedReadsSeeEachOthersWrites: two plc serve processes
// on one database, each with its cache of rendered answers: after a POST
// to either is answered 200, a read from either shows the op, and the
// ETag a client held before it no longer matches.
func TestTwoProcessesCachedReadsSeeEachOthersWrites(t *testing.T) {
	backends(t, func(t *testing.T, db string) {
		a := startServer(t, db, "--no-did-rate-limit")
		b := startServer(t, db, "--no-did-rate-limit")
		urls := []string{a.url, b.url}
		id := optest.NewIdentity(t, "cache.test", 1)
		if code, body, err := post(a.url, id.Head, id.DID); err != nil || code != 200 {
			t.Fatalf("genesis: %d %s %v", code, body, err)
		}
		get := func(url, etag string) (int, string, string) {
			t.Helper()
			req, _ := http.NewRequest(http.MethodGet, url+"/"+id.DID, nil)
			if etag != "" {
				req.Header.Set("If-None-Match", etag)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(body), resp.Header.Get("ETag")
		}
		tags := make([]string, 2)
		for i, u := range urls {
			code, _, tag := get(u, "")
			if code != 200 || tag == "" {
				t.Fatalf("GET from server %d: %d, ETag %q", i, code, tag)
			}
			if code, _, _ := get(u, tag); code != http.StatusNotModified {
				t.Fatalf("GET from server %d with its ETag: %d, want 304", i, code)
			}
			tags[i] = tag
		}
		for n := range 6 {
			handle := fmt.Sprintf("cache%d.test", n)
			op := id.Update(t, nil, 0, handle)
			if code, body, err := post(urls[n%2], op, id.DID); err != nil || code != 200 {
				t.Fatalf("update %d: %d %s %v", n, code, body, err)
			}
			id.Accept(op)
			for i, u := range urls {
				code, body, tag := get(u, tags[i])
				if code != 200 || !strings.Contains(body, `"at://`+handle+`"`) || tag == tags[i] {
					t.Fatalf("after update %d through server %d, server %d answers %d (ETag %q, held %q): %s", n, n%2, i, code, tag, tags[i], body)
				}
				tags[i] = tag
			}
		}
	})
}
