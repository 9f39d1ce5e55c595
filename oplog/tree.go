package oplog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/internal/defaults"
)

// The transparency log is an RFC 6962 Merkle tree over the op sequence:
// leaf i is the op with seq i+1, and its data is LeafData (plc.Leaf). The
// stores keep the tree's stored hashes (tlog's numbering: tlog.StoredHashes
// of each record) in chunks, one per append transaction, written in the
// same transaction as the ops; package tlog builds checkpoints, tiles
// and proofs on them.

// ErrTreeBehind: the op log holds ops the tree does not cover (a database
// written before the transparency log); CatchUpTree fills the tree in.
var ErrTreeBehind = errors.New("the transparency log does not cover every op")

// LeafData returns the transparency-log leaf of e (plc.Leaf, whose data
// is a canonical DAG-CBOR map of e's op, CID, DID, seq and createdAt).
func LeafData(e *Entry) []byte {
	return appendLeafData(make([]byte, 0, len(e.Op)+len(e.CID)+len(e.DID)+80), e)
}

// appendLeafData appends e's LeafData to dst.
func appendLeafData(dst []byte, e *Entry) []byte {
	return plc.AppendLeaf(dst, &plc.Leaf{Seq: e.Seq, DID: e.DID, CID: e.CID, CreatedAt: e.CreatedAt, Op: e.Op})
}

// treeChunk is one row of tree_hashes: the stored hashes of the records
// (seq-1) of first…last.
type treeChunk struct {
	first, last int64
	hashes      []byte
}

// start is the stored-hash index of the chunk's first hash.
func (c *treeChunk) start() int64 { return tlog.StoredHashIndex(0, c.first-1) }

// hash returns the stored hash with index i, which the chunk must hold.
func (c *treeChunk) hash(i int64) (tlog.Hash, error) {
	off := (i - c.start()) * tlog.HashSize
	var h tlog.Hash
	if off < 0 || off+tlog.HashSize > int64(len(c.hashes)) {
		return h, fmt.Errorf("oplog: tree chunk %d…%d does not hold stored hash %d", c.first, c.last, i)
	}
	copy(h[:], c.hashes[off:])
	return h, nil
}

// check verifies that the chunk's length matches its records.
func (c *treeChunk) check() error {
	want := (tlog.StoredHashIndex(0, c.last) - c.start()) * tlog.HashSize
	if c.first < 1 || c.last < c.first || int64(len(c.hashes)) != want {
		return fmt.Errorf("oplog: tree chunk %d…%d holds %d bytes, want %d", c.first, c.last, len(c.hashes), want)
	}
	return nil
}

// recordOf returns the seq of the op whose record stores hash index i.
func recordOf(i int64) int64 {
	level, n := tlog.SplitStoredHashIndex(i)
	return (n+1)<<uint(level) - 1 + 1
}

// treeTx is what the tree needs of a backend: reads (inside an append
// transaction or not) and, inside one, the insert of a chunk.
type treeTx interface {
	// treeEnd returns the last seq the tree covers (0: none).
	treeEnd(ctx context.Context) (int64, error)
	// chunkAt returns the chunk holding seq (found false when none does).
	chunkAt(ctx context.Context, seq int64) (c treeChunk, found bool, err error)
	// chunksIn returns the chunks holding any of from…to, in order.
	chunksIn(ctx context.Context, from, to int64) ([]treeChunk, error)
	insertChunk(ctx context.Context, c treeChunk) error
}

// readHashes reads the stored hashes with the given indexes.
func readHashes(ctx context.Context, tx treeTx, idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	if len(idx) == 0 {
		return out, nil
	}
	seqs := make([]int64, len(idx))
	lo, hi := recordOf(idx[0]), recordOf(idx[0])
	for i, x := range idx {
		if x < 0 {
			return nil, fmt.Errorf("oplog: stored hash index %d", x)
		}
		seqs[i] = recordOf(x)
		lo, hi = min(lo, seqs[i]), max(hi, seqs[i])
	}
	var chunks []treeChunk
	if hi-lo <= 4096 {
		// One range read: a tile of leaves, a proof's nearby nodes.
		var err error
		if chunks, err = tx.chunksIn(ctx, lo, hi); err != nil {
			return nil, err
		}
	} else {
		order := slices.Clone(seqs)
		slices.Sort(order)
		for _, s := range slices.Compact(order) {
			if n := len(chunks); n > 0 && chunks[n-1].last >= s {
				continue
			}
			c, found, err := tx.chunkAt(ctx, s)
			if err != nil {
				return nil, err
			}
			if found {
				chunks = append(chunks, c)
			}
		}
	}
	for i, x := range idx {
		j, found := slices.BinarySearchFunc(chunks, seqs[i], func(c treeChunk, s int64) int {
			switch {
			case c.last < s:
				return -1
			case c.first > s:
				return 1
			}
			return 0
		})
		if !found {
			return nil, fmt.Errorf("%w: no tree hashes for seq %d", ErrTreeBehind, seqs[i])
		}
		h, err := chunks[j].hash(x)
		if err != nil {
			return nil, err
		}
		out[i] = h
	}
	return out, nil
}

