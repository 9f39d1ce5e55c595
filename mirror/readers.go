package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// seqPages is the upstream's seq-mode export after a seq, as an
// oplog.LineSource that ends (io.EOF) after a short page. A goroutine (the
// fetcher) asks for each page as soon as the one before it has arrived —
// the next after= is the last seq of that page, read from its last line —
// so that the upstream serves page k+1 while page k is being ingested. It
// runs ahead of the pipeline by at most prefetchPages pages and, before it
// asks for another, until the pages waiting hold fewer than prefetchBytes
// (so memory stays bounded by prefetchBytes and one page's MaxBody). Pages
// reach the pipeline whole, in order, and Ready when they have arrived:
// running several pages ahead, a backfill from a fast upstream commits
// whole batches (oplog.DefaultImportBatch lines), not a page or two at a
// time. A page that cannot be used is an error:
// none of it is handed over, Next returns it after the pages before it,
// and the Replay stops after committing what came before.
type seqPages struct {
	m     *Mirror
	after int64 // the fetcher's position: the last seq asked past
	count int

	pages  chan [][]byte // the lines to ingest of the pages fetched, in order
	done   chan struct{} // closed when the fetcher has returned
	budget *byteBudget   // the bytes of the pages fetched and not yet taken
	// Written by the fetcher before it closes pages (and done):
	end       error // what ended the pages: nil (a short page), a bad page, ctx's end
	lastEmpty bool  // the last page fetched held no line

	// The pipeline's side (Next and Ready, one goroutine):
	left   [][]byte // what is left of the page received
	closed bool     // pages is closed and drained
}

// What a backfill fetches ahead of the pipeline: at most prefetchPages
// pages (one of them waiting to be put in the channel), and no further
// page once those waiting hold prefetchBytes.
const (
	prefetchPages = 16
	prefetchBytes = 16 << 20
)

// byteBudget counts bytes held, and lets a producer wait until fewer than
// max are.
type byteBudget struct {
	max   int64
	held  atomic.Int64
	freed chan struct{} // signalled (without blocking) at each release
}

func newByteBudget(max int64) *byteBudget {
	return &byteBudget{max: max, freed: make(chan struct{}, 1)}
}

// room reports whether fewer than max bytes are held.
func (b *byteBudget) room() bool { return b.held.Load() < b.max }

