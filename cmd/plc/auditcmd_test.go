package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/plcdir/plc/api"
	"github.com/plcdir/plc/audit"
	"github.com/plcdir/plc/internal/corpus"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/storetest"
)

// Tests of `plc audit verify-export` and `plc audit compare` as a user
// runs them: files in every compression, standard input, directories
// served by plc's API, and usage errors.

// auditCorpus generates a corpus; invalid lists its invalid lines (= seqs).
func auditCorpus(t *testing.T, cfg corpus.Config) (export []byte, st corpus.Stats, invalid []int64) {
	t.Helper()
	cfg.OnInvalid = func(seq int64, _ corpus.InvalidKind) { invalid = append(invalid, seq) }
	var buf bytes.Buffer
	st, err := corpus.Generate(context.Background(), &buf, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), st, invalid
}

// auditDirectory serves export (imported into a fresh SQLite store: its
// valid ops) with plc's API; wrap, if set, wraps the handler.
func auditDirectory(t *testing.T, export []byte, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	s, _ := storetest.SQLite(t)
	l := oplog.NewLog(s, oplog.Options{NoRateLimit: true})
	if _, err := oplog.Import(context.Background(), l, bytes.NewReader(export), oplog.ImportOptions{}); err != nil {
		t.Fatalf("import: %v", err)
	}
	var h http.Handler = api.New(api.Config{Log: l})
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() { srv.Close(); l.Close() })
	return srv.URL
}

// summary drops the rate line (it changes from run to run) from a text
// report.
func summary(out string) string {
	return regexp.MustCompile(`(?m)^rate .*\n`).ReplaceAllString(out, "")
}

func TestAuditVerifyExportCLI(t *testing.T) {
	ctx := context.Background()
	export, st, _ := auditCorpus(t, corpus.Config{DIDs: 150, Seed: 41})
	file := writeFile(t, "corpus.jsonl", export)

	code, out, errOut := runPLC(t, ctx, nil, "audit", "verify-export", file)
	if code != exitOK || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	want := fmt.Sprintf("source      %s (seq mode)\nlines       %d\nops         %d replayed: %d valid, 0 invalid\nDIDs        %d\nnullified   %d (recomputed)\nseq         1 … %d: 0 gaps, 0 repeats\nverdict     ok\n",
		file, st.Lines, st.Lines, st.Ops, st.DIDs, st.Nullified, st.Lines)
	if got := summary(out); got != want {
		t.Fatalf("report\n%s\nwant\n%s", got, want)
	}

	// Compressed, and on standard input: the same report.
	var gz, zs bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(export)
	zw.Close()
	ze, _ := zstd.NewWriter(&zs)
	ze.Write(export)
	ze.Close()
	for name, b := range map[string][]byte{"corpus.jsonl.gz": gz.Bytes(), "corpus.jsonl.zst": zs.Bytes()} {
		f := writeFile(t, name, b)
		code, out, _ := runPLC(t, ctx, nil, "audit", "verify-export", f)
		if code != exitOK || summary(out) != strings.Replace(want, file, f, 1) {
			t.Errorf("%s: exit %d\n%s", name, code, out)
		}
	}
	code, out, _ = runPLC(t, ctx, bytes.NewReader(zs.Bytes()), "audit", "verify-export", "-")
	if code != exitOK || summary(out) != strings.Replace(want, file, "standard input", 1) {
		t.Errorf("stdin: exit %d\n%s", code, out)
	}

	// A directory, paged end to end; flags after the argument.
	url := auditDirectory(t, export, nil)
	code, out, errOut = runPLC(t, ctx, nil, "audit", "verify-export", url+"/", "--workers", "3")
	if code != exitOK || summary(out) != strings.Replace(want, file, url, 1) {
		t.Errorf("directory: exit %d, stderr %q\n%s", code, errOut, out)
	}
}

