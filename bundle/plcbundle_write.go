package bundle

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// PlcbundleOpSource is what WritePlcbundles reads ops from (an
// oplog.Store): ExportByTime's pages, in the legacy export's (createdAt,
// cid) order, with the nullified flag as the log states it.
type PlcbundleOpSource interface {
	ExportByTime(ctx context.Context, after time.Time, limit int) ([]oplog.Entry, error)
}

// PlcbundleExportOptions configure WritePlcbundles.
type PlcbundleExportOptions struct {
	// Origin names the repository (the index's and each metadata frame's
	// origin); an existing repository of another origin is not extended.
	Origin string
	// Before: only ops with createdAt before it are bundled. A caller
	// passes now − 73 h, so that every op is past the 72 h in which a
	// recovery may nullify it and its nullified flag is final.
	Before time.Time
	// Now is the clock of created_at and updated_at (default time.Now).
	Now func() time.Time
	// CreatedBy names the writer in the metadata frames (default "plc").
	CreatedBy string
	// PageSize is the number of ops read per query (default 10,000).
	PageSize int
}

// PlcbundleExportStats say what WritePlcbundles did.
type PlcbundleExportStats struct {
	// Existing is the number of bundles the repository had; Written the
	// number added.
	Existing, Written int
}

// ErrPlcbundleOrigin: WritePlcbundles was asked to extend a repository of
// another origin.
var ErrPlcbundleOrigin = errors.New("a repository of another origin")

// maxPlcbundlePage bounds the ops read at once: a page must hold a whole
// millisecond's ops.
const maxPlcbundlePage = 1 << 20

