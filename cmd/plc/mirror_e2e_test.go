package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/plcdir/plc/internal/optest"
	"github.com/plcdir/plc/internal/pgtest"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// End-to-end tests of `plc mirror`: the real binary mirrors the real
// binary's `plc serve` (and another mirror), while ops are written, while
// it is SIGKILLed; the mirror must end up serving the upstream's log byte
// for byte. Nothing waits by sleeping: processes are ready when they log
// that they listen, and a mirror has caught up when its own /export/stream
// delivers the upstream's last seq.

// mirrorWait bounds every wait for a mirror (a deadline for a failing
// test, not a delay: the waits end as soon as the event comes).
const mirrorWait = 2 * time.Minute

// proc is a running plc child process whose JSON log lines can be
// awaited.
type proc struct {
	cmd    *exec.Cmd
	url    string
	done   chan struct{}
	stdout bytes.Buffer // read only after done

	mu      sync.Mutex
	msgs    map[string][]map[string]any // log lines by message
	waiters map[string]chan struct{}    // closed at the first line with the message
	other   []string                    // lines that are not JSON
}

// startProc runs the binary with args and returns once it logs "plc serve
// listening" (serve and mirror both do): no polling, no sleeps.
func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(plcBinary(t), args...)
	cmd.Dir = filepath.Dir(plcBinary(t)) // a PostgreSQL log's default key goes to ./plc-data
	p := &proc{cmd: cmd, done: make(chan struct{}), msgs: map[string][]map[string]any{}, waiters: map[string]chan struct{}{}}
	cmd.Stdout = &p.stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		out := addr
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				p.mu.Lock()
				p.other = append(p.other, sc.Text())
				p.mu.Unlock()
				continue
			}
			msg, _ := line["msg"].(string)
			p.mu.Lock()
			p.msgs[msg] = append(p.msgs[msg], line)
			if w, ok := p.waiters[msg]; ok {
				close(w)
				delete(p.waiters, msg)
			}
			p.mu.Unlock()
			if msg == "plc serve listening" && out != nil {
				a, _ := line["addr"].(string)
				out <- a
				close(out)
				out = nil
			}
		}
		io.Copy(io.Discard, stderr)
		if out != nil {
			close(out)
		}
		cmd.Wait()
		close(p.done)
	}()
	a, ok := <-addr
	if !ok {
		<-p.done
		t.Fatalf("%v exited before listening: %v\n%s", args, cmd.ProcessState, p.stderrText())
	}
	p.url = "http://" + a
	t.Cleanup(p.kill)
	return p
}

// startMirror runs `plc mirror` of upstream into db.
func startMirror(t *testing.T, upstream, db string, extra ...string) *proc {
	t.Helper()
	args := append([]string{"mirror", "--upstream", upstream, "--db", db, "--listen", "127.0.0.1:0", "--log-format", "json"}, extra...)
	return startProc(t, args...)
}

func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// await waits for a log line with msg (at once if one was logged) and
// returns the last such line.
func (p *proc) await(t *testing.T, msg string) map[string]any {
	t.Helper()
	p.mu.Lock()
	if ls := p.msgs[msg]; len(ls) > 0 {
		p.mu.Unlock()
		return ls[len(ls)-1]
	}
	w, ok := p.waiters[msg]
	if !ok {
		w = make(chan struct{})
		p.waiters[msg] = w
	}
	p.mu.Unlock()
	select {
	case <-w:
	case <-p.done:
		t.Fatalf("the process exited before logging %q: %v\n%s", msg, p.cmd.ProcessState, p.stderrText())
	case <-time.After(mirrorWait):
		t.Fatalf("no %q log line within %v\n%s", msg, mirrorWait, p.stderrText())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	ls := p.msgs[msg]
	return ls[len(ls)-1]
}

// logged returns the log lines with msg seen so far.
func (p *proc) logged(msg string) []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.msgs[msg]
}

// stderrText is what the process logged, for failure messages.
func (p *proc) stderrText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for msg, ls := range p.msgs {
		for _, l := range ls {
			fmt.Fprintf(&b, "%s %v\n", msg, l)
		}
	}
	for _, l := range p.other {
		b.WriteString(l + "\n")
	}
	return b.String()
}

// healthOf returns the decoded GET /_health of url (numbers as
// json.Number).
func healthOf(t *testing.T, url string) map[string]any {
	t.Helper()
	resp, err := http.Get(url + "/_health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s/_health: status %d: %s", url, resp.StatusCode, body)
	}
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var h map[string]any
	if err := d.Decode(&h); err != nil {
		t.Fatalf("%s/_health: %v: %s", url, err, body)
	}
	return h
}

