package oplog

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/internal/defaults"
	"github.com/plcdir/plc/validate"
)

const (
	// MaxLineBytes bounds one line of an export (without its newline). An
	// op is a few KB at most; a longer line is rejected, and only its first
	// MaxLineBytes bytes are kept.
	MaxLineBytes = plc.MaxLineBytes
	// DefaultImportBatch is the default number of lines per transaction.
	// Each transaction rewrites the index pages its ops touch, so fewer,
	// larger ones write less (BENCHMARKS.md, "Import at 1 M ops"); memory
	// grows with it, as four batches are in flight at once.
	DefaultImportBatch = 8000
)

// DefaultImportWorkers is the default number of goroutines a Replay
// parses lines and checks signatures on: one per core, and one more to
// take up the time the sequential apply and commit leaves a core idle
// while it waits on the database.
func DefaultImportWorkers() int { return runtime.GOMAXPROCS(0) + 1 }

var (
	// ErrNotExport: the input's first line is not an export line; nothing
	// was imported.
	ErrNotExport = errors.New("not an export")
	// ErrInput: reading the input failed. What was read before is imported.
	ErrInput = errors.New("reading the input")
)

// ImportOptions configure Replay and Import.
type ImportOptions struct {
	// Source names the input, for its cursor and its rejections. Empty:
	// "export:" and the first 32 hex digits of the SHA-256 of the input's
	// first non-blank line (without surrounding white space). So an
	// export resumes however it is read (a file, compressed or not, or a
	// pipe), and a longer export that begins with the same line continues
	// where a shorter one stopped.
	Source string
	// BatchSize is the number of (non-blank) lines per transaction
	// (default DefaultImportBatch); fewer when the source's next lines
	// have not arrived (see LineSource.Ready).
	BatchSize int
	// Workers is the number of goroutines that parse lines and check
	// signatures (default DefaultImportWorkers).
	Workers int
	// Progress, if set, is called after each batch with the totals so far.
	Progress func(ImportStats)
	// Rejected, if set, is called for each rejected line once its batch
	// has committed, in line order.
	Rejected func(Rejection)
	// Ingest, if set, commits each batch instead of l.Ingest (which it
	// must call, or IngestWithin, with the same arguments): a caller that
	// bounds what a batch may store, or judges each batch's result. An
	// error it returns stops the Replay after the batch (as a store
	// failure does), whether or not the batch committed.
	Ingest func(ctx context.Context, source string, items []IngestItem) (IngestResult, error)
	// Stream: each line is a live stream's event, which must have a seq.
	Stream bool

	resume bool // Import's numbering and resumption
}

// Line is one line of replayed history: its number in its source (from
// 1, increasing, or 0: the one after the line before) and its bytes
// without the newline (one longer than MaxLineBytes is rejected, and only
// its first MaxLineBytes bytes are kept).
type Line struct {
	N   int64
	Raw []byte
	// Parsed, when not nil, is Raw as plc.ParseExportLine read it without
	// error, handed over by a source that had to read it anyway (a bundle
	// reader hashes each op's leaf): Replay takes it instead of reading Raw
	// again.
	Parsed *plc.ExportLine
}

// A LineSource hands a Replay its lines, from one goroutine (which may
// still wait in Next after Replay returns, until ctx ends).
type LineSource interface {
	// Next returns the next line, waiting for it if need be; or the error
	// that ends the source (io.EOF at its end; Replay returns any other
	// once the lines before it are committed) with, in Line.N, the number
	// of lines read (0: the last one's).
	Next(ctx context.Context) (Line, error)
	// Ready reports whether Next would return without waiting (for an
	// upstream's next page or event): if not, Replay commits the lines it
	// has rather than wait for a full batch.
	Ready() bool
}

// ImportStats are the totals of an Import or Replay.
type ImportStats struct {
	// Source is the input's name (see ImportOptions.Source).
	Source string
	// Lines counts the lines done with, blank ones included.
	Lines int64
	// Imported counts the ops appended, Rejected the lines not applied,
	// Skipped the lines already imported (by an earlier run).
	Imported, Rejected, Skipped int64
	// Batches counts the transactions committed.
	Batches int64
}

// Import reads export lines from r and replays them into l (see Replay),
// numbered from the input's first line, blank lines included: a line at
// or before the source's cursor (its seq, for a seq-mode line) is done, so
// an interrupted Import of the same input resumes after the last committed
// batch and applies nothing twice. The error is for what stops it:
// ErrNotExport (the first line is not an export line), ErrInput, a store
// failure, ctx's end.
func Import(ctx context.Context, l *Log, r io.Reader, opts ImportOptions) (ImportStats, error) {
	return ImportLines(ctx, l, NewLineReader(r), opts)
}

