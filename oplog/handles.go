package oplog

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/plcdir/plc/internal/defaults"
	"github.com/plcdir/plc/validate"
)

// The handle index maps a handle to the DIDs whose ops have listed it in
// alsoKnownAs (as at://<handle>). It follows the log behind it, outside
// the append transactions (so that writes do not pay for an index only the
// web UI's search reads): CatchUpHandles indexes the ops after the last
// one it covers, run in the background by plc serve and plc mirror and by
// the search before it reads. It is derived state, like nullified, but
// weaker: pairs are only ever added, so it also holds handles a DID no
// longer claims. It answers "which DIDs may claim this handle"; whether one
// does is its current document's say (HandleOf over its alsoKnownAs).
//
// alsoKnownAs is what a DID's controller asserts, not a proof: a handle is
// verified only by its own DNS or /.well-known/atproto-did record, which
// the directory does not check.

// HandleIndex is the handle index of a store. Both stores implement it.
type HandleIndex interface {
	// DIDsForHandle returns the DIDs (at most MaxHandleDIDs, sorted) whose
	// ops have listed handle (any case; with or without at://) in
	// alsoKnownAs, among the ops the index covers: candidates, some of
	// which may no longer claim it. A string that is not a handle is an
	// ErrBadHandle, before any query.
	DIDsForHandle(ctx context.Context, handle string) ([]string, error)
	// ExtendHandles indexes up to limit of the ops the index does not cover
	// yet, in one transaction, and returns how many (0: the index covers
	// the log).
	ExtendHandles(ctx context.Context, limit int) (int, error)
	// HandlesBehind returns how many ops the index does not cover yet.
	HandlesBehind(ctx context.Context) (int64, error)
}

var (
	_ HandleIndex = (*SQLiteStore)(nil)
	_ HandleIndex = (*PostgresStore)(nil)
)

// MaxHandleDIDs bounds the DIDs DIDsForHandle returns: anyone may list any
// handle in a DID's alsoKnownAs, so a handle may have many claimants.
const MaxHandleDIDs = 100

// ErrBadHandle: the string is not a handle (atproto handle syntax).
var ErrBadHandle = errors.New("not a handle")

// NormalizeHandle returns handle (with or without an at:// prefix) in the
// index's form, lower-case without at://, or ErrBadHandle.
func NormalizeHandle(handle string) (string, error) {
	h := strings.TrimPrefix(handle, "at://")
	parsed, err := syntax.ParseHandle(h)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadHandle, err)
	}
	return string(parsed.Normalize()), nil
}

// HandleOf returns the handle an alsoKnownAs entry names, in the index's
// form: the entry must be at:// followed by a handle. ok is false for any
// other entry (another URI, an at://did:…, a path).
func HandleOf(aka string) (handle string, ok bool) {
	rest, found := strings.CutPrefix(aka, "at://")
	if !found {
		return "", false
	}
	if _, err := syntax.ParseHandle(rest); err != nil {
		return "", false
	}
	return strings.ToLower(rest), true
}

// handlePair is one row of handles.
type handlePair struct {
	handle string
	did    []byte
}

// handlePairs returns the rows of handles that entries add, each once, in
// (handle, did) order (so that concurrent inserts take their row locks in
// one order).
func handlePairs(entries []*Entry) ([]handlePair, error) {
	var out []handlePair
	for _, e := range entries {
		op := e.Decoded
		if op == nil {
			var err error
			if op, err = validate.ParseCBOR(e.Op); err != nil {
				return nil, fmt.Errorf("oplog: op %d is not a valid op: %w", e.Seq, err)
			}
		}
		d, ok := op.Data()
		if !ok {
			continue // a tombstone
		}
		var key []byte
		for _, aka := range d.AlsoKnownAs {
			h, ok := HandleOf(aka)
			if !ok {
				continue
			}
			if key == nil {
				var err error
				if key, err = DIDKey(e.DID); err != nil {
					return nil, err
				}
			}
			out = append(out, handlePair{h, key})
		}
	}
	cmpPair := func(a, b handlePair) int {
		return cmp.Or(strings.Compare(a.handle, b.handle), strings.Compare(string(a.did), string(b.did)))
	}
	slices.SortFunc(out, cmpPair)
	return slices.CompactFunc(out, func(a, b handlePair) bool { return cmpPair(a, b) == 0 }), nil
}