// frontier returns the stored-hash indexes of the complete subtrees of a
// tree of size n: what appending record n and computing the tree hash of
// size n read.
func frontier(n int64) []int64 {
	var idx []int64
	for level := 0; n>>uint(level) > 0; level++ {
		if (n>>uint(level))&1 == 1 {
			idx = append(idx, tlog.StoredHashIndex(level, n>>uint(level)-1))
		}
	}
	return idx
}

// treeCache keeps the frontier of the tree as of the last append this
// process committed, so appends need not read it back. Like the record
// cache, it is used only while the log's last seq is the one it was left
// at: another process's append invalidates it.
type treeCache struct {
	mu       sync.Mutex
	size     int64 // -1: none
	frontier map[int64]tlog.Hash
}

func newTreeCache() *treeCache { return &treeCache{size: -1} }

// treeExtension is the tree hashes of a batch, and the frontier after it,
// to be kept once the transaction commits.
type treeExtension struct {
	chunk    treeChunk
	size     int64
	frontier map[int64]tlog.Hash
}

// extend computes the stored hashes of entries, the next ops after a log
// (and tree) of size last, reading the frontier with tx when the cache
// does not hold it.
func (t *treeCache) extend(ctx context.Context, tx treeTx, last int64, entries []*Entry) (*treeExtension, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	t.mu.Lock()
	known := t.frontier
	if t.size != last {
		known = nil
	}
	t.mu.Unlock()
	if known == nil {
		end, err := tx.treeEnd(ctx)
		if err != nil {
			return nil, fmt.Errorf("read the tree's end: %w", err)
		}
		if end != last {
			return nil, fmt.Errorf("%w: it ends at seq %d, the log at %d", ErrTreeBehind, end, last)
		}
		idx := frontier(last)
		hs, err := readHashes(ctx, tx, idx)
		if err != nil {
			return nil, fmt.Errorf("read the tree's frontier: %w", err)
		}
		known = make(map[int64]tlog.Hash, len(idx))
		for i, x := range idx {
			known[x] = hs[i]
		}
	}
	ext := &treeExtension{frontier: make(map[int64]tlog.Hash, len(known)+4)}
	for k, v := range known {
		ext.frontier[k] = v
	}
	reader := mapReader(ext.frontier)
	buf := make([]byte, 0, len(entries)*2*tlog.HashSize)
	var leaf []byte // one leaf's data at a time: StoredHashes keeps none
	for i, e := range entries {
		n := last + int64(i)
		if e.Seq != n+1 {
			return nil, fmt.Errorf("oplog: tree record for seq %d given as record %d", e.Seq, n)
		}
		leaf = appendLeafData(leaf[:0], e)
		hs, err := tlog.StoredHashes(n, leaf, reader)
		if err != nil {
			return nil, fmt.Errorf("tree hashes of seq %d: %w", e.Seq, err)
		}
		base := tlog.StoredHashIndex(0, n)
		for k, h := range hs {
			buf = append(buf, h[:]...)
			ext.frontier[base+int64(k)] = h
		}
		if len(ext.frontier) > 2*64 { // a frontier has at most 64 hashes
			prune(ext.frontier, frontier(n+1))
		}
	}
	size := last + int64(len(entries))
	prune(ext.frontier, frontier(size))
	ext.size = size
	ext.chunk = treeChunk{first: last + 1, last: size, hashes: buf}
	return ext, nil
}

func prune(m map[int64]tlog.Hash, keep []int64) {
	for k := range m {
		if !slices.Contains(keep, k) {
			delete(m, k)
		}
	}
}

// committed records that ext's transaction committed; failed, that an
// append transaction did not (the frontier may then be anything).
func (t *treeCache) committed(ext *treeExtension) {
	if ext == nil {
		return
	}
	t.mu.Lock()
	t.size, t.frontier = ext.size, ext.frontier
	t.mu.Unlock()
}

func (t *treeCache) failed() {
	t.mu.Lock()
	t.size, t.frontier = -1, nil
	t.mu.Unlock()
}

type mapReader map[int64]tlog.Hash

func (m mapReader) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		h, ok := m[x]
		if !ok {
			return nil, fmt.Errorf("oplog: stored hash %d is not in the frontier", x)
		}
		out[i] = h
	}
	return out, nil
}