// healthInt returns an integer field of a /_health object.
func healthInt(t *testing.T, h map[string]any, key string) int64 {
	t.Helper()
	n, ok := h[key].(json.Number)
	if !ok {
		t.Fatalf("/_health %v: no number %q", h, key)
	}
	v, err := n.Int64()
	if err != nil {
		t.Fatalf("/_health %q: %v", key, err)
	}
	return v
}

// exportLines pages through url's /export in seq mode (count=1000) and
// returns every line as served.
func exportLines(t *testing.T, url string) [][]byte {
	t.Helper()
	var all [][]byte
	after := "0"
	for {
		resp, err := http.Get(url + "/export?count=1000&after=" + after)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s/export?after=%s: status %d: %s", url, after, resp.StatusCode, body)
		}
		if len(body) == 0 {
			return all
		}
		page := bytes.Split(body, []byte("\n"))
		all = append(all, page...)
		after = field(t, string(page[len(page)-1]), `"seq":`, `}`)
		if len(page) < 1000 {
			return all
		}
	}
}

// sameLines fails unless got and want are the same lines, byte for byte.
func sameLines(t *testing.T, what string, got, want [][]byte) {
	t.Helper()
	for i := range min(len(got), len(want)) {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("%s: line %d differs:\n got  %s\n want %s", what, i+1, got[i], want[i])
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d lines, want %d", what, len(got), len(want))
	}
}

// lineDIDs returns the DIDs of export lines, in first-seen order.
func lineDIDs(t *testing.T, lines [][]byte) []string {
	t.Helper()
	seen := map[string]bool{}
	var dids []string
	for _, l := range lines {
		did := field(t, string(l), `"did":"`, `"`)
		if !seen[did] {
			seen[did] = true
			dids = append(dids, did)
		}
	}
	return dids
}

func getBody(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

// sameAuditLogs fails unless every DID's /:did/log/audit is the same
// bytes on got and want; it returns how many nullified entries there were.
func sameAuditLogs(t *testing.T, got, want string, dids []string) int {
	t.Helper()
	nullified := 0
	for _, did := range dids {
		wc, w := getBody(t, want+"/"+did+"/log/audit")
		gc, g := getBody(t, got+"/"+did+"/log/audit")
		if wc != 200 || gc != 200 {
			t.Fatalf("audit log of %s: status %d upstream, %d mirror", did, wc, gc)
		}
		if !bytes.Equal(g, w) {
			t.Fatalf("audit log of %s differs:\n got  %s\n want %s", did, g, w)
		}
		nullified += bytes.Count(w, []byte(`"nullified":true`))
	}
	return nullified
}

// awaitSeq reads url's /export/stream from the start until the event with
// seq, and returns the events read: url's log holds seq once it is
// streamed (the stream sends committed ops only).
func awaitSeq(t *testing.T, url string, seq int64) [][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), mirrorWait)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+"/export/stream?cursor=0", nil)
	if err != nil {
		t.Fatalf("dial %s/export/stream: %v", url, err)
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	var events [][]byte
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("%s did not stream seq %d within %v (%d events read): %v; its /_health: %v", url, seq, mirrorWait, len(events), err, healthOf(t, url))
		}
		events = append(events, b)
		n, err := strconv.ParseInt(field(t, string(b), `"seq":`, `}`), 10, 64)
		if err != nil {
			t.Fatalf("stream event %s: %v", b, err)
		}
		if n >= seq {
			if n != seq {
				t.Fatalf("%s streamed seq %d after %d events, waiting for seq %d", url, n, len(events), seq)
			}
			return events
		}
	}
}

// writeHistory submits, with workers goroutines, the ops of the identities
// from..from+n-1: a genesis and an update each; every third one a hostile
// update by its second rotation key, then a recovery by its first key that
// nullifies it; every seventh one a tombstone. Every op must be accepted.
func writeHistory(t *testing.T, url string, from, n, workers int) {
	t.Helper()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := from + w; i < from+n; i += workers {
				id := optest.NewIdentity(t, optest.Handle(i), 2)
				submit := func(op *validate.Op) bool {
					code, body, err := post(url, op, id.DID)
					if err != nil || code != 200 {
						t.Errorf("identity %d: op %s: %d %s %v", i, op.CID(), code, body, err)
						return false
					}
					return true
				}
				if !submit(id.Head) {
					return
				}
				upd := id.Update(t, nil, 0, "updated"+optest.Handle(i))
				if !submit(upd) {
					return
				}
				id.Accept(upd)
				if i%3 == 0 {
					before := id.Head
					if !submit(id.Update(t, nil, 1, "stolen"+optest.Handle(i))) {
						return
					}
					// A recovery must come after the op it nullifies by at
					// least a millisecond: one in the same millisecond is
					// refused as misordered, and submitted again.
					fork := id.Update(t, before, 0, "recovered"+optest.Handle(i))
					for try := 0; ; try++ {
						code, body, err := post(url, fork, id.DID)
						if err == nil && code == 400 && strings.Contains(body, "Operations not correctly ordered") && try < 100 {
							continue
						}
						if err != nil || code != 200 {
							t.Errorf("identity %d: recovery %s: %d %s %v", i, fork.CID(), code, body, err)
							return
						}
						break
					}
					id.Accept(fork)
				}
				if i%7 == 0 && !submit(id.Tombstone(t, nil, 0)) {
					return
				}
			}
		}()
	}
	wg.Wait()
}

