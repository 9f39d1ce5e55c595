package bundle_test

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/plcdir/plc/bundle"
	"github.com/plcdir/plc/oplog/storetest"
)

// FuzzParseIndex: whatever ParseIndex accepts renders (Marshal) to an
// index it accepts again, equal to the first; nothing panics.
func FuzzParseIndex(f *testing.F) {
	f.Add([]byte(`{"format":"plc-bundles/1","origin":"o","bundleSize":2,"checkpoint":"c","bundles":[{"number":1,"file":"000001.jsonl.zst","firstSeq":1,"lastSeq":2,"ops":2,"bytes":3,"sha256":"` +
		"0000000000000000000000000000000000000000000000000000000000000000" + `","contentBytes":4,"contentSha256":"` +
		"1111111111111111111111111111111111111111111111111111111111111111" + `","proof":["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]}]}`))
	f.Add([]byte(`{"format":"plc-bundles/1","origin":"o","bundleSize":10000,"checkpoint":"c","bundles":[]}`))
	f.Add([]byte(`{"format":"plc-bundles/1","extra":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		x, err := bundle.ParseIndex(b)
		if err != nil {
			if !errors.Is(err, bundle.ErrIndex) {
				t.Fatalf("error not of class ErrIndex: %v", err)
			}
			return
		}
		out, err := x.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		y, err := bundle.ParseIndex(out)
		if err != nil || !reflect.DeepEqual(x, y) {
			t.Fatalf("re-parsed: %v\n%+v\n%+v", err, x, y)
		}
	})
}

func TestParseIndexRefusesInconsistentEntries(t *testing.T) {
	base := `{"format":"plc-bundles/1","origin":"o","bundleSize":2,"checkpoint":"c","bundles":[{"number":%s,"file":"%s","firstSeq":%s,"lastSeq":2,"ops":2,"bytes":3,"sha256":"` +
		"0000000000000000000000000000000000000000000000000000000000000000" + `","contentBytes":4,"contentSha256":"` +
		"1111111111111111111111111111111111111111111111111111111111111111" + `","proof":[]}]}`
	for _, tc := range []struct{ n, file, first, want string }{
		{"1", "000001.jsonl.zst", "1", ""},
		{"2", "000002.jsonl.zst", "3", "entry 1 is numbered 2"},
		{"1", "../000001.jsonl.zst", "1", `file "../000001.jsonl.zst"`},
		{"1", "000001.jsonl.zst", "0", "seqs 0–2"},
	} {
		b := []byte(fmtIndex(base, tc.n, tc.file, tc.first))
		_, err := bundle.ParseIndex(b)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want))) {
			t.Errorf("%s %s %s: %v, want %q", tc.n, tc.file, tc.first, err, tc.want)
		}
	}
}

func fmtIndex(base string, a ...string) string {
	for _, s := range a {
		i := bytes.Index([]byte(base), []byte("%s"))
		base = base[:i] + s + base[i+2:]
	}
	return base
}

// failingWriter fails every write after the first n.
type failingWriter struct {
	buf bytes.Buffer
	n   int
}

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.n == 0 {
		return 0, errors.New("disk full")
	}
	w.n--
	return w.buf.Write(p)
}

// TestExportLinesResumesAfterTheLastSeqWritten: an export cut by a
// failing writer reports the last seq it wrote; going on after it gives
// the rest, and the two parts are the whole export.
func TestExportLinesResumesAfterTheLastSeqWritten(t *testing.T) {
	ctx := context.Background()
	s, _ := storetest.SQLite(t)
	storetest.Load(t, s, storetest.Corpus(t, 4, 2500)[:2500])
	var whole bytes.Buffer
	if n, last, err := bundle.ExportLines(ctx, s, 0, &whole); err != nil || n != 2500 || last != 2500 {
		t.Fatalf("whole: %d, %d, %v", n, last, err)
	}
	w := &failingWriter{n: 1}
	n, last, err := bundle.ExportLines(ctx, s, 0, w)
	if err == nil || n != bundle.ExportPage || last != bundle.ExportPage {
		t.Fatalf("cut: %d, %d, %v", n, last, err)
	}
	var rest bytes.Buffer
	if _, _, err := bundle.ExportLines(ctx, s, last, &rest); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(append(w.buf.Bytes(), rest.Bytes()...), whole.Bytes()) {
		t.Fatal("the two parts are not the whole export")
	}
}