// ImportLines is Import of the lines src hands over, numbered as Import
// numbers an input's lines (a Line.N of 0 is the one after the line
// before) and resumed as Import resumes.
func ImportLines(ctx context.Context, l *Log, src LineSource, opts ImportOptions) (ImportStats, error) {
	opts.resume = true
	return Replay(ctx, l, src, opts)
}

// Replay is the one way replayed history enters the log. src hands over
// lines, which are cut into batches, parsed, and their signatures checked
// on every core while the batch before them commits (the checks are
// memoised in each op, so the sequential chain rules under the append
// lock find them done); each batch goes through Log.Ingest (see it for
// the rules), or opts.Ingest. Lines are numbered after the cursor of the
// source opts.Source, and each seq must be after the cursor's
// and the one before it: a line out of order is rejected, as is a first
// line that is not an export line. Rejected lines are reported to
// opts.Rejected and stored, and the replay goes on; the error is for what
// stops it: src's error, a store failure, opts.Ingest's error, ctx's end.
func Replay(ctx context.Context, l *Log, src LineSource, opts ImportOptions) (ImportStats, error) {
	defaults.Positive(&opts.BatchSize, DefaultImportBatch)
	defaults.Positive(&opts.Workers, DefaultImportWorkers())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	read := make(chan *importChunk, 1)
	go readChunks(ctx, src, opts.BatchSize, read)
	im := &importer{log: l, opts: opts}
	prepared := make(chan *importChunk, 1)
	var prepErr error
	prepDone := make(chan struct{})
	go func() {
		defer close(prepDone)
		prepErr = im.prepare(ctx, read, prepared)
	}()
	defer func() {
		cancel()
		<-prepDone // no store reads after Replay returns
	}()

	var (
		st   ImportStats
		done bool // the input's last chunk is committed
	)
	if opts.Ingest == nil {
		opts.Ingest = l.Ingest
	}
	for ch := range prepared {
		st.Source = ch.source
		st.Skipped += ch.skipped
		if len(ch.items) > 0 {
			res, err := opts.Ingest(ctx, ch.source, ch.items)
			if err != nil {
				return st, err
			}
			st.Batches++
			st.Imported += int64(len(res.Entries))
			st.Rejected += int64(len(res.Rejected))
			st.Skipped += int64(res.Skipped)
			if opts.Rejected != nil {
				for _, rj := range res.Rejected {
					opts.Rejected(rj)
				}
			}
		}
		st.Lines = ch.end
		if ch.err != nil {
			return st, ch.err
		}
		// A batch is a chunk with lines to take or skip; the input's end
		// may come as a chunk of its own, with none.
		if opts.Progress != nil && (len(ch.items) > 0 || ch.skipped > 0) {
			opts.Progress(st)
		}
		done = ch.last
	}
	<-prepDone
	switch {
	case prepErr != nil:
		return st, prepErr
	case !done:
		// The pipeline stopped early: only ctx does that.
		if err := ctx.Err(); err != nil {
			return st, err
		}
		return st, errors.New("oplog: replay stopped before the end of the input")
	}
	return st, nil
}

// importChunk is one batch of lines on its way through the pipeline.
type importChunk struct {
	lines []Line // the lines handed over
	end   int64  // the last line's number
	err   error  // the error that ended the source (never io.EOF)
	last  bool   // the source's last chunk

	// Filled by prepare:
	source  string
	items   []IngestItem // the lines to ingest
	skipped int64        // lines already done by an earlier run
}

// readChunks cuts src's lines into chunks of size lines (or fewer, when
// src is not Ready); the last chunk carries src's error, if any.
func readChunks(ctx context.Context, src LineSource, size int, out chan<- *importChunk) {
	defer close(out)
	ch := &importChunk{}
	send := func() bool {
		select {
		case out <- ch:
			ch = &importChunk{end: ch.end}
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		if len(ch.lines) > 0 && !src.Ready() && !send() {
			return
		}
		l, err := src.Next(ctx)
		if err != nil {
			ch.end = max(ch.end, l.N)
			if !errors.Is(err, io.EOF) {
				ch.err = err
			}
			ch.last = true
			send()
			return
		}
		if l.N == 0 {
			l.N = ch.end + 1
		}
		ch.lines, ch.end = append(ch.lines, l), l.N
		if len(ch.lines) >= size && !send() {
			return
		}
	}
}

// A LineReader splits an export (Import's input, audit.VerifyExport's)
// into lines numbered from 1, each ended by a newline or by the input (a
// partial line cut by a read error is not one). Blank lines are counted,
// not returned; a line longer than MaxLineBytes is cut after
// MaxLineBytes+1 bytes, so that its reader sees it is too long.
type LineReader struct {
	br  *bufio.Reader
	n   int64
	err error
}

// NewLineReader returns a LineReader of r.
func NewLineReader(r io.Reader) *LineReader {
	return &LineReader{br: bufio.NewReaderSize(r, MaxLineBytes+1)}
}

// Append appends the next non-blank line to buf, and returns buf and the
// line's number; or, once the lines before it are returned, buf, the
// number of lines read, and the error that ended the input (io.EOF at
// its end).
func (lr *LineReader) Append(buf []byte) ([]byte, int64, error) {
	for lr.err == nil {
		b, err := lr.br.ReadSlice('\n')
		start, tooLong := len(buf), errors.Is(err, bufio.ErrBufferFull)
		if tooLong {
			buf = append(buf, b...)
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = lr.br.ReadSlice('\n')
			}
		} else if b = bytes.TrimSuffix(b, []byte{'\n'}); len(bytes.TrimSpace(b)) > 0 {
			buf = append(buf, b...)
		}
		lr.err = err
		if err == nil || (errors.Is(err, io.EOF) && (tooLong || len(b) > 0)) {
			if lr.n++; len(buf) > start {
				return buf, lr.n, nil
			}
		} else {
			buf = buf[:start] // a partial line
		}
	}
	return buf, lr.n, lr.err
}