func TestAuditVerifyExportCLIInvalid(t *testing.T) {
	ctx := context.Background()
	export, st, invalid := auditCorpus(t, corpus.Config{DIDs: 100, Seed: 43, InvalidRate: 0.2})
	file := writeFile(t, "corpus.jsonl", export)
	code, out, _ := runPLC(t, ctx, nil, "audit", "verify-export", file)
	if code != exitFailure {
		t.Fatalf("exit %d, want 1\n%s", code, out)
	}
	lines := regexp.MustCompile(`(?m)^invalid line (\d+) \(seq (\d+)\) did:plc:[a-z2-7]{24} bafyrei[a-z2-7]{52}: .+$`).FindAllStringSubmatch(out, -1)
	if len(lines) != len(invalid) {
		t.Fatalf("%d invalid lines reported, want %d\n%s", len(lines), len(invalid), out)
	}
	for i, m := range lines {
		if m[1] != fmt.Sprint(invalid[i]) || m[2] != m[1] {
			t.Errorf("reported line %s (seq %s), want %d", m[1], m[2], invalid[i])
		}
	}
	if !strings.Contains(out, fmt.Sprintf("verdict     invalid: %d invalid ops\n", len(invalid))) {
		t.Errorf("no verdict:\n%s", out)
	}

	// --json: one object, the same findings.
	code, out, _ = runPLC(t, ctx, nil, "audit", "verify-export", "--json", file)
	var rep audit.ExportReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitFailure {
		t.Fatalf("--json: exit %d, %v\n%s", code, err, out)
	}
	if rep.OK || rep.Source != file || rep.Invalid != int64(len(invalid)) || len(rep.InvalidOps) != len(invalid) || rep.Valid != int64(st.Ops) {
		t.Errorf("--json report: %+v", rep)
	}

	// A directory that stops answering: the report of what was read, exit 2.
	url := auditDirectory(t, export, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("after") != "0" {
				w.WriteHeader(http.StatusServiceUnavailable)
				w.Write([]byte(`{"message":"Service Unavailable"}`))
				return
			}
			r.URL.RawQuery = "after=0&count=10"
			h.ServeHTTP(w, r)
		})
	})
	code, out, errOut := runPLC(t, ctx, nil, "audit", "verify-export", url)
	if code != exitUsage || !strings.Contains(errOut, "answered 503 Service Unavailable: Service Unavailable") || !strings.Contains(out, "lines       10\n") {
		t.Errorf("directory down after a page: exit %d, stderr %q\n%s", code, errOut, out)
	}
}

