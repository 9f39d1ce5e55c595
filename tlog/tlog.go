package tlog

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
	sumdb "golang.org/x/mod/sumdb/tlog"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/internal/defaults"
	"github.com/plcdir/plc/oplog"
)

// OpenCheckpoint verifies a signed checkpoint note with the log's verifier
// key (other signatures, such as witnesses' cosignatures, are ignored) and
// parses its body, which must name the key's origin.
func OpenCheckpoint(msg []byte, v note.Verifier) (plc.CheckpointBody, *note.Note, error) {
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return plc.CheckpointBody{}, nil, fmt.Errorf("checkpoint signature: %w", err)
	}
	body, err := plc.ParseCheckpointBody(n.Text)
	if err != nil {
		return body, n, err
	}
	if body.Origin != v.Name() {
		return body, n, fmt.Errorf("checkpoint origin %q is not the key's %q", body.Origin, v.Name())
	}
	return body, n, nil
}

// Options configure a TLog.
type Options struct {
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives the log's messages (default slog.Default()).
	Logger *slog.Logger
	// Interval is the least time between two checkpoints (default 1s),
	// across every process signing for the log (by their signing times).
	Interval time.Duration
	// Wait sleeps for d or until ctx ends (default: a timer): Run's
	// Interval between rounds, a proof request's wait for the next
	// checkpoint, and the quorum timer (QuorumTimeout); tests inject
	// their own.
	Wait func(ctx context.Context, d time.Duration) error
	// Witnesses are asked to cosign every checkpoint the log publishes
	// (while Run runs).
	Witnesses []*Witness
	// Quorum is how many of Witnesses must cosign a checkpoint for it to
	// count as witnessed; 0 means all of them (when there are any). A
	// quorum larger than len(Witnesses) is never met.
	Quorum int
	// QuorumMet, if set, is the rule instead of counting to Quorum: it
	// reports whether the witnesses with the verifier keys cosigned (their
	// cosignatures verified) meet the quorum, as a witness policy with
	// groups decides (its Satisfied). Quorum is then only reported.
	QuorumMet func(cosigned []string) bool
	// QuorumTimeout bounds how long a request for the checkpoint or for
	// inclusion proofs waits for the quorum's cosignatures of the
	// checkpoint it needs (default DefaultQuorumTimeout). Requests for
	// one checkpoint share one timer, started by the first of them.
	QuorumTimeout time.Duration
}

// TLog is a directory's transparency log: it signs checkpoints over the
// tree the store keeps, serves tiles and proofs, and checks the stored
// tree at startup.
type TLog struct {
	store oplog.Store
	key   *Key
	opts  Options

	mu      sync.Mutex
	latest  *oplog.Checkpoint // nil: not read yet
	updated chan struct{}     // closed and replaced when latest changes
	tiles   *tileCache

	// Witnessing (witnessing.go).
	metrics *witnessMetrics
	wmu     sync.Mutex
	wstate  []*witnessState // one per Options.Witnesses
	runCtx  context.Context // set while Run runs: witness workers start under it
	workers sync.WaitGroup
	qwait   *quorumWait
	mergeMu sync.Mutex // serialises this process's cosignature merges
	cmu     sync.Mutex // guards the cosigners cache
	cnote   []byte
	cby     []bool
}

// New returns the transparency log of store, signing with key.
func New(store oplog.Store, key *Key, opts Options) *TLog {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.Logger = cmp.Or(opts.Logger, slog.Default())
	defaults.Positive(&opts.Interval, time.Second)
	if opts.Wait == nil {
		opts.Wait = defaults.Sleep
	}
	defaults.Positive(&opts.QuorumTimeout, DefaultQuorumTimeout)
	t := &TLog{store: store, key: key, opts: opts, tiles: newTileCache(4096)}
	t.initWitnessing()
	return t
}

// Key returns the log's checkpoint key.
func (t *TLog) Key() *Key { return t.key }

