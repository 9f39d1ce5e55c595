package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/api"
	"github.com/plcdir/plc/audit"
	"github.com/plcdir/plc/client"
	"github.com/plcdir/plc/internal/corpus"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/storetest"
	"github.com/plcdir/plc/validate"
)

// Tests of VerifyExport: over generated corpora (whose statistics the
// generator knows from its plan, independently of the validator), over
// tampered ones, over legacy exports served by plc's own API, and over a
// directory paged end to end.

// genCorpus generates a corpus and returns it with its statistics and the
// kind of each invalid line, by line number (= seq).
func genCorpus(t *testing.T, cfg corpus.Config) ([]byte, corpus.Stats, map[int64]corpus.InvalidKind) {
	t.Helper()
	invalid := map[int64]corpus.InvalidKind{}
	cfg.OnInvalid = func(seq int64, k corpus.InvalidKind) { invalid[seq] = k }
	var buf bytes.Buffer
	st, err := corpus.Generate(context.Background(), &buf, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), st, invalid
}

// fixedClock reads t0, then t0+2s at every later reading.
func fixedClock() func() time.Time {
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	n := 0
	return func() time.Time {
		n++
		if n == 1 {
			return t0
		}
		return t0.Add(2 * time.Second)
	}
}

func verify(t *testing.T, export []byte, opts audit.ExportOptions) audit.ExportReport {
	t.Helper()
	rep, err := audit.VerifyExport(context.Background(), bytes.NewReader(export), opts)
	if err != nil {
		t.Fatalf("VerifyExport: %v", err)
	}
	return rep
}

func checkCounts(t *testing.T, rep audit.ExportReport, st corpus.Stats) {
	t.Helper()
	got := [6]int64{rep.Lines, rep.Ops, rep.Valid, rep.Invalid, rep.DIDs, rep.Nullified}
	want := [6]int64{int64(st.Lines), int64(st.Lines), int64(st.Ops), int64(st.InvalidTotal()), int64(st.DIDs), int64(st.Nullified)}
	if got != want {
		t.Errorf("lines, ops, valid, invalid, DIDs, nullified = %v, want %v", got, want)
	}
}

func TestVerifyExportCorpusCounts(t *testing.T) {
	export, st, _ := genCorpus(t, corpus.Config{DIDs: 500, Seed: 2})
	if st.Nullified == 0 || st.TombstonesNullified == 0 {
		t.Fatalf("the corpus must have nullified ops and tombstones to test anything: %+v", st)
	}
	for _, workers := range []int{1, 3} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) {
			rep := verify(t, export, audit.ExportOptions{Workers: workers})
			checkCounts(t, rep, st)
			if !rep.OK || rep.Mode != audit.ModeSeq || rep.FirstSeq != 1 || rep.LastSeq != int64(st.Lines) ||
				rep.SeqGaps != 0 || rep.SeqRepeats != 0 || len(rep.InvalidOps) != 0 {
				t.Errorf("report: %+v", rep)
			}
		})
	}
}

// TestVerifyExportReportsEveryInvalidLine: each invalid line of the corpus
// (forged and high-S signatures, wrong prevs, late recoveries) is reported
// at its line with the class the generator planned, and nothing else is.
func TestVerifyExportReportsEveryInvalidLine(t *testing.T) {
	export, st, invalid := genCorpus(t, corpus.Config{DIDs: 300, Seed: 5, InvalidRate: 0.3})
	if len(invalid) < 20 {
		t.Fatalf("only %d invalid lines", len(invalid))
	}
	rep := verify(t, export, audit.ExportOptions{})
	checkCounts(t, rep, st)
	if rep.OK {
		t.Error("report OK with invalid lines")
	}
	if len(rep.InvalidOps) != len(invalid) {
		t.Fatalf("%d invalid ops listed, want %d", len(rep.InvalidOps), len(invalid))
	}
	for _, p := range rep.InvalidOps {
		kind, ok := invalid[p.Line]
		if !ok {
			t.Errorf("line %d reported invalid (%s), but it is valid", p.Line, p.Reason)
			continue
		}
		if p.Class != kind.Class().Error() || p.Reason == "" || p.Seq != p.Line || !validate.ValidDID(p.DID) || !validate.ValidCID(p.CID) {
			t.Errorf("line %d (%s): reported %+v, want class %q", p.Line, kind, p, kind.Class())
		}
	}
	if !slices.IsSortedFunc(rep.InvalidOps, func(a, b audit.InvalidOp) int { return int(a.Line - b.Line) }) {
		t.Error("invalid ops not in line order")
	}

	// Listing is bounded; the counts are not.
	cut := verify(t, export, audit.ExportOptions{MaxListed: 5})
	if len(cut.InvalidOps) != 5 || !cut.Truncated || cut.Invalid != rep.Invalid || cut.InvalidOps[4] != rep.InvalidOps[4] {
		t.Errorf("MaxListed 5: %d listed (truncated %t), %d counted; want the first 5 of %d", len(cut.InvalidOps), cut.Truncated, cut.Invalid, rep.Invalid)
	}
}

