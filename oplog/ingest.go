package oplog

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/validate"
)

// ErrBadLine: a line of replayed history is not a usable export line (bad
// JSON, unknown or missing fields, an op that does not parse, a CID that
// does not match the op). Such lines are rejected, never applied.
var ErrBadLine = plc.ErrBadLine

// ErrFutureOp: a replayed op is dated more than Options.MaxClockSkew after
// this process's clock. It is rejected, as an op dated before its prev is
// by the chain rules: a log must not hold times that have not come yet.
var ErrFutureOp = errors.New("op dated in the future")

func badLine(format string, args ...any) error {
	return &plc.LineError{Msg: fmt.Sprintf(format, args...)}
}

// IngestItem is one line of replayed history for Log.Ingest: an op with
// the DID and acceptance time its source states, or a line already found
// unusable (Err).
type IngestItem struct {
	// Line is the item's line in its source, from 1. The items of one
	// Ingest call are in increasing line order.
	Line int64
	// Seq is the upstream seq of a seq-mode line (0: none). Items with a
	// seq must come in increasing seq order. An item with a seq is already
	// done when its seq is at or before the source's cursor; an item
	// without one when its line is.
	Seq int64
	// DID and CID are what the line states.
	DID, CID string
	// Op is the parsed op; nil when Err is set.
	Op *validate.Op
	// CreatedAt is the op's acceptance time as its source states it: the
	// op is judged and recorded at that time, never clamped.
	CreatedAt time.Time
	// Raw is the line as read, kept as evidence if the item is rejected.
	Raw []byte
	// Err, when set, rejects the item without applying it.
	Err error
}

// NewIngestItem is the ingest item of line n, read from raw as x (or not: err).
func NewIngestItem(n int64, raw []byte, x plc.ExportLine, err error) IngestItem {
	return IngestItem{Line: n, Seq: x.Seq, DID: x.DID, CID: x.CID, Op: x.Op, CreatedAt: x.CreatedAt, Raw: raw, Err: err}
}

// done reports whether the item is at or before cursor c.
func (it *IngestItem) done(c Cursor) bool {
	if it.Seq > 0 {
		return it.Seq <= c.Seq
	}
	return it.Line <= c.Line
}

// IngestResult is what one Ingest call committed.
type IngestResult struct {
	// Entries are the ops appended, in seq order.
	Entries []Entry
	// Rejected are the items not applied, in line order.
	Rejected []Rejection
	// Skipped counts the items already done according to the cursor read
	// under the append lock (by an earlier run or a concurrent one).
	Skipped int
	// Cursor is the source's cursor after the call.
	Cursor Cursor
	// Stored is how many of Rejected were stored: the first Stored (all of
	// them, unless IngestWithin's limit stopped the rest).
	Stored int
}

// RejectionLimit bounds the rejections one IngestWithin call stores:
// Rows of them, of Bytes in all (as RejectionBytes counts). The first
// rejection that would go past either, and every one after it, is not
// stored: it is still rejected (never applied, the cursor moves past it)
// and returned in IngestResult.Rejected.
type RejectionLimit struct {
	Rows, Bytes int64
}

// NoRejectionLimit stores every rejection.
var NoRejectionLimit = RejectionLimit{Rows: math.MaxInt64, Bytes: math.MaxInt64}

// RejectionBytes is what a rejection counts against a RejectionLimit: the
// bytes of its raw line, reason, DID and CID (as Stats.RejectionSize sums
// them).
func RejectionBytes(r Rejection) int64 {
	return int64(len(r.Raw) + len(r.Reason) + len(r.DID) + len(r.CID))
}

// Ingest applies replayed history from source (an export being imported,
// an upstream being mirrored) in one transaction: every item not already
// done according to the source's cursor is judged by the chain rules alone
// (no submission limits, no rate limit) at its own createdAt, in order,
// through the same code as Submit's ops; the valid ones are appended, the
// others recorded as rejections, and the cursor moved past the last item,
// all in the same transaction. Ops of a DID after a rejected op of that DID
// are judged against the DID's state as it is. Commits wake Changed like
// Submit's. Items of one source must be ingested by one caller at a time
// or by callers that agree on line numbers; concurrent callers never apply
// an item twice.
func (l *Log) Ingest(ctx context.Context, source string, items []IngestItem) (IngestResult, error) {
	return l.IngestWithin(ctx, source, items, NoRejectionLimit)
}

