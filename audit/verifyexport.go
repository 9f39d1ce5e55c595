package audit

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/internal/chainstore"
	"github.com/plcdir/plc/internal/defaults"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// Classes of errors that stop VerifyExport.
var (
	// ErrExportRead: reading the export failed.
	ErrExportRead = errors.New("reading the export")
	// ErrNotExport: the input has lines, but none of them looks like an
	// export line (none names a DID).
	ErrNotExport = errors.New("not an export: no line names a DID")
)

// DefaultMaxListed is how many problems of each kind an ExportReport lists
// by default (the counts are always exact).
const DefaultMaxListed = 10000

// Export modes, as ExportReport.Mode names them.
const (
	ModeSeq    = "seq"    // lines are {"type":"sequenced_op", …, "seq"}
	ModeLegacy = "legacy" // lines are {did, operation, cid, nullified, createdAt}
)

// ExportOptions configure VerifyExport. The zero value is usable.
type ExportOptions struct {
	// Workers is the number of goroutines that parse and verify (default
	// GOMAXPROCS).
	Workers int
	// StartSeq, when positive, is the seq the first seq-mode line must
	// have (an export read from /export?after=StartSeq-1); a first line
	// after it is a gap. Zero: the first line's seq is taken as it is.
	StartSeq int64
	// MaxListed bounds each list of an ExportReport: the problems of each
	// kind on the first MaxListed lines are listed (default
	// DefaultMaxListed; the counts are exact).
	MaxListed int
	// Progress, if set, is called from one goroutine as the replay goes
	// on (after each chunk of lines), with the totals so far.
	Progress func(ExportProgress)
	// Now is the clock of ExportReport.Elapsed (default time.Now).
	Now func() time.Time
}

// ExportProgress are the running totals of a VerifyExport.
type ExportProgress struct {
	// Lines counts the non-blank lines read, Ops the ones replayed so
	// far, Invalid the ones found invalid so far.
	Lines, Ops, Invalid int64
}

// ExportReport is the verdict on an export. Its JSON form is the report of
// `plc audit verify-export --json`.
type ExportReport struct {
	// Source names the export (set by the caller).
	Source string `json:"source"`
	// Mode is ModeSeq or ModeLegacy: the mode of the first valid line ("" if
	// there was none).
	Mode string `json:"mode"`
	// Lines counts the non-blank lines, Ops the ones replayed through the
	// validator (all but the lines whose seq did not increase), Valid the
	// ops accepted, Invalid the lines rejected (Invalid = Ops − Valid).
	Lines   int64 `json:"lines"`
	Ops     int64 `json:"ops"`
	Valid   int64 `json:"valid"`
	Invalid int64 `json:"invalid"`
	// DIDs counts the DIDs with at least one valid op.
	DIDs int64 `json:"dids"`
	// Nullified counts the valid ops nullified by a later op of their DID,
	// as the chain rules compute it. StatedNullified counts the lines of a
	// legacy export flagged nullified.
	Nullified       int64 `json:"nullified"`
	StatedNullified int64 `json:"statedNullified"`
	// NullifiedMismatches counts the valid ops whose stated nullified flag
	// differs from the recomputed one (legacy exports only).
	NullifiedMismatches int64 `json:"nullifiedMismatches"`
	// FirstSeq and LastSeq are the seq of the first and the last seq-mode
	// lines (0: none). SeqGaps counts the lines whose seq skips seqs after
	// the line before, SeqRepeats the lines whose seq does not increase
	// (those are not replayed).
	FirstSeq   int64 `json:"firstSeq"`
	LastSeq    int64 `json:"lastSeq"`
	SeqGaps    int64 `json:"seqGaps"`
	SeqRepeats int64 `json:"seqRepeats"`
	// OK: no invalid line, no seq gap or repeat, no nullified mismatch.
	OK bool `json:"ok"`
	// The problems found, in line order: of each kind, the first
	// ExportOptions.MaxListed; Truncated when a list is cut short.
	InvalidOps      []InvalidOp        `json:"invalidOps"`
	SeqProblems     []SeqProblem       `json:"seqProblems"`
	NullifiedErrors []NullifiedProblem `json:"nullifiedErrors"`
	Truncated       bool               `json:"truncated"`
	// Error is what stopped the replay before the end of the input (set by
	// the caller).
	Error string `json:"error,omitempty"`
	// Elapsed is the duration of the replay; OpsPerSecond is Ops over it.
	Elapsed      time.Duration `json:"-"`
	Seconds      float64       `json:"seconds"`
	OpsPerSecond float64       `json:"opsPerSecond"`
}

