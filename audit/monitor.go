package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/client"
	"github.com/plcdir/plc/internal/defaults"
	"github.com/plcdir/plc/oplog"
	plctlog "github.com/plcdir/plc/tlog"
	"github.com/plcdir/plc/validate"
)

// A Monitor follows a directory's transparency log and checks everything
// a log promises, trusting only the log's verifier key:
//
//   - each checkpoint is signed by the key and is consistent with the last
//     one the monitor saw (a consistency proof computed from hash tiles,
//     which tlog.TileHashReader authenticates against the signed root; a
//     different root at the same size is a fork);
//   - every new entry (from the entry bundles) hashes to its leaf hash in
//     the authenticated level-0 tiles, is a canonical leaf whose seq is its
//     index + 1, and holds an op that the did:plc rules accept at its
//     createdAt after every entry before it: the monitor replays the log
//     into its own SQLite store through the same ingest as plc import and
//     plc mirror;
//   - its own store's tree, which it computes itself, has the checkpoint's
//     root;
//   - with a witness policy (MonitorOptions.Policy), the cosignatures of
//     the policy's witnesses verify and meet its quorum.
//
// Its state is a directory: the last verified checkpoint (checkpoint),
// the replayed log (monitor.sqlite), and an evidence file for each
// inconsistency found (evidence-<time>-<kind>.json).

// Monitor limits and defaults.
const (
	// monitorSource is the monitor store's ingest source.
	monitorSource = "tlog"
)

// Kinds of inconsistency.
const (
	// KindBadSignature: the checkpoint is not signed by the log's key (or
	// is not a checkpoint of its origin).
	KindBadSignature = "bad-signature"
	// KindFork: two signed checkpoints that cannot both be views of one
	// append-only log (the same size with different roots, or a newer one
	// that does not extend the older).
	KindFork = "fork"
	// KindBadTile: the hash tiles served do not hash to the signed root.
	KindBadTile = "bad-tile"
	// KindBadBundle: an entry bundle is not length-prefixed entries, as
	// many as the tile holds.
	KindBadBundle = "bad-bundle"
	// KindLeafMismatch: an entry does not hash to its leaf hash in the
	// authenticated tiles.
	KindLeafMismatch = "leaf-mismatch"
	// KindBadLeaf: an entry is not a canonical leaf, its seq is not its
	// index + 1, or its op does not parse or does not have its CID.
	KindBadLeaf = "bad-leaf"
	// KindRejectedEntry: the did:plc rules reject an entry's op.
	KindRejectedEntry = "rejected-entry"
	// KindRootMismatch: the tree the monitor computed from the entries
	// does not have the checkpoint's root.
	KindRootMismatch = "root-mismatch"
	// KindBadCosignature: a cosignature line of a witness of the policy
	// (its name and key ID) does not verify: a forged or corrupted
	// cosignature, which the log published.
	KindBadCosignature = "bad-cosignature"
	// KindNoQuorum: the checkpoint's valid cosignatures do not meet the
	// witness policy's quorum.
	KindNoQuorum = "no-quorum"
)

// Inconsistency is what a monitor found wrong with the log; the evidence
// is in a file.
type Inconsistency struct {
	Kind   string
	Reason string
	// Evidence is the path of the evidence file.
	Evidence string
}

func (e *Inconsistency) Error() string {
	return fmt.Sprintf("%s: %s (evidence: %s)", e.Kind, e.Reason, e.Evidence)
}

