package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"
	sumdb "golang.org/x/mod/sumdb/tlog"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/oplog"
	plctlog "github.com/plcdir/plc/tlog"
)

// WriteOptions configure Write.
type WriteOptions struct {
	// Size is the number of ops per bundle (0: the folder's, or
	// DefaultSize for a new folder). It must match an existing folder's.
	Size int64
	// Progress, if set, is called after each bundle written.
	Progress func(e Entry)
}

// WriteResult is what Write did.
type WriteResult struct {
	// Added counts the bundles written by this call; Bundles is how many
	// the folder holds now.
	Added, Bundles int
	// CheckpointSize is the tree size of the checkpoint in the index.
	CheckpointSize int64
}

// ErrNoCheckpoint: the log has signed no checkpoint, so no bundle can be
// proved.
var ErrNoCheckpoint = errors.New("the log has no signed checkpoint yet (plc serve signs one when it runs)")

// Write brings the bundle folder dir up to date with store: it adds the
// full bundles the store's latest signed checkpoint covers that dir does
// not hold yet, then writes a new index with that checkpoint and every
// bundle's proof to it. Files are written to a temporary name, synced and
// renamed, bundles before the index, so a reader never sees an index
// that names a missing or partial file; existing bundle files are never
// rewritten. dir is created if need be; an index of another log, or of
// another bundle size, is refused.
func Write(ctx context.Context, store oplog.Store, dir string, opts WriteOptions) (WriteResult, error) {
	var res WriteResult
	cp, err := store.Checkpoint(ctx)
	if errors.Is(err, oplog.ErrNotFound) {
		return res, ErrNoCheckpoint
	} else if err != nil {
		return res, fmt.Errorf("reading the checkpoint: %w", err)
	}
	body, err := noteBody(cp.Note)
	if err != nil {
		return res, fmt.Errorf("the stored checkpoint: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	x := &Index{Format: FormatName, Origin: body.Origin, BundleSize: opts.Size}
	switch b, err := os.ReadFile(filepath.Join(dir, IndexName)); {
	case errors.Is(err, fs.ErrNotExist):
		if x.BundleSize == 0 {
			x.BundleSize = DefaultSize
		}
	case err != nil:
		return res, err
	default:
		old, err := ParseIndex(b)
		if err != nil {
			return res, fmt.Errorf("%s: %w", filepath.Join(dir, IndexName), err)
		}
		if old.Origin != body.Origin {
			return res, fmt.Errorf("%s holds bundles of the log %q, not of this one (%q)", dir, old.Origin, body.Origin)
		}
		if x.BundleSize != 0 && x.BundleSize != old.BundleSize {
			return res, fmt.Errorf("%s holds bundles of %d ops, not %d", dir, old.BundleSize, x.BundleSize)
		}
		x.BundleSize, x.Bundles = old.BundleSize, old.Bundles
		for _, e := range x.Bundles {
			fi, err := os.Stat(filepath.Join(dir, e.File))
			if err != nil || fi.Size() != e.Bytes {
				return res, fmt.Errorf("%s: bundle %d (%s) is missing or not the size the index gives", dir, e.Number, e.File)
			}
		}
	}
	if x.BundleSize < 1 || x.BundleSize > MaxSize {
		return res, fmt.Errorf("bundle size %d: want 1 to %d", x.BundleSize, MaxSize)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		return res, err
	}
	defer enc.Close()
	for n := int64(len(x.Bundles)) + 1; ; n++ {
		first, last := Seqs(n, x.BundleSize)
		if last > cp.Size {
			break
		}
		e, err := writeBundle(ctx, store, dir, enc, n, first, last)
		if err != nil {
			return res, err
		}
		x.Bundles = append(x.Bundles, e)
		res.Added++
		if opts.Progress != nil {
			opts.Progress(e)
		}
	}
	hr := oplog.HashReader(ctx, store)
	for i := range x.Bundles {
		e := &x.Bundles[i]
		p, err := sumdb.ProveTree(cp.Size, e.LastSeq, hr)
		if err != nil {
			return res, fmt.Errorf("proving bundle %d in the checkpoint's tree: %w", e.Number, err)
		}
		e.Proof = plctlog.EncodeHashes(p)
	}
	x.Checkpoint = string(cp.Note)
	b, err := x.Marshal()
	if err != nil {
		return res, err
	}
	if err := writeFileAtomic(dir, IndexName, b); err != nil {
		return res, err
	}
	res.Bundles, res.CheckpointSize = len(x.Bundles), cp.Size
	return res, nil
}

// writeBundle writes bundle n (seqs first…last) and returns its entry.
func writeBundle(ctx context.Context, store oplog.Store, dir string, enc *zstd.Encoder, n, first, last int64) (Entry, error) {
	var content []byte
	for after := first - 1; after < last; {
		es, err := store.Export(ctx, after, int(min(ExportPage, last-after)))
		if err != nil {
			return Entry{}, fmt.Errorf("reading the log after seq %d: %w", after, err)
		}
		if len(es) == 0 {
			return Entry{}, fmt.Errorf("the log ends at seq %d, before its checkpoint's size", after)
		}
		for i := range es {
			if es[i].Seq != after+1 {
				return Entry{}, fmt.Errorf("the log has seq %d after seq %d", es[i].Seq, after)
			}
			if content, err = appendLine(content, &es[i]); err != nil {
				return Entry{}, err
			}
			after++
		}
		if len(content) > MaxContentBytes {
			return Entry{}, fmt.Errorf("bundle %d is over %d bytes: use a smaller bundle size", n, MaxContentBytes)
		}
	}
	file := enc.EncodeAll(content, nil)
	sum, csum := sha256.Sum256(file), sha256.Sum256(content)
	e := Entry{
		Number: n, File: FileName(n), FirstSeq: first, LastSeq: last, Ops: last - first + 1,
		Bytes: int64(len(file)), SHA256: hex.EncodeToString(sum[:]),
		ContentBytes: int64(len(content)), ContentSHA256: hex.EncodeToString(csum[:]),
	}
	return e, writeFileAtomic(dir, e.File, file)
}

// noteBody parses the body of a signed note (its text: up to the blank
// line before the signatures) without checking its signatures.
func noteBody(note []byte) (plc.CheckpointBody, error) {
	i := bytes.Index(note, []byte("\n\n"))
	if i < 0 {
		return plc.CheckpointBody{}, errors.New("not a signed note")
	}
	return plc.ParseCheckpointBody(string(note[:i+1]))
}

// writeFileAtomic writes b to dir/name through a synced temporary file
// renamed into place, then syncs dir.
func writeFileAtomic(dir, name string, b []byte) error {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