// StartupError is why a transparency log refuses to run.
type StartupError struct{ Reason string }

func (e *StartupError) Error() string { return e.Reason }

// Check is the startup check: it refuses ops the log did not write (see
// oplog.CheckUnlogged: once a checkpoint exists, an op without tree hashes
// can only have come from outside), fills in the tree of ops written
// before the transparency log existed, recomputes the whole tree from the
// ops and
// compares it with every stored hash and with the latest signed
// checkpoint, whose signature must be the key's. Any disagreement is a
// *StartupError (or an *oplog.TreeMismatch): the database was changed
// behind the log's back, or the key is not the log's.
func (t *TLog) Check(ctx context.Context, progress func(seq int64)) error {
	cp, err := t.store.Checkpoint(ctx)
	hasCheckpoint := err == nil
	if err != nil && !errors.Is(err, oplog.ErrNotFound) {
		return err
	}
	if hasCheckpoint {
		body, _, err := OpenCheckpoint(cp.Note, t.key.Verifier)
		if err != nil {
			return &StartupError{fmt.Sprintf("the latest checkpoint (tree size %d) does not verify with the checkpoint key %s (%v): "+
				"the key is not the one this log was signed with; restore the log's key file", cp.Size, t.key.VKey, err)}
		}
		if body.Size != cp.Size || body.Root != cp.Root {
			return &StartupError{fmt.Sprintf("the stored checkpoint row (size %d) does not match its signed note (size %d)", cp.Size, body.Size)}
		}
	}
	if err := oplog.CheckUnlogged(ctx, t.store, hasCheckpoint); err != nil {
		var u *oplog.UnloggedOps
		if errors.As(err, &u) {
			return &StartupError{fmt.Sprintf("%v: they were added behind the log's back and are neither served nor signed; "+
				"find out who wrote them, then restore the database from a backup or delete them", u)}
		}
		return err
	}
	n, err := oplog.CatchUpTree(ctx, t.store, 0)
	if err != nil {
		return fmt.Errorf("fill in the transparency log: %w", err)
	}
	if n > 0 {
		t.opts.Logger.Info("transparency log filled in for ops written before it existed", "ops", n)
	}
	var sizes []int64
	if hasCheckpoint {
		sizes = []int64{cp.Size}
	}
	roots, err := oplog.VerifyTree(ctx, t.store, sizes, progress)
	if err != nil {
		var m *oplog.TreeMismatch
		if errors.As(err, &m) {
			return &StartupError{fmt.Sprintf("the database does not match its transparency log: %v", m)}
		}
		return err
	}
	if hasCheckpoint {
		root, ok := roots[cp.Size]
		if !ok {
			return &StartupError{fmt.Sprintf("the latest signed checkpoint covers %d ops but the log holds fewer: ops were deleted", cp.Size)}
		}
		if root != cp.Root {
			return &StartupError{fmt.Sprintf("the ops recompute to another tree than the latest signed checkpoint (size %d): history was rewritten", cp.Size)}
		}
	}
	if hasCheckpoint {
		t.publish(cp)
	}
	return nil
}

// Latest returns the latest signed checkpoint (oplog.ErrNotFound before
// the first).
func (t *TLog) Latest(ctx context.Context) (oplog.Checkpoint, error) {
	cp, err := t.store.Checkpoint(ctx)
	if err != nil {
		return cp, err
	}
	t.publish(cp)
	return cp, nil
}