// Evidence is the content of an evidence file.
type Evidence struct {
	Kind   string    `json:"kind"`
	Reason string    `json:"reason"`
	URL    string    `json:"url"`
	Time   time.Time `json:"time"`
	// PreviousCheckpoint is the last checkpoint the monitor had verified
	// (empty on its first round), Checkpoint the one it was checking: the
	// signed notes, as served.
	PreviousCheckpoint string `json:"previousCheckpoint,omitempty"`
	Checkpoint         string `json:"checkpoint,omitempty"`
	// Proof is a consistency proof (base64 hashes) that failed.
	Proof []string `json:"proof,omitempty"`
	// Index is the leaf index (seq - 1) of Leaf.
	Index *int64 `json:"index,omitempty"`
	// Leaf is the failing entry, as served.
	Leaf []byte `json:"leaf,omitempty"`
	// Tiles are the tiles involved, by their path under /tlog/.
	Tiles map[string][]byte `json:"tiles,omitempty"`
	// Bundle is an entry bundle that could not be read (when not huge).
	Bundle []byte `json:"bundle,omitempty"`
	// Cosigners are the witnesses of the policy (by their verifier keys)
	// whose cosignatures of Checkpoint verify, InvalidCosigners those
	// whose cosignature lines do not (KindNoQuorum, KindBadCosignature).
	Cosigners        []string `json:"cosigners,omitempty"`
	InvalidCosigners []string `json:"invalidCosigners,omitempty"`
}

// MonitorOptions configure a Monitor.
type MonitorOptions struct {
	// URL is the directory's base URL: the log is under URL/tlog/.
	URL string
	// Dir is the state directory (created if needed).
	Dir string
	// VKey is the log's checkpoint verifier key.
	VKey string
	// Policy, if set, is the witness policy every checkpoint fetched must
	// meet: its witnesses' cosignatures must verify (other signers are
	// ignored) and meet its quorum. Its log lines, if any, must name VKey.
	Policy *plctlog.Policy
	// Client fetches (nil: one with client.DefaultTimeout).
	Client *http.Client
	// Progress receives progress lines (nil: none).
	Progress io.Writer
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Wait sleeps for d or until ctx ends, between Run's rounds (default:
	// a timer); tests inject their own.
	Wait func(ctx context.Context, d time.Duration) error
}

// Monitor follows one log; see the comment at the top of this file.
type Monitor struct {
	opts     MonitorOptions
	dir      *client.Client // what it reads is the log's word: from the log's origin only
	verifier note.Verifier
	store    *oplog.SQLiteStore
	log      *oplog.Log
}

// MonitorRound is what one round found (when it found nothing wrong).
type MonitorRound struct {
	// Previous is the size of the last checkpoint verified before the
	// round (0: none).
	Previous int64
	// Size is the size of the checkpoint the log served.
	Size int64
	// Entries counts the entries fetched and replayed.
	Entries int64
	// Stale: the log served an older checkpoint than Previous (consistent
	// with it); the monitor keeps the newer.
	Stale bool
}

// ErrMonitorUsage: the monitor's options are not usable (the URL, the
// key, a state directory of another log).
var ErrMonitorUsage = errors.New("monitor")