// writeEntries returns pointers to the entries of writes.
func writeEntries(writes []Write) []*Entry {
	es := make([]*Entry, len(writes))
	for i := range writes {
		es[i] = &writes[i].Entry
	}
	return es
}

// TreeReader reads a store's transparency log.
type TreeReader interface {
	// TreeSize returns the number of leaves the stored tree covers.
	TreeSize(ctx context.Context) (int64, error)
	// ReadHashes returns the stored hashes with the given indexes (tlog's
	// numbering); it fails for hashes the tree does not hold yet.
	ReadHashes(ctx context.Context, idx []int64) ([]tlog.Hash, error)
}

// HashReader adapts a store to tlog.HashReader with ctx.
func HashReader(ctx context.Context, s TreeReader) tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) { return s.ReadHashes(ctx, idx) })
}

// TreeMismatch is a stored tree hash that is not what the ops recompute
// to (or a gap in the log): VerifyTree's finding.
type TreeMismatch struct {
	Seq    int64
	Reason string
}

func (m *TreeMismatch) Error() string {
	return fmt.Sprintf("transparency log does not match the op log at seq %d: %s", m.Seq, m.Reason)
}

// VerifyTree recomputes the whole tree from the ops of store, checks every
// stored hash against it and returns the tree hash of each requested size
// (as recomputed; sizes beyond the tree are ignored). progress, when set,
// is called with the seq reached after each page.
func VerifyTree(ctx context.Context, store Store, sizes []int64, progress func(seq int64)) (map[int64]tlog.Hash, error) {
	const page = 8192
	end, err := store.TreeSize(ctx)
	if err != nil {
		return nil, err
	}
	last, err := store.LatestSeq(ctx)
	if err != nil {
		return nil, err
	}
	if end != last {
		return nil, fmt.Errorf("%w: it ends at seq %d, the log at %d", ErrTreeBehind, end, last)
	}
	roots := map[int64]tlog.Hash{}
	want := map[int64]bool{}
	for _, s := range sizes {
		want[s] = true
	}
	known := map[int64]tlog.Hash{}
	reader := mapReader(known)
	if want[0] {
		roots[0], _ = tlog.TreeHash(0, reader)
	}
	var n int64
	for n < end {
		es, err := store.Export(ctx, n, int(min(page, end-n)))
		if err != nil {
			return nil, fmt.Errorf("read ops after %d: %w", n, err)
		}
		if len(es) == 0 {
			return nil, &TreeMismatch{Seq: n + 1, Reason: "the op is missing"}
		}
		first := n + 1
		idx := make([]int64, 0, 2*len(es))
		for i := range es {
			if es[i].Seq != first+int64(i) {
				return nil, &TreeMismatch{Seq: first + int64(i), Reason: fmt.Sprintf("the op is missing (the next op has seq %d)", es[i].Seq)}
			}
			r := es[i].Seq - 1
			for k := tlog.StoredHashIndex(0, r); k < tlog.StoredHashIndex(0, r+1); k++ {
				idx = append(idx, k)
			}
		}
		stored, err := store.ReadHashes(ctx, idx)
		if err != nil {
			return nil, err
		}
		at := 0
		for i := range es {
			r := es[i].Seq - 1
			hs, err := tlog.StoredHashes(r, LeafData(&es[i]), reader)
			if err != nil {
				return nil, err
			}
			for k, h := range hs {
				if h != stored[at] {
					reason := "a stored interior hash differs"
					if k == 0 {
						reason = "the op's leaf hash differs from the stored one (the op or its seq was changed)"
					}
					return nil, &TreeMismatch{Seq: es[i].Seq, Reason: reason}
				}
				known[tlog.StoredHashIndex(0, r)+int64(k)] = h
				at++
			}
			size := r + 1
			if want[size] {
				if roots[size], err = tlog.TreeHash(size, reader); err != nil {
					return nil, err
				}
			}
			if len(known) > 4096 {
				prune(known, frontier(size))
			}
		}
		n = es[len(es)-1].Seq
		if progress != nil {
			progress(n)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	return roots, nil
}

// CatchUpTree fills in the tree hashes of ops written before the
// transparency log existed (a database migrated from an earlier version),
// batch ops per transaction. It returns how many ops it covered.
func CatchUpTree(ctx context.Context, store Store, batch int) (int64, error) {
	defaults.Positive(&batch, 8192)
	var total int64
	for {
		n, err := store.ExtendTree(ctx, batch)
		total += int64(n)
		if err != nil || n == 0 {
			return total, err
		}
	}
}

// extendTree is the backends' ExtendTree: under the append lock, with tx
// and ops reading inside the transaction.
func extendTree(ctx context.Context, tx treeTx, cache *treeCache, last int64, limit int, ops func(after int64, limit int) ([]Entry, error)) (*treeExtension, error) {
	end, err := tx.treeEnd(ctx)
	if err != nil {
		return nil, err
	}
	if end >= last {
		return nil, nil
	}
	es, err := ops(end, int(min(int64(limit), last-end)))
	if err != nil {
		return nil, err
	}
	ptrs := make([]*Entry, len(es))
	for i := range es {
		if es[i].Seq != end+1+int64(i) {
			return nil, &TreeMismatch{Seq: end + 1 + int64(i), Reason: "the op is missing"}
		}
		ptrs[i] = &es[i]
	}
	cache.failed() // the frontier of size end is read from the database
	c := &treeCache{size: -1}
	ext, err := c.extend(ctx, &endAt{tx, end}, end, ptrs)
	if err != nil {
		return nil, err
	}
	if err := tx.insertChunk(ctx, ext.chunk); err != nil {
		return nil, err
	}
	return ext, nil
}

// endAt is a treeTx whose tree ends at end (during a catch-up, the log
// runs ahead of the tree).
type endAt struct {
	treeTx
	end int64
}

func (e *endAt) treeEnd(context.Context) (int64, error) { return e.end, nil }

// chunkBytes checks a chunk read from the database.
func chunkBytes(first, last int64, hashes []byte) (treeChunk, error) {
	c := treeChunk{first: first, last: last, hashes: bytes.Clone(hashes)}
	return c, c.check()
}

// Checkpoint is the latest signed checkpoint a store holds.
type Checkpoint struct {
	Size     int64
	Root     tlog.Hash
	Note     []byte // the signed note, with any cosignatures
	SignedAt time.Time
}

// ErrCheckpointRace: SwapCheckpoint found another checkpoint than the one
// it was to replace.
var ErrCheckpointRace = errors.New("the checkpoint was replaced concurrently")

// UnloggedOps is a startup finding: the log holds ops that its
// transparency log never covered although checkpoints are being signed
// (so they were not written by an append, which writes an op and its tree
// hashes in one transaction), or ops outside the seq range 1, 2, 3 … the
// tree numbers. They were added behind the log's back.
type UnloggedOps struct {
	// TreeEnd is the last seq the tree covers, Last the log's last seq.
	TreeEnd, Last int64
	// Ops are the first of the ops outside the tree (at most a few), named
	// in the message; More says that there are others.
	Ops  []Entry
	More bool
}

func (u *UnloggedOps) Error() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "the database holds ops the log did not write (no transparency-log hashes; the tree ends at seq %d, the ops at seq %d): ", u.TreeEnd, u.Last)
	for i := range u.Ops {
		if i > 0 {
			b.WriteString("; ")
		}
		e := &u.Ops[i]
		fmt.Fprintf(&b, "seq %d did %s cid %s", e.Seq, e.DID, e.CID)
	}
	if u.More {
		b.WriteString("; and more")
	}
	return b.String()
}