// TestVerifyExportBadLines: lines that are not export lines are invalid
// with the reason oplog gives, and the replay goes on.
func TestVerifyExportBadLines(t *testing.T) {
	export, st, _ := genCorpus(t, corpus.Config{DIDs: 20, Seed: 9})
	lines := bytes.Split(export, []byte("\n"))
	last := lines[len(lines)-1]
	// A tampered op (its CID no longer matches), a line that is not JSON,
	// a line over the size bound, a blank line: after the last line, with
	// the seqs that follow.
	n := int64(len(lines))
	tampered := bytes.Replace(last, []byte(`"seq":`+strconv.FormatInt(n, 10)), []byte(`"seq":`+strconv.FormatInt(n+1, 10)), 1)
	tampered = bytes.Replace(tampered, []byte(`"cid":"bafyrei`), []byte(`"cid":"bafyrej`), 1)
	long := append([]byte(`{"did":"`), bytes.Repeat([]byte("a"), oplog.MaxLineBytes)...)
	in := bytes.Join([][]byte{export, tampered, []byte("not json"), long, []byte("   ")}, []byte("\n"))
	rep := verify(t, in, audit.ExportOptions{})
	if rep.Lines != n+3 || rep.Invalid != 3 || rep.Valid != int64(st.Ops) {
		t.Fatalf("lines %d, invalid %d, valid %d; want %d, 3, %d", rep.Lines, rep.Invalid, rep.Valid, n+3, st.Ops)
	}
	for i, want := range []string{"does not match the operation's CID", "not a JSON object", "longer than"} {
		p := rep.InvalidOps[i]
		if p.Line != n+1+int64(i) || p.Class != "bad line" || !strings.Contains(p.Reason, want) {
			t.Errorf("invalid op %d: %+v, want line %d, a bad line (%q)", i, p, n+1+int64(i), want)
		}
	}
}

// dropAndRepeat returns the corpus without the line of a DID that has no
// other line, and with another line repeated after itself: a seq gap and a
// seq repeat, neither of which makes an op invalid.
func dropAndRepeat(t *testing.T, export []byte) (out []byte, dropped, repeated int64) {
	t.Helper()
	lines := bytes.Split(export, []byte("\n"))
	count := map[string]int{}
	dids := make([]string, len(lines))
	for i, l := range lines {
		var v struct{ DID string }
		if err := json.Unmarshal(l, &v); err != nil {
			t.Fatal(err)
		}
		dids[i] = v.DID
		count[v.DID]++
	}
	drop := -1
	for i := len(lines) / 2; i < len(lines); i++ {
		if count[dids[i]] == 1 {
			drop = i
			break
		}
	}
	if drop < 0 {
		t.Fatal("no single-op DID in the second half of the corpus")
	}
	rep := drop + 10
	if rep >= len(lines) {
		t.Fatal("the corpus is too short")
	}
	var kept [][]byte
	for i, l := range lines {
		if i == drop {
			continue
		}
		kept = append(kept, l)
		if i == rep {
			kept = append(kept, l)
		}
	}
	return bytes.Join(kept, []byte("\n")), int64(drop + 1), int64(rep + 1)
}