// Ready and Next make a LineReader Import's LineSource: a read error ends
// it as ErrInput.
func (lr *LineReader) Ready() bool { return true }

func (lr *LineReader) Next(context.Context) (Line, error) {
	b, n, err := lr.Append(nil)
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("%w after line %d: %w", ErrInput, n, err)
	}
	return Line{N: n, Raw: b}, err
}

// importer is the preparing stage of the pipeline.
type importer struct {
	log  *Log
	opts ImportOptions

	started bool
	source  string
	cursor  Cursor // the source's cursor when the replay started
	lastSeq int64  // the seq of the last seq-mode line taken
	// window maps the CIDs of the ops of the latest chunks (which may not
	// be committed yet) to their rotation keys: where prepare looks for
	// the keys an op's signature must verify against.
	window [importWindow]map[string][]string
	next   int
}

// importWindow is how many chunks the window covers: the one being
// prepared, the one waiting to commit, the one committing, and one more.
const importWindow = 4

// prepare parses each chunk's lines, numbers them, drops those already
// done, rejects those out of seq order, and checks signatures ahead of the
// append lock, in parallel.
func (im *importer) prepare(ctx context.Context, in <-chan *importChunk, out chan<- *importChunk) error {
	defer close(out)
	for {
		var ch *importChunk
		select {
		case c, ok := <-in:
			if !ok {
				return nil
			}
			ch = c
		case <-ctx.Done():
			return ctx.Err()
		}
		items := make([]IngestItem, len(ch.lines))
		looks := make([]bool, len(ch.lines))
		im.parallel(len(items), func(i int) { items[i], looks[i] = parseLine(ch.lines[i]) })
		if !im.started && len(items) > 0 {
			if !looks[0] && im.opts.resume {
				return fmt.Errorf("%w: line %d: %v", ErrNotExport, items[0].Line, items[0].Err)
			}
			if err := im.start(ctx, ch.lines[0].Raw); err != nil {
				return err
			}
		}
		ch.source = im.source
		keys := make(map[string][]string, len(items))
		take := items[:0]
		for _, it := range items {
			if im.opts.resume && it.done(im.cursor) {
				ch.skipped++
				continue
			}
			if !im.opts.resume {
				it.Line += im.cursor.Line
			}
			if im.opts.Stream && it.Err == nil && it.Seq == 0 {
				it.Err, it.Op = errors.New("a stream event without seq"), nil
			}
			if it.Seq > 0 {
				if it.Seq <= im.lastSeq {
					err := badLine("seq %d is not after seq %d: the export is out of order", it.Seq, im.lastSeq)
					if im.opts.Stream {
						err = fmt.Errorf("reordered: seq %d is not after seq %d: out of order", it.Seq, im.lastSeq)
					}
					it.Err = Reordered(err)
					it.Op, it.Seq = nil, 0
				} else {
					im.lastSeq = it.Seq
				}
			}
			if it.Op != nil {
				keys[it.Op.CID()] = rotationKeys(it.Op)
			}
			take = append(take, it)
		}
		im.window[im.next%importWindow] = keys
		im.next++
		committed := im.committed(ctx, take)
		im.parallel(len(take), func(i int) {
			if take[i].Op != nil {
				im.warm(&take[i], committed)
			}
		})
		ch.items, ch.lines = take, nil
		select {
		case out <- ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// parseLine reads l by plc.ParseExportLine as the ingest item of its
// line, and reports whether it is at least a JSON object with a did and
// an operation (a line longer than MaxLineBytes is rejected unread).
func parseLine(l Line) (it IngestItem, looksLikeExport bool) {
	if len(l.Raw) > MaxLineBytes {
		return IngestItem{Line: l.N, Raw: l.Raw[:MaxLineBytes], Err: badLine("line longer than %d bytes", MaxLineBytes)}, false
	}
	if l.Parsed != nil {
		return NewIngestItem(l.N, l.Raw, *l.Parsed, nil), true
	}
	x, looksLikeExport, err := plc.ParseExportLine(l.Raw)
	return NewIngestItem(l.N, l.Raw, x, err), looksLikeExport
}

// start names the source after its first line (unless named) and reads
// its cursor.
func (im *importer) start(ctx context.Context, first []byte) error {
	im.started = true
	im.source = im.opts.Source
	if im.source == "" {
		sum := sha256.Sum256(bytes.TrimSpace(first))
		im.source = "export:" + hex.EncodeToString(sum[:16])
	}
	c, err := im.log.store.Cursor(ctx, im.source)
	if err != nil {
		return err
	}
	im.cursor, im.lastSeq = c, c.Seq
	return nil
}

// warm checks the signature of it's op against the keys its prev allows,
// in order, up to the first that verifies: the checks the chain rules will
// make under the append lock, which then find them memoised. Keys come
// from the op itself (genesis), the window, or the DID's committed state
// (committed); when they are not found (prev unknown or nullified),
// nothing is checked here and the chain rules decide.
func (im *importer) warm(it *IngestItem, committed map[string]*chainIndex) {
	op := it.Op
	op.Compact() // the stored form, made here rather than under the append lock
	var keys []string
	if prev := op.Prev(); prev == "" {
		keys = rotationKeys(op)
	} else if k, ok := im.windowKeys(prev); ok {
		keys = k
	} else {
		keys = committed[it.DID].keys(prev)
	}
	for _, k := range keys {
		if validate.VerifySignature(op, k) {
			return
		}
	}
}

// committed reads, once per DID, the committed chain state of the DIDs of
// items whose prev is not in the window (from the record cache, else the
// store), indexed by CID: however many of a chunk's ops name a prev that
// is not in the window, each DID's history is read and indexed once.
func (im *importer) committed(ctx context.Context, items []IngestItem) map[string]*chainIndex {
	var dids []string
	seen := map[string]bool{}
	for i := range items {
		it := &items[i]
		if it.Op == nil || seen[it.DID] {
			continue
		}
		if prev := it.Op.Prev(); prev == "" {
			continue
		} else if _, ok := im.windowKeys(prev); ok {
			continue
		}
		seen[it.DID] = true
		dids = append(dids, it.DID)
	}
	idx := make([]*chainIndex, len(dids))
	im.parallel(len(dids), func(i int) {
		rec := im.log.cache.lookup(dids[i])
		if rec == nil {
			rec, _ = im.log.store.Record(ctx, dids[i])
		}
		idx[i] = newChainIndex(rec)
	})
	out := make(map[string]*chainIndex, len(dids))
	for i, d := range dids {
		out[d] = idx[i]
	}
	return out
}

// chainIndex finds the ops of a DID's chain state by CID.
type chainIndex struct {
	ops   []validate.ChainOp
	byCID map[string]int // for a long state; nil: scan
}

func newChainIndex(rec *DIDRecord) *chainIndex {
	if rec == nil {
		return nil
	}
	x := &chainIndex{ops: rec.State.Ops}
	if len(x.ops) > 16 {
		x.byCID = make(map[string]int, len(x.ops))
		for i, c := range x.ops {
			x.byCID[c.CID] = i
		}
	}
	return x
}

// keys returns the rotation keys of the op cid (none when the state has
// no such op).
func (x *chainIndex) keys(cid string) []string {
	if x == nil {
		return nil
	}
	if x.byCID != nil {
		if i, ok := x.byCID[cid]; ok {
			return x.ops[i].RotationKeys
		}
		return nil
	}
	for _, c := range x.ops {
		if c.CID == cid {
			return c.RotationKeys
		}
	}
	return nil
}

func (im *importer) windowKeys(cid string) ([]string, bool) {
	for i := range importWindow {
		if k, ok := im.window[(im.next-1-i+importWindow)%importWindow][cid]; ok {
			return k, true
		}
	}
	return nil, false
}

// parallel calls f(0) … f(n-1) on the importer's workers.
func (im *importer) parallel(n int, f func(i int)) {
	workers := min(im.opts.Workers, n)
	if workers <= 1 {
		for i := range n {
			f(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				f(i)
			}
		})
	}
	wg.Wait()
}

// rotationKeys returns an op's normalised rotation keys (none for a
// tombstone).
func rotationKeys(op *validate.Op) []string {
	d, _ := op.Data()
	return d.RotationKeys
}
