package bundle

// plcbundle V1: the bundle repositories of atscan's plcbundle tools. A
// repository is a folder with an index, plc_bundles.json, and bundles
// 000001.jsonl.zst, 000002.jsonl.zst, …: each exactly 10,000 legacy export
// lines ({did, operation, cid, nullified, createdAt}, each ended by "\n")
// in createdAt order, zstd-compressed either as one frame or as a skippable
// metadata frame followed by one frame per 100 lines. Each bundle's
// content_hash is the hex SHA-256 of its lines; its hash chains it to the
// bundle before it: sha256("plcbundle:genesis:" + content_hash) for the
// first, sha256(parent + ":" + content_hash) for the others. Nothing is
// signed: the chain says the bundles are the ones the index names, not
// that any directory served them.

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"

	"github.com/klauspost/compress/zstd"

	"github.com/plcdir/plc"
)

const (
	// PlcbundleIndexFile is the name of a plcbundle repository's index.
	PlcbundleIndexFile = "plc_bundles.json"
	// PlcbundleVersion is the index version this package reads and writes.
	PlcbundleVersion = "1.0"
	// PlcbundleFormat names the format in a bundle's metadata frame.
	PlcbundleFormat = "plcbundle-v1"
	// PlcbundleOps is the number of ops (lines) in every bundle.
	PlcbundleOps = 10_000
	// PlcbundleFrameOps is the number of lines per zstd frame of a framed
	// bundle.
	PlcbundleFrameOps = 100

	// MaxPlcbundleFileBytes bounds a bundle file (compressed), which is
	// read whole; real ones are a few MB.
	MaxPlcbundleFileBytes = 64 << 20
	// MaxPlcbundleIndexBytes bounds the index file.
	MaxPlcbundleIndexBytes = 256 << 20
	// maxPlcbundleContent bounds a bundle's uncompressed content: 10,000
	// lines of at most MaxLineBytes and their newlines.
	maxPlcbundleContent = PlcbundleOps * (plc.MaxLineBytes + 1)

	plcbundleGenesisPrefix = "plcbundle:genesis:"
	// The magic numbers of zstd skippable frames: 0x184D2A50 to 0x184D2A5F.
	plcbundleSkippableMin, plcbundleSkippableMax = 0x184D2A50, 0x184D2A5F
)

// ErrPlcbundleRefused: a plcbundle repository (or a bundle of it) fails a
// check: its index, a missing or altered bundle, a hash or chain mismatch.
// The error says which bundle, and what was expected and found.
var ErrPlcbundleRefused = errors.New("plcbundle refused")

// PlcbundleError is an ErrPlcbundleRefused with its evidence.
type PlcbundleError struct {
	// Bundle is the bundle's number (0: the index itself).
	Bundle int
	// File is the file the problem is in.
	File string
	// Msg says what is wrong, with the hashes that disagree.
	Msg string
}