func entryPtrs(es []Entry) []*Entry {
	out := make([]*Entry, len(es))
	for i := range es {
		out[i] = &es[i]
	}
	return out
}

// CatchUpHandles indexes the handles of the ops the index does not cover
// yet (the latest ones, or a whole database migrated from an earlier
// version), batch ops per transaction (0: a default), calling progress (if
// set) after each; it stops early when progress returns false. It returns
// how many ops it indexed; it can be stopped at any time and resumed, and
// several may run at once.
func CatchUpHandles(ctx context.Context, idx HandleIndex, batch int, progress func(indexed int64) (goOn bool)) (int64, error) {
	defaults.Positive(&batch, handleBatch)
	var total int64
	for {
		n, err := idx.ExtendHandles(ctx, batch)
		total += int64(n)
		if err != nil || n == 0 {
			return total, err
		}
		if progress != nil && !progress(total) {
			return total, nil
		}
	}
}

// HandleIndexInterval is how often IndexHandles brings the index up to
// the log beside a running directory.
const HandleIndexInterval = 5 * time.Second

// handleBatch is how many ops one transaction of the handle index covers
// by default.
const handleBatch = 4096

// handleFillIn is how far behind the index must be for IndexHandles to
// report its progress after its first catch-up: a mirror's backfill just
// ended.
const handleFillIn = 100_000

// IndexHandles keeps idx up with the log beside a running directory until
// ctx ends, bringing it up at start and every interval: a derived index
// only the handle lookups read, written outside the append transactions so
// that writes do not pay for it. While hold (if set) says so (a mirror
// backfilling or bootstrapping, whose ops arrive faster than any directory
// writes them) it waits, and stops a catch-up between batches, leaving the
// cores to the backfill; the lookups say how far behind the index is (and
// bring it up themselves when that is little). A long catch-up is logged;
// stopped with ctx, the work goes on at the next start from where it
// stopped. Failures are logged and retried at the next interval.
func IndexHandles(ctx context.Context, idx HandleIndex, interval time.Duration, logger *slog.Logger, hold func() bool) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		if hold != nil && hold() {
			continue
		}
		// A read first: an idle log costs no write transaction.
		behind, err := idx.HandlesBehind(ctx)
		if err != nil && ctx.Err() == nil {
			logger.Warn("reading how far the handle index is behind failed; retrying", "err", err)
		}
		if behind <= 0 {
			continue
		}
		// At start (a database upgraded from an earlier plc) and after a
		// backfill, the catch-up is logged.
		long := first || behind >= handleFillIn
		if long {
			logger.Info("filling in the handle index", "ops", behind)
		}
		start := time.Now()
		last := start
		held := false
		n, err := CatchUpHandles(ctx, idx, 0, func(done int64) bool {
			if long && time.Since(last) >= 10*time.Second {
				last = time.Now()
				logger.Info("filling in the handle index", "ops", done, "of", behind)
			}
			held = hold != nil && hold()
			return !held
		})
		switch {
		case err != nil && ctx.Err() == nil:
			logger.Warn("indexing handles failed; retrying", "ops", n, "err", err)
		case err == nil && long && !held:
			logger.Info("handle index filled in", "ops", n, "took", time.Since(start).Round(time.Millisecond).String())
		}
		if ctx.Err() != nil {
			if long {
				logger.Info("handle index catch-up stopped; it goes on at the next start", "ops", n)
			}
			return
		}
	}
}

func scanHandleDIDs(rows opRows) ([]string, error) {
	var out []string
	for rows.Next() {
		var key []byte
		if err := rows.Scan(&key); err != nil {
			return nil, fmt.Errorf("look up handle: %w", err)
		}
		out = append(out, didFromKey(key))
	}
	// The stored bytes order otherwise than the DIDs' text.
	slices.Sort(out)
	return out, rows.Err()
}

// backfillEnd checks that es (at least one) are the ops after done,
// without a gap, and returns the last one's seq.
func backfillEnd(es []Entry, done int64) (int64, error) {
	if len(es) == 0 {
		return 0, fmt.Errorf("oplog: the handle index's backfill expects op %d, which is missing", done+1)
	}
	for i := range es {
		if es[i].Seq != done+1+int64(i) {
			return 0, fmt.Errorf("oplog: the handle index's backfill expects op %d, which is missing", done+1+int64(i))
		}
	}
	return es[len(es)-1].Seq, nil
}
