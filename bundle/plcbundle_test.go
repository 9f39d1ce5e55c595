package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// Tests of the plcbundle V1 reader against repositories written here, by
// the format's documentation and plain SHA-256, independently of
// WritePlcbundles.

// pbFixture describes a repository to write.
type pbFixture struct {
	origin string
	// single[i]: bundle i+1 is one zstd frame without metadata (the legacy
	// format); otherwise a metadata frame and 100-line frames.
	single map[int]bool
	// noParent: bundle 1's index entry has no parent member.
	noParent bool
	// noCompressedHash: the index has no compressed_hash.
	noCompressedHash bool
}

// pbSHA is the hex SHA-256 of s, by the test's own hand.
func pbSHA(s []byte) string {
	sum := sha256.Sum256(s)
	return hex.EncodeToString(sum[:])
}

// pbContent is the uncompressed content of lines: each followed by "\n".
func pbContent(lines [][]byte) []byte {
	var b []byte
	for _, l := range lines {
		b = append(append(b, l...), '\n')
	}
	return b
}

// writePbFixture writes lines (a multiple of 10,000) as a repository in
// dir and returns its index as a generic JSON value, for tests to alter.
func writePbFixture(t testing.TB, dir string, lines [][]byte, fx pbFixture) []map[string]any {
	t.Helper()
	if len(lines)%PlcbundleOps != 0 {
		t.Fatalf("%d lines: not whole bundles", len(lines))
	}
	if fx.origin == "" {
		fx.origin = "https://plc.example"
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var entries []map[string]any
	parent := ""
	for n := 1; n <= len(lines)/PlcbundleOps; n++ {
		part := lines[(n-1)*PlcbundleOps : n*PlcbundleOps]
		content := pbContent(part)
		contentHash := pbSHA(content)
		var hash string
		if n == 1 {
			hash = pbSHA([]byte("plcbundle:genesis:" + contentHash))
		} else {
			hash = pbSHA([]byte(parent + ":" + contentHash))
		}
		var file []byte
		if fx.single[n] {
			file = enc.EncodeAll(content, nil)
		} else {
			var frames []byte
			offsets := []int64{0}
			for i := 0; i < len(part); i += 100 {
				frames = enc.EncodeAll(pbContent(part[i:i+100]), frames)
				offsets = append(offsets, int64(len(frames)))
			}
			meta, _ := json.Marshal(map[string]any{
				"format": "plcbundle-v1", "origin": fx.origin, "bundle_number": n,
				"content_hash": contentHash, "parent_hash": parent, "operation_count": len(part),
				"frame_count": len(offsets) - 1, "frame_size": 100, "frame_offsets": offsets,
				"created_by": "plcbundle/test",
			})
			file = binary.LittleEndian.AppendUint32(nil, 0x184D2A50)
			file = binary.LittleEndian.AppendUint32(file, uint32(len(meta)))
			file = append(append(file, meta...), frames...)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%06d.jsonl.zst", n)), file, 0o644); err != nil {
			t.Fatal(err)
		}
		e := map[string]any{
			"bundle_number": n, "operation_count": len(part), "hash": hash,
			"content_hash": contentHash, "parent": parent, "compressed_hash": pbSHA(file),
			"start_time": "2024-01-01T00:00:00Z", "end_time": "2024-01-02T00:00:00Z",
		}
		if n == 1 && fx.noParent {
			delete(e, "parent")
		}
		if fx.noCompressedHash {
			delete(e, "compressed_hash")
		}
		entries = append(entries, e)
		parent = hash
	}
	writePbIndex(t, dir, fx.origin, entries)
	return entries
}

func writePbIndex(t testing.TB, dir, origin string, entries []map[string]any) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"version": "1.0", "origin": origin, "last_bundle": len(entries), "bundles": entries})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "plc_bundles.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// pbLines returns n distinct synthetic lines (the reader does not parse
// them).
func pbLines(n int) [][]byte {
	lines := make([][]byte, n)
	for i := range lines {
		lines[i] = fmt.Appendf(nil, `{"line":%d,"pad":"%s"}`, i+1, strings.Repeat("x", i%37))
	}
	return lines
}

// readAllPb reads a repository from after skip lines, and returns the
// lines read and the error that ended it (nil at the end).
func readAllPb(t testing.TB, dir string, skip int64) ([][]byte, error) {
	t.Helper()
	r, err := OpenPlcbundle(dir)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	r.Skip(skip)
	var got [][]byte
	for {
		l, err := r.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		if l.N != int64(len(got)+1) {
			t.Fatalf("line %d numbered %d", len(got)+1, l.N)
		}
		got = append(got, l.Raw)
	}
}