// historyOps is how many ops writeHistory(from, n) submits.
func historyOps(from, n int) int {
	ops := 0
	for i := from; i < from+n; i++ {
		ops += 2
		if i%3 == 0 {
			ops += 2
		}
		if i%7 == 0 {
			ops++
		}
	}
	return ops
}

// checkCaughtUp waits until the mirror at mirrorURL has streamed the
// latest seq of the directory at upstreamURL (which it mirrors, perhaps
// through other mirrors), then checks its /_health (its "upstream" must be
// direct), and that its /export and its stream are the upstream's, byte
// for byte. It returns the upstream's export.
func checkCaughtUp(t *testing.T, mirrorURL, upstreamURL, direct string) [][]byte {
	t.Helper()
	seq := healthInt(t, healthOf(t, upstreamURL), "seq")
	events := awaitSeq(t, mirrorURL, seq)
	h := healthOf(t, mirrorURL)
	if got := healthInt(t, h, "cursor"); got != seq {
		t.Fatalf("mirror /_health cursor %d, want the upstream's seq %d: %v", got, seq, h)
	}
	if got := healthInt(t, h, "seq"); got != seq {
		t.Fatalf("mirror /_health seq %d, want %d: %v", got, seq, h)
	}
	if h["upstream"] != direct || h["mode"] != "seq" {
		t.Fatalf("mirror /_health upstream %v mode %v, want %s seq: %v", h["upstream"], h["mode"], direct, h)
	}
	lag, ok := h["lagSeconds"].(json.Number)
	if f, err := lag.Float64(); !ok || err != nil || f < 0 {
		t.Fatalf("mirror /_health lagSeconds %v: %v", h["lagSeconds"], h)
	}
	if lagOps, ok := h["lagOps"]; ok && lagOps != json.Number("0") {
		t.Fatalf("mirror /_health lagOps %v after catching up: %v", lagOps, h)
	}
	want := exportLines(t, upstreamURL)
	if int64(len(want)) != seq {
		t.Fatalf("the upstream's export has %d lines, its seq is %d", len(want), seq)
	}
	sameLines(t, "mirror /export", exportLines(t, mirrorURL), want)
	sameLines(t, "mirror /export/stream", events, want)
	return want
}

// checkNoDivergences fails unless the mirror recorded no divergence.
func checkNoDivergences(t *testing.T, p *proc) {
	t.Helper()
	code, body := getBody(t, p.url+"/_mirror/divergences")
	if code != 200 || string(body) != `{"divergences":[],"cursor":0}` {
		t.Fatalf("/_mirror/divergences: %d %s", code, body)
	}
	if ls := p.logged("mirror: divergence"); len(ls) > 0 {
		t.Fatalf("the mirror logged divergences: %v", ls)
	}
}

