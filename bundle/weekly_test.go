package bundle

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/storetest"
)

// Tests of the weekly-file reader: objects with and without newlines
// between them, bounded objects, and import verdicts.

func weeklyScanAll(in string) ([]string, error) {
	s := newWeeklyScanner(strings.NewReader(in))
	var out []string
	for {
		b, err := s.next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, string(b))
	}
}

func TestWeeklyScannerSplitsObjectsWithOrWithoutNewlines(t *testing.T) {
	a := `{"did":"a","operation":{"x":[1,{"y":"}"}]},"s":"\"{"}`
	b := `{"did":"b","s":"\\"}`
	c := `{}`
	for _, in := range []string{
		a + b + c,
		a + "\n" + b + "\n" + c + "\n",
		"\n " + a + "\r\n\t" + b + c + "\n\n",
	} {
		got, err := weeklyScanAll(in)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if want := []string{a, b, c}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

func TestWeeklyScannerRefusesWhatIsNotAnObjectStream(t *testing.T) {
	for in, want := range map[string]string{
		`{"a":1}x{"b":2}`:      `byte 7: 'x'`,
		`{"a":1}{"b":"}`:       `cut by the end of the file`,
		`[{"a":1}]`:            `byte 0: '['`,
		`{"a":1}` + "\n" + `7`: `byte 8: '7'`,
	} {
		_, err := weeklyScanAll(in)
		if !errors.Is(err, ErrWeekly) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want ErrWeekly saying %q", in, err, want)
		}
	}
}

// TestWeeklyScannerDoesNotBufferAGiantObject: an object longer than
// MaxLineBytes is handed over cut (so that it is rejected as too long) and
// the next one is read whole.
func TestWeeklyScannerDoesNotBufferAGiantObject(t *testing.T) {
	giant := `{"x":"` + strings.Repeat("a", 10*plc.MaxLineBytes) + `"}`
	got, err := weeklyScanAll(giant + `{"b":2}`)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || len(got[0]) != plc.MaxLineBytes+1 || got[1] != `{"b":2}` {
		t.Fatalf("got %d objects, the first of %d bytes", len(got), len(got[0]))
	}
}

func TestWeeklyFilesAreInWeekOrder(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"1209600.jsonl.gz", "604800.jsonl.gz", "0.jsonl.gz", "notes.txt", "12.jsonl"} {
		os.WriteFile(filepath.Join(dir, n), nil, 0o644)
	}
	got, err := WeeklyFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range got {
		names = append(names, filepath.Base(p))
	}
	if want := "[0.jsonl.gz 604800.jsonl.gz 1209600.jsonl.gz]"; fmt.Sprint(names) != want {
		t.Fatalf("files %v, want %s", names, want)
	}
}

// allegedlyOp is an op as allegedly writes it: its own key order.
type allegedlyOp struct {
	DID       string          `json:"did"`
	CID       string          `json:"cid"`
	CreatedAt string          `json:"createdAt"`
	Nullified bool            `json:"nullified"`
	Operation json.RawMessage `json:"operation"`
}

// writeWeeklyFixture writes legacy lines as weekly files in dir, one per
// week of their createdAt; files alternate between objects ended by a
// newline and concatenated objects. It returns the files in week order.
func writeWeeklyFixture(t testing.TB, dir string, lines [][]byte) []string {
	t.Helper()
	var (
		files []string
		cur   int64 = -1
		buf   bytes.Buffer
	)
	flush := func() {
		if cur < 0 {
			return
		}
		var z bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&z, gzip.BestCompression)
		zw.Write(buf.Bytes())
		zw.Close()
		path := filepath.Join(dir, fmt.Sprintf("%d.jsonl.gz", cur))
		if err := os.WriteFile(path, z.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, path)
		buf.Reset()
	}
	for _, l := range lines {
		var x struct {
			DID, CID, CreatedAt string
			Nullified           bool
			Operation           json.RawMessage
		}
		if err := json.Unmarshal(l, &x); err != nil {
			t.Fatal(err)
		}
		var created struct{ T int64 }
		ts, _ := weeklyUnix(x.CreatedAt)
		created.T = ts
		week := created.T / WeeklySeconds * WeeklySeconds
		if week != cur {
			flush()
			cur = week
		}
		b, _ := json.Marshal(allegedlyOp{x.DID, x.CID, x.CreatedAt, x.Nullified, x.Operation})
		buf.Write(b)
		if len(files)%2 == 0 {
			buf.WriteByte('\n')
		}
	}
	flush()
	return files
}