// InvalidOp is a line the validator rejects.
type InvalidOp struct {
	Line int64  `json:"line"`
	Seq  int64  `json:"seq,omitempty"`
	DID  string `json:"did"`
	CID  string `json:"cid"`
	// Class names the kind of problem: the text of a validate.Err* class,
	// or "bad line" for a line that is not a well-formed export line.
	Class string `json:"class"`
	// Reason says what is wrong.
	Reason string `json:"reason"`
}

// Kinds of SeqProblem.
const (
	SeqGap    = "gap"
	SeqRepeat = "repeat"
)

// SeqProblem is a seq-mode line whose seq is not the one after the line
// before's.
type SeqProblem struct {
	Line int64  `json:"line"`
	Kind string `json:"kind"` // SeqGap or SeqRepeat
	Seq  int64  `json:"seq"`
	// Prev is the seq the line must follow (the greatest seq before it).
	Prev int64 `json:"prev"`
}

// NullifiedProblem is a valid op whose stated nullified flag is not the
// recomputed one.
type NullifiedProblem struct {
	Line       int64  `json:"line"`
	DID        string `json:"did"`
	CID        string `json:"cid"`
	Stated     bool   `json:"stated"`
	Recomputed bool   `json:"recomputed"`
}

func (r *ExportReport) finish() {
	r.OK = r.Invalid == 0 && r.SeqGaps == 0 && r.SeqRepeats == 0 && r.NullifiedMismatches == 0
	r.Seconds = r.Elapsed.Seconds()
	if r.Seconds > 0 {
		r.OpsPerSecond = float64(r.Ops) / r.Seconds
	}
	// Empty lists, not null, in JSON.
	if r.InvalidOps == nil {
		r.InvalidOps = []InvalidOp{}
	}
	if r.SeqProblems == nil {
		r.SeqProblems = []SeqProblem{}
	}
	if r.NullifiedErrors == nil {
		r.NullifiedErrors = []NullifiedProblem{}
	}
}