// wait returns true once fewer than max bytes are held, false if ctx ends
// first.
func (b *byteBudget) wait(ctx context.Context) bool {
	for !b.room() {
		select {
		case <-b.freed:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

func (b *byteBudget) hold(n int64) { b.held.Add(n) }

func (b *byteBudget) release(n int64) {
	b.held.Add(-n)
	select {
	case b.freed <- struct{}{}:
	default:
	}
}

// pageBytes is what a page's lines weigh in the prefetch budget.
func pageBytes(lines [][]byte) int64 {
	n := int64(0)
	for _, l := range lines {
		n += int64(len(l)) + 24 // and its slice header
	}
	return n
}

// newSeqPages starts a source of the pages after seq after; its fetcher
// runs until the last page, a bad page, or ctx's end. Wait for it
// (<-r.done) before reading r.end or r.lastEmpty.
func newSeqPages(ctx context.Context, m *Mirror, after int64, count int) *seqPages {
	r := &seqPages{m: m, after: after, count: count,
		pages: make(chan [][]byte, prefetchPages-1), done: make(chan struct{}),
		budget: newByteBudget(prefetchBytes)}
	go r.fetch(ctx)
	return r
}

// fetch asks for pages until a short one (or an error), and hands them to
// the reader in order.
func (r *seqPages) fetch(ctx context.Context) {
	defer close(r.done)
	defer close(r.pages)
	for {
		if !r.budget.wait(ctx) {
			r.end = ctx.Err()
			return
		}
		b, last, err := r.fetchPage(ctx)
		if err != nil && !errors.Is(err, errMostlyRejected) {
			r.end = err
			return
		}
		if len(b) > 0 {
			r.budget.hold(pageBytes(b))
			select {
			case r.pages <- b:
			case <-ctx.Done():
				r.end = ctx.Err()
				return
			}
		}
		if err != nil {
			r.end = err // after the page's other lines
			return
		}
		if last {
			return
		}
	}
}

// fetchPage fetches the page after r.after and returns its lines to
// ingest, and whether it is the last page. A page that mostly serves
// again lines at or before r.after is errMostlyRejected, with its other
// lines: they are ingested, then the round ends and Run backs off.
func (r *seqPages) fetchPage(ctx context.Context) ([][]byte, bool, error) {
	page, err := r.m.up.SeqPage(ctx, r.after, r.count)
	if err != nil {
		return nil, false, err
	}
	lines := page.Lines
	if len(lines) > 0 && page.Last <= r.after {
		return nil, false, badResponse(append(bytes.Join(lines, []byte{'\n'}), '\n'), "GET /export?after=%d: the page ends at seq %d", r.after, page.Last)
	}
	// Lines at or before after were asked not to be sent: the upstream
	// serves them again, so its order is not what it was.
	kept := lines[:0]
	for i, l := range lines {
		if seq := page.Seqs[i]; seq > 0 && seq <= r.after {
			r.m.record(ctx, Divergence{Kind: oplog.KindReordered, Evidence: l,
				Detail: "the upstream served seq " + strconv.FormatInt(seq, 10) + " again after seq " + strconv.FormatInt(r.after, 10)})
			continue
		}
		kept = append(kept, l)
	}
	replayed := len(lines) - len(kept)
	r.m.sawUpstreamSeq(page.Last)
	r.lastEmpty = len(lines) == 0
	if len(lines) > 0 {
		r.after = page.Last
	}
	if r.m.mostlyRejected(replayed, len(lines)) {
		return kept, false, fmt.Errorf("%w: %d of the %d lines of the page up to seq %d were served again", errMostlyRejected, replayed, len(lines), page.Last)
	}
	return kept, len(lines) < r.count, nil
}

func (r *seqPages) Next(context.Context) (oplog.Line, error) {
	for len(r.left) == 0 {
		if r.closed {
			if r.end != nil {
				return oplog.Line{}, r.end
			}
			return oplog.Line{}, io.EOF
		}
		r.take(<-r.pages) // closed when the fetcher returns, at ctx's end at the latest
	}
	return nextLine(&r.left), nil
}

// take makes page, received from pages, the lines to hand over (nil when
// pages is closed).
func (r *seqPages) take(page [][]byte) {
	r.closed, r.left = page == nil, page
	if page != nil {
		r.budget.release(pageBytes(page))
	}
}

// Ready reports whether Next would return without waiting for the
// upstream: a page (or the end) has arrived.
func (r *seqPages) Ready() bool {
	if len(r.left) > 0 || r.closed {
		return true
	}
	select {
	case page := <-r.pages:
		r.take(page)
		return true
	default:
		return false
	}
}

// nextLine hands over the first of a page's lines left.
func nextLine(left *[][]byte) oplog.Line {
	l := (*left)[0]
	*left = (*left)[1:]
	return oplog.Line{Raw: l}
}

// legacyPages is the upstream's legacy export (paged by createdAt, in
// (createdAt, cid) order) after a time, as an oplog.LineSource. Pages
// overlap by the last millisecond: asking for ops after after-1ms and
// skipping the ones already taken at after (boundary) neither skips nor
// repeats an op when a page ends inside a millisecond.
type legacyPages struct {
	m        *Mirror
	after    time.Time       // zero: from the start
	boundary map[string]bool // CIDs taken at after
	count    int
	done     bool
	left     [][]byte // what is left of the page fetched
}

// Ready is true: each page is fetched when the pipeline asks for it, and a
// batch is cut only when full.
func (r *legacyPages) Ready() bool { return true }

func (r *legacyPages) Next(ctx context.Context) (oplog.Line, error) {
	for len(r.left) == 0 {
		if r.done {
			return oplog.Line{}, io.EOF
		}
		since := r.after
		if !since.IsZero() {
			since = since.Add(-time.Millisecond)
		}
		body, err := r.m.up.LegacyPage(ctx, since, r.count)
		if err != nil {
			return oplog.Line{}, err
		}
		lines := plc.ExportLines(body)
		var (
			kept     [][]byte
			after    = r.after
			boundary = r.boundary
		)
		for i, l := range lines {
			pl, err := plc.ReadLineHead(l)
			if err != nil {
				if i == len(lines)-1 {
					// The last line cannot be read: a cut-off body.
					return oplog.Line{}, badResponse(body, "GET /export: the last line is not an export line (cut off?): %v", err)
				}
				kept = append(kept, l) // the pipeline rejects it
				continue
			}
			t, err := validate.ParseTimestamp(pl.CreatedAt)
			if err != nil {
				kept = append(kept, l)
				continue
			}
			switch {
			case t.Before(after):
				r.m.record(ctx, Divergence{Kind: oplog.KindReordered, CID: pl.CID, Evidence: l,
					Detail: "the legacy export went back in time to " + pl.CreatedAt})
				continue
			case t.Equal(after) && boundary[pl.CID]:
				continue // taken with the previous page
			case t.After(after):
				after, boundary = t, map[string]bool{}
			}
			boundary[pl.CID] = true
			kept = append(kept, l)
		}
		switch {
		case len(lines) < r.count:
			r.done = true
		case len(kept) == 0:
			// A whole page inside one millisecond, all taken: the rest of
			// that millisecond cannot be asked for.
			r.m.record(ctx, Divergence{Kind: oplog.KindBadResponse,
				Detail: "at least " + strconv.Itoa(r.count) + " ops at " + string(validate.AppendTimestamp(nil, after)) + ": the rest of that millisecond is skipped"})
			after, boundary = after.Add(time.Millisecond), map[string]bool{}
		}
		r.after, r.boundary, r.left = after, boundary, kept
	}
	return nextLine(&r.left), nil
}