// IngestWithin is Ingest, storing at most limit's rejections (see
// RejectionLimit): a source whose rejections are kept as evidence bounds
// what a hostile input can make it store.
func (l *Log) IngestWithin(ctx context.Context, source string, items []IngestItem, limit RejectionLimit) (IngestResult, error) {
	if source == "" {
		return IngestResult{}, errors.New("oplog: Ingest without a source")
	}
	dids := make([]string, 0, len(items))
	for i := range items {
		it := &items[i]
		if i > 0 && it.Line <= items[i-1].Line {
			return IngestResult{}, fmt.Errorf("oplog: ingest item %d: line %d after line %d", i, it.Line, items[i-1].Line)
		}
		if (it.Op == nil) == (it.Err == nil) {
			return IngestResult{}, fmt.Errorf("oplog: ingest item %d (line %d): want an op or an error", i, it.Line)
		}
		if it.Err == nil {
			dids = append(dids, it.DID)
		}
	}
	var lastSeq int64
	for i := range items {
		if s := items[i].Seq; s > 0 {
			if s <= lastSeq {
				return IngestResult{}, fmt.Errorf("oplog: ingest item %d (line %d): seq %d after seq %d", i, items[i].Line, s, lastSeq)
			}
			lastSeq = s
		}
	}

	var (
		res  IngestResult
		errs []error // the rejections' errors, for metrics
	)
	err := l.transact(ctx, "ingest", source, dids, func(view View, c *chain) (Batch, error) {
		res, errs = IngestResult{}, errs[:0]
		now := l.opts.Now().UTC().Truncate(time.Millisecond)
		b := Batch{Cursor: view.Cursor}
		var (
			dropped    []Rejection // rejected, not stored: past the limit
			rows, size int64
		)
		for i := range items {
			it := &items[i]
			if it.done(view.Cursor) {
				res.Skipped++
				continue
			}
			err := it.Err
			if err == nil {
				err = l.checkReplayedTime(it.CreatedAt, now)
			}
			if err == nil {
				var e Entry
				if e, _, err = c.apply(it.DID, it.Op, it.CreatedAt, nil); err == nil {
					res.Entries = append(res.Entries, e)
				}
			}
			if err != nil {
				errs = append(errs, err)
				rj := Rejection{
					Source: source, Line: it.Line, DID: it.DID, CID: it.CID,
					Raw: it.Raw, Kind: rejectionKind(err), Reason: RejectionReason(err), CreatedAt: now,
				}
				n := RejectionBytes(rj)
				if dropped != nil || rows+1 > limit.Rows || n > limit.Bytes-size {
					dropped = append(dropped, rj)
				} else {
					b.Rejections = append(b.Rejections, rj)
					rows, size = rows+1, size+n
				}
			}
			b.Cursor.Line = max(b.Cursor.Line, it.Line)
			b.Cursor.Seq = max(b.Cursor.Seq, it.Seq)
		}
		if b.Cursor.Line != view.Cursor.Line || b.Cursor.Seq != view.Cursor.Seq {
			b.Cursor.UpdatedAt = now
		}
		res.Rejected = append(b.Rejections[:len(b.Rejections):len(b.Rejections)], dropped...)
		res.Stored = len(b.Rejections)
		res.Cursor = b.Cursor
		return b, nil
	})
	if errors.Is(err, ErrClosed) {
		return IngestResult{}, err
	}
	if err != nil {
		return IngestResult{}, fmt.Errorf("ingest: %w", err)
	}
	for range res.Entries {
		l.opts.Metrics.accepted()
	}
	for _, err := range errs {
		l.opts.Metrics.rejected(err)
	}
	return res, nil
}

// checkReplayedTime rejects a replayed op dated more than MaxClockSkew
// after now, the clock.
func (l *Log) checkReplayedTime(createdAt, now time.Time) error {
	if ahead := createdAt.Sub(now); ahead > l.opts.MaxClockSkew {
		return fmt.Errorf("%w: createdAt %s is %s after this directory's clock (%s; at most %s allowed)",
			ErrFutureOp, validate.AppendTimestamp(nil, createdAt), ahead, validate.AppendTimestamp(nil, now), l.opts.MaxClockSkew)
	}
	return nil
}

// RejectionReason is the reason recorded for a rejected line: a chain-rule
// verdict's short explanation, or the error's text.
func RejectionReason(err error) string {
	var ve *validate.Error
	var le *plc.LineError
	if !errors.As(err, &le) && errors.As(err, &ve) {
		return ve.Short()
	}
	return err.Error()
}