// VerifyExport reads export lines from r (plain text: the caller
// decompresses) and replays them through the validator. Every line's
// envelope, operation, CID and DID are checked (plc.ParseExportLine), and
// every op is judged by the chain rules (validate.State.Apply) at its
// createdAt, the acceptance time, after the ops of its DID that come before
// it in the export. Nothing in the export is trusted but the order of the
// lines and their acceptance times: nullification is recomputed, and for a
// legacy export whose lines state a nullified flag, the stated flags are
// checked against the recomputed ones. In a seq-mode export, seq must
// increase strictly from line to line; a gap or a seq that does not
// increase is reported, and a line whose seq does not increase is not
// replayed. A line of the other mode than the export's first valid line is
// invalid.
//
// The work runs on opts.Workers goroutines: lines are parsed in parallel,
// and the DIDs are spread over the workers (each DID's ops on one worker,
// in export order). Memory is the chain state of every DID seen (its
// non-nullified ops' CIDs, times and rotation keys) and a bounded window
// of lines in flight. An op costs the same whatever the length of its
// DID's history (amortised): a DID with a long history is kept decoded
// and extended in place.
//
// The error is for what stops the replay before the end of the input: a
// read error (wrapping ErrExportRead), ctx's end, or ErrNotExport when the
// input has lines and none of them is an export line. The report then
// covers the lines read before.
func VerifyExport(ctx context.Context, r io.Reader, opts ExportOptions) (ExportReport, error) {
	defaults.Positive(&opts.Workers, runtime.GOMAXPROCS(0))
	defaults.Positive(&opts.MaxListed, DefaultMaxListed)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	start := opts.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	v := &exportVerifier{opts: opts}
	v.workers = make([]*exportWorker, opts.Workers)
	for i := range v.workers {
		v.workers[i] = &exportWorker{
			v:      v,
			in:     make(chan exportBatch, exportQueue),
			states: chainstore.New[chainstore.DIDKey](0),
			long:   map[chainstore.DIDKey]*longChain{},
			stated: map[int64]opRef{},
		}
	}

	// The pipeline: read → parse (any worker) → dispatch (in order: seq
	// checks, DIDs to their workers) → verify (per DID worker).
	toParse := make(chan *exportChunk, opts.Workers)
	ordered := make(chan *exportChunk, exportQueue)
	readDone := make(chan error, 1)
	go func() { readDone <- readExportChunks(ctx, r, toParse, ordered) }()
	var parsers sync.WaitGroup
	for range opts.Workers {
		parsers.Go(func() {
			for ch := range toParse {
				ch.parse()
			}
		})
	}
	var verifiers sync.WaitGroup
	for _, w := range v.workers {
		verifiers.Go(w.run)
	}
	rep := v.dispatch(ctx, ordered)
	for _, w := range v.workers {
		close(w.in)
	}
	verifiers.Wait()
	parsers.Wait()
	readErr := <-readDone // dispatch drained ordered: the reader is done

	v.merge(&rep)
	rep.Elapsed = opts.Now().Sub(start)
	rep.finish()
	var err error
	switch {
	case readErr != nil:
		err = fmt.Errorf("%w after line %d: %w", ErrExportRead, v.lastLine, readErr)
	case ctx.Err() != nil:
		err = ctx.Err()
	case rep.Lines > 0 && !v.looksLikeExport:
		err = ErrNotExport
	}
	return rep, err
}

const (
	// exportChunkLines is the number of lines read, parsed and dispatched
	// together.
	exportChunkLines = 1024
	// exportQueue is how many chunks may wait in each queue: it bounds the
	// lines in flight.
	exportQueue = 4
)

// exportChunk is a run of lines on their way through the pipeline.
type exportChunk struct {
	buf   []byte      // the lines' bytes, one after the other
	lines []chunkLine // where each line is in buf
	// Filled by parse:
	items  []oplog.IngestItem
	stated []int8 // per item: stateUnknown, stateFalse, stateTrue
	parsed chan struct{}
	// Filled by dispatch: items not to replay.
	skip []bool
	// remaining counts the workers that still have items of the chunk.
	remaining atomic.Int32
}

type chunkLine struct {
	n          int64 // line number, from 1
	start, end int
}

// The stated nullified flag of a line.
const (
	stateUnknown int8 = iota // seq mode, or a legacy line without the flag
	stateFalse
	stateTrue
)

func (ch *exportChunk) parse() {
	ch.items = make([]oplog.IngestItem, len(ch.lines))
	ch.stated = make([]int8, len(ch.lines))
	for i, l := range ch.lines {
		b := ch.buf[l.start:l.end]
		x, _, err := plc.ParseExportLine(b)
		ch.items[i] = oplog.NewIngestItem(l.n, nil, x, err) // Raw not kept: the report quotes no line
		if err == nil && x.HasNullified {
			ch.stated[i] = stateFalse
			if x.Nullified {
				ch.stated[i] = stateTrue
			}
		}
	}
	close(ch.parsed)
}

