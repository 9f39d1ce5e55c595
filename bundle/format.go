package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

	sumdb "golang.org/x/mod/sumdb/tlog"

	plctlog "github.com/plcdir/plc/tlog"
)

const (
	// IndexName is the name of a bundle folder's index.
	IndexName = "bundles.json"
	// FormatName is the index's format field.
	FormatName = "plc-bundles/1"
	// DefaultSize is the default number of ops per bundle.
	DefaultSize = 10000
	// MaxSize bounds the ops of one bundle.
	MaxSize = 100000
	// MaxContentBytes bounds a bundle's uncompressed content (and so its
	// file): a reader holds one bundle, and the next, in memory.
	MaxContentBytes = 256 << 20
	// MaxIndexBytes bounds an index.
	MaxIndexBytes = 64 << 20
	// MaxCheckpointBytes bounds the checkpoint note in an index.
	MaxCheckpointBytes = 1 << 20
)

// Index is a bundle folder's index (IndexName).
type Index struct {
	// Format is FormatName.
	Format string `json:"format"`
	// Origin is the log's origin (the checkpoint's first line).
	Origin string `json:"origin"`
	// BundleSize is the number of ops of every bundle.
	BundleSize int64 `json:"bundleSize"`
	// Checkpoint is the signed checkpoint note (with its cosignatures)
	// that the proofs lead to; it covers every bundle.
	Checkpoint string `json:"checkpoint"`
	// Bundles are the bundles, numbered 1, 2, 3 …
	Bundles []Entry `json:"bundles"`
}

// Entry describes one bundle of an Index.
type Entry struct {
	Number   int64  `json:"number"`
	File     string `json:"file"`
	FirstSeq int64  `json:"firstSeq"`
	LastSeq  int64  `json:"lastSeq"`
	Ops      int64  `json:"ops"`
	// Bytes and SHA256 are the file's size and lowercase-hex SHA-256.
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
	// ContentBytes and ContentSHA256 are those of the uncompressed lines.
	ContentBytes  int64  `json:"contentBytes"`
	ContentSHA256 string `json:"contentSha256"`
	// Proof is the consistency proof (base64 hashes) from the tree of size
	// LastSeq to the checkpoint's tree.
	Proof []string `json:"proof"`
}

// FileName is the file name of bundle n.
func FileName(n int64) string { return fmt.Sprintf("%06d.jsonl.zst", n) }

// Seqs returns the first and last seq of bundle n of size size.
func Seqs(n, size int64) (first, last int64) { return (n-1)*size + 1, n * size }

var hexSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ErrIndex: an index is malformed or inconsistent with itself.
var ErrIndex = errors.New("bad bundle index")

// ParseIndex reads an index strictly: no unknown field, and its own rules
// hold (bundles numbered from 1 in order, each
// exactly the seqs its number and the bundle size give, its file named
// FileName, hashes in lowercase hex, sizes within the bounds, proofs of
// base64 hashes). It does not check the checkpoint or the proofs: see
// Verifier.
func ParseIndex(b []byte) (*Index, error) {
	if len(b) > MaxIndexBytes {
		return nil, fmt.Errorf("%w: over %d bytes", ErrIndex, MaxIndexBytes)
	}
	var x Index
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&x); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrIndex, err)
	}
	if d.More() {
		return nil, fmt.Errorf("%w: data after the JSON object", ErrIndex)
	}
	bad := func(format string, a ...any) (*Index, error) {
		return nil, fmt.Errorf("%w: "+format, append([]any{ErrIndex}, a...)...)
	}
	switch {
	case x.Format != FormatName:
		return bad("format %q, want %q", x.Format, FormatName)
	case x.Origin == "":
		return bad("no origin")
	case x.BundleSize < 1 || x.BundleSize > MaxSize:
		return bad("bundleSize %d: want 1 to %d", x.BundleSize, MaxSize)
	case x.Checkpoint == "" || len(x.Checkpoint) > MaxCheckpointBytes:
		return bad("no checkpoint, or one over %d bytes", MaxCheckpointBytes)
	}
	for i := range x.Bundles {
		e := &x.Bundles[i]
		first, last := Seqs(int64(i+1), x.BundleSize)
		switch {
		case e.Number != int64(i+1):
			return bad("entry %d is numbered %d", i+1, e.Number)
		case e.File != FileName(e.Number):
			return bad("bundle %d: file %q, want %q", e.Number, e.File, FileName(e.Number))
		case e.FirstSeq != first || e.LastSeq != last || e.Ops != x.BundleSize:
			return bad("bundle %d: seqs %d–%d (%d ops), want %d–%d", e.Number, e.FirstSeq, e.LastSeq, e.Ops, first, last)
		case e.Bytes < 1 || e.Bytes > MaxContentBytes || e.ContentBytes < 1 || e.ContentBytes > MaxContentBytes:
			return bad("bundle %d: sizes %d and %d: want 1 to %d bytes", e.Number, e.Bytes, e.ContentBytes, MaxContentBytes)
		case !hexSHA256.MatchString(e.SHA256) || !hexSHA256.MatchString(e.ContentSHA256):
			return bad("bundle %d: hashes must be 64 lowercase hex digits", e.Number)
		case len(e.Proof) > 64:
			return bad("bundle %d: a proof of %d hashes", e.Number, len(e.Proof))
		}
		if _, err := plctlog.DecodeHashes(e.Proof); err != nil {
			return bad("bundle %d: proof: %v", e.Number, err)
		}
	}
	return &x, nil
}

// Marshal renders the index as written: indented JSON and a newline.
func (x *Index) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(x, "", " ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// proof decodes e's proof.
func (e *Entry) proof() sumdb.TreeProof {
	hs, _ := plctlog.DecodeHashes(e.Proof) // checked by ParseIndex
	return hs
}
