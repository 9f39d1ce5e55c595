package plc

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/plcdir/plc/internal/corpus"
)

// decoderParseExportLine is ParseExportLine over encoding/json's
// tokenizer: the reference the hand-written envelope scanner is checked
// against.
func decoderParseExportLine(b []byte) (l ExportLine, looksLikeExport bool, err error) {
	if len(b) > MaxLineBytes {
		return l, false, badLine("line longer than %d bytes", MaxLineBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return l, false, badLine("not a JSON object")
	}
	var (
		env         envelope
		invalidJSON = func(err error) (ExportLine, bool, error) { return l, false, badLine("invalid JSON: %v", err) }
		str         = func(v []byte) (string, bool) {
			var s string
			if len(v) == 0 || v[0] != '"' || json.Unmarshal(v, &s) != nil {
				return s, false
			}
			return s, true
		}
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return invalidJSON(err)
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return invalidJSON(err)
		}
		env.field(&l, key, v, str)
	}
	if _, err := dec.Token(); err != nil {
		return invalidJSON(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return l, false, badLine("data after the JSON object")
	}
	looksLikeExport, err = env.finish(&l, func(v []byte) (int64, bool) {
		n, err := strconv.ParseInt(string(v), 10, 64)
		return n, err == nil && n > 0
	})
	return l, looksLikeExport, err
}

// exportLineSeeds are lines of every shape: a small generated corpus
// with invalid lines mixed in, some of its lines in the legacy form, and
// hand-made broken ones.
func exportLineSeeds(tb testing.TB) [][]byte {
	seeds := [][]byte{
		[]byte(`{}`), []byte(`[]`), []byte(`{"did":1}`), []byte(` {"a":[1,{"b":"}"}]} `),
		[]byte(`{"seq":01}`), []byte(`{"seq":1e3}`), []byte(`{"nullified":truex}`),
		[]byte(`{"d\u0069d":"did:plc:x"}`), []byte(`{"did":"\ud800"}`), []byte("{\"did\":\"\xff\"}"),
		[]byte(`{"operation":{"a":[}],"did":"x"}`), []byte(`{"x":1,}`), []byte(`{"x" 1}`), []byte(`{"x":1} x`),
	}
	var buf bytes.Buffer
	if _, err := corpus.Generate(context.Background(), &buf, corpus.Config{Ops: 24, Seed: 7, InvalidRate: 0.3}); err != nil {
		tb.Fatal(err)
	}
	for i, l := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		seeds = append(seeds, l)
		if i%4 == 0 {
			var m map[string]any
			if err := json.Unmarshal(l, &m); err != nil {
				tb.Fatal(err)
			}
			delete(m, "type")
			delete(m, "seq")
			m["nullified"] = false
			legacy, err := json.Marshal(m)
			if err != nil {
				tb.Fatal(err)
			}
			seeds = append(seeds, legacy)
		}
	}
	return seeds
}

// sameParse fails unless both parsers agree on line: the same item when
// the reference accepts it, a rejection when it rejects it (with the same
// message, unless the reference's is about JSON syntax: the scanner words
// those its own way), and the same verdict on whether it looks like an
// export line when both read it as JSON.
func sameParse(t *testing.T, line []byte) {
	t.Helper()
	got, gotLooks, gotErr := ParseExportLine(line)
	want, wantLooks, wantErr := decoderParseExportLine(line)
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("%q: scanner error %v, decoder error %v", line, gotErr, wantErr)
	}
	if wantErr == nil {
		if got.DID != want.DID || got.CID != want.CID || got.Seq != want.Seq || !got.CreatedAt.Equal(want.CreatedAt) ||
			got.HasNullified != want.HasNullified || got.Nullified != want.Nullified ||
			!bytes.Equal(got.Op.SignedCBOR(), want.Op.SignedCBOR()) || gotLooks != wantLooks {
			t.Fatalf("%q: scanner %+v, decoder %+v", line, got, want)
		}
		return
	}
	syntax := func(e error) bool {
		m := e.Error()
		return strings.HasPrefix(m, "invalid JSON") || m == "not a JSON object" || m == "data after the JSON object"
	}
	if !syntax(wantErr) && !syntax(gotErr) && gotErr.Error() != wantErr.Error() {
		t.Fatalf("%q: scanner error %q, decoder error %q", line, gotErr, wantErr)
	}
	if !syntax(wantErr) && !syntax(gotErr) && gotLooks != wantLooks {
		t.Fatalf("%q: looks like an export: scanner %v, decoder %v", line, gotLooks, wantLooks)
	}
}