func TestAuditCompareCLI(t *testing.T) {
	ctx := context.Background()
	export, st, _ := auditCorpus(t, corpus.Config{DIDs: 60, Seed: 47})
	a := auditDirectory(t, export, nil)
	b := auditDirectory(t, export, nil)

	code, out, errOut := runPLC(t, ctx, nil, "audit", "compare", a, b, "--sample", "20", "--seed", "7")
	if code != exitOK || errOut != "" {
		t.Fatalf("same corpus: exit %d, stderr %q\n%s", code, errOut, out)
	}
	if want := fmt.Sprintf("summary: 20 DIDs (sampled from A's export, --seed 7) compared, A %s, B %s: 20 identical, 0 different\n", a, b); out != want {
		t.Errorf("output %q, want %q", out, want)
	}
	// The same seed, the same sample.
	_, out2, _ := runPLC(t, ctx, nil, "audit", "compare", "--json", "--sample", "20", "--seed", "7", a, b)
	_, out3, _ := runPLC(t, ctx, nil, "audit", "compare", "--json", "--sample", "20", "--seed", "7", a, b)
	if out2 != out3 || !strings.Contains(out2, `"seed": 7`) {
		t.Errorf("--seed 7 twice:\n%s\n%s", out2, out3)
	}

	// B lacks the corpus's last op: its DID differs.
	lines := bytes.Split(export, []byte("\n"))
	short := auditDirectory(t, bytes.Join(lines[:len(lines)-1], []byte("\n")), nil)
	var last struct{ DID, CID string }
	json.Unmarshal(lines[len(lines)-1], &last)
	didsFile := writeFile(t, "dids.txt", []byte(strings.Join(corpusDIDList(t, lines), "\n")))
	code, out, _ = runPLC(t, ctx, nil, "audit", "compare", "--dids", didsFile, a, short)
	if code != exitFailure || !strings.Contains(out, last.DID+": ") || !strings.Contains(out, "missing from B: op ") || !strings.Contains(out, last.CID) {
		t.Errorf("B behind: exit %d\n%s", code, out)
	}
	if !strings.Contains(out, fmt.Sprintf("summary: %d DIDs compared", st.DIDs)) || !strings.Contains(out, fmt.Sprintf("%d identical, 1 different", st.DIDs-1)) {
		t.Errorf("B behind: summary\n%s", out)
	}
	code, out, _ = runPLC(t, ctx, strings.NewReader(last.DID+"\n"), "audit", "compare", "--json", "--dids", "-", a, short)
	var rep audit.CompareReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitFailure || rep.DIDs != 1 || rep.Counts["missing"] != 1 || rep.Results[0].Identical {
		t.Errorf("--json --dids -: exit %d, %v\n%s", code, err, out)
	}

	// A directory that answers 500: exit 2, the status and message.
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(500)
		w.Write([]byte(`{"message":"Internal Server Error"}`))
	}))
	defer down.Close()
	code, _, errOut = runPLC(t, ctx, strings.NewReader(last.DID), "audit", "compare", "--dids", "-", a, down.URL)
	if code != exitUsage || !strings.Contains(errOut, "the directory answered 500 Internal Server Error") || !strings.Contains(errOut, down.URL) {
		t.Errorf("B down: exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = runPLC(t, ctx, nil, "audit", "compare", down.URL, a)
	if code != exitUsage || !strings.Contains(errOut, "sampling DIDs from A's export") || !strings.Contains(errOut, "500") {
		t.Errorf("A down: exit %d, stderr %q", code, errOut)
	}
}

func corpusDIDList(t *testing.T, lines [][]byte) []string {
	t.Helper()
	seen := map[string]bool{}
	var dids []string
	for _, l := range lines {
		var v struct{ DID string }
		if err := json.Unmarshal(l, &v); err != nil {
			t.Fatal(err)
		}
		if !seen[v.DID] {
			seen[v.DID] = true
			dids = append(dids, v.DID)
		}
	}
	return dids
}

func TestAuditExportAndCompareUsageErrors(t *testing.T) {
	dir := t.TempDir()
	notExport := writeFile(t, "notes.txt", []byte("hello\nworld\n"))
	didWeb := writeFile(t, "dids.txt", []byte("did:web:example.com\n"))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"verify-export"}, "want exactly one FILE, - (standard input) or URL"},
		{[]string{"verify-export", "a", "b"}, "want exactly one FILE"},
		{[]string{"verify-export", "--workers", "0", "f"}, "--workers and --max-listed must be at least 1"},
		{[]string{"verify-export", "--bogus", "f"}, "flag provided but not defined: -bogus"},
		{[]string{"verify-export", filepath.Join(dir, "missing.jsonl")}, "missing.jsonl: no such file or directory"},
		{[]string{"verify-export", dir}, "is a directory, not an export"},
		{[]string{"verify-export", notExport}, "not an export: no line names a DID"},
		{[]string{"verify-export", "http://example.com/?after=3"}, "want a URL without query or fragment"},
		{[]string{"compare"}, "want two directory URLs, A and B"},
		{[]string{"compare", "http://a.test"}, "want two directory URLs"},
		{[]string{"compare", "http://a.test", "http://b.test", "http://c.test"}, "want two directory URLs"},
		{[]string{"compare", "--dids", didWeb, "--sample", "3", "http://a.test", "http://b.test"}, "give --dids or --sample, not both"},
		{[]string{"compare", "--sample", "0", "http://a.test", "http://b.test"}, "--sample must be at least 1"},
		{[]string{"compare", "--seed", "3", "--dids", didWeb, "http://a.test", "http://b.test"}, "--seed goes with --sample"},
		{[]string{"compare", "ftp://a.test", "http://b.test"}, `A: not a directory URL: "ftp://a.test"`},
		{[]string{"compare", "http://a.test", "http://u:hunter2@b.test/?x"}, "B: not a directory URL"},
		{[]string{"compare", "--dids", filepath.Join(dir, "none.txt"), "http://a.test", "http://b.test"}, "none.txt: no such file or directory"},
		{[]string{"compare", "--dids", didWeb, "http://a.test", "http://b.test"}, "line 1: did:web:example.com is not a did:plc identifier"},
		{[]string{"compare", "--workers", "0", "http://a.test", "http://b.test"}, "--workers must be at least 1"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errOut := runPLC(t, context.Background(), nil, append([]string{"audit"}, tc.args...)...)
			if code != exitUsage || !strings.Contains(errOut, tc.want) || out != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 2 and %q", code, out, errOut, tc.want)
			}
			if strings.Contains(errOut, "hunter2") || regexp.MustCompile(`goroutine \d+ \[`).MatchString(errOut) {
				t.Errorf("stderr %q", errOut)
			}
		})
	}

	// help lists both commands; -h describes each.
	code, out, _ := runPLC(t, context.Background(), nil, "audit", "help")
	if code != exitOK || !strings.Contains(out, "verify-export") || !strings.Contains(out, "compare") {
		t.Errorf("audit help: %d %q", code, out)
	}
	for _, c := range []string{"verify-export", "compare"} {
		code, _, errOut := runPLC(t, context.Background(), nil, "audit", c, "-h")
		if code != exitOK || !strings.Contains(errOut, "Usage: plc audit "+c) || !strings.Contains(errOut, "Exit status") {
			t.Errorf("audit %s -h: %d %q", c, code, errOut)
		}
	}
}

// TestVerifyExportProgressBar: on a terminal, a bar redrawn in place at
// most four times a second, and taken off the line at the end.
func TestVerifyExportProgressBar(t *testing.T) {
	var buf bytes.Buffer
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	var read atomic.Int64
	p := &progress{w: &buf, tty: true, now: func() time.Time { return now }, start: t0, size: 1000, read: &read}
	read.Store(500)
	now = t0.Add(10 * time.Second)
	p.verified(audit.ExportProgress{Lines: 2000, Ops: 1500, Invalid: 3})
	want := "\r\033[K[##########..........] 50%, 2000 lines, 1500 ops verified, 3 invalid, 150 ops/s, ETA 10s"
	if buf.String() != want {
		t.Errorf("bar %q, want %q", buf.String(), want)
	}
	buf.Reset()
	now = now.Add(100 * time.Millisecond)
	p.verified(audit.ExportProgress{Lines: 2001})
	if buf.Len() != 0 {
		t.Errorf("redrawn after 100ms: %q", buf.String())
	}
	p.clear()
	if buf.String() != "\r\033[K" {
		t.Errorf("clear: %q", buf.String())
	}
}