func (e *PlcbundleError) Error() string {
	if e.Bundle == 0 {
		return fmt.Sprintf("plcbundle %s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("plcbundle bundle %d (%s): %s", e.Bundle, e.File, e.Msg)
}

func (e *PlcbundleError) Is(target error) bool { return target == ErrPlcbundleRefused }

// PlcbundleIndex is a repository's plc_bundles.json. Times are kept as
// the strings the index holds (RFC 3339): nothing here depends on them.
type PlcbundleIndex struct {
	Version                    string          `json:"version"`
	Origin                     string          `json:"origin"`
	LastBundle                 int             `json:"last_bundle"`
	UpdatedAt                  string          `json:"updated_at"`
	TotalSizeBytes             int64           `json:"total_size_bytes"`
	TotalUncompressedSizeBytes int64           `json:"total_uncompressed_size_bytes"`
	Bundles                    []PlcbundleMeta `json:"bundles"`
}

// PlcbundleMeta is one bundle's entry in the index.
type PlcbundleMeta struct {
	BundleNumber   int    `json:"bundle_number"`
	StartTime      string `json:"start_time"`
	EndTime        string `json:"end_time"`
	OperationCount int    `json:"operation_count"`
	DIDCount       int    `json:"did_count"`
	Hash           string `json:"hash"`
	ContentHash    string `json:"content_hash"`
	// Parent is the hash of the bundle before ("" for the first, whose
	// index entry may also leave it out).
	Parent           string `json:"parent"`
	CompressedHash   string `json:"compressed_hash"`
	CompressedSize   int64  `json:"compressed_size"`
	UncompressedSize int64  `json:"uncompressed_size"`
	// Cursor is the bundle before's end_time ("" for the first).
	Cursor    string `json:"cursor"`
	CreatedAt string `json:"created_at"`
}

// plcbundleMetadata is the JSON of a framed bundle's skippable frame.
type plcbundleMetadata struct {
	Format         string  `json:"format"`
	Origin         string  `json:"origin"`
	BundleNumber   int     `json:"bundle_number"`
	ContentHash    string  `json:"content_hash"`
	ParentHash     string  `json:"parent_hash,omitempty"`
	OperationCount int     `json:"operation_count"`
	DIDCount       int     `json:"did_count"`
	StartTime      string  `json:"start_time"`
	EndTime        string  `json:"end_time"`
	CreatedAt      string  `json:"created_at"`
	CreatedBy      string  `json:"created_by"`
	Cursor         string  `json:"cursor,omitempty"`
	FrameCount     int     `json:"frame_count"`
	FrameSize      int     `json:"frame_size"`
	FrameOffsets   []int64 `json:"frame_offsets"`
}

// PlcbundleFileName is the file name of bundle n: "%06d.jsonl.zst".
func PlcbundleFileName(n int) string { return fmt.Sprintf("%06d.jsonl.zst", n) }

// PlcbundleContentHash is the content_hash of a bundle's lines: the hex
// SHA-256 of its uncompressed content.
func PlcbundleContentHash(content []byte) string {
	sum := sha256.Sum256(content)
	return hex.EncodeToString(sum[:])
}

// PlcbundleChainHash is a bundle's hash: the hex SHA-256 of
// "plcbundle:genesis:" + contentHash for the first bundle (parent ""),
// of parent + ":" + contentHash for the others.
func PlcbundleChainHash(parent, contentHash string) string {
	var sum [32]byte
	if parent == "" {
		sum = sha256.Sum256([]byte(plcbundleGenesisPrefix + contentHash))
	} else {
		sum = sha256.Sum256([]byte(parent + ":" + contentHash))
	}
	return hex.EncodeToString(sum[:])
}

var plcbundleHex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ReadPlcbundleIndex reads and checks the index of the repository in dir:
// version "1.0", an origin, bundles numbered 1, 2, … with lowercase hex
// hashes, each one's parent the hash before it and its hash the chain
// hash of its parent and content hash. It does not read the bundles.
func ReadPlcbundleIndex(dir string) (*PlcbundleIndex, error) {
	path := filepath.Join(dir, PlcbundleIndexFile)
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxPlcbundleIndexBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	refuse := func(format string, args ...any) error {
		return &PlcbundleError{File: PlcbundleIndexFile, Msg: fmt.Sprintf(format, args...)}
	}
	if len(b) > MaxPlcbundleIndexBytes {
		return nil, refuse("longer than %d bytes", MaxPlcbundleIndexBytes)
	}
	var idx PlcbundleIndex
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, refuse("not a plcbundle index: %v", err)
	}
	if idx.Version != PlcbundleVersion {
		return nil, refuse("version %q, want %q", idx.Version, PlcbundleVersion)
	}
	if idx.Origin == "" {
		return nil, refuse("no origin")
	}
	parent := ""
	for i, m := range idx.Bundles {
		if m.BundleNumber != i+1 {
			return nil, refuse("entry %d is bundle %d, want bundle %d: a bundle is missing or out of order", i+1, m.BundleNumber, i+1)
		}
		bad := func(format string, args ...any) error {
			return &PlcbundleError{Bundle: m.BundleNumber, File: PlcbundleIndexFile, Msg: fmt.Sprintf(format, args...)}
		}
		if !plcbundleHex.MatchString(m.ContentHash) || !plcbundleHex.MatchString(m.Hash) {
			return nil, bad("hash %q or content_hash %q is not 64 lowercase hex digits", m.Hash, m.ContentHash)
		}
		if m.Parent != parent {
			return nil, bad("broken chain: parent %q, but the bundle before has hash %q", m.Parent, parent)
		}
		if want := PlcbundleChainHash(parent, m.ContentHash); m.Hash != want {
			return nil, bad("broken chain: hash %s, but its parent and content_hash chain to %s", m.Hash, want)
		}
		if m.OperationCount != 0 && m.OperationCount != PlcbundleOps {
			return nil, bad("operation_count %d, want %d", m.OperationCount, PlcbundleOps)
		}
		parent = m.Hash
	}
	if idx.LastBundle != 0 && idx.LastBundle != len(idx.Bundles) {
		return nil, refuse("last_bundle %d, but the index lists %d bundles", idx.LastBundle, len(idx.Bundles))
	}
	return &idx, nil
}

// plcbundleSplit splits a bundle file into its metadata frame (nil in the
// legacy single-frame format) and its zstd data frames.
func plcbundleSplit(file []byte) (meta, data []byte, err error) {
	if len(file) < 8 {
		return nil, file, nil
	}
	magic := binary.LittleEndian.Uint32(file)
	if magic < plcbundleSkippableMin || magic > plcbundleSkippableMax {
		return nil, file, nil
	}
	n := uint64(binary.LittleEndian.Uint32(file[4:]))
	if n > uint64(len(file)-8) {
		return nil, nil, fmt.Errorf("metadata frame of %d bytes in a file of %d", n, len(file))
	}
	return file[8 : 8+n], file[8+n:], nil
}

// plcbundleDecoder is a zstd decoder of one goroutine, bounded like the
// import's (a window of at most 128 MiB).
func plcbundleDecoder(r io.Reader) (*zstd.Decoder, error) {
	return zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<27))
}

// plcbundleContent decompresses a bundle's data frames into w, checking on
// the way that the content is exactly PlcbundleOps lines each ended by a
// newline, and returns its content_hash and size.
func plcbundleContent(data []byte, w io.Writer) (hash string, size int64, err error) {
	d, err := plcbundleDecoder(bytes.NewReader(data))
	if err != nil {
		return "", 0, err
	}
	defer d.Close()
	h := sha256.New()
	var (
		lines int
		last  byte
		buf   = make([]byte, 64<<10)
	)
	for {
		n, rerr := d.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			size += int64(n)
			if size > maxPlcbundleContent {
				return "", size, fmt.Errorf("content longer than %d bytes", maxPlcbundleContent)
			}
			lines += bytes.Count(chunk, []byte{'\n'})
			last = chunk[n-1]
			h.Write(chunk)
			if w != nil {
				if _, err := w.Write(chunk); err != nil {
					return "", size, err
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return "", size, fmt.Errorf("zstd: %w", rerr)
		}
	}
	if lines != PlcbundleOps || last != '\n' {
		return "", size, fmt.Errorf("%d newline-terminated lines (the last one ends in %q), want exactly %d", lines, last, PlcbundleOps)
	}
	return hex.EncodeToString(h.Sum(nil)), size, nil
}