// TestMirrorFollowsServeWhileWritesContinue: a mirror backfills (in pages
// of 7) and follows `plc serve` while writers submit ops with
// nullifications and tombstones, its audit sampler checking the upstream
// all along; once writes stop and it has caught up, its /export, its
// stream and every audit log are the upstream's byte for byte, its
// /_health says so, it recorded no divergence, and it refuses writes. A
// `plc mirror --once` into a fresh database then yields the same log.
func TestMirrorFollowsServeWhileWritesContinue(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			newDB := func(name string) string {
				if backend == "postgres" {
					return pgtest.URL(t)
				}
				return filepath.Join(t.TempDir(), name+".sqlite")
			}
			upDB := newDB("upstream")
			up := startServer(t, upDB, "--no-did-rate-limit")
			writeHistory(t, up.url, 0, 30, 4)

			m := startMirror(t, up.url, newDB("mirror"), "--page-size", "7", "--audit-interval", "20ms")
			done := make(chan struct{})
			go func() {
				defer close(done)
				writeHistory(t, up.url, 30, 150, 6)
			}()
			m.await(t, "mirror: following the upstream's stream")
			<-done
			// More writes once the mirror follows the stream for sure.
			writeHistory(t, up.url, 180, 30, 3)
			if t.Failed() {
				t.FailNow()
			}
			want := checkCaughtUp(t, m.url, up.url, up.url)
			if len(want) != historyOps(0, 210) {
				t.Fatalf("the upstream holds %d ops, %d were submitted", len(want), historyOps(0, 210))
			}
			if n := sameAuditLogs(t, m.url, up.url, lineDIDs(t, want)); n != 70 {
				t.Fatalf("%d nullified ops in the audit logs, want 70", n)
			}
			checkNoDivergences(t, m)

			// Read-only: POST /:did is 405 with a JSON message, and the op
			// goes nowhere.
			id := optest.NewIdentity(t, "refused.test", 1)
			resp, err := http.Post(m.url+"/"+id.DID, "application/json", bytes.NewReader(id.Head.AppendJSON(nil)))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var msg struct{ Message string }
			if resp.StatusCode != http.StatusMethodNotAllowed || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") ||
				json.Unmarshal(body, &msg) != nil || !strings.Contains(msg.Message, "read-only mirror") || resp.Header.Get("Allow") != "GET" {
				t.Fatalf("POST to the mirror: %d %v %s", resp.StatusCode, resp.Header, body)
			}
			if code, _ := getBody(t, up.url+"/"+id.DID); code != 404 {
				t.Fatalf("the refused op reached the upstream: GET /%s %d", id.DID, code)
			}
			if code, _ := getBody(t, m.url+"/"+id.DID); code != 404 {
				t.Fatalf("the refused op is in the mirror: GET /%s %d", id.DID, code)
			}

			// --once, in this process (under -race, the mirror's code is
			// checked too), into a fresh database.
			onceDB := newDB("once")
			keyFile := filepath.Join(t.TempDir(), "checkpoint.key")
			if code, _, stderr := runPLC(t, context.Background(), nil, "keygen", "--out", keyFile, "--origin", "once.test"); code != exitOK {
				t.Fatalf("keygen: %s", stderr)
			}
			code, stdout, stderr := runPLC(t, context.Background(), nil, "mirror", "--once", "--upstream", up.url+"/",
				"--db", onceDB, "--listen", "127.0.0.1:0", "--log-format", "json", "--page-size", "1000", "--checkpoint-key", keyFile,
				// A PostgreSQL log's default webhook key would go to
				// ./plc-data, here the package's source folder.
				"--webhook-key", filepath.Join(t.TempDir(), "webhook.key"))
			if want := fmt.Sprintf("caught up with %s: cursor %d\n", up.url, len(want)); code != exitOK || stdout != want {
				t.Fatalf("mirror --once: exit %d, stdout %q, want %q\n%s", code, stdout, want, stderr)
			}
			checkSameState(t, openDB(t, onceDB), openDB(t, upDB))
		})
	}
}

// TestMirrorChain: A is `plc serve`, B mirrors A, C mirrors B, both
// following streams; ops written to A reach C through B, and A, B and C
// serve the same export and audit logs.
func TestMirrorChain(t *testing.T) {
	dir := t.TempDir()
	a := startServer(t, filepath.Join(dir, "a.sqlite"), "--no-did-rate-limit")
	writeHistory(t, a.url, 0, 20, 4)
	b := startMirror(t, a.url, filepath.Join(dir, "b.sqlite"), "--page-size", "11")
	b.await(t, "mirror: following the upstream's stream")
	c := startMirror(t, b.url, filepath.Join(dir, "c.sqlite"), "--page-size", "5")
	c.await(t, "mirror: following the upstream's stream")
	writeHistory(t, a.url, 20, 80, 6)
	if t.Failed() {
		t.FailNow()
	}
	want := checkCaughtUp(t, c.url, a.url, b.url)
	if len(want) != historyOps(0, 100) {
		t.Fatalf("A holds %d ops, %d were submitted", len(want), historyOps(0, 100))
	}
	// C has all of A: so has B, which C got it from.
	hb := healthOf(t, b.url)
	if got := healthInt(t, hb, "cursor"); got != int64(len(want)) {
		t.Fatalf("B's cursor %d, want %d: %v", got, len(want), hb)
	}
	sameLines(t, "B's /export", exportLines(t, b.url), want)
	dids := lineDIDs(t, want)
	sameAuditLogs(t, b.url, a.url, dids)
	sameAuditLogs(t, c.url, a.url, dids)
	checkNoDivergences(t, b)
	checkNoDivergences(t, c)
}

