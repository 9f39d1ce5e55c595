package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/plcdir/plc/api"
	"github.com/plcdir/plc/internal/cli"
	"github.com/plcdir/plc/internal/optest"
	"github.com/plcdir/plc/internal/pgtest"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/storetest"
	"github.com/plcdir/plc/validate"
)

// Tests of `plc import`: the imported log equals the same ops submitted
// one by one, whatever the input's format, compression or channel, and
// whatever point an import was interrupted at.

var importT0 = time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)

// stepClock is a clock that moves by step at every reading.
type stepClock struct {
	mu   sync.Mutex
	t    time.Time
	step time.Duration
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.t
	c.t = c.t.Add(c.step)
	return t
}

// submitted is a directory built by submitting ops one by one through the
// Log, at known times: several DIDs, updates, a recovery fork that
// nullifies an update, a tombstone.
type submitted struct {
	store oplog.Store
	log   *oplog.Log
	dids  []string
}

func buildSubmitted(t *testing.T) *submitted {
	t.Helper()
	s, _ := storetest.SQLite(t)
	clock := &stepClock{t: importT0, step: time.Second}
	l := oplog.NewLog(s, oplog.Options{Now: clock.Now, NoRateLimit: true})
	t.Cleanup(l.Close)
	sub := &submitted{store: s, log: l}
	do := func(id *optest.Identity, op *validate.Op) {
		t.Helper()
		if _, err := l.Submit(context.Background(), id.DID, op); err != nil {
			t.Fatalf("Submit: %v", err)
		}
	}
	var ids []*optest.Identity
	for i := range 6 {
		id := optest.NewIdentity(t, optest.Handle(i), 2)
		do(id, id.Head)
		ids = append(ids, id)
		sub.dids = append(sub.dids, id.DID)
	}
	for i, id := range ids {
		op := id.Update(t, nil, i%2, "updated"+optest.Handle(i))
		do(id, op)
		id.Accept(op)
	}
	// A recovery fork: key 1 updates, key 0 overrides it from the op before.
	a := ids[0]
	before := a.Head
	stolen := a.Update(t, nil, 1, "stolen.test")
	do(a, stolen)
	fork := a.Update(t, before, 0, "recovered.test")
	do(a, fork)
	a.Accept(fork)
	// A tombstone.
	do(ids[1], ids[1].Tombstone(t, nil, 0))
	return sub
}

// export fetches the export of the directory's log through the HTTP API:
// "seq" pages /export?after=<seq>, "legacy" pages /export?after=<time>.
func (sub *submitted) export(t *testing.T, mode string) []byte {
	t.Helper()
	srv := httptest.NewServer(api.New(api.Config{Log: sub.log}))
	defer srv.Close()
	var lines [][]byte
	after := "0"
	if mode == "legacy" {
		after = "1970-01-01T00:00:00.000Z"
	}
	for {
		q := srv.URL + "/export?count=1000&after=" + url.QueryEscape(after)
		resp, err := http.Get(q)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", q, resp.StatusCode, body)
		}
		if len(body) == 0 {
			break
		}
		page := bytes.Split(body, []byte("\n"))
		lines = append(lines, page...)
		last := string(page[len(page)-1])
		if mode == "legacy" {
			after = field(t, last, `"createdAt":"`, `"`)
		} else {
			after = field(t, last, `"seq":`, `}`)
		}
		if len(page) < 1000 {
			break
		}
	}
	return bytes.Join(lines, []byte("\n"))
}

func field(t *testing.T, line, start, end string) string {
	t.Helper()
	_, rest, ok := strings.Cut(line, start)
	v, _, ok2 := strings.Cut(rest, end)
	if !ok || !ok2 {
		t.Fatalf("no %s in %s", start, line)
	}
	return v
}

func runPLC(t *testing.T, ctx context.Context, stdin io.Reader, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	code = run(ctx, args, env{Stdin: stdin, Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }})
	return code, out.String(), errb.String()
}