func TestVerifyExportSeqGapAndRepeat(t *testing.T) {
	export, st, _ := genCorpus(t, corpus.Config{DIDs: 100, Seed: 11})
	in, dropped, repeated := dropAndRepeat(t, export)
	rep := verify(t, in, audit.ExportOptions{})
	want := []audit.SeqProblem{
		// The line after the dropped one takes its place.
		{Line: dropped, Kind: audit.SeqGap, Seq: dropped + 1, Prev: dropped - 1},
		// The repeated line comes again right after itself (one line up,
		// for the dropped one).
		{Line: repeated, Kind: audit.SeqRepeat, Seq: repeated, Prev: repeated},
	}
	if !slices.Equal(rep.SeqProblems, want) {
		t.Errorf("seq problems %+v, want %+v", rep.SeqProblems, want)
	}
	if rep.SeqGaps != 1 || rep.SeqRepeats != 1 || rep.OK {
		t.Errorf("gaps %d, repeats %d, OK %t; want 1, 1, false", rep.SeqGaps, rep.SeqRepeats, rep.OK)
	}
	// The repeated line is not replayed (it would be invalid), the dropped
	// DID is gone.
	if rep.Invalid != 0 || rep.Lines != int64(st.Lines) || rep.Ops != int64(st.Lines-1) || rep.DIDs != int64(st.DIDs-1) {
		t.Errorf("invalid %d, lines %d, ops %d, DIDs %d; want 0, %d, %d, %d", rep.Invalid, rep.Lines, rep.Ops, rep.DIDs, st.Lines, st.Lines-1, st.DIDs-1)
	}

	// An export that must start at a seq (a directory read from the
	// start) has a gap at its first line when it starts later.
	lines := bytes.SplitN(export, []byte("\n"), 2)
	rep = verify(t, lines[1], audit.ExportOptions{StartSeq: 1})
	if !slices.Equal(rep.SeqProblems, []audit.SeqProblem{{Line: 1, Kind: audit.SeqGap, Seq: 2, Prev: 0}}) {
		t.Errorf("from seq 2 with StartSeq 1: %+v", rep.SeqProblems)
	}
}

// testDirectory is plc's API over an SQLite store, on an httptest server.
type testDirectory struct {
	store   oplog.Store
	log     *oplog.Log
	srv     *httptest.Server
	exports atomic.Int64 // GET /export requests
	line    int64        // the last line ingested
}

// newTestDirectory starts a directory; wrap, if set, wraps its handler.
func newTestDirectory(t *testing.T, wrap func(http.Handler) http.Handler) *testDirectory {
	t.Helper()
	s, _ := storetest.SQLite(t)
	d := &testDirectory{store: s, log: oplog.NewLog(s, oplog.Options{NoRateLimit: true})}
	var h http.Handler = api.New(api.Config{Log: d.log})
	if wrap != nil {
		h = wrap(h)
	}
	d.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/export" {
			d.exports.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { d.srv.Close(); d.log.Close() })
	return d
}

// importExport imports an export (all of it must be valid).
func (d *testDirectory) importExport(t *testing.T, export []byte) {
	t.Helper()
	st, err := oplog.Import(context.Background(), d.log, bytes.NewReader(export), oplog.ImportOptions{})
	if err != nil || st.Rejected > 0 {
		t.Fatalf("import: %+v, %v", st, err)
	}
}

// legacyExport pages the directory's timestamp export (/export?after=<time>).
func (d *testDirectory) legacyExport(t *testing.T) [][]byte {
	t.Helper()
	var out [][]byte
	after := "1970-01-01T00:00:00.000Z"
	for {
		resp, err := http.Get(d.srv.URL + "/export?count=1000&after=" + url.QueryEscape(after))
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("legacy export: %d %s %v", resp.StatusCode, body, err)
		}
		if len(body) == 0 {
			return out
		}
		page := bytes.Split(body, []byte("\n"))
		out = append(out, page...)
		var last struct{ CreatedAt string }
		if err := json.Unmarshal(page[len(page)-1], &last); err != nil {
			t.Fatal(err)
		}
		after = last.CreatedAt // the corpus's times are distinct: no op shares the boundary
	}
}