func TestWeeklyImportVerdicts(t *testing.T) {
	if testing.Short() {
		t.Skip("signs and verifies thousands of ops")
	}
	lines, valid, cids := pbVerdictLines(t, 6000)
	// The purged ops are dated 2023 and 2024: they go into files of
	// their own weeks, in week order, like the real ones.
	dir := t.TempDir()
	files := writeWeeklyFixture(t, dir, weeklySortByCreatedAt(t, lines))
	if len(files) < 3 {
		t.Fatalf("only %d weekly files", len(files))
	}
	paths, err := WeeklyFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := OpenWeekly(paths)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	source, err := r.Source()
	if err != nil {
		t.Fatal(err)
	}
	store, _ := storetest.SQLite(t)
	_, st := pbImport(t, store, r, source)
	if st.Lines != int64(len(lines)) {
		t.Fatalf("%d lines read, want %d", st.Lines, len(lines))
	}
	pbCheckVerdicts(t, store, source, st, len(lines), valid, cids)

	// Again: every object is passed over.
	r2, _ := OpenWeekly(paths)
	defer r2.Close()
	done, st2 := pbImport(t, store, r2, source)
	if done != int64(len(lines)) || st2.Imported+st2.Rejected != 0 {
		t.Fatalf("a rerun passed over %d objects and did %+v", done, st2)
	}
}

func TestWeeklyReaderSkipsAndNumbersAcrossFiles(t *testing.T) {
	dir := t.TempDir()
	var paths []string
	for i, body := range []string{`{"a":1}{"a":2}`, "{\"a\":3}\n{\"a\":4}\n"} {
		var z bytes.Buffer
		zw := gzip.NewWriter(&z)
		zw.Write([]byte(body))
		zw.Close()
		p := filepath.Join(dir, fmt.Sprintf("%d.jsonl.gz", i*WeeklySeconds))
		os.WriteFile(p, z.Bytes(), 0o644)
		paths = append(paths, p)
	}
	r, err := OpenWeekly(paths)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Skip(1)
	var got []string
	for {
		l, err := r.Next(context.Background())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d:%s", l.N, l.Raw))
	}
	if want := `[1:{"a":2} 2:{"a":3} 3:{"a":4}]`; fmt.Sprint(got) != want {
		t.Fatalf("got %v, want %s", got, want)
	}
}

// TestWeeklyReaderRefusesABadFile: the error names the file, and the
// files after it are not read (the source ends at the error).
func TestWeeklyReaderRefusesABadFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "0.jsonl.gz")
	os.WriteFile(p, []byte("not gzip"), 0o644)
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write([]byte(`{"a":1}`))
	zw.Close()
	good := filepath.Join(dir, "604800.jsonl.gz")
	os.WriteFile(good, z.Bytes(), 0o644)
	r, _ := OpenWeekly([]string{p, good})
	defer r.Close()
	_, err := r.Next(context.Background())
	if !errors.Is(err, ErrWeekly) || !errors.Is(err, oplog.ErrInput) || !strings.Contains(err.Error(), "0.jsonl.gz") {
		t.Fatalf("error %v, want ErrWeekly naming the file", err)
	}
	if l, err2 := r.Next(context.Background()); err2 != err {
		t.Fatalf("after the error: %s, %v", l.Raw, err2)
	}
}

func weeklyUnix(s string) (int64, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	return t.Unix(), err
}

// weeklySortByCreatedAt returns lines in createdAt order (stable).
func weeklySortByCreatedAt(t testing.TB, lines [][]byte) [][]byte {
	t.Helper()
	out := slices.Clone(lines)
	key := func(l []byte) string {
		h, err := plc.ReadLineHead(l)
		if err != nil {
			t.Fatal(err)
		}
		return h.CreatedAt
	}
	slices.SortStableFunc(out, func(a, b []byte) int { return strings.Compare(key(a), key(b)) })
	return out
}

// TestWeeklySourceIsNamedAfterTheFirstOp: an empty first week does not
// stop the import, and the name does not depend on the files' framing.
func TestWeeklySourceIsNamedAfterTheFirstOp(t *testing.T) {
	write := func(dir, name, body string) string {
		var z bytes.Buffer
		zw := gzip.NewWriter(&z)
		zw.Write([]byte(body))
		zw.Close()
		p := filepath.Join(dir, name)
		os.WriteFile(p, z.Bytes(), 0o644)
		return p
	}
	a, b := t.TempDir(), t.TempDir()
	r1, _ := OpenWeekly([]string{write(a, "0.jsonl.gz", "\n"), write(a, "604800.jsonl.gz", `{"a":1}{"a":2}`)})
	r2, _ := OpenWeekly([]string{write(b, "604800.jsonl.gz", "{\"a\":1}\n{\"a\":3}\n")})
	n1, err1 := r1.Source()
	n2, err2 := r2.Source()
	if err1 != nil || err2 != nil || n1 != n2 || !strings.HasPrefix(n1, "weekly:") {
		t.Fatalf("sources %q (%v) and %q (%v)", n1, err1, n2, err2)
	}
	r3, _ := OpenWeekly([]string{write(t.TempDir(), "0.jsonl.gz", " ")})
	if _, err := r3.Source(); !errors.Is(err, ErrWeekly) || !strings.Contains(err.Error(), "no op") {
		t.Fatalf("empty files: %v", err)
	}
}