// unloggedShown bounds the ops an UnloggedOps names.
const unloggedShown = 10

// CheckUnlogged returns an *UnloggedOps when store holds ops outside its
// transparency log: an op with a seq below 1 (the tree numbers ops from
// 1, so such a row is never checked against it, yet it would be read as
// part of its DID's history), or, when signed is set (a checkpoint
// exists), an op after the tree's end. Appends write ops and their tree
// hashes in one transaction, so no crash leaves an op without its hashes:
// past the first checkpoint only a write from outside the log does. Before
// it, ops beyond the tree are those of a database written before the
// transparency log, which CatchUpTree fills in.
func CheckUnlogged(ctx context.Context, store Store, signed bool) error {
	low, err := store.Export(ctx, math.MinInt64, unloggedShown+1)
	if err != nil {
		return err
	}
	u := &UnloggedOps{}
	for _, e := range low {
		if e.Seq < 1 {
			u.Ops = append(u.Ops, e)
		}
	}
	if len(u.Ops) > unloggedShown {
		u.Ops, u.More = u.Ops[:unloggedShown], true
	}
	if u.TreeEnd, err = store.TreeSize(ctx); err != nil {
		return err
	}
	if u.Last, err = store.LatestSeq(ctx); err != nil {
		return err
	}
	if signed && u.Last > u.TreeEnd {
		beyond, err := store.Export(ctx, u.TreeEnd, unloggedShown+1)
		if err != nil {
			return err
		}
		room := unloggedShown - len(u.Ops)
		u.More = u.More || len(beyond) > room
		u.Ops = append(u.Ops, beyond[:min(len(beyond), room)]...)
	}
	if len(u.Ops) == 0 {
		return nil
	}
	return u
}