// TestVerifyExportLegacyNullifiedFlags: a legacy export, as plc's API
// renders it with the flags its store computed, replays with no
// disagreement; a flag flipped either way is reported at its line.
func TestVerifyExportLegacyNullifiedFlags(t *testing.T) {
	export, st, _ := genCorpus(t, corpus.Config{DIDs: 300, Seed: 13})
	d := newTestDirectory(t, nil)
	d.importExport(t, export)
	legacy := d.legacyExport(t)
	if len(legacy) != st.Lines {
		t.Fatalf("legacy export: %d lines, want %d", len(legacy), st.Lines)
	}
	rep := verify(t, bytes.Join(legacy, []byte("\n")), audit.ExportOptions{})
	checkCounts(t, rep, st)
	if rep.Mode != audit.ModeLegacy || rep.StatedNullified != int64(st.Nullified) || rep.NullifiedMismatches != 0 || !rep.OK || rep.FirstSeq != 0 {
		t.Fatalf("legacy export: %+v", rep)
	}

	// Flip the first nullified flag to false and a later unnullified one to
	// true.
	var lies []audit.NullifiedProblem
	for i, l := range legacy {
		var e plc.AuditEntry
		if err := json.Unmarshal(l, &e); err != nil {
			t.Fatal(err)
		}
		flip := func(from, to string) {
			legacy[i] = bytes.Replace(l, []byte(`"nullified":`+from), []byte(`"nullified":`+to), 1)
			lies = append(lies, audit.NullifiedProblem{Line: int64(i + 1), DID: e.DID, CID: e.CID, Stated: !e.Nullified, Recomputed: e.Nullified})
		}
		switch {
		case e.Nullified && len(lies) == 0:
			flip("true", "false")
		case !e.Nullified && len(lies) == 1 && i > 100:
			flip("false", "true")
		}
	}
	if len(lies) != 2 {
		t.Fatalf("found %d flags to flip", len(lies))
	}
	rep = verify(t, bytes.Join(legacy, []byte("\n")), audit.ExportOptions{})
	slices.SortFunc(lies, func(a, b audit.NullifiedProblem) int { return int(a.Line - b.Line) })
	if !slices.Equal(rep.NullifiedErrors, lies) || rep.NullifiedMismatches != 2 || rep.OK || rep.Invalid != 0 {
		t.Errorf("nullified errors %+v (%d, OK %t), want %+v", rep.NullifiedErrors, rep.NullifiedMismatches, rep.OK, lies)
	}

	// A seq-mode line in a legacy export is invalid.
	mixed := append(bytes.Join(legacy, []byte("\n")), '\n')
	mixed = append(mixed, bytes.SplitN(export, []byte("\n"), 2)[0]...)
	rep = verify(t, mixed, audit.ExportOptions{})
	if n := len(rep.InvalidOps); n != 1 || rep.InvalidOps[0].Line != int64(len(legacy)+1) || !strings.Contains(rep.InvalidOps[0].Reason, "seq-mode line in a legacy-mode export") {
		t.Errorf("mixed export: %+v", rep.InvalidOps)
	}
}

// TestVerifyExportPagesDirectory: over a directory's URL, the export is
// paged from seq 0 to the end (an empty page), and the report is the
// file's.
func TestVerifyExportPagesDirectory(t *testing.T) {
	export, st, _ := genCorpus(t, corpus.Config{Ops: 2100, Seed: 17})
	d := newTestDirectory(t, nil)
	d.importExport(t, export)
	c, err := client.New(d.srv.URL+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rep, err := audit.VerifyExport(ctx, c.ExportReader(ctx, 0), audit.ExportOptions{StartSeq: 1})
	if err != nil {
		t.Fatal(err)
	}
	checkCounts(t, rep, st)
	if !rep.OK || rep.FirstSeq != 1 || rep.LastSeq != int64(st.Lines) {
		t.Errorf("report %+v", rep)
	}
	// 3 pages of ops and an empty one.
	if n := d.exports.Load(); n != 4 {
		t.Errorf("%d export requests, want 4", n)
	}

	// A page that does not move on stops the replay with an error, not a
	// loop.
	stuck := newTestDirectory(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.URL.RawQuery = "after=0&count=5"
			h.ServeHTTP(w, r)
		})
	})
	stuck.importExport(t, export)
	sc, _ := client.New(stuck.srv.URL, nil)
	rep, err = audit.VerifyExport(ctx, sc.ExportReader(ctx, 0), audit.ExportOptions{StartSeq: 1})
	var se *client.StatusError
	if !errors.Is(err, audit.ErrExportRead) || !errors.As(err, &se) || !strings.Contains(se.Message, "does not move on") {
		t.Fatalf("stuck directory: %v", err)
	}
	if rep.Lines != 10 || rep.SeqRepeats != 5 {
		t.Errorf("stuck directory: %d lines, %d repeats; want 10, 5", rep.Lines, rep.SeqRepeats)
	}

	// A directory that answers 500 stops it with the status and message.
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(500)
		w.Write([]byte(`{"message":"database down"}`))
	}))
	defer down.Close()
	dc, _ := client.New(down.URL, nil)
	_, err = audit.VerifyExport(ctx, dc.ExportReader(ctx, 0), audit.ExportOptions{StartSeq: 1})
	if !errors.As(err, &se) || se.Status != 500 || se.Message != "database down" || !strings.Contains(err.Error(), "answered 500") {
		t.Errorf("directory down: %v", err)
	}
}