// OpenMonitor opens (creating it if needed) the monitor's state in
// opts.Dir.
func OpenMonitor(opts MonitorOptions) (*Monitor, error) {
	dir, err := client.New(opts.URL, opts.Client)
	if err != nil {
		return nil, fmt.Errorf("%w: URL: %w", ErrMonitorUsage, err)
	}
	v, err := plctlog.NewVerifier(opts.VKey)
	if err != nil {
		return nil, fmt.Errorf("%w: verifier key %q: %v (want the log's <origin>+<hash>+<key>, as plc serve logs it)", ErrMonitorUsage, opts.VKey, err)
	}
	if opts.Policy != nil {
		if err := opts.Policy.CheckLog(opts.VKey); err != nil {
			return nil, fmt.Errorf("%w: witness policy: %v", ErrMonitorUsage, err)
		}
	}
	if opts.Dir == "" {
		return nil, fmt.Errorf("%w: no state directory", ErrMonitorUsage)
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Wait == nil {
		opts.Wait = defaults.Sleep
	}
	if err := os.MkdirAll(opts.Dir, 0o750); err != nil {
		return nil, err
	}
	m := &Monitor{opts: opts, dir: dir, verifier: v}
	// The state must be this log's.
	if _, _, err := m.loadState(); err != nil {
		return nil, err
	}
	path := filepath.Join(opts.Dir, "monitor.sqlite")
	if _, err := oplog.MigrateUp(path); err != nil {
		return nil, fmt.Errorf("the monitor's database %s: %w", path, err)
	}
	if m.store, err = oplog.OpenSQLite(path); err != nil {
		return nil, err
	}
	m.log = oplog.NewLog(m.store, oplog.Options{Now: opts.Now, NoRateLimit: true})
	return m, nil
}

// Close releases the monitor's database.
func (m *Monitor) Close() error {
	m.log.Close()
	return m.store.Close()
}

// Store returns the monitor's replayed log.
func (m *Monitor) Store() oplog.Store { return m.store }

func (m *Monitor) progress(format string, args ...any) {
	fmt.Fprintf(m.opts.Progress, format+"\n", args...)
}

// statePath is where the last verified checkpoint is kept.
func (m *Monitor) statePath() string { return filepath.Join(m.opts.Dir, "checkpoint") }

// loadState reads the last verified checkpoint (nil when none).
func (m *Monitor) loadState() ([]byte, *plc.CheckpointBody, error) {
	b, err := os.ReadFile(m.statePath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	body, _, err := plctlog.OpenCheckpoint(b, m.verifier)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s does not verify with the verifier key %s (%v): the state directory is another log's", ErrMonitorUsage, m.statePath(), m.opts.VKey, err)
	}
	return b, &body, nil
}

// saveState replaces the last verified checkpoint, durably.
func (m *Monitor) saveState(msg []byte) error {
	return writeFileAtomic(m.statePath(), msg)
}

func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// fetchError is a failure to fetch (network, HTTP status): not evidence
// of anything.
type fetchError struct{ err error }

func (e *fetchError) Error() string { return e.err.Error() }
func (e *fetchError) Unwrap() error { return e.err }

// fetched classes what the client returned: an answer longer than it can
// be is returned as it is (the log's failure), any other error is a
// fetchError.
func fetched(b []byte, err error) ([]byte, error) {
	if err != nil && !errors.Is(err, client.ErrTooLong) {
		return nil, &fetchError{err}
	}
	return b, err
}

// tileFetcher is the tlog.TileReader over the log's tiles. It keeps the
// verified tiles that other reads need again (those above level 0 and
// partial ones), and the tiles of the last read, for evidence.
type tileFetcher struct {
	ctx   context.Context
	m     *Monitor
	cache map[tlog.Tile][]byte
	last  map[string][]byte
}

// badTile is a tile of the wrong length: the log's failure.
type badTile struct{ reason string }

func (e *badTile) Error() string { return e.reason }

func (f *tileFetcher) Height() int { return plc.TileHeight }

func (f *tileFetcher) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	f.last = map[string][]byte{}
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		p := plc.TilePath(t)
		if b, ok := f.cache[t]; ok {
			f.last[p] = b
			out[i] = b
			continue
		}
		want := int64(t.W * tlog.HashSize)
		b, err := fetched(f.m.dir.Tile(f.ctx, t))
		if errors.Is(err, client.ErrTooLong) {
			return nil, &badTile{fmt.Sprintf("the tile %s is longer than %d bytes", p, want)}
		}
		if err != nil {
			return nil, err
		}
		f.last[p] = b
		if int64(len(b)) != want {
			return nil, &badTile{fmt.Sprintf("the tile %s is %d bytes, want %d", p, len(b), want)}
		}
		out[i] = b
	}
	return out, nil
}

func (f *tileFetcher) SaveTiles(tiles []tlog.Tile, data [][]byte) {
	for i, t := range tiles {
		if t.L > 0 || t.W < plc.TileWidth {
			f.cache[t] = data[i]
		}
	}
}

// round is the state of one round, for evidence.
type round struct {
	m        *Monitor
	prevMsg  []byte
	msg      []byte
	fetcher  *tileFetcher
	evidence Evidence
}

// fail writes the evidence of an inconsistency and returns it as an error.
func (r *round) fail(kind, format string, args ...any) error {
	ev := r.evidence
	ev.Kind, ev.Reason = kind, fmt.Sprintf(format, args...)
	ev.URL = r.m.dir.String()
	ev.Time = r.m.opts.Now().UTC()
	ev.PreviousCheckpoint, ev.Checkpoint = string(r.prevMsg), string(r.msg)
	path, err := r.m.writeEvidence(&ev)
	if err != nil {
		return fmt.Errorf("%s: %s; writing the evidence failed: %w", kind, ev.Reason, err)
	}
	return &Inconsistency{Kind: kind, Reason: ev.Reason, Evidence: path}
}