// TestMirrorForwardWrites: with --forward-writes, POST /:did to the mirror
// is the upstream's answer: an accepted op lands in the upstream and flows
// back into the mirror; a rejected one is the upstream's 400; with the
// upstream gone, 502 with a JSON message.
func TestMirrorForwardWrites(t *testing.T) {
	dir := t.TempDir()
	a := startServer(t, filepath.Join(dir, "a.sqlite"))
	first := optest.NewIdentity(t, "first.test", 1)
	if code, body, err := post(a.url, first.Head, first.DID); err != nil || code != 200 {
		t.Fatalf("genesis: %d %s %v", code, body, err)
	}
	m := startMirror(t, a.url, filepath.Join(dir, "m.sqlite"), "--forward-writes")
	m.await(t, "mirror: following the upstream's stream")

	id := optest.NewIdentity(t, "forwarded.test", 2)
	if code, body, err := post(m.url, id.Head, id.DID); err != nil || code != 200 {
		t.Fatalf("genesis through the mirror: %d %s %v", code, body, err)
	}
	upd := id.Update(t, nil, 1, "forwarded2.test")
	if code, body, err := post(m.url, upd, id.DID); err != nil || code != 200 {
		t.Fatalf("update through the mirror: %d %s %v", code, body, err)
	}
	// In the upstream: its log is the first op and the two forwarded ones.
	upLines := exportLines(t, a.url)
	if len(upLines) != 3 || !bytes.Contains(upLines[2], []byte(`"cid":"`+upd.CID()+`"`)) {
		t.Fatalf("the upstream's export after two forwarded ops:\n%s", bytes.Join(upLines, []byte("\n")))
	}
	// And back in the mirror.
	checkCaughtUp(t, m.url, a.url, a.url)
	sameAuditLogs(t, m.url, a.url, []string{first.DID, id.DID})
	_, doc := getBody(t, m.url+"/"+id.DID)
	if !bytes.Contains(doc, []byte("at://forwarded2.test")) {
		t.Fatalf("the mirror's document of %s: %s", id.DID, doc)
	}

	// A forged update: the upstream's 400 and message, through the mirror.
	forged := optest.Sign(t, func() validate.Operation {
		b := id.Body
		b.Prev = upd.CID()
		b.AlsoKnownAs = []string{"at://forged.test"}
		return b
	}(), optest.NewKey(t, false))
	code, body, err := post(m.url, forged, id.DID)
	if err != nil || code != 400 || !strings.Contains(body, `"message"`) {
		t.Fatalf("forged update through the mirror: %d %s %v", code, body, err)
	}
	if _, direct, _ := post(a.url, forged, id.DID); direct != body {
		t.Fatalf("the mirror answered %s, the upstream answers %s", body, direct)
	}
	if got := healthInt(t, healthOf(t, a.url), "seq"); got != 3 {
		t.Fatalf("the upstream's seq is %d after a rejected op, want 3", got)
	}

	// The upstream gone: 502 with a JSON message, and the mirror still
	// serves what it holds.
	a.kill()
	other := optest.NewIdentity(t, "orphan.test", 1)
	resp, err := http.Post(m.url+"/"+other.DID, "application/json", bytes.NewReader(other.Head.AppendJSON(nil)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var msg struct{ Message string }
	if resp.StatusCode != http.StatusBadGateway || json.Unmarshal(b, &msg) != nil || !strings.Contains(msg.Message, "upstream directory could not be reached") {
		t.Fatalf("POST with the upstream gone: %d %s", resp.StatusCode, b)
	}
	if code, _ := getBody(t, m.url+"/"+id.DID); code != 200 {
		t.Fatalf("GET from the mirror with the upstream gone: %d", code)
	}
}

// TestMirrorAuditSampleWhileBehind: the audit sampler does not take the
// mirror's own lag for a divergence. The mirror reaches its upstream
// through a proxy that holds back the export after a hostile update and
// refuses the stream, while audit logs pass; the upstream then accepts a
// recovery that nullifies the hostile update. The sampler sees the
// upstream's audit log say "nullified" where the mirror, behind, does not
// yet: no divergence. Once the proxy lets the recovery through the
// mirror catches up; and when the proxy then tampers with the audit log,
// the mismatch is recorded.
func TestMirrorAuditSampleWhileBehind(t *testing.T) {
	dir := t.TempDir()
	a := startServer(t, filepath.Join(dir, "a.sqlite"))
	id := optest.NewIdentity(t, "lagging.test", 2)
	before := id.Head
	hostile := id.Update(t, nil, 1, "stolen.test")
	for _, op := range []*validate.Op{id.Head, hostile} {
		if code, body, err := post(a.url, op, id.DID); err != nil || code != 200 {
			t.Fatalf("op %s: %d %s %v", op.CID(), code, body, err)
		}
	}
	fork := id.Update(t, before, 0, "recovered.test")

	aURL, err := url.Parse(a.url)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu        sync.Mutex
		frozen    = true // the export ends at seq 2; no stream
		tamper    bool   // audit logs say the hostile update is not nullified
		forkAudit int    // audit logs served with the recovery in them
		twoAudits = make(chan struct{})
	)
	auditPath := "/" + id.DID + "/log/audit"
	rp := httputil.NewSingleHostReverseProxy(aURL)
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.URL.Path != auditPath {
			return nil
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		mu.Lock()
		if bytes.Contains(body, []byte(fork.CID())) {
			if forkAudit++; forkAudit == 2 {
				close(twoAudits)
			}
		}
		if tamper {
			body = bytes.Replace(body, []byte(`"nullified":true`), []byte(`"nullified":false`), 1)
		}
		mu.Unlock()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
		return nil
	}
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		f := frozen
		mu.Unlock()
		if f {
			switch r.URL.Path {
			case "/export/stream":
				http.Error(w, "held back by the test", http.StatusServiceUnavailable)
				return
			case "/export":
				if after, _ := strconv.Atoi(r.URL.Query().Get("after")); after >= 2 {
					return // an empty page: nothing after seq 2
				}
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)

	m := startMirror(t, proxy.URL, filepath.Join(dir, "m.sqlite"), "--audit-interval", "10ms")
	m.await(t, "mirror: upstream failed, backing off") // backfilled to seq 2, the stream refused
	if got := healthInt(t, healthOf(t, m.url), "seq"); got != 2 {
		t.Fatalf("the mirror holds %d ops, want 2", got)
	}
	if code, body, err := post(a.url, fork, id.DID); err != nil || code != 200 {
		t.Fatalf("recovery: %d %s %v", code, body, err)
	}
	select {
	case <-twoAudits: // the second request comes after the first was judged
	case <-time.After(mirrorWait):
		t.Fatalf("the mirror did not sample the audit log of %s within %v", id.DID, mirrorWait)
	}
	if got := healthInt(t, healthOf(t, m.url), "seq"); got != 2 {
		t.Fatalf("the mirror holds %d ops while held back, want 2", got)
	}
	checkNoDivergences(t, m)

	mu.Lock()
	frozen = false
	mu.Unlock()
	checkCaughtUp(t, m.url, a.url, proxy.URL)
	sameAuditLogs(t, m.url, a.url, []string{id.DID})
	checkNoDivergences(t, m)

	mu.Lock()
	tamper = true
	mu.Unlock()
	m.await(t, "mirror: divergence")
	code, body := getBody(t, m.url+"/_mirror/divergences")
	var ds struct {
		Divergences []struct {
			Kind, DID, CID, Evidence string
		}
	}
	if err := json.Unmarshal(body, &ds); code != 200 || err != nil || len(ds.Divergences) != 1 {
		t.Fatalf("/_mirror/divergences after tampering: %d %s", code, body)
	}
	if d := ds.Divergences[0]; d.Kind != "nullification_mismatch" || d.DID != id.DID || d.CID != hostile.CID() || strings.Contains(d.Evidence, `"nullified":true`) {
		t.Fatalf("divergence after tampering: %s", body)
	}
}

// raceEnabled reports whether the test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// TestMirrorBackfillSurvivesSIGKILL SIGKILLs `plc mirror --once` at random
// points of its backfill of a 100k-op corpus (served by `plc serve` after
// `plc import`), restarts it each time, and lets the last run finish: the
// ops and the cursor are committed together at every kill, and the mirror
// ends with exactly the upstream's log (entries, per-DID ops with their
// nullification flags, records), no op lost or doubled, nothing rejected.
func TestMirrorBackfillSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("generates, imports and mirrors a 100k-op corpus")
	}
	bin := plcBinary(t)
	const ops = 100_000
	const kills = 4
	seed := rand.Uint64N(1 << 32)
	rnd := rand.New(rand.NewPCG(seed, 0))
	t.Logf("corpus of %d ops, seed %d", ops, seed)

	dir := t.TempDir()
	corpus := filepath.Join(dir, "corpus.jsonl")
	upDB := filepath.Join(dir, "upstream.sqlite")
	for _, args := range [][]string{
		{"bench", "gen", "--ops", strconv.Itoa(ops), "--seed", strconv.FormatUint(seed, 10), "--out", corpus},
		{"import", "--db", upDB, corpus},
	} {
		c := exec.Command(bin, args...)
		c.Dir = filepath.Dir(bin)
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("plc %v: %v\n%s", args, err, out)
		}
	}
	os.Remove(corpus)
	up := startServer(t, upDB)
	source := "upstream:" + up.url
	mirrorDB := filepath.Join(dir, "mirror.sqlite")

	// mirrorState is the mirror's latest seq and its cursor, read with no
	// process running.
	mirrorState := func() (latest, cursor int64) {
		t.Helper()
		s, err := oplog.OpenSQLite(mirrorDB)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		latest, err = s.LatestSeq(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		c, err := s.Cursor(context.Background(), source)
		if err != nil {
			t.Fatal(err)
		}
		return latest, c.Seq
	}

	// Each run is killed at a random point of its backfill: a random delay
	// after it logs the upstream's mode (the backfill starts then), between
	// lo and hi. A kill that found nothing committed yet (the first
	// transaction is oplog.DefaultImportBatch ops) makes the next one later. Whatever the
	// delays, four runs backfill less than the 100k ops here.
	prev, lo, hi, inside := int64(0), time.Duration(0), 1200*time.Millisecond, 0
	for k := range kills {
		m := startMirror(t, up.url, mirrorDB, "--once", "--audit-interval", "0")
		m.await(t, "mirror: upstream export mode")
		delay := lo + time.Duration(rnd.Int64N(int64(hi-lo)))
		timer := time.NewTimer(delay) // a random kill point, not a wait for a condition
		select {
		case <-timer.C:
			m.kill()
		case <-m.done:
			timer.Stop()
		}
		ws, ok := m.cmd.ProcessState.Sys().(syscall.WaitStatus)
		if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			// The backfill ended before the kill: a machine fast enough
			// to backfill the rest within the delay.
			if m.cmd.ProcessState.ExitCode() != 0 {
				t.Fatalf("run %d: the mirror ended with %v\n%s", k, m.cmd.ProcessState, m.stderrText())
			}
			t.Logf("run %d: finished within %v, before its kill", k, delay)
			break
		}
		latest, cursor := mirrorState()
		t.Logf("run %d: SIGKILL %v into the backfill: %d ops, cursor %d", k, delay, latest, cursor)
		if latest != cursor {
			t.Fatalf("run %d: SIGKILL left %d ops with cursor %d: ops and cursor are not committed together", k, latest, cursor)
		}
		if latest < prev || latest > int64(ops) {
			t.Fatalf("run %d: %d ops after the kill, %d before the run", k, latest, prev)
		}
		switch {
		case latest == prev:
			lo, hi = delay, min(2*hi, 2500*time.Millisecond)
		case latest < int64(ops):
			inside++
		}
		prev = latest
	}
	if inside == 0 {
		t.Fatalf("no kill landed inside the backfill (%d ops mirrored before the last run)", prev)
	}

	cmd := exec.Command(bin, "mirror", "--once", "--upstream", up.url, "--db", mirrorDB, "--listen", "127.0.0.1:0", "--log-format", "json", "--audit-interval", "0")
	cmd.Dir = filepath.Dir(bin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("the last mirror --once: %v\n%s", err, stderr.String())
	}
	if want := fmt.Sprintf("caught up with %s: cursor %d\n", up.url, ops); stdout.String() != want {
		t.Fatalf("the last mirror --once printed %q, want %q", stdout.String(), want)
	}
	if latest, cursor := mirrorState(); latest != int64(ops) || cursor != int64(ops) {
		t.Fatalf("the mirror holds %d ops, cursor %d; want %d", latest, cursor, ops)
	}
	ms := openDB(t, mirrorDB)
	if rj, err := ms.Rejections(context.Background(), source, 0, 10); err != nil || len(rj) != 0 {
		t.Fatalf("the mirror recorded divergences: %+v %v", rj, err)
	}
	// Every entry; every DID's ops and record (a sample of 2000 DIDs under
	// -race, where reading them all takes over a minute).
	sample := 0
	if raceEnabled() {
		sample = 2000
	}
	checkSameLog(t, ms, openDB(t, upDB), sample, rnd)
}