func TestVerifyExportReadErrors(t *testing.T) {
	export, _, _ := genCorpus(t, corpus.Config{DIDs: 30, Seed: 19})
	boom := errors.New("disk on fire")
	rep, err := audit.VerifyExport(context.Background(), io.MultiReader(bytes.NewReader(export), strings.NewReader("\n"), iotest.ErrReader(boom)), audit.ExportOptions{})
	if !errors.Is(err, audit.ErrExportRead) || !errors.Is(err, boom) {
		t.Errorf("read error: %v", err)
	}
	if rep.Lines != int64(bytes.Count(export, []byte("\n"))+1) {
		t.Errorf("read error: %d lines replayed before it", rep.Lines)
	}

	_, err = audit.VerifyExport(context.Background(), strings.NewReader("[1,2,3]\nhello\n"), audit.ExportOptions{})
	if !errors.Is(err, audit.ErrNotExport) {
		t.Errorf("not an export: %v", err)
	}
	rep, err = audit.VerifyExport(context.Background(), strings.NewReader(""), audit.ExportOptions{})
	if err != nil || !rep.OK || rep.Lines != 0 {
		t.Errorf("empty export: %+v, %v", rep, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := audit.VerifyExport(ctx, bytes.NewReader(export), audit.ExportOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

// jsonShape renders the shape of a JSON value: object keys in order with
// the shapes of their values, the shape of an array's first element.
func jsonShape(t *testing.T, v json.RawMessage) string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(v))
	var walk func() string
	walk = func() string {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		switch tok := tok.(type) {
		case json.Delim:
			var parts []string
			if tok == '{' {
				for dec.More() {
					k, _ := dec.Token()
					parts = append(parts, k.(string)+":"+walk())
				}
				dec.Token()
				return "{" + strings.Join(parts, ",") + "}"
			}
			for dec.More() {
				parts = append(parts, walk())
			}
			dec.Token()
			if len(parts) == 0 {
				return "[]"
			}
			return "[" + parts[0] + "]"
		case string:
			return "string"
		case float64:
			return "number"
		case bool:
			return "bool"
		}
		return "null"
	}
	return walk()
}

// TestExportReportJSON pins the report of verify-export --json.
func TestExportReportJSON(t *testing.T) {
	export, _, _ := genCorpus(t, corpus.Config{DIDs: 60, Seed: 23, InvalidRate: 0.2})
	in, _, _ := dropAndRepeat(t, export)
	rep := verify(t, in, audit.ExportOptions{Now: fixedClock()})
	rep.Source = "corpus.jsonl"
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{source:string,mode:string,lines:number,ops:number,valid:number,invalid:number,dids:number,` +
		`nullified:number,statedNullified:number,nullifiedMismatches:number,firstSeq:number,lastSeq:number,` +
		`seqGaps:number,seqRepeats:number,ok:bool,` +
		`invalidOps:[{line:number,seq:number,did:string,cid:string,class:string,reason:string}],` +
		`seqProblems:[{line:number,kind:string,seq:number,prev:number}],` +
		`nullifiedErrors:[],truncated:bool,seconds:number,opsPerSecond:number}`
	if got := jsonShape(t, b); got != want {
		t.Errorf("report shape\n got %s\nwant %s", got, want)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	if m["mode"] != "seq" || m["seconds"] != 2.0 || m["opsPerSecond"] != float64(rep.Ops)/2 || m["ok"] != false {
		t.Errorf("report values: %s", b)
	}
	shape := jsonShape(t, mustMarshal(t, audit.NullifiedProblem{}))
	if shape != `{line:number,did:string,cid:string,stated:bool,recomputed:bool}` {
		t.Errorf("nullified error shape %s", shape)
	}
	// Empty lists are [] (not null), and an error is reported when set.
	b = mustMarshal(t, verify(t, nil, audit.ExportOptions{}))
	for _, k := range []string{`"invalidOps":[]`, `"seqProblems":[]`, `"nullifiedErrors":[]`} {
		if !bytes.Contains(b, []byte(k)) {
			t.Errorf("empty report has no %s: %s", k, b)
		}
	}
	if bytes.Contains(b, []byte(`"error"`)) {
		t.Errorf("error field without an error: %s", b)
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