func TestPlcbundleReaderReadsFramedAndSingleFrameBundles(t *testing.T) {
	for _, fx := range []pbFixture{
		{single: map[int]bool{2: true}},
		{single: map[int]bool{1: true}, noParent: true, noCompressedHash: true},
	} {
		dir := t.TempDir()
		lines := pbLines(2 * PlcbundleOps)
		writePbFixture(t, dir, lines, fx)
		got, err := readAllPb(t, dir, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(lines) {
			t.Fatalf("%+v: read %d lines, want %d", fx, len(got), len(lines))
		}
		for i := range lines {
			if !bytes.Equal(got[i], lines[i]) {
				t.Fatalf("%+v: line %d: %s, want %s", fx, i+1, got[i], lines[i])
			}
		}
		r, _ := OpenPlcbundle(dir)
		if !strings.HasPrefix(r.Source(), "plcbundle:") || len(r.Source()) != len("plcbundle:")+32 {
			t.Errorf("source %q", r.Source())
		}
	}
}

func TestPlcbundleSkipDoesNotReadTheBundlesBefore(t *testing.T) {
	dir := t.TempDir()
	lines := pbLines(2 * PlcbundleOps)
	writePbFixture(t, dir, lines, pbFixture{})
	// Bundle 1 is done: altering it now changes nothing.
	if err := os.WriteFile(filepath.Join(dir, "000001.jsonl.zst"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := readAllPb(t, dir, PlcbundleOps+5)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != PlcbundleOps-5 || !bytes.Equal(got[0], lines[PlcbundleOps+5]) {
		t.Fatalf("after skipping %d: %d lines, first %s", PlcbundleOps+5, len(got), got[0])
	}
}

// TestPlcbundleTamperingIsRefused: every alteration of a repository is
// refused, with the bundle and the hashes that disagree, and no line of
// the altered bundle (or after it) is handed over.
func TestPlcbundleTamperingIsRefused(t *testing.T) {
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	defer enc.Close()
	recompress := func(t *testing.T, dir string, n int, edit func([][]byte) [][]byte) {
		lines := pbLines(3 * PlcbundleOps)[(n-1)*PlcbundleOps : n*PlcbundleOps]
		lines = edit(lines)
		file := enc.EncodeAll(pbContent(lines), nil)
		if err := os.WriteFile(filepath.Join(dir, PlcbundleFileName(n)), file, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		fx   pbFixture
		// alter changes the repository; entries is its index.
		alter func(t *testing.T, dir string, entries []map[string]any)
		// atOpen: refused before any line is read; else after this many.
		atOpen bool
		read   int
		want   []string
	}{
		{
			name: "a changed byte in a line", fx: pbFixture{noCompressedHash: true},
			alter: func(t *testing.T, dir string, _ []map[string]any) {
				recompress(t, dir, 2, func(ls [][]byte) [][]byte {
					ls[17] = bytes.Replace(ls[17], []byte(`"line"`), []byte(`"lime"`), 1)
					return ls
				})
			},
			read: PlcbundleOps, want: []string{"bundle 2", "altered content", "hashes to"},
		},
		{
			name: "a changed byte in the file",
			alter: func(t *testing.T, dir string, _ []map[string]any) {
				path := filepath.Join(dir, PlcbundleFileName(3))
				b, _ := os.ReadFile(path)
				b[len(b)/2] ^= 1
				os.WriteFile(path, b, 0o644)
			},
			read: 2 * PlcbundleOps, want: []string{"bundle 3", "altered file", "compressed_hash"},
		},
		{
			name: "a changed byte in the file, no compressed_hash", fx: pbFixture{noCompressedHash: true},
			alter: func(t *testing.T, dir string, _ []map[string]any) {
				path := filepath.Join(dir, PlcbundleFileName(3))
				b, _ := os.ReadFile(path)
				b[len(b)/2] ^= 1
				os.WriteFile(path, b, 0o644)
			},
			read: 2 * PlcbundleOps, want: []string{"bundle 3"},
		},
		{
			name: "a dropped line", fx: pbFixture{noCompressedHash: true},
			alter: func(t *testing.T, dir string, _ []map[string]any) {
				recompress(t, dir, 1, func(ls [][]byte) [][]byte { return ls[1:] })
			},
			read: 0, want: []string{"bundle 1", "9999 newline-terminated lines", "want exactly 10000"},
		},
		{
			name: "a wrong content_hash, chain recomputed",
			alter: func(t *testing.T, dir string, es []map[string]any) {
				es[1]["content_hash"] = pbSHA([]byte("other"))
				es[1]["hash"] = pbSHA([]byte(es[0]["hash"].(string) + ":" + es[1]["content_hash"].(string)))
				es[2]["parent"] = es[1]["hash"]
				es[2]["hash"] = pbSHA([]byte(es[1]["hash"].(string) + ":" + es[2]["content_hash"].(string)))
				delete(es[1], "compressed_hash")
				writePbIndex(t, dir, "https://plc.example", es)
			},
			read: PlcbundleOps, want: []string{"bundle 2", "metadata frame's content_hash"},
		},
		{
			name: "a wrong content_hash, single frame", fx: pbFixture{single: map[int]bool{2: true}, noCompressedHash: true},
			alter: func(t *testing.T, dir string, es []map[string]any) {
				es[1]["content_hash"] = pbSHA([]byte("other"))
				es[1]["hash"] = pbSHA([]byte(es[0]["hash"].(string) + ":" + es[1]["content_hash"].(string)))
				es[2]["parent"] = es[1]["hash"]
				es[2]["hash"] = pbSHA([]byte(es[1]["hash"].(string) + ":" + es[2]["content_hash"].(string)))
				writePbIndex(t, dir, "https://plc.example", es)
			},
			read: PlcbundleOps, want: []string{"bundle 2", "altered content", es1(t)},
		},
		{
			name: "a wrong content_hash, chain not recomputed",
			alter: func(t *testing.T, dir string, es []map[string]any) {
				es[1]["content_hash"] = pbSHA([]byte("other"))
				writePbIndex(t, dir, "https://plc.example", es)
			},
			atOpen: true, want: []string{"bundle 2", "broken chain", "chain to"},
		},
		{
			name: "a broken chain",
			alter: func(t *testing.T, dir string, es []map[string]any) {
				es[2]["parent"] = es[0]["hash"]
				writePbIndex(t, dir, "https://plc.example", es)
			},
			atOpen: true, want: []string{"bundle 3", "broken chain", "parent"},
		},
		{
			name: "two swapped bundles",
			alter: func(t *testing.T, dir string, _ []map[string]any) {
				a, b := filepath.Join(dir, PlcbundleFileName(1)), filepath.Join(dir, PlcbundleFileName(2))
				os.Rename(a, a+".x")
				os.Rename(b, a)
				os.Rename(a+".x", b)
			},
			read: 0, want: []string{"bundle 1"},
		},
		{
			name: "a missing bundle file",
			alter: func(t *testing.T, dir string, _ []map[string]any) {
				os.Remove(filepath.Join(dir, PlcbundleFileName(2)))
			},
			atOpen: true, want: []string{"bundle 2", "missing"},
		},
		{
			name: "a bundle missing from the index",
			alter: func(t *testing.T, dir string, es []map[string]any) {
				writePbIndex(t, dir, "https://plc.example", []map[string]any{es[0], es[2]})
			},
			atOpen: true, want: []string{"is bundle 3, want bundle 2", "missing or out of order"},
		},
		{
			name: "a bundle of another repository",
			alter: func(t *testing.T, dir string, es []map[string]any) {
				other := t.TempDir()
				writePbFixture(t, other, pbLines(3*PlcbundleOps), pbFixture{origin: "https://elsewhere.example"})
				b, _ := os.ReadFile(filepath.Join(other, PlcbundleFileName(2)))
				os.WriteFile(filepath.Join(dir, PlcbundleFileName(2)), b, 0o644)
				delete(es[1], "compressed_hash")
				writePbIndex(t, dir, "https://plc.example", es)
			},
			read: PlcbundleOps, want: []string{"bundle 2", "another repository"},
		},
		{
			name: "another index version",
			alter: func(t *testing.T, dir string, es []map[string]any) {
				b, _ := json.Marshal(map[string]any{"version": "2.0", "origin": "x", "bundles": es})
				os.WriteFile(filepath.Join(dir, PlcbundleIndexFile), b, 0o644)
			},
			atOpen: true, want: []string{`version "2.0"`},
		},
		{
			name: "an index without origin",
			alter: func(t *testing.T, dir string, es []map[string]any) {
				writePbIndex(t, dir, "", es)
			},
			atOpen: true, want: []string{"no origin"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			es := writePbFixture(t, dir, pbLines(3*PlcbundleOps), tt.fx)
			tt.alter(t, dir, es)
			got, err := readAllPb(t, dir, 0)
			if err == nil {
				t.Fatalf("read %d lines and no error", len(got))
			}
			if !tt.atOpen {
				// The source ends at the error: the bundles after it are
				// not read.
				r, _ := OpenPlcbundle(dir)
				r.Skip(int64(tt.read))
				_, err1 := r.Next(context.Background())
				if l, err2 := r.Next(context.Background()); err1 == nil || err2 != err1 {
					t.Fatalf("after %v: %s, %v", err1, l.Raw, err2)
				}
				r.Close()
			}
			if !errors.Is(err, ErrPlcbundleRefused) {
				t.Fatalf("error %v is not ErrPlcbundleRefused", err)
			}
			if tt.atOpen && got != nil {
				t.Fatalf("refused after %d lines, want at open: %v", len(got), err)
			}
			if !tt.atOpen && len(got) != tt.read {
				t.Fatalf("refused after %d lines, want %d: %v", len(got), tt.read, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// es1 is the content_hash the altered index entries above claim.
func es1(testing.TB) string { return pbSHA([]byte("other")) }

func TestPlcbundleChainHashIsTheDocumentedOne(t *testing.T) {
	c := pbSHA([]byte("x\n"))
	if got, want := PlcbundleChainHash("", c), pbSHA([]byte("plcbundle:genesis:"+c)); got != want {
		t.Errorf("genesis: %s, want %s", got, want)
	}
	if got, want := PlcbundleChainHash("ab", c), pbSHA([]byte("ab:"+c)); got != want {
		t.Errorf("chained: %s, want %s", got, want)
	}
	if got := PlcbundleContentHash([]byte("x\n")); got != c {
		t.Errorf("content hash %s, want %s", got, c)
	}
}