// Sign signs a checkpoint of the current tree if it grew past the latest
// one (or none exists), and stores it by compare-and-swap: when another
// process signed first, its checkpoint stands. It returns the checkpoint
// now latest and whether this call signed it.
func (t *TLog) Sign(ctx context.Context) (oplog.Checkpoint, bool, error) {
	prev, err := t.store.Checkpoint(ctx)
	var old *oplog.Checkpoint
	switch {
	case err == nil:
		old = &prev
	case !errors.Is(err, oplog.ErrNotFound):
		return prev, false, err
	}
	size, err := t.store.TreeSize(ctx)
	if err != nil {
		return prev, false, err
	}
	if old != nil && (size <= old.Size || t.opts.Now().Sub(old.SignedAt) < t.opts.Interval) {
		t.publish(prev)         // perhaps another process's, or cosigned since
		return prev, false, nil // nothing new, or signed less than Interval ago
	}
	root, err := sumdb.TreeHash(size, oplog.HashReader(ctx, t.store))
	if err != nil {
		return prev, false, fmt.Errorf("tree hash of size %d: %w", size, err)
	}
	if old != nil {
		// The new tree must extend the old one: prove it before signing.
		if err := t.checkExtends(ctx, old, size, root); err != nil {
			return prev, false, err
		}
	}
	body := plc.CheckpointBody{Origin: t.key.Origin(), Size: size, Root: root}
	msg, err := note.Sign(&note.Note{Text: body.Format()}, t.key.Signer)
	if err != nil {
		return prev, false, err
	}
	next := oplog.Checkpoint{Size: size, Root: root, Note: msg, SignedAt: t.opts.Now().UTC()}
	if err := t.store.SwapCheckpoint(ctx, old, next); err != nil {
		if errors.Is(err, oplog.ErrCheckpointRace) {
			cp, err := t.Latest(ctx)
			return cp, false, err
		}
		return prev, false, err
	}
	t.publish(next)
	return next, true, nil
}

// checkExtends verifies, from the stored hashes, that the tree of size
// (with root) is consistent with the checkpoint old.
func (t *TLog) checkExtends(ctx context.Context, old *oplog.Checkpoint, size int64, root sumdb.Hash) error {
	if old.Size == 0 {
		return nil
	}
	r := oplog.HashReader(ctx, t.store)
	p, err := sumdb.ProveTree(size, old.Size, r)
	if err != nil {
		return err
	}
	if err := sumdb.CheckTree(p, size, root, old.Size, old.Root); err != nil {
		return &StartupError{fmt.Sprintf("the stored tree of size %d is not consistent with the signed checkpoint of size %d: refusing to sign", size, old.Size)}
	}
	return nil
}

// Run signs a checkpoint whenever the log grew, at most once per
// Interval, and has the witnesses cosign every checkpoint the log
// publishes (whoever signed it), until ctx ends. changed returns a
// channel closed at the next commit (oplog.Log.Changed); nil polls every
// Interval instead. While a witness's cosignature of the latest checkpoint
// is missing, Run polls the store every Interval (another process sharing
// it may sign or cosign) and asks a failed witness again after
// WitnessRetry. Run returns once the witness requests in flight ended.
func (t *TLog) Run(ctx context.Context, changed func() <-chan struct{}) {
	t.startWitnessing(ctx)
	defer t.stopWitnessing()
	for {
		var ch <-chan struct{}
		if changed != nil {
			ch = changed()
		}
		upd := t.updates()
		cp, signed, err := t.Sign(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			t.opts.Logger.Error("signing a checkpoint failed", "err", err)
		case signed:
			t.opts.Logger.Debug("checkpoint signed", "size", cp.Size)
		}
		t.offer() // a checkpoint signed elsewhere, or a witness to ask again
		if err := t.opts.Wait(ctx, t.opts.Interval); err != nil {
			return
		}
		if size, err := t.store.TreeSize(ctx); err == nil && cp.Size < size {
			continue // grew while waiting: sign now
		}
		if t.missingCosignatures() {
			continue // poll: cosignatures may come from elsewhere, retries are due
		}
		if ch != nil {
			select {
			case <-ch:
			case <-upd:
			case <-ctx.Done():
				return
			}
		}
	}
}

// missingCosignatures reports whether a configured witness has not
// cosigned the latest checkpoint this process knows.
func (t *TLog) missingCosignatures() bool {
	cp, ok := t.current()
	if !ok || len(t.opts.Witnesses) == 0 {
		return false
	}
	return slices.Contains(t.cosigners(cp.Note), false)
}