func openDB(t *testing.T, db string) oplog.Store {
	t.Helper()
	var (
		s   oplog.Store
		err error
	)
	if oplog.IsPostgres(db) {
		s, err = oplog.OpenPostgres(context.Background(), db)
	} else {
		s, err = oplog.OpenSQLite(db)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// checkSameState fails unless got holds exactly want's log: the same
// entries (seq, DID, CID, createdAt, op bytes), and for every DID the same
// ops with the same nullification flags and the same record.
func checkSameState(t *testing.T, got, want oplog.Store) {
	t.Helper()
	ctx := context.Background()
	g, err1 := got.Export(ctx, 0, 1<<20)
	w, err2 := want.Export(ctx, 0, 1<<20)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	if len(g) != len(w) {
		t.Fatalf("%d ops, want %d", len(g), len(w))
	}
	dids := map[string]bool{}
	for i := range g {
		if !sameEntry(g[i], w[i]) {
			t.Fatalf("op %d: got seq %d %s %s %s, want seq %d %s %s %s", i, g[i].Seq, g[i].DID, g[i].CID, g[i].CreatedAt, w[i].Seq, w[i].DID, w[i].CID, w[i].CreatedAt)
		}
		dids[w[i].DID] = true
	}
	for did := range dids {
		g, err1 := got.Ops(ctx, did)
		w, err2 := want.Ops(ctx, did)
		if err := errors.Join(err1, err2); err != nil {
			t.Fatal(err)
		}
		if !slices.EqualFunc(g, w, sameEntry) {
			t.Fatalf("ops of %s differ:\n got  %v\n want %v", did, nullifiedFlags(g), nullifiedFlags(w))
		}
		gr, err1 := got.Record(ctx, did)
		wr, err2 := want.Record(ctx, did)
		if err := errors.Join(err1, err2); err != nil {
			t.Fatal(err)
		}
		if gr.HeadSeq != wr.HeadSeq || !slices.Equal(gr.Seqs, wr.Seqs) || !bytes.Equal(gr.Head.SignedCBOR(), wr.Head.SignedCBOR()) || gr.Tombstoned() != wr.Tombstoned() {
			t.Fatalf("record of %s differs: head %d seqs %v, want head %d seqs %v", did, gr.HeadSeq, gr.Seqs, wr.HeadSeq, wr.Seqs)
		}
	}
}

func sameEntry(a, b oplog.Entry) bool {
	return a.Seq == b.Seq && a.DID == b.DID && a.CID == b.CID && a.CreatedAt.Equal(b.CreatedAt) &&
		bytes.Equal(a.Op, b.Op) && a.Nullified == b.Nullified
}

func nullifiedFlags(es []oplog.Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, fmt.Sprintf("%d:%v", e.Seq, e.Nullified))
	}
	return out
}

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestImportEqualsSubmittingThroughTheLog: importing a directory's export
// (seq mode or legacy) yields exactly the log of submitting its ops one by
// one: same seqs, times, bytes, nullifications and records.
func TestImportEqualsSubmittingThroughTheLog(t *testing.T) {
	sub := buildSubmitted(t)
	for _, mode := range []string{"seq", "legacy"} {
		export := sub.export(t, mode)
		t.Run(mode, func(t *testing.T) {
			backends(t, func(t *testing.T, db string) {
				file := writeFile(t, "export.jsonl", export)
				code, stdout, stderr := runPLC(t, context.Background(), nil, "import", "--db", db, "--batch", "4", file)
				if code != exitOK {
					t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
				}
				n := bytes.Count(export, []byte("\n")) + 1
				if want := fmt.Sprintf("done: %d lines: %d imported, 0 rejected, 0 skipped", n, n); !strings.HasPrefix(stdout, want) {
					t.Fatalf("stdout %q, want %q…", stdout, want)
				}
				if stderr != "" {
					t.Fatalf("stderr: %s", stderr)
				}
				checkSameState(t, openDB(t, db), sub.store)
			})
		})
	}
}