// WritePlcbundles writes the ops of src created before opts.Before to the
// plcbundle V1 repository in dir (created if need be), after the bundles
// it has: full bundles of 10,000 legacy export lines (rendered as the
// directory's legacy /export renders them, nullified as src states it) in
// (createdAt, cid) order, each a skippable metadata frame and one zstd
// frame per 100 lines, chained to the one before. The ops past the last
// full bundle wait for a later run. A rerun goes on after the last bundle
// (checked first): it starts at that bundle's last createdAt and drops
// the ops of that millisecond the bundle already holds (plcbundle's
// boundary rule). Bundle files and the index are written to a temporary
// file and renamed; the index at the end (and every 64 bundles), so an
// interrupted run loses at most the bundles since, which a rerun writes
// again.
func WritePlcbundles(ctx context.Context, src PlcbundleOpSource, dir string, opts PlcbundleExportOptions) (st PlcbundleExportStats, err error) {
	if opts.Origin == "" {
		return st, errors.New("plcbundle export: no origin")
	}
	if opts.Before.IsZero() {
		return st, errors.New("plcbundle export: no cutoff time")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.CreatedBy == "" {
		opts.CreatedBy = "plc"
	}
	if opts.PageSize <= 0 {
		opts.PageSize = PlcbundleOps
	}
	if err = os.MkdirAll(dir, 0o755); err != nil {
		return st, err
	}
	w := &plcbundleWriter{dir: dir, opts: opts}
	idx, err := ReadPlcbundleIndex(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		idx = &PlcbundleIndex{Version: PlcbundleVersion, Origin: opts.Origin}
		w.dirty = true // a new repository has an index, even with no bundle yet
	case err != nil:
		return st, err
	case idx.Origin != opts.Origin:
		return st, fmt.Errorf("plcbundle export: %w: %s has origin %q, not %q: not extending it", ErrPlcbundleOrigin, dir, idx.Origin, opts.Origin)
	}
	w.idx = idx
	st.Existing = len(idx.Bundles)

	after := time.Time{}
	var boundary map[string]bool // the CIDs of the last bundle's last millisecond
	var boundaryAt time.Time
	if n := len(idx.Bundles); n > 0 {
		last := idx.Bundles[n-1]
		lines, err := readPlcbundleLines(dir, last, idx.Origin)
		if err != nil {
			return st, err
		}
		boundary = map[string]bool{}
		for i := len(lines) - 1; i >= 0; i-- {
			h, err := plc.ReadLineHead(lines[i])
			if err != nil {
				return st, &PlcbundleError{Bundle: last.BundleNumber, File: PlcbundleFileName(last.BundleNumber), Msg: fmt.Sprintf("line %d: %v", i+1, err)}
			}
			t, err := time.Parse(time.RFC3339Nano, h.CreatedAt)
			if err != nil {
				return st, &PlcbundleError{Bundle: last.BundleNumber, File: PlcbundleFileName(last.BundleNumber), Msg: fmt.Sprintf("line %d: createdAt: %v", i+1, err)}
			}
			if i < len(lines)-1 && !t.Equal(boundaryAt) {
				break
			}
			boundaryAt = t
			boundary[h.CID] = true
		}
		after = boundaryAt.Add(-time.Millisecond)
	}
	defer func() {
		if w.dirty {
			if werr := w.writeIndex(); werr != nil && err == nil {
				err = werr
			}
		}
	}()

	limit := opts.PageSize
	for {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		es, err := src.ExportByTime(ctx, after, limit)
		if err != nil {
			return st, fmt.Errorf("plcbundle export: read ops after %s: %w", after.Format(time.RFC3339Nano), err)
		}
		end := len(es) < limit
		if !end {
			// The page may end inside a millisecond: leave that one for the
			// next page, which reads all of it.
			last := es[len(es)-1].CreatedAt
			cut := len(es)
			for cut > 0 && es[cut-1].CreatedAt.Equal(last) {
				cut--
			}
			if cut == 0 {
				if limit >= maxPlcbundlePage {
					return st, fmt.Errorf("plcbundle export: more than %d ops created at %s", maxPlcbundlePage, last.Format(time.RFC3339Nano))
				}
				limit *= 2
				continue
			}
			es = es[:cut]
		}
		for i := range es {
			e := &es[i]
			if !e.CreatedAt.Before(opts.Before) {
				return st, nil
			}
			if boundary != nil && e.CreatedAt.Equal(boundaryAt) && boundary[e.CID] {
				continue
			}
			if err := w.add(e); err != nil {
				return st, err
			}
			if len(w.lines) == PlcbundleOps {
				if err := w.flush(); err != nil {
					return st, err
				}
				st.Written++
			}
		}
		if end {
			return st, nil
		}
		after = es[len(es)-1].CreatedAt
	}
}

// plcbundleWriter collects the next bundle's lines and writes bundles.
type plcbundleWriter struct {
	dir   string
	opts  PlcbundleExportOptions
	idx   *PlcbundleIndex
	dirty bool // bundles written since the index was

	lines      [][]byte
	dids       map[string]bool
	start, end time.Time
	enc        *zstd.Encoder
}

func (w *plcbundleWriter) add(e *oplog.Entry) error {
	op, err := e.ParsedOp()
	if err != nil {
		return err
	}
	if len(w.lines) == 0 {
		w.start, w.dids = e.CreatedAt, map[string]bool{}
	}
	w.end = e.CreatedAt
	w.dids[e.DID] = true
	w.lines = append(w.lines, validate.AppendAuditEntryJSON(nil, e.DID, op, e.Nullified, e.CreatedAt))
	return nil
}

// flush writes the collected lines as the next bundle.
func (w *plcbundleWriter) flush() error {
	if w.enc == nil {
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
		if err != nil {
			return err
		}
		w.enc = enc
	}
	n := len(w.idx.Bundles) + 1
	var content []byte
	var frames [][]byte
	offsets := []int64{0}
	for i := 0; i < len(w.lines); i += PlcbundleFrameOps {
		var frame []byte
		for _, l := range w.lines[i:min(i+PlcbundleFrameOps, len(w.lines))] {
			frame = append(append(frame, l...), '\n')
		}
		content = append(content, frame...)
		z := w.enc.EncodeAll(frame, nil)
		frames = append(frames, z)
		offsets = append(offsets, offsets[len(offsets)-1]+int64(len(z)))
	}
	parent, cursor := "", ""
	if n > 1 {
		prev := w.idx.Bundles[n-2]
		parent, cursor = prev.Hash, prev.EndTime
	}
	contentHash := PlcbundleContentHash(content)
	now := w.opts.Now().UTC().Format(time.RFC3339Nano)
	m := PlcbundleMeta{
		BundleNumber:     n,
		StartTime:        w.start.UTC().Format(time.RFC3339Nano),
		EndTime:          w.end.UTC().Format(time.RFC3339Nano),
		OperationCount:   len(w.lines),
		DIDCount:         len(w.dids),
		Hash:             PlcbundleChainHash(parent, contentHash),
		ContentHash:      contentHash,
		Parent:           parent,
		UncompressedSize: int64(len(content)),
		Cursor:           cursor,
		CreatedAt:        now,
	}
	meta, err := json.Marshal(plcbundleMetadata{
		Format: PlcbundleFormat, Origin: w.idx.Origin, BundleNumber: n,
		ContentHash: contentHash, ParentHash: parent,
		OperationCount: m.OperationCount, DIDCount: m.DIDCount,
		StartTime: m.StartTime, EndTime: m.EndTime, CreatedAt: now, CreatedBy: w.opts.CreatedBy,
		Cursor: cursor, FrameCount: len(frames), FrameSize: PlcbundleFrameOps, FrameOffsets: offsets,
	})
	if err != nil {
		return err
	}
	file := binary.LittleEndian.AppendUint32(nil, plcbundleSkippableMin)
	file = binary.LittleEndian.AppendUint32(file, uint32(len(meta)))
	file = append(file, meta...)
	for _, z := range frames {
		file = append(file, z...)
	}
	m.CompressedHash = PlcbundleContentHash(file)
	m.CompressedSize = int64(len(file))
	if err := writeFileAtomic(w.dir, PlcbundleFileName(n), file); err != nil {
		return err
	}
	w.idx.Bundles = append(w.idx.Bundles, m)
	w.idx.LastBundle = n
	w.idx.TotalSizeBytes += m.CompressedSize
	w.idx.TotalUncompressedSizeBytes += m.UncompressedSize
	w.lines, w.dids, w.dirty = w.lines[:0], nil, true
	if n%64 == 0 {
		return w.writeIndex()
	}
	return nil
}

func (w *plcbundleWriter) writeIndex() error {
	w.idx.UpdatedAt = w.opts.Now().UTC().Format(time.RFC3339Nano)
	if w.idx.Bundles == nil {
		w.idx.Bundles = []PlcbundleMeta{} // [], not null
	}
	b, err := json.MarshalIndent(w.idx, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(w.dir, PlcbundleIndexFile, append(b, '\n')); err != nil {
		return err
	}
	w.dirty = false
	return nil
}