// tileFailure turns an error of the tile hash reader into an
// inconsistency (the tiles do not support the signed root) or, for a
// fetch failure, returns it.
func (r *round) tileFailure(what string, err error) error {
	var fe *fetchError
	if errors.As(err, &fe) {
		return err
	}
	if r.evidence.Tiles == nil {
		r.evidence.Tiles = r.fetcher.last
	}
	if _, ok := errors.AsType[*badTile](err); ok {
		return r.fail(KindBadTile, "%s: %v", what, err)
	}
	return r.fail(KindBadTile, "%s: %v: the tiles served do not hash to the signed root", what, err)
}

func (m *Monitor) writeEvidence(ev *Evidence) (string, error) {
	b, err := json.MarshalIndent(ev, "", "  ")
	if err != nil {
		return "", err
	}
	b = append(b, '\n')
	stamp := ev.Time.Format("20060102T150405.000Z")
	for i := 1; ; i++ {
		name := fmt.Sprintf("evidence-%s-%s.json", stamp, ev.Kind)
		if i > 1 {
			name = fmt.Sprintf("evidence-%s-%s-%d.json", stamp, ev.Kind, i)
		}
		path := filepath.Join(m.opts.Dir, name)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
		if errors.Is(err, fs.ErrExist) && i < 1000 {
			continue
		}
		if err != nil {
			return "", err
		}
		if _, err := f.Write(b); err != nil {
			f.Close()
			return "", err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return "", err
		}
		return path, f.Close()
	}
}