// signAttempts bounds the signing rounds of a request that needs a
// checkpoint covering an op.
const signAttempts = 3

// CheckpointNote returns the latest checkpoint's note (with cosignatures),
// signing the first one if none exists yet.
func (t *TLog) CheckpointNote(ctx context.Context) (oplog.Checkpoint, error) {
	cp, err := t.Latest(ctx)
	if errors.Is(err, oplog.ErrNotFound) {
		cp, _, err = t.Sign(ctx)
	}
	return cp, err
}

// WitnessedCheckpoint is CheckpointNote, waiting (see Options.QuorumTimeout)
// for the checkpoint to carry the witness quorum's cosignatures. witnessed
// is false when the wait ended without the quorum: cp is then the best
// checkpoint the log has.
func (t *TLog) WitnessedCheckpoint(ctx context.Context) (cp oplog.Checkpoint, witnessed bool, err error) {
	if cp, err = t.CheckpointNote(ctx); err != nil {
		return cp, false, err
	}
	return t.awaitQuorum(ctx, cp)
}

// InclusionProofs returns proofs for the ops with seqs against the latest
// checkpoint; ops newer than it get none (they will be in the next). With
// witnesses, it waits (see Options.QuorumTimeout) for a checkpoint that
// carries the quorum's cosignatures and proves against it; when the wait
// ends without the quorum, it proves against the best checkpoint it has
// (Cosignatures of its note says how many witnesses cosigned it).
func (t *TLog) InclusionProofs(ctx context.Context, seqs []int64) (oplog.Checkpoint, map[int64][]sumdb.Hash, error) {
	cp, err := t.CheckpointNote(ctx)
	if err != nil {
		return cp, nil, err
	}
	// An op newer than the checkpoint: wait for the next one (at most
	// Interval away) rather than answer without its proof. The signer of
	// the next one may be another caller that read the tree before the op
	// was committed: then sign again.
	for attempt := 0; slices.Max(append(seqs, 0)) > cp.Size && attempt < signAttempts; attempt++ {
		if wait := t.opts.Interval - t.opts.Now().Sub(cp.SignedAt); wait > 0 {
			if err := t.opts.Wait(ctx, wait); err != nil {
				return cp, nil, err
			}
		}
		if cp, _, err = t.Sign(ctx); err != nil {
			return cp, nil, err
		}
	}
	if cp, _, err = t.awaitQuorum(ctx, cp); err != nil {
		return cp, nil, err
	}
	out := make(map[int64][]sumdb.Hash, len(seqs))
	r := oplog.HashReader(ctx, t.store)
	for _, s := range seqs {
		if s < 1 || s > cp.Size {
			continue
		}
		p, err := sumdb.ProveRecord(cp.Size, s-1, r)
		if err != nil {
			return cp, nil, fmt.Errorf("inclusion proof of seq %d: %w", s, err)
		}
		out[s] = p
	}
	return cp, out, nil
}

// ConsistencyProof returns the proof that the tree of size old is a prefix
// of the tree of size new (both at most the stored tree's size).
func (t *TLog) ConsistencyProof(ctx context.Context, oldSize, newSize int64) (sumdb.TreeProof, error) {
	if oldSize == 0 && newSize >= 0 {
		return sumdb.TreeProof{}, nil // every tree extends the empty one
	}
	return sumdb.ProveTree(newSize, oldSize, oplog.HashReader(ctx, t.store))
}

// leafBundle renders the entries of ops first…first+n-1 as a C2SP entry
// bundle: each leaf's data prefixed with its length (2 bytes, big-endian).
func leafBundle(es []oplog.Entry) ([]byte, error) {
	var b []byte
	for i := range es {
		var err error
		if b, err = plc.AppendBundleEntry(b, oplog.LeafData(&es[i])); err != nil {
			return nil, fmt.Errorf("leaf %d is %w", es[i].Seq, err)
		}
	}
	return b, nil
}