// TestImportResumesAfterInterruption interrupts an import after k batches
// (its context cancelled by a hook): the re-run imports the rest, the
// result equals an uninterrupted import, and a third run imports nothing.
func TestImportResumesAfterInterruption(t *testing.T) {
	sub := buildSubmitted(t)
	export := sub.export(t, "seq")
	lines := int64(bytes.Count(export, []byte("\n")) + 1)
	backends(t, func(t *testing.T, backend string) {
		file := writeFile(t, "export.jsonl", export)
		for _, k := range []int64{1, 3} {
			t.Run(strconv.FormatInt(k, 10), func(t *testing.T) {
				db := filepath.Join(t.TempDir(), "plc.sqlite")
				if oplog.IsPostgres(backend) {
					db = pgtest.URL(t)
				}
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				var stdout, stderr bytes.Buffer
				e := env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }}
				c := importConfig{DB: db, Input: file, Batch: 2, Workers: 4, afterBatch: func(st oplog.ImportStats) {
					if st.Batches == k {
						cancel()
					}
				}}
				if code := importExport(ctx, c, e); code != exitFailure {
					t.Fatalf("interrupted import: exit %d\n%s%s", code, stdout.String(), stderr.String())
				}
				if want := fmt.Sprintf("stopped: %d lines: %d imported", 2*k, 2*k); !strings.HasPrefix(stdout.String(), want) {
					t.Fatalf("stdout %q, want %q…", stdout.String(), want)
				}
				if !strings.Contains(stderr.String(), "interrupted; run the same command again to resume") {
					t.Fatalf("stderr: %s", stderr.String())
				}
				code, out, errs := runPLC(t, context.Background(), nil, "import", "--db", db, "--batch", "2", file)
				if want := fmt.Sprintf("done: %d lines: %d imported, 0 rejected, %d skipped", lines, lines-2*k, 2*k); code != exitOK || !strings.HasPrefix(out, want) {
					t.Fatalf("resumed import: exit %d, stdout %q, want %q…\n%s", code, out, want, errs)
				}
				checkSameState(t, openDB(t, db), sub.store)
				code, out, _ = runPLC(t, context.Background(), nil, "import", "--db", db, file)
				if want := fmt.Sprintf("done: %d lines: 0 imported, 0 rejected, %d skipped", lines, lines); code != exitOK || !strings.HasPrefix(out, want) {
					t.Fatalf("third import: exit %d, stdout %q, want %q…", code, out, want)
				}
				checkSameState(t, openDB(t, db), sub.store)
			})
		}
	})
}

// renderSeqLine renders a seq-mode export line, as /export does.
func renderSeqLine(did string, op *validate.Op, cid string, at time.Time, seq int64) []byte {
	b := []byte(`{"type":"sequenced_op","did":`)
	b = validate.AppendJSONString(b, did)
	b = append(b, `,"operation":`...)
	b = op.AppendJSON(b)
	b = append(b, `,"cid":`...)
	b = validate.AppendJSONString(b, cid)
	b = append(b, `,"createdAt":"`...)
	b = validate.AppendTimestamp(b, at)
	b = append(b, `","seq":`...)
	b = strconv.AppendInt(b, seq, 10)
	return append(b, '}')
}