func TestExportLineScannerMatchesDecoder(t *testing.T) {
	for n, l := range exportLineSeeds(t) {
		sameParse(t, l)
		if n%5 != 0 {
			continue
		}
		// Every truncation and every single-byte change of some lines.
		for i := range l {
			sameParse(t, l[:i])
			for _, c := range []byte{'"', '\\', '{', '}', ',', ':', ' ', 'x', '1', 0} {
				m := bytes.Clone(l)
				m[i] = c
				sameParse(t, m)
			}
		}
	}
}

func FuzzExportLine(f *testing.F) {
	for _, l := range exportLineSeeds(f) {
		f.Add(l)
	}
	f.Fuzz(func(t *testing.T, line []byte) { sameParse(t, line) })
}

// TestSkipStringEndsAtTheFirstUnescapedQuote: the string scanner that
// searches for quotes and backslashes ends each string where a scan byte
// by byte does, escapes and cut-off strings included.
func TestSkipStringEndsAtTheFirstUnescapedQuote(t *testing.T) {
	byByte := func(b []byte, i int) (int, bool) {
		for j := i + 1; j < len(b); j++ {
			switch b[j] {
			case '\\':
				j++
			case '"':
				return j + 1, true
			}
		}
		return 0, false
	}
	cases := []string{`""`, `"a"`, `"a\"b"`, `"a\\"b`, `"a\\\"b"`, `"\"`, `"\\`, `"\`, `"`, `"abc`,
		`"a\nb"x`, `"\\\\"`, `"x\"\"\"y"z"`, `"` + strings.Repeat("k", 100) + `\"` + strings.Repeat("z", 50) + `"`}
	for _, c := range cases {
		for _, tail := range []string{"", `,"b":"c"}`, `\`} {
			b := []byte(c + tail)
			gotEnd, gotOK := skipString(b, 0)
			wantEnd, wantOK := byByte(b, 0)
			if gotEnd != wantEnd || gotOK != wantOK {
				t.Errorf("skipString(%q) = %d, %v; byte by byte %d, %v", b, gotEnd, gotOK, wantEnd, wantOK)
			}
		}
	}
}

// benchLines are the lines of a small generated export (each has a seq).
func benchLines(b *testing.B) [][]byte {
	var buf bytes.Buffer
	if _, err := corpus.Generate(context.Background(), &buf, corpus.Config{Ops: 200, Seed: 1}); err != nil {
		b.Fatal(err)
	}
	var lines [][]byte
	for _, l := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		if h, err := ReadLineHead(l); err != nil || h.Seq == 0 {
			b.Fatalf("%s: seq %d, %v", l, h.Seq, err)
		}
		lines = append(lines, l)
	}
	return lines
}

// BenchmarkReadLineHead reads the head of each line of an export page, as
// a mirror's fetcher does for every line it is served.
func BenchmarkReadLineHead(b *testing.B) {
	benchPerLine(b, func(l []byte) { ReadLineHead(l) })
}

// BenchmarkParseExportLine parses lines whole, as every import does.
func BenchmarkParseExportLine(b *testing.B) {
	benchPerLine(b, func(l []byte) { ParseExportLine(l) })
}

// benchPerLine calls f on each of benchLines, and reports the time a line.
func benchPerLine(b *testing.B, f func(line []byte)) {
	lines := benchLines(b)
	b.ReportAllocs()
	for b.Loop() {
		for _, l := range lines {
			f(l)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(lines)), "ns/line")
}