// checkSameLog fails unless got holds want's log: the same latest seq and
// entries (seq, DID, CID, createdAt, op bytes, nullified), and for every
// DID (or sample DIDs at random, if sample > 0) the same ops and record,
// as checkSameState checks them.
func checkSameLog(t *testing.T, got, want oplog.Store, sample int, rnd *rand.Rand) {
	t.Helper()
	ctx := context.Background()
	gl, err1 := got.LatestSeq(ctx)
	wl, err2 := want.LatestSeq(ctx)
	g, err3 := got.Export(ctx, 0, 1<<20)
	w, err4 := want.Export(ctx, 0, 1<<20)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		t.Fatal(err)
	}
	if gl != wl || len(g) != len(w) || int64(len(w)) != wl {
		t.Fatalf("latest seq %d and %d ops, want %d and %d", gl, len(g), wl, len(w))
	}
	var dids []string
	seen := map[string]bool{}
	for i := range g {
		if !sameEntry(g[i], w[i]) {
			t.Fatalf("op %d: got seq %d %s %s %s, want seq %d %s %s %s", i, g[i].Seq, g[i].DID, g[i].CID, g[i].CreatedAt, w[i].Seq, w[i].DID, w[i].CID, w[i].CreatedAt)
		}
		if !seen[w[i].DID] {
			seen[w[i].DID] = true
			dids = append(dids, w[i].DID)
		}
	}
	if sample > 0 && sample < len(dids) {
		rnd.Shuffle(len(dids), func(i, j int) { dids[i], dids[j] = dids[j], dids[i] })
		dids = dids[:sample]
	}
	for _, did := range dids {
		g, err1 := got.Ops(ctx, did)
		w, err2 := want.Ops(ctx, did)
		gr, err3 := got.Record(ctx, did)
		wr, err4 := want.Record(ctx, did)
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			t.Fatal(err)
		}
		if !slices.EqualFunc(g, w, sameEntry) {
			t.Fatalf("ops of %s differ:\n got  %v\n want %v", did, nullifiedFlags(g), nullifiedFlags(w))
		}
		if gr.HeadSeq != wr.HeadSeq || !slices.Equal(gr.Seqs, wr.Seqs) || !bytes.Equal(gr.Head.SignedCBOR(), wr.Head.SignedCBOR()) || gr.Tombstoned() != wr.Tombstoned() {
			t.Fatalf("record of %s differs: head %d seqs %v, want head %d seqs %v", did, gr.HeadSeq, gr.Seqs, wr.HeadSeq, wr.Seqs)
		}
	}
}