// TestImportSurvivesSIGKILL kills the real binary in the middle of an
// import (after its first rejected line is reported, i.e. committed) and
// runs it again: every op is there exactly once, the one rejected line is
// recorded once, and the log equals an uninterrupted import's.
func TestImportSurvivesSIGKILL(t *testing.T) {
	bin := plcBinary(t)
	const n = 1500
	var lines [][]byte
	for i := range n {
		id := optest.NewIdentity(t, optest.Handle(i), 1)
		cid := id.Head.CID()
		if i == 20 {
			cid = "bafyreibymu5ws6lhotut6cdnvkkikgjzcogq2hz7n6a23vhnkcskqee6xq" // a wrong CID
		}
		lines = append(lines, renderSeqLine(id.DID, id.Head, cid, importT0.Add(time.Duration(i)*time.Millisecond), int64(i+1)))
	}
	file := writeFile(t, "export.jsonl", append(bytes.Join(lines, []byte("\n")), '\n'))

	whole := filepath.Join(t.TempDir(), "whole.sqlite")
	if code, out, errs := runPLC(t, context.Background(), nil, "import", "--db", whole, file); code != exitOK {
		t.Fatalf("uninterrupted import: exit %d\n%s%s", code, out, errs)
	}

	db := filepath.Join(t.TempDir(), "plc.sqlite")
	cmd := exec.Command(bin, "import", "--db", db, "--batch", "5", file)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "rejected line 21 ") {
			cmd.Process.Kill() // SIGKILL
			break
		}
	}
	io.Copy(io.Discard, stderr)
	cmd.Wait()

	s := openDB(t, db)
	seq, err := s.LatestSeq(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("killed after %d of %d ops", seq, n-1)
	code, out, errs := runPLC(t, context.Background(), nil, "import", "--db", db, file)
	if code != exitOK {
		t.Fatalf("resumed import: exit %d\n%s%s", code, out, errs)
	}
	if strings.Contains(errs, "rejected line") {
		t.Fatalf("the resumed import rejected lines again:\n%s", errs)
	}
	checkSameState(t, s, openDB(t, whole))
	rej, err := s.Rejections(context.Background(), "", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(rej) != 1 || rej[0].Line != 21 || !bytes.Equal(rej[0].Raw, lines[20]) {
		t.Fatalf("rejections after the kill and the re-run: %+v", rej)
	}
}

// TestImportRejectsInvalidLinesAndKeepsThem: forged signatures, wrong
// CIDs, bad JSON, ops after a nullified op, and other broken lines are not
// applied; each is reported and stored with its exact bytes and reason,
// and the lines after them are judged as usual.
func TestImportRejectsInvalidLinesAndKeepsThem(t *testing.T) {
	a := optest.NewIdentity(t, "alice.test", 2)
	b := optest.NewIdentity(t, "bob.test", 2)
	mallory := optest.NewKey(t, false)
	at := func(i int) time.Time { return importT0.Add(time.Duration(i) * time.Second) }
	var lines [][]byte
	seq := int64(0)
	add := func(did string, op *validate.Op, cid string) {
		seq++
		lines = append(lines, renderSeqLine(did, op, cid, at(int(seq)), seq))
	}
	ok := func(did string, op *validate.Op) { add(did, op, op.CID()) }
	gA := a.Head
	ok(a.DID, gA)
	ok(b.DID, b.Head)
	stolen := a.Update(t, nil, 1, "stolen.test")
	ok(a.DID, stolen)
	fork := a.Update(t, gA, 0, "recovered.test")
	ok(a.DID, fork)
	a.Accept(fork)

	type bad struct {
		line   int
		did    string
		cid    string
		reason string
	}
	var want []bad
	reject := func(did, cid, reason string) { want = append(want, bad{len(lines), did, cid, reason}) }

	body := a.Body
	body.Prev = fork.CID()
	forged := optest.Sign(t, body, mallory)
	add(a.DID, forged, forged.CID())
	reject(a.DID, forged.CID(), "invalid signature: no rotation key of the previous op verifies it")

	wrong := a.Update(t, nil, 1, "wrong.test")
	add(a.DID, wrong, b.Head.CID())
	reject(a.DID, b.Head.CID(), "cid "+b.Head.CID()+" does not match the operation's CID "+wrong.CID())

	lines = append(lines, []byte(`{"type":"sequenced_op","did":"`+a.DID+`","operation":{"sig":`))
	seq++
	reject(a.DID, "", "invalid JSON: unterminated object or array")

	afterNull := a.Update(t, stolen, 1, "afternull.test")
	add(a.DID, afterNull, afterNull.CID())
	reject(a.DID, afterNull.CID(), "Operations not correctly ordered")

	lines = append(lines, []byte(`{"did":"`+b.DID+`","operation":{},"cid":"x","createdAt":"2026-01-01T00:00:00Z","nullified":false,"extra":1}`))
	reject(b.DID, "x", `unknown field "extra"`)

	lines = append(lines, append([]byte(`{"did":"`), bytes.Repeat([]byte("a"), oplog.MaxLineBytes)...))
	reject("", "", "line longer than 65536 bytes")

	// Judged as usual after all that: an update of alice after the fork,
	// and a legacy line for bob.
	next := a.Update(t, nil, 1, "alice2.test")
	ok(a.DID, next)
	ub := b.Update(t, nil, 0, "bob2.test")
	legacy := []byte(`{"did":"` + b.DID + `","operation":` + string(ub.AppendJSON(nil)) + `,"cid":"` + ub.CID() + `","nullified":false,"createdAt":"2026-02-01T00:01:00.000Z"}`)
	lines = append(lines, legacy)

	input := bytes.Join(lines, []byte("\n"))
	for _, mode := range []string{"file", "stdin"} {
		t.Run(mode, func(t *testing.T) {
			backends(t, func(t *testing.T, db string) {
				args := []string{"import", "--db", db, "--batch", "3"}
				var stdin io.Reader
				if mode == "file" {
					args = append(args, writeFile(t, "export.jsonl", input))
				} else {
					args, stdin = append(args, "-"), bytes.NewReader(input)
				}
				code, stdout, stderr := runPLC(t, context.Background(), stdin, args...)
				if code != exitOK {
					t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
				}
				if want := fmt.Sprintf("done: %d lines: 6 imported, %d rejected, 0 skipped", len(lines), len(want)); !strings.HasPrefix(stdout, want) {
					t.Fatalf("stdout %q, want %q…", stdout, want)
				}
				if !strings.Contains(stdout, fmt.Sprintf("%d lines rejected", len(want))) {
					t.Fatalf("the summary does not say lines were rejected: %q", stdout)
				}
				reported := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
				if len(reported) != len(want) {
					t.Fatalf("stderr reports %d lines, want %d:\n%s", len(reported), len(want), stderr)
				}
				s := openDB(t, db)
				stored, err := s.Rejections(context.Background(), "", 0, 100)
				if err != nil {
					t.Fatal(err)
				}
				if len(stored) != len(want) {
					t.Fatalf("%d rejections stored, want %d", len(stored), len(want))
				}
				for i, w := range want {
					r := stored[i]
					raw := lines[w.line-1]
					if len(raw) > oplog.MaxLineBytes {
						raw = raw[:oplog.MaxLineBytes]
					}
					if r.Line != int64(w.line) || r.DID != w.did || r.CID != w.cid || r.Reason != w.reason || !bytes.Equal(r.Raw, raw) {
						t.Errorf("rejection %d: line %d did %q cid %q reason %q (%d bytes); want line %d did %q cid %q reason %q (%d bytes)",
							i, r.Line, r.DID, r.CID, r.Reason, len(r.Raw), w.line, w.did, w.cid, w.reason, len(raw))
					}
					wantLine := fmt.Sprintf("rejected line %d %s %s: %s", w.line, cli.Printable(w.did), cli.Printable(w.cid), w.reason)
					if reported[i] != wantLine {
						t.Errorf("stderr line %d:\n got  %s\n want %s", i, reported[i], wantLine)
					}
				}
				ops, err := s.Ops(context.Background(), a.DID)
				if err != nil {
					t.Fatal(err)
				}
				if len(ops) != 4 || !ops[1].Nullified || ops[3].CID != next.CID() {
					t.Fatalf("ops of alice: %v", nullifiedFlags(ops))
				}
				rec, err := s.Record(context.Background(), b.DID)
				if err != nil || rec.State.Ops[len(rec.State.Ops)-1].CID != ub.CID() {
					t.Fatalf("bob's legacy line was not applied: %v", err)
				}
			})
		})
	}
}

// TestImportCompressedAndStdin: gzip and zstd inputs, from a file or from
// standard input, import to the same log as the plain file.
func TestImportCompressedAndStdin(t *testing.T) {
	sub := buildSubmitted(t)
	plain := sub.export(t, "seq")
	var gz, zs bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(plain)
	zw.Close()
	zsw, err := zstd.NewWriter(&zs)
	if err != nil {
		t.Fatal(err)
	}
	zsw.Write(plain)
	zsw.Close()
	for _, tc := range []struct {
		name  string
		data  []byte
		stdin bool
	}{
		{"plain-stdin", plain, true},
		{"gzip-file", gz.Bytes(), false},
		{"gzip-stdin", gz.Bytes(), true},
		{"zstd-file", zs.Bytes(), false},
		{"zstd-stdin", zs.Bytes(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := filepath.Join(t.TempDir(), "plc.sqlite")
			arg, stdin := writeFile(t, "export", tc.data), io.Reader(nil)
			if tc.stdin {
				arg, stdin = "-", bytes.NewReader(tc.data)
			}
			code, stdout, stderr := runPLC(t, context.Background(), stdin, "import", "--db", db, arg)
			if code != exitOK || stderr != "" {
				t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
			}
			checkSameState(t, openDB(t, db), sub.store)
			// The same export, compressed or not, is the same source: a
			// re-run of the plain file has nothing to do.
			code, stdout, _ = runPLC(t, context.Background(), nil, "import", "--db", db, writeFile(t, "plain", plain))
			if code != exitOK || !strings.Contains(stdout, " 0 imported, 0 rejected") {
				t.Fatalf("re-run from the plain file: exit %d, %s", code, stdout)
			}
		})
	}

	t.Run("truncated-gzip", func(t *testing.T) {
		db := filepath.Join(t.TempDir(), "plc.sqlite")
		cut := gz.Bytes()[:gz.Len()*2/3]
		code, stdout, stderr := runPLC(t, context.Background(), nil, "import", "--db", db, writeFile(t, "export.gz", cut))
		if code != exitUsage || !strings.Contains(stderr, "reading the input after line") || !strings.Contains(stderr, "unexpected EOF") {
			t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
		}
		// What was read before the error is imported, and the complete
		// file then resumes after it.
		code, stdout, stderr = runPLC(t, context.Background(), nil, "import", "--db", db, writeFile(t, "export.gz", gz.Bytes()))
		if code != exitOK {
			t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
		}
		checkSameState(t, openDB(t, db), sub.store)
	})
}

// TestImportProgress: without a terminal, a log line every ten seconds (of
// the injected clock); on a terminal, a bar redrawn at most four times a
// second, cleared before a rejected line and at the end.
func TestImportProgress(t *testing.T) {
	sub := buildSubmitted(t)
	export := sub.export(t, "seq")
	file := writeFile(t, "export.jsonl", export)
	var stdout, stderr bytes.Buffer
	e := env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }}
	clock := &stepClock{t: importT0, step: 6 * time.Second}
	c := importConfig{DB: filepath.Join(t.TempDir(), "plc.sqlite"), Input: file, Batch: 3, Workers: 2, now: clock.Now}
	if code := importExport(context.Background(), c, e); code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	logLines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
	if len(logLines) < 2 {
		t.Fatalf("progress lines:\n%s", stderr.String())
	}
	for _, l := range logLines {
		if !strings.HasPrefix(l, "plc import: ") || !strings.Contains(l, "%, ") || !strings.Contains(l, " ops/s") {
			t.Fatalf("progress line %q", l)
		}
	}

	var bar bytes.Buffer
	var read atomic.Int64
	read.Store(250)
	pc := &stepClock{t: importT0, step: 100 * time.Millisecond}
	p := &progress{w: &bar, tty: true, now: pc.Now, size: 1000, read: &read}
	p.start = pc.Now()
	p.last = p.start
	st := oplog.ImportStats{Lines: 10, Imported: 9, Rejected: 1}
	p.batch(st) // 100ms: too soon
	p.batch(st) // 200ms: too soon
	if bar.Len() != 0 {
		t.Fatalf("redrawn too soon: %q", bar.String())
	}
	p.batch(st) // 300ms
	if got, want := bar.String(), "\r\033[K[#####...............] 25%, 10 lines, 9 imported, 1 rejected, 0 skipped, 30 ops/s, ETA 1s"; got != want {
		t.Fatalf("bar %q, want %q", got, want)
	}
	bar.Reset()
	p.rejected(oplog.Rejection{Line: 11, DID: "did:plc:\x1b[31m", Reason: "invalid JSON"})
	if got, want := bar.String(), "\r\033[Krejected line 11 \"did:plc:\\x1b[31m\" -: invalid JSON\n"; got != want {
		t.Fatalf("rejected line on a terminal %q, want %q", got, want)
	}
}