// Round fetches the log's checkpoint and verifies it and every entry new
// since the last round. It returns an *Inconsistency (after writing its
// evidence) when the log is not what it must be; any other error (the
// network, the monitor's own files) says nothing about the log.
func (m *Monitor) Round(ctx context.Context) (MonitorRound, error) {
	var res MonitorRound
	prevMsg, prev, err := m.loadState()
	if err != nil {
		return res, err
	}
	if prev != nil {
		res.Previous = prev.Size
	}
	msg, err := fetched(m.dir.Checkpoint(ctx))
	if err != nil {
		return res, err
	}
	r := &round{m: m, prevMsg: prevMsg, msg: msg}
	body, _, err := plctlog.OpenCheckpoint(msg, m.verifier)
	if err != nil {
		return res, r.fail(KindBadSignature, "%s", signatureProblem(msg, m.verifier, err))
	}
	res.Size = body.Size
	if err := r.checkPolicy(body); err != nil {
		return res, err
	}
	local, err := m.store.TreeSize(ctx)
	if err != nil {
		return res, err
	}
	r.fetcher = &tileFetcher{ctx: ctx, m: m, cache: map[tlog.Tile][]byte{}}

	// A checkpoint no newer than the last one seen: the same tree, or a
	// prefix of it (a stale cache, a replica behind), or a fork.
	if prev != nil && body.Size <= prev.Size {
		var root tlog.Hash
		switch {
		case body.Size == prev.Size:
			root = prev.Root
		case body.Size <= local:
			if root, err = tlog.TreeHash(body.Size, oplog.HashReader(ctx, m.store)); err != nil {
				return res, err
			}
		default:
			thr := tlog.TileHashReader(tlog.Tree{N: prev.Size, Hash: prev.Root}, r.fetcher)
			if root, err = tlog.TreeHash(body.Size, thr); err != nil {
				return res, r.tileFailure(fmt.Sprintf("the tree of size %d within the previous checkpoint", body.Size), err)
			}
		}
		if root != body.Root {
			if body.Size == prev.Size {
				return res, r.fail(KindFork, "the log signed two different trees of size %d: root %s before, %s now",
					body.Size, b64(prev.Root), b64(body.Root))
			}
			return res, r.fail(KindFork, "the checkpoint of size %d (root %s) is not a prefix of the previous one of size %d: the tree of that size within it has root %s",
				body.Size, b64(body.Root), prev.Size, b64(root))
		}
		if body.Size < prev.Size {
			res.Stale = true
			m.progress("the log served an older checkpoint (size %d, consistent with the last one seen, size %d): keeping the newer", body.Size, prev.Size)
			return res, nil
		}
		// The same tree: keep the note (it may carry more cosignatures).
		if !bytes.Equal(msg, prevMsg) {
			if err := m.saveState(msg); err != nil {
				return res, err
			}
		}
		return res, nil
	}

	tree := tlog.Tree{N: body.Size, Hash: body.Root}
	thr := tlog.TileHashReader(tree, r.fetcher)
	if prev != nil && prev.Size > 0 {
		p, err := tlog.ProveTree(body.Size, prev.Size, thr)
		if err != nil {
			return res, r.tileFailure(fmt.Sprintf("the consistency proof %d → %d", prev.Size, body.Size), err)
		}
		if err := tlog.CheckTree(p, body.Size, body.Root, prev.Size, prev.Root); err != nil {
			r.evidence.Proof = plctlog.EncodeHashes(p)
			r.evidence.Tiles = r.fetcher.last
			return res, r.fail(KindFork, "the checkpoint of size %d does not extend the previous one of size %d: the consistency proof from the tiles (which hash to the new root) does not lead to the old root", body.Size, prev.Size)
		}
	}
	if local < body.Size {
		m.progress("checkpoint of size %d (last verified: %d): verifying entries %d…%d", body.Size, res.Previous, local+1, body.Size)
	}
	for start := local; start < body.Size; {
		n, err := m.entries(ctx, r, thr, start, body.Size)
		res.Entries += n
		if err != nil {
			return res, err
		}
		start += n
		if start < body.Size && start/plc.TileWidth%64 == 0 {
			m.progress("verified entries up to seq %d of %d", start, body.Size)
		}
	}
	root, err := tlog.TreeHash(body.Size, oplog.HashReader(ctx, m.store))
	if err != nil {
		return res, err
	}
	if root != body.Root {
		return res, r.fail(KindRootMismatch, "the entries replayed make a tree of size %d with root %s, the checkpoint says %s",
			body.Size, b64(root), b64(body.Root))
	}
	if err := m.saveState(msg); err != nil {
		return res, err
	}
	return res, nil
}

// checkPolicy checks the checkpoint's cosignatures against the witness
// policy, if any: a policy witness's cosignature that does not verify,
// or valid ones that do not meet the quorum, is an inconsistency.
func (r *round) checkPolicy(body plc.CheckpointBody) error {
	p := r.m.opts.Policy
	if p == nil {
		return nil
	}
	c := p.Cosignatures(r.msg)
	r.evidence.Cosigners, r.evidence.InvalidCosigners = c.Verified, c.Invalid
	names := func(vkeys []string) string {
		if len(vkeys) == 0 {
			return "none"
		}
		var ns []string
		for _, v := range vkeys {
			ns = append(ns, p.Name(v))
		}
		return strings.Join(ns, ", ")
	}
	if len(c.Invalid) > 0 {
		return r.fail(KindBadCosignature, "the checkpoint of size %d carries cosignatures by the policy's witnesses %s that do not verify: forged or corrupted",
			body.Size, names(c.Invalid))
	}
	if !p.Satisfied(c.Verified) {
		return r.fail(KindNoQuorum, "the checkpoint of size %d is cosigned by the policy's witnesses %s, which do not meet its quorum (at least %d cosignatures)",
			body.Size, names(c.Verified), p.Quorum())
	}
	return nil
}

func b64(h tlog.Hash) string { return base64.StdEncoding.EncodeToString(h[:]) }

