package oplog

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plcdir/plc/internal/defaults"
	"github.com/plcdir/plc/validate"
)

// The derived state beside the op log — which op nullified which (the
// nullified table) and the index of the rotation key that signed each op
// (operations.signer, which decides who may nullify it) — is written by
// the append, not covered by the transparency log, and recomputable from
// the ops. CheckDerived recomputes it and compares.

// DerivedOp is an op as the derived-state check reads it: with its stored
// signer index and the op the nullified table says nullified it.
//
// Entry's CID, Op and Decoded are filled by Decode: the check decodes on
// its workers, not on the goroutine that reads.
type DerivedOp struct {
	Entry
	// Signer is the stored signer index.
	Signer int
	// NullifiedBy is the seq of the op stored as nullifying this one (0:
	// none).
	NullifiedBy int64

	stored []byte // the op's stored form, until Decode
}

// Decode fills in the op from its stored form.
func (d *DerivedOp) Decode() error {
	if d.Decoded != nil {
		return nil
	}
	op, err := validate.ParseCompact(d.stored)
	if err != nil {
		return fmt.Errorf("oplog: stored op %d does not decode: %w", d.Seq, err)
	}
	d.CID, d.Op, d.Decoded, d.stored = op.CID(), op.SignedCBOR(), op, nil
	return nil
}

// DerivedMismatch is one difference between the stored derived state and
// the one the ops recompute to.
type DerivedMismatch struct {
	Seq      int64
	DID, CID string
	Reason   string
}

func (m DerivedMismatch) String() string {
	if m.DID == "" {
		return fmt.Sprintf("seq %d: %s", m.Seq, m.Reason)
	}
	return fmt.Sprintf("seq %d did %s cid %s: %s", m.Seq, m.DID, m.CID, m.Reason)
}

// DerivedError is CheckDerived's finding: the derived state was changed
// behind the log's back (or the ops were, in a way the tree cannot see:
// an op inserted before a checkpoint existed).
type DerivedError struct {
	// Mismatches are the first differences found, in seq order.
	Mismatches []DerivedMismatch
	// More says there are others.
	More bool
}

func (e *DerivedError) Error() string {
	var b bytes.Buffer
	b.WriteString("the derived state does not match the op log: ")
	for i, m := range e.Mismatches {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(m.String())
	}
	if e.More {
		b.WriteString("; and more")
	}
	return b.String()
}

// derivedShown bounds the mismatches a DerivedError names.
const derivedShown = 10

// DerivedOptions configure CheckDerived.
type DerivedOptions struct {
	// Quick replays each DID's chain with the stored signer indexes,
	// which needs no cryptography: every edit of the nullified table is
	// found, and every edit of a signer index that breaks the chain's
	// structure (a key the op's prev does not have, a fork its signer may
	// not make), but not one that swaps an index for another the chain
	// allows. Without it (the full check), every op's signer index is
	// recomputed from its signature, as the append did.
	Quick bool
	// After: in a quick check, the DIDs with an op after this seq (the
	// ops since the latest signed checkpoint, say) are checked in full.
	After int64
	// Recent: in a quick check, the signer index of every op accepted at
	// or after this time is recomputed from its signature too (zero:
	// none). A stored signer index is read again only when a later op
	// forks the chain before it, which the chain rules allow within the
	// recovery window of it: set Recent to the recovery window before the
	// latest op, and every signer index that can still decide anything is
	// checked.
	Recent time.Time
	// Workers replay DIDs in parallel (default: one per core).
	Workers int
	// Progress, if set, is called now and then with the ops checked so far.
	Progress func(ops int64)
}

// checkPage is the number of ops CheckDerived reads per query.
var checkPage = 8192

// checkBatch is about the number of ops (whole DIDs) a worker of
// CheckDerived takes at a time: what is in flight is a few batches per
// worker.
const checkBatch = 1024

// DerivedReader is what CheckDerived reads of a store that keeps the
// derived state in tables of its own (both stores of this package do).
type DerivedReader interface {
	// OpsByDID returns up to limit ops after the key (afterDID, afterSeq)
	// in (did, seq) order ("" and 0: from the first), each with its stored
	// signer index and nullifier: what CheckDerived replays.
	OpsByDID(ctx context.Context, afterDID string, afterSeq int64, limit int) ([]DerivedOp, error)
	// StrayNullified returns up to limit seqs, in order, that the
	// nullified table lists but that are not ops of the log.
	StrayNullified(ctx context.Context, limit int) ([]int64, error)
}

var (
	_ DerivedReader = (*SQLiteStore)(nil)
	_ DerivedReader = (*PostgresStore)(nil)
)