// TestMirrorUsageExitCodes: bad usage exits 2 with a message, before any
// database is opened (the messages are in testdata/script/mirror.txtar).
func TestMirrorUsageExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{nil, "plc mirror: --upstream is required\n"},
		{[]string{"--upstream", "ftp://example.com"}, `plc mirror: --upstream "ftp://example.com": want an http:// or https:// URL` + "\n"},
		{[]string{"--upstream", "example.com"}, `want an http:// or https:// URL`},
		{[]string{"--upstream", "http://example.com/?x=1"}, `want a URL without query or fragment`},
		{[]string{"--upstream", "http://example.com/#top"}, `want a URL without query or fragment`},
		{[]string{"--upstream", "http://example.com", "--page-size", "0"}, "plc mirror: --page-size must be 1 to 1000\n"},
		{[]string{"--upstream", "http://example.com", "--page-size", "1001"}, "--page-size must be 1 to 1000"},
		{[]string{"--upstream", "http://example.com", "--audit-interval", "-1s"}, "--audit-interval must not be negative"},
		{[]string{"--upstream", "http://example.com", "--poll-interval", "0"}, "plc mirror: --poll-interval 0s: want a positive duration (5s, 1m)\n"},
		{[]string{"--upstream", "http://example.com", "--poll-interval", "-5s"}, "plc mirror: --poll-interval -5s: want a positive duration"},
		{[]string{"--upstream", "http://example.com", "--poll-interval", "soon"}, `invalid value "soon" for flag -poll-interval`},
		{[]string{"--upstream", "http://example.com", "extra"}, `plc mirror: unexpected argument "extra"` + "\n"},
		{[]string{"--upstream", "http://example.com", "--listen", "nowhere"}, `--listen "nowhere"`},
		{[]string{"--upstream", "http://example.com", "--no-such-flag"}, "flag provided but not defined: -no-such-flag"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			db := filepath.Join(t.TempDir(), "plc.sqlite")
			args := append([]string{"mirror", "--db", db}, tc.args...)
			code, stdout, stderr := runPLC(t, context.Background(), nil, args...)
			if code != exitUsage || !strings.Contains(stderr, tc.msg) || stdout != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 2 and %q", code, stdout, stderr, tc.msg)
			}
			if _, err := os.Stat(db); !os.IsNotExist(err) {
				t.Fatalf("bad usage created the database: %v", err)
			}
		})
	}
}