// signatureProblem says why a checkpoint did not open with the key.
func signatureProblem(msg []byte, v note.Verifier, err error) string {
	var unverified *note.UnverifiedNoteError
	var invalid *note.InvalidSignatureError
	switch {
	case errors.As(err, &unverified):
		var by []string
		for _, s := range unverified.Note.UnverifiedSigs {
			by = append(by, fmt.Sprintf("%s+%08x", s.Name, s.Hash))
		}
		return fmt.Sprintf("the checkpoint is not signed by the key %s+%08x given (it carries signatures by %s): a wrong --vkey, or not this log",
			v.Name(), v.KeyHash(), strings.Join(by, ", "))
	case errors.As(err, &invalid):
		return fmt.Sprintf("the checkpoint's signature by %s does not verify: the note was altered or forged", v.Name())
	}
	return fmt.Sprintf("the checkpoint (%d bytes) is not a checkpoint of %s signed by its key: %v", len(msg), v.Name(), err)
}

// entries verifies and replays the entries of the entry bundle holding
// leaf index start, in the tree of size size. It returns how many entries
// it replayed.
func (m *Monitor) entries(ctx context.Context, r *round, thr tlog.HashReader, start, size int64) (int64, error) {
	tile := tlog.TileForIndex(plc.TileHeight, tlog.StoredHashIndex(0, start))
	tile.L = -1
	first := tile.N * plc.TileWidth
	tile.W = int(min(plc.TileWidth, size-first))
	p := plc.TilePath(tile)
	b, err := fetched(m.dir.Tile(ctx, tile))
	if errors.Is(err, client.ErrTooLong) {
		return 0, r.fail(KindBadBundle, "the entry bundle %s is longer than %d entries can be", p, tile.W)
	}
	if err != nil {
		return 0, err
	}
	leaves, err := plc.SplitBundle(b, tile.W)
	if err != nil {
		if len(b) <= 1<<20 {
			r.evidence.Bundle = b
		}
		return 0, r.fail(KindBadBundle, "the entry bundle %s: %v", p, err)
	}
	idx := make([]int64, tile.W)
	for i := range idx {
		idx[i] = tlog.StoredHashIndex(0, first+int64(i))
	}
	hashes, err := thr.ReadHashes(idx)
	if err != nil {
		return 0, r.tileFailure(fmt.Sprintf("the leaf hashes of entries %d…%d", first+1, first+int64(tile.W)), err)
	}
	level0 := r.fetcher.last
	for i, leaf := range leaves {
		if tlog.RecordHash(leaf) != hashes[i] {
			at := first + int64(i)
			r.evidence.Index, r.evidence.Leaf, r.evidence.Tiles = &at, leaf, level0
			return 0, r.fail(KindLeafMismatch, "the entry with index %d (seq %d) in %s does not hash to its leaf hash in the tiles, which hash to the signed root: the entries served are not the log's",
				at, at+1, p)
		}
	}
	items := make([]oplog.IngestItem, 0, len(leaves))
	for i := start - first; i < int64(len(leaves)); i++ {
		at := first + i
		leaf := leaves[i]
		e, op, err := parseLeaf(leaf, at)
		if err != nil {
			r.evidence.Index, r.evidence.Leaf = &at, leaf
			return 0, r.fail(KindBadLeaf, "the entry with index %d: %v", at, err)
		}
		items = append(items, oplog.IngestItem{Line: at + 1, DID: e.DID, CID: e.CID, Op: op, CreatedAt: e.CreatedAt, Raw: leaf})
	}
	// The rules first, without writing: a rejected op must not enter the
	// monitor's store (Ingest would record it and go on).
	if i, err := m.check(ctx, items); err != nil {
		if _, ok := errors.AsType[*validate.Error](err); !ok {
			return 0, err
		}
		at := items[i].Line - 1
		r.evidence.Index, r.evidence.Leaf = &at, items[i].Raw
		return 0, r.fail(KindRejectedEntry, "the entry with index %d (seq %d, %s, %s) breaks the did:plc rules: %s",
			at, at+1, items[i].DID, items[i].CID, oplog.RejectionReason(err))
	}
	res, err := m.log.Ingest(ctx, monitorSource, items)
	if err != nil {
		return 0, err
	}
	if len(res.Rejected) > 0 {
		rj := res.Rejected[0]
		at := rj.Line - 1
		r.evidence.Index, r.evidence.Leaf = &at, rj.Raw
		return 0, r.fail(KindRejectedEntry, "the entry with index %d (seq %d, %s, %s) breaks the did:plc rules: %s", at, at+1, rj.DID, rj.CID, rj.Reason)
	}
	if res.Skipped > 0 || len(res.Entries) != len(items) {
		return 0, fmt.Errorf("the monitor's database is not where its tree is (%d entries skipped): start over with an empty state directory", res.Skipped)
	}
	for i := range res.Entries {
		got, seq := &res.Entries[i], items[i].Line // an entry's line is its seq
		if got.Seq != seq || !bytes.Equal(oplog.LeafData(got), items[i].Raw) {
			at := seq - 1
			r.evidence.Index, r.evidence.Leaf = &at, items[i].Raw
			return 0, r.fail(KindBadLeaf, "the entry with index %d was replayed as seq %d, another leaf", at, got.Seq)
		}
	}
	return int64(len(items)), nil
}