// CheckDerived replays every DID's ops in seq order, recomputes which op
// nullified which (and, with signature checks, each op's signer index)
// and compares the result with what store holds. It returns a
// *DerivedError naming the first differences, nil when there are none,
// or another error when it could not finish.
func CheckDerived(ctx context.Context, store DerivedReader, opts DerivedOptions) error {
	defaults.Positive(&opts.Workers, runtime.GOMAXPROCS(0))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		mu    sync.Mutex
		found []DerivedMismatch
		more  bool
	)
	report := func(ms []DerivedMismatch) {
		mu.Lock()
		defer mu.Unlock()
		found = append(found, ms...)
		slices.SortFunc(found, func(a, b DerivedMismatch) int { return cmp.Compare(a.Seq, b.Seq) })
		if len(found) > derivedShown {
			found, more = found[:derivedShown], true
		}
	}

	work := make(chan [][]DerivedOp, opts.Workers)
	var (
		done atomic.Int64
		wg   sync.WaitGroup
	)
	for range opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for groups := range work {
				n := 0
				for _, ops := range groups {
					full := !opts.Quick || ops[len(ops)-1].Seq > opts.After
					if ms := replayDerived(ops, full, opts.Recent); len(ms) > 0 {
						report(ms)
					}
					n += len(ops)
				}
				done.Add(int64(n))
			}
		}()
	}

	readErr := func() error {
		defer close(work)
		var (
			afterDID string
			afterSeq int64
			groups   [][]DerivedOp
			cur      []DerivedOp // the DID being read, possibly continued on the next page
			queued   int
		)
		send := func() error {
			if len(groups) == 0 {
				return nil
			}
			select {
			case work <- groups:
			case <-ctx.Done():
				return ctx.Err()
			}
			groups, queued = nil, 0
			if opts.Progress != nil {
				opts.Progress(done.Load())
			}
			return nil
		}
		for {
			page, err := store.OpsByDID(ctx, afterDID, afterSeq, checkPage)
			if err != nil {
				return fmt.Errorf("read ops by DID after %s: %w", afterDID, err)
			}
			for _, op := range page {
				if len(cur) > 0 && cur[0].DID != op.DID {
					groups, queued = append(groups, cur), queued+len(cur)
					cur = nil
					if queued >= checkBatch {
						if err := send(); err != nil {
							return err
						}
					}
				}
				cur = append(cur, op)
			}
			if len(page) < checkPage {
				break
			}
			last := page[len(page)-1]
			afterDID, afterSeq = last.DID, last.Seq
		}
		if len(cur) > 0 {
			groups = append(groups, cur)
		}
		return send()
	}()
	wg.Wait()
	if readErr != nil {
		return readErr
	}
	if opts.Progress != nil {
		opts.Progress(done.Load())
	}
	stray, err := store.StrayNullified(ctx, derivedShown+1)
	if err != nil {
		return fmt.Errorf("read the nullified table: %w", err)
	}
	for i, s := range stray {
		if i == derivedShown {
			more = true
			break
		}
		report([]DerivedMismatch{{Seq: s, Reason: "the nullified table lists it, but the log has no op with this seq"}})
	}
	if len(found) == 0 {
		return nil
	}
	return &DerivedError{Mismatches: found, More: more}
}

// replayDerived replays the ops of one DID (in seq order) and returns how
// their stored derived state differs from the recomputed one: with full,
// through the chain rules with every signature checked (as the append
// applied them); otherwise through the chain's structure with the stored
// signer indexes, except for the ops accepted at or after recent (when
// set), whose signatures are checked.
func replayDerived(ops []DerivedOp, full bool, recent time.Time) []DerivedMismatch {
	var out []DerivedMismatch
	bad := func(op *DerivedOp, format string, args ...any) {
		out = append(out, DerivedMismatch{Seq: op.Seq, DID: op.DID, CID: op.CID, Reason: fmt.Sprintf(format, args...)})
	}
	did := ops[0].DID
	for i := range ops {
		if err := ops[i].Decode(); err != nil {
			bad(&ops[i], "%v", err)
			return out
		}
	}
	nullifier := map[int64]int64{} // recomputed: seq → the seq that nullified it
	var (
		chain []validate.ChainOp // the current chain
		seqs  []int64            // the seq of each op of chain
	)
	for i := range ops {
		op := &ops[i]
		signer := op.Signer
		if full || (!recent.IsZero() && !op.CreatedAt.Before(recent)) {
			keys := validate.ChainOpOf(op.Decoded, op.CreatedAt, 0).RotationKeys // a genesis op is signed by its own keys
			if len(chain) > 0 {
				keys = prevKeys(chain, op.Decoded.Prev())
			}
			signer = slices.IndexFunc(keys, func(k string) bool { return validate.VerifySignature(op.Decoded, k) })
			if signer < 0 {
				bad(op, "no rotation key of its prev verifies the op's signature")
				break
			}
			if signer != op.Signer {
				bad(op, "the stored signer index is %d, but the op's signature verifies with rotation key %d", op.Signer, signer)
			}
		}
		kept, next, reason := structureNext(did, chain, op, signer)
		if reason != "" {
			// The DID's later ops cannot be judged against a chain the
			// log never had: stop at the first break.
			bad(op, "%s", reason)
			break
		}
		for _, s := range seqs[kept:] {
			nullifier[s] = op.Seq
		}
		chain = append(chain[:kept], next)
		seqs = append(seqs[:kept], op.Seq)
	}
	if len(out) > 0 {
		return out
	}
	for i := range ops {
		op := &ops[i]
		switch want := nullifier[op.Seq]; {
		case op.NullifiedBy == want:
		case op.NullifiedBy == 0:
			bad(op, "the op is nullified by seq %d, but the nullified table does not say so", want)
		case want == 0:
			bad(op, "the nullified table says seq %d nullified it, but nothing did", op.NullifiedBy)
		default:
			bad(op, "the nullified table says seq %d nullified it, but seq %d did", op.NullifiedBy, want)
		}
	}
	return out
}