// readExportChunks splits r into lines (by oplog.LineReader: numbered
// from 1, a line longer than oplog.MaxLineBytes cut so that
// ParseExportLine rejects it) and sends them in chunks to both toParse
// and, in the same order, to ordered. It returns the read error that ended
// the input (never io.EOF).
func readExportChunks(ctx context.Context, r io.Reader, toParse, ordered chan<- *exportChunk) error {
	defer close(ordered)
	defer close(toParse)
	lr := oplog.NewLineReader(r)
	newChunk := func() *exportChunk {
		return &exportChunk{
			buf:    make([]byte, 0, 1<<20),
			lines:  make([]chunkLine, 0, exportChunkLines),
			parsed: make(chan struct{}),
		}
	}
	ch := newChunk()
	send := func() bool {
		if len(ch.lines) == 0 {
			return true
		}
		select {
		case toParse <- ch:
		case <-ctx.Done():
			return false
		}
		select {
		case ordered <- ch:
		case <-ctx.Done():
			return false
		}
		ch = newChunk()
		return true
	}
	for {
		start := len(ch.buf)
		buf, n, err := lr.Append(ch.buf)
		if ch.buf = buf; err != nil {
			send()
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		ch.lines = append(ch.lines, chunkLine{n: n, start: start, end: len(ch.buf)})
		if len(ch.lines) >= exportChunkLines && !send() {
			return nil
		}
	}
}

// exportVerifier holds what the dispatching goroutine owns.
type exportVerifier struct {
	opts    ExportOptions
	workers []*exportWorker

	lastLine int64
	lastSeq  int64 // the greatest seq so far (0: none yet)
	// looksLikeExport: some line names a DID.
	looksLikeExport bool
	seqList         []SeqProblem
	listCut         bool // a list of the dispatcher's is cut short

	done    atomic.Int64 // lines replayed by the workers
	invalid atomic.Int64
}

// exportBatch is a chunk's items for one worker.
type exportBatch struct {
	ch  *exportChunk
	idx []int32
}

// dispatch takes the chunks in order, checks their seqs and mode, and
// hands each item to the worker of its DID. It drains ordered.
func (v *exportVerifier) dispatch(ctx context.Context, ordered <-chan *exportChunk) ExportReport {
	var rep ExportReport
	if v.opts.StartSeq > 0 {
		v.lastSeq = v.opts.StartSeq - 1
	}
	seqKnown := v.opts.StartSeq > 0
	nw := uint32(len(v.workers))
	parts := make([][]int32, nw)
	stopped := false
	for ch := range ordered {
		if stopped {
			continue // drain, so that the reader ends
		}
		select {
		case <-ch.parsed:
		case <-ctx.Done():
			stopped = true
			continue
		}
		ch.skip = make([]bool, len(ch.items))
		for i := range ch.items {
			it := &ch.items[i]
			rep.Lines++
			v.lastLine = it.Line
			if it.DID != "" {
				v.looksLikeExport = true
			}
			if it.Seq > 0 {
				if rep.FirstSeq == 0 {
					rep.FirstSeq = it.Seq
				}
				switch {
				case !seqKnown || it.Seq == v.lastSeq+1:
				case it.Seq <= v.lastSeq:
					rep.SeqRepeats++
					v.seqProblem(SeqProblem{Line: it.Line, Kind: SeqRepeat, Seq: it.Seq, Prev: v.lastSeq})
					ch.skip[i] = true
				default:
					rep.SeqGaps++
					v.seqProblem(SeqProblem{Line: it.Line, Kind: SeqGap, Seq: it.Seq, Prev: v.lastSeq})
				}
				if !ch.skip[i] {
					v.lastSeq, seqKnown = it.Seq, true
					rep.LastSeq = it.Seq
				}
			}
			if ch.skip[i] {
				continue
			}
			if it.Err == nil {
				mode := ModeLegacy
				if it.Seq > 0 {
					mode = ModeSeq
				}
				switch {
				case rep.Mode == "":
					rep.Mode = mode
				case rep.Mode != mode:
					it.Err = fmt.Errorf("a %s-mode line in a %s-mode export", mode, rep.Mode)
					it.Op = nil
				}
				if ch.stated[i] == stateTrue {
					rep.StatedNullified++
				}
			}
			rep.Ops++
			w := didHash(it.DID) % nw
			parts[w] = append(parts[w], int32(i))
		}
		n := int32(0)
		for _, p := range parts {
			if len(p) > 0 {
				n++
			}
		}
		ch.remaining.Store(n)
		for w, p := range parts {
			if len(p) == 0 {
				continue
			}
			select {
			case v.workers[w].in <- exportBatch{ch: ch, idx: p}:
			case <-ctx.Done():
				stopped = true
			}
			parts[w] = make([]int32, 0, len(p))
		}
		if v.opts.Progress != nil && !stopped {
			v.opts.Progress(ExportProgress{Lines: rep.Lines, Ops: v.done.Load(), Invalid: v.invalid.Load()})
		}
	}
	return rep
}

func (v *exportVerifier) seqProblem(p SeqProblem) {
	if len(v.seqList) < v.opts.MaxListed {
		v.seqList = append(v.seqList, p)
	} else {
		v.listCut = true
	}
}

// didHash spreads DIDs over workers (FNV-1a).
func didHash(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

// merge adds the workers' findings to rep.
func (v *exportVerifier) merge(rep *ExportReport) {
	rep.SeqProblems = v.seqList
	rep.Truncated = v.listCut
	for _, w := range v.workers {
		w.finish()
		rep.Valid += w.valid
		rep.Invalid += w.invalidN
		rep.DIDs += int64(w.states.Len() + len(w.long))
		rep.Nullified += w.nullified
		rep.NullifiedMismatches += w.mismatchN
		rep.InvalidOps = append(rep.InvalidOps, w.invalidList...)
		rep.NullifiedErrors = append(rep.NullifiedErrors, w.mismatchList...)
		rep.Truncated = rep.Truncated || w.listCut
	}
	max := v.opts.MaxListed
	slices.SortFunc(rep.InvalidOps, func(a, b InvalidOp) int { return cmp.Compare(a.Line, b.Line) })
	if len(rep.InvalidOps) > max {
		rep.InvalidOps, rep.Truncated = rep.InvalidOps[:max], true
	}
	slices.SortFunc(rep.NullifiedErrors, func(a, b NullifiedProblem) int { return cmp.Compare(a.Line, b.Line) })
	if len(rep.NullifiedErrors) > max {
		rep.NullifiedErrors, rep.Truncated = rep.NullifiedErrors[:max], true
	}
}

// exportWorker verifies the ops of its DIDs, in export order.
//
// A DID's chain state, its ops tagged line<<2|stated flag, is in states
// (compact: a million DIDs cost the garbage collector next to nothing)
// until it has longChainOps ops, then in long: decoding a state costs
// O(its ops), so a DID with a long history is kept decoded and its next
// ops are applied to it in place (validate.State.Apply), each in O(1)
// amortised, however the export interleaves the DIDs.
type exportWorker struct {
	v      *exportVerifier
	in     chan exportBatch
	states *chainstore.Store[chainstore.DIDKey]
	long   map[chainstore.DIDKey]*longChain
	// stated holds the valid, non-nullified ops a legacy export states are
	// nullified, by line: each is a mismatch unless a later op nullifies
	// it.
	stated map[int64]opRef

	valid, invalidN, nullified, mismatchN int64
	invalidList                           []InvalidOp
	mismatchList                          []NullifiedProblem
	listCut                               bool
}

type opRef struct{ did, cid string }

// longChainOps is the number of non-nullified ops from which a DID's
// state moves from the compact store to the decoded ones. Few DIDs of a
// directory have that many, so the decoded states take little memory
// beside the compact ones, and decoding a state below it costs little.
const longChainOps = 32

// longChain is a DID's state kept decoded: its ops, and their tags.
type longChain struct {
	st    validate.State
	lines []int64
}

func (w *exportWorker) run() {
	for b := range w.in {
		for _, i := range b.idx {
			if b.ch.skip[i] {
				continue
			}
			w.apply(&b.ch.items[i], b.ch.stated[i])
		}
		w.v.done.Add(int64(len(b.idx)))
		if b.ch.remaining.Add(-1) == 0 {
			// The last worker done with the chunk lets its lines go.
			b.ch.items, b.ch.buf = nil, nil
		}
	}
}

func (w *exportWorker) apply(it *oplog.IngestItem, stated int8) {
	if it.Err != nil {
		w.reject(it, it.Err)
		return
	}
	k, _ := chainstore.KeyOf(it.DID) // every op that reaches a worker has a valid DID
	// st and lines are the worker's own: a long chain's, or decoded
	// afresh from the store.
	lc := w.long[k]
	st, lines := validate.State{DID: it.DID}, []int64(nil)
	switch {
	case lc != nil:
		st, lines = lc.st, lc.lines
	default:
		if ops, tags, seen := w.states.Get(k); seen {
			st, lines = validate.State{DID: it.DID, Ops: ops}, tags
		}
	}
	n := len(st.Ops)
	applied, err := st.Apply(it.Op, it.CreatedAt)
	if err != nil {
		w.reject(it, err) // st is unchanged
		return
	}
	w.valid++
	keep := len(st.Ops) - 1 // the ops that stay of the n before
	for j, cid := range applied.Nullified {
		w.nullified++
		line, flag := lines[keep+j]>>2, int8(lines[keep+j]&3)
		switch flag {
		case stateTrue:
			delete(w.stated, line)
		case stateFalse:
			w.mismatch(NullifiedProblem{Line: line, DID: it.DID, CID: cid, Stated: false, Recomputed: true})
		}
	}
	lines = append(lines[:keep], it.Line<<2|int64(stated))
	switch {
	case lc != nil:
		shareKeys(st.Ops)
		lc.st, lc.lines = st, lines
	case len(st.Ops) >= longChainOps:
		shareKeys(st.Ops)
		w.long[k] = &longChain{st: st, lines: lines}
		w.states.Delete(k)
	default:
		w.states.Put(k, st.Ops, lines, keep == n && n > 0)
	}
	if stated == stateTrue {
		w.stated[it.Line] = opRef{it.DID, it.CID}
	}
}

// shareKeys makes the last of ops share the rotation keys of the op
// before it when they are the same (as they are for most updates), so that
// a long chain does not keep a copy of its keys per op.
func shareKeys(ops []validate.ChainOp) {
	if n := len(ops); n > 1 && slices.Equal(ops[n-1].RotationKeys, ops[n-2].RotationKeys) {
		ops[n-1].RotationKeys = ops[n-2].RotationKeys
	}
}

func (w *exportWorker) reject(it *oplog.IngestItem, err error) {
	w.invalidN++
	w.v.invalid.Add(1)
	if len(w.invalidList) >= w.v.opts.MaxListed {
		w.listCut = true
		return
	}
	class := "bad line"
	var ve *validate.Error
	if errors.As(err, &ve) {
		class = ve.Class.Error()
	}
	w.invalidList = append(w.invalidList, InvalidOp{
		Line: it.Line, Seq: it.Seq, DID: it.DID, CID: it.CID,
		Class: class, Reason: oplog.RejectionReason(err),
	})
}

func (w *exportWorker) mismatch(p NullifiedProblem) {
	w.mismatchN++
	if len(w.mismatchList) >= w.v.opts.MaxListed {
		w.listCut = true
		return
	}
	w.mismatchList = append(w.mismatchList, p)
}

// finish reports the ops stated nullified that nothing nullified.
func (w *exportWorker) finish() {
	lines := make([]int64, 0, len(w.stated))
	for l := range w.stated {
		lines = append(lines, l)
	}
	slices.Sort(lines)
	for _, l := range lines {
		ref := w.stated[l]
		w.mismatch(NullifiedProblem{Line: l, DID: ref.did, CID: ref.cid, Stated: true, Recomputed: false})
	}
}