// check applies the chain rules to items, in order, after the monitor's
// store's state, without writing: it returns the index of the first item
// rejected and the verdict. The store's records are not changed: a DID's
// first item copies its record's state once, and its later items extend
// that copy in place, so that the check costs O(items + their DIDs'
// histories), not O(items × history).
func (m *Monitor) check(ctx context.Context, items []oplog.IngestItem) (int, error) {
	states := map[string]*validate.State{}
	for i := range items {
		it := &items[i]
		st := states[it.DID]
		if st == nil {
			rec, err := m.store.Record(ctx, it.DID)
			switch {
			case err == nil:
				st = &validate.State{DID: it.DID, Ops: slices.Clone(rec.State.Ops)}
			case errors.Is(err, oplog.ErrNotFound):
				st = &validate.State{DID: it.DID}
			default:
				return i, err
			}
			states[it.DID] = st
		}
		if _, err := st.Apply(it.Op, it.CreatedAt); err != nil {
			return i, err
		}
	}
	return 0, nil
}

// parseLeaf decodes the leaf with index at strictly (plc.ParseLeaf), with
// seq at+1, a valid DID, and an op that parses and has the CID.
func parseLeaf(b []byte, at int64) (plc.Leaf, *validate.Op, error) {
	e, err := plc.ParseLeaf(b)
	if err != nil {
		return e, nil, fmt.Errorf("not a leaf: %v", err)
	}
	if e.Seq != at+1 {
		return e, nil, fmt.Errorf("its seq is %d, want %d (its index + 1)", e.Seq, at+1)
	}
	if !validate.ValidDID(e.DID) {
		return e, nil, fmt.Errorf("%q is not a did:plc DID", e.DID)
	}
	op, err := validate.ParseCBOR(e.Op)
	if err != nil {
		return e, nil, fmt.Errorf("its op does not parse: %v", err)
	}
	if op.CID() != e.CID {
		return e, nil, fmt.Errorf("its cid %s is not its op's CID %s", e.CID, op.CID())
	}
	return e, op, nil
}

// Run runs rounds every interval until ctx ends or an inconsistency is
// found (returned as an *Inconsistency). A round that fails for another
// reason (the network) is reported to Progress and retried at the next.
func (m *Monitor) Run(ctx context.Context, interval time.Duration) error {
	for {
		res, err := m.Round(ctx)
		var inc *Inconsistency
		switch {
		case errors.As(err, &inc):
			return err
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			m.progress("round failed (retrying in %s): %v", interval, err)
		default:
			m.progress("%s", res)
		}
		if err := m.opts.Wait(ctx, interval); err != nil {
			return err
		}
	}
}

// String summarises a round.
func (r MonitorRound) String() string {
	switch {
	case r.Stale:
		return fmt.Sprintf("ok: an older checkpoint (size %d) consistent with the last one verified (size %d)", r.Size, r.Previous)
	case r.Entries == 0 && r.Size == r.Previous:
		return fmt.Sprintf("ok: checkpoint of size %d, unchanged", r.Size)
	}
	return fmt.Sprintf("ok: checkpoint of size %d (was %d) verified, %d new entries replayed", r.Size, r.Previous, r.Entries)
}
