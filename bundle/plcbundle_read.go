package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"

	"github.com/plcdir/plc/oplog"
)

// PlcbundleReader hands over the lines of a plcbundle repository, in
// bundle order, as an oplog.LineSource: each bundle is read whole
// (compressed, at most MaxPlcbundleFileBytes) and checked — its
// compressed_hash when the index has one, its metadata frame's
// content_hash when it has one, exactly 10,000 newline-terminated lines,
// its content_hash against the index (whose chain ReadPlcbundleIndex
// checked) — before any of its lines is handed over; then its lines are
// decompressed again, from the same bytes, one at a time. A bundle that
// fails a check ends the source with a *PlcbundleError; the lines of the
// bundles before it have been handed over. Lines are numbered across the
// repository from 1 (line p of bundle n is (n-1)·10,000 + p), minus what
// Skip passed over.
type PlcbundleReader struct {
	dir  string
	idx  *PlcbundleIndex
	next int // the index entry of the next bundle to open
	foreignLines

	cur  *zstd.Decoder // the current bundle's lines, or nil
	lr   *oplog.LineReader
	base int64 // the number of the lines before the current bundle
}

// OpenPlcbundle opens the repository in dir: its index must pass
// ReadPlcbundleIndex's checks, and every bundle it lists must exist.
func OpenPlcbundle(dir string) (*PlcbundleReader, error) {
	idx, err := ReadPlcbundleIndex(dir)
	if err != nil {
		return nil, err
	}
	for _, m := range idx.Bundles {
		name := PlcbundleFileName(m.BundleNumber)
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return nil, &PlcbundleError{Bundle: m.BundleNumber, File: name, Msg: fmt.Sprintf("missing: the index lists it: %v", err)}
		}
		if !fi.Mode().IsRegular() {
			return nil, &PlcbundleError{Bundle: m.BundleNumber, File: name, Msg: "not a regular file"}
		}
	}
	return &PlcbundleReader{dir: dir, idx: idx}, nil
}

// Index returns the repository's index.
func (r *PlcbundleReader) Index() *PlcbundleIndex { return r.idx }

// Lines is the number of lines of the repository: 10,000 per bundle.
func (r *PlcbundleReader) Lines() int64 { return int64(len(r.idx.Bundles)) * PlcbundleOps }

// Source names the repository for an import's cursor: "plcbundle:" and
// the first 32 hex digits of its first bundle's hash. A repository that
// grew since (more bundles on the same chain) has the same name, so an
// import of it goes on where the last one stopped.
func (r *PlcbundleReader) Source() string {
	if len(r.idx.Bundles) == 0 {
		return "plcbundle:empty"
	}
	return "plcbundle:" + r.idx.Bundles[0].Hash[:32]
}

// Next returns the next line (see PlcbundleReader). Once it has returned
// an error (io.EOF included), it returns that error again.
func (r *PlcbundleReader) Next(ctx context.Context) (oplog.Line, error) {
	return r.sticky(ctx, r.next1)
}

func (r *PlcbundleReader) next1(ctx context.Context) (oplog.Line, error) {
	for {
		if r.lr != nil {
			b, n, err := r.lr.Append(nil)
			switch {
			case err == nil:
				if r.base+n <= r.skip {
					continue
				}
				return oplog.Line{N: r.base + n - r.skip, Raw: b}, nil
			case errors.Is(err, io.EOF):
				r.closeBundle()
			default:
				r.closeBundle()
				return oplog.Line{}, fmt.Errorf("%w: %w", oplog.ErrInput, err)
			}
		}
		if err := ctx.Err(); err != nil {
			return oplog.Line{}, err
		}
		if r.next >= len(r.idx.Bundles) {
			return oplog.Line{}, io.EOF
		}
		m := r.idx.Bundles[r.next]
		r.next++
		r.base = int64(m.BundleNumber-1) * PlcbundleOps
		if r.base+PlcbundleOps <= r.skip {
			continue // done by an earlier import
		}
		data, err := checkPlcbundle(r.dir, m, r.idx.Origin)
		if err != nil {
			return oplog.Line{}, err
		}
		d, err := plcbundleDecoder(bytes.NewReader(data))
		if err != nil {
			return oplog.Line{}, err
		}
		r.cur, r.lr = d, oplog.NewLineReader(d)
	}
}

// Close releases the current bundle's decoder.
func (r *PlcbundleReader) Close() error {
	r.closeBundle()
	return nil
}

func (r *PlcbundleReader) closeBundle() {
	if r.cur != nil {
		r.cur.Close()
	}
	r.cur, r.lr = nil, nil
}

// checkPlcbundle reads bundle m of the repository in dir and checks it
// against its index entry (see PlcbundleReader); it returns the bundle's
// zstd data frames.
func checkPlcbundle(dir string, m PlcbundleMeta, origin string) ([]byte, error) {
	name := PlcbundleFileName(m.BundleNumber)
	refuse := func(format string, args ...any) error {
		return &PlcbundleError{Bundle: m.BundleNumber, File: name, Msg: fmt.Sprintf(format, args...)}
	}
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return nil, refuse("missing: the index lists it: %v", err)
	}
	defer f.Close()
	file, err := io.ReadAll(io.LimitReader(f, MaxPlcbundleFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(file) > MaxPlcbundleFileBytes {
		return nil, refuse("longer than %d bytes", MaxPlcbundleFileBytes)
	}
	if m.CompressedHash != "" {
		sum := sha256.Sum256(file)
		if got := hex.EncodeToString(sum[:]); got != m.CompressedHash {
			return nil, refuse("altered file: its SHA-256 is %s, the index's compressed_hash is %s", got, m.CompressedHash)
		}
	}
	meta, data, err := plcbundleSplit(file)
	if err != nil {
		return nil, refuse("%v", err)
	}
	if meta != nil {
		var md plcbundleMetadata
		if err := json.Unmarshal(meta, &md); err != nil {
			return nil, refuse("metadata frame: %v", err)
		}
		if md.ContentHash != "" && md.ContentHash != m.ContentHash {
			return nil, refuse("its metadata frame's content_hash is %s, the index's is %s", md.ContentHash, m.ContentHash)
		}
		if md.BundleNumber != 0 && md.BundleNumber != m.BundleNumber {
			return nil, refuse("its metadata frame says it is bundle %d", md.BundleNumber)
		}
		if md.Origin != "" && md.Origin != origin {
			return nil, refuse("its metadata frame's origin is %q, the index's is %q: a bundle of another repository", md.Origin, origin)
		}
	}
	got, _, err := plcbundleContent(data, nil)
	if err != nil {
		return nil, refuse("%v", err)
	}
	if got != m.ContentHash {
		return nil, refuse("altered content: it hashes to %s, the index's content_hash is %s", got, m.ContentHash)
	}
	return data, nil
}

// readPlcbundleLines reads and checks bundle m and returns its lines.
func readPlcbundleLines(dir string, m PlcbundleMeta, origin string) ([][]byte, error) {
	data, err := checkPlcbundle(dir, m, origin)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if _, _, err := plcbundleContent(data, &buf); err != nil {
		return nil, err
	}
	lines := bytes.SplitAfter(buf.Bytes(), []byte{'\n'})
	lines = lines[:len(lines)-1] // the empty piece after the last newline
	for i, l := range lines {
		lines[i] = l[:len(l)-1]
	}
	return lines, nil
}