// prevKeys returns the rotation keys of the op of chain with CID prev
// (none when there is no such op).
func prevKeys(chain []validate.ChainOp, prev string) []string {
	for i := len(chain) - 1; i >= 0; i-- {
		if chain[i].CID == prev {
			return chain[i].RotationKeys
		}
	}
	return nil
}

// structureNext applies op, signed by rotation key signer, to the chain of
// did by its structure alone: its prev, the signer index (not verified
// here) and the fork rules that depend on them. It returns how much of
// chain op keeps, op's chain entry, or why the op cannot follow.
func structureNext(did string, chain []validate.ChainOp, op *DerivedOp, signer int) (int, validate.ChainOp, string) {
	next := validate.ChainOpOf(op.Decoded, op.CreatedAt, signer)
	prev := op.Decoded.Prev()
	if len(chain) == 0 {
		switch {
		case prev != "":
			return 0, next, fmt.Sprintf("the DID's first op has a prev (%s)", prev)
		case op.Decoded.GenesisDID() != did:
			return 0, next, "the DID's first op is not its genesis op"
		case signer < 0 || signer >= len(next.RotationKeys):
			return 0, next, fmt.Sprintf("the signer index %d is not one of the op's %d rotation keys", signer, len(next.RotationKeys))
		}
		return 0, next, ""
	}
	idx := -1
	for i := len(chain) - 1; i >= 0; i-- {
		if chain[i].CID == prev {
			idx = i
			break
		}
	}
	if idx < 0 || chain[idx].Tombstone {
		return 0, next, fmt.Sprintf("its prev %q is not an op of the DID's chain", prev)
	}
	keys := chain[idx].RotationKeys
	if signer < 0 || signer >= len(keys) {
		return 0, next, fmt.Sprintf("the signer index %d is not one of its prev's %d rotation keys", signer, len(keys))
	}
	if idx < len(chain)-1 {
		n0 := chain[idx+1]
		switch {
		case signer >= n0.Signer:
			return 0, next, fmt.Sprintf("it nullifies %s, signed by rotation key %d, with the signer index %d: only a key of higher priority may", n0.CID, n0.Signer, signer)
		case !op.CreatedAt.After(chain[len(chain)-1].CreatedAt):
			return 0, next, "it nullifies ops that are not older than it"
		case op.CreatedAt.Sub(n0.CreatedAt) > validate.RecoveryWindow:
			return 0, next, "it nullifies an op older than the recovery window"
		}
	}
	return idx + 1, next, ""
}

// derivedCols reads, for the derived-state check, ops with their stored
// signer index and nullifier, in (did, seq) order after a (did, seq) key.
const derivedCols = `SELECT o.did, o.seq, o.created_at, o.op, o.signer, COALESCE(n.by_seq, 0)
	FROM operations o LEFT JOIN nullified n ON n.seq = o.seq`

// scanDerived reads rows of derivedCols.
func scanDerived(rows opRows) ([]DerivedOp, error) {
	var out []DerivedOp
	for rows.Next() {
		var (
			seq, ms, by int64
			did, stored []byte
			signer      int
		)
		if err := rows.Scan(&did, &seq, &ms, &stored, &signer, &by); err != nil {
			return nil, err
		}
		out = append(out, DerivedOp{
			Entry:  Entry{Seq: seq, DID: didFromKey(did), CreatedAt: time.UnixMilli(ms).UTC(), Nullified: by != 0},
			Signer: signer, NullifiedBy: by, stored: bytes.Clone(stored),
		})
	}
	return out, rows.Err()
}

// derivedAfter is the stored form of the DID after which a page starts
// ("" : the first).
func derivedAfter(did string) ([]byte, error) {
	if did == "" {
		return []byte{}, nil
	}
	// Not DIDKey: a row written from outside may hold any bytes.
	return didB32.DecodeString(strings.TrimPrefix(did, didPrefix))
}

func scanSeqs(rows opRows) ([]int64, error) {
	var out []int64
	for rows.Next() {
		var s int64
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
