package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/klauspost/compress/zstd"
	sumdb "golang.org/x/mod/sumdb/tlog"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/client"
	"github.com/plcdir/plc/oplog"
	plctlog "github.com/plcdir/plc/tlog"
)

// A Fetcher reads the files of a bundle folder: the index and the bundle
// files, each at most limit bytes (a longer one is an error).
type Fetcher interface {
	Fetch(ctx context.Context, name string, limit int64) ([]byte, error)
	// String names the folder in messages.
	String() string
}

// fileNameRE is what a name a Fetcher is asked for looks like: no path.
var fileNameRE = regexp.MustCompile(`^([0-9]{6,}\.jsonl\.zst|` + regexp.QuoteMeta(IndexName) + `)$`)

// Dir is a bundle folder on disk.
type Dir string

func (d Dir) String() string { return string(d) }

// Fetch reads the file name of the folder, at most limit bytes.
func (d Dir) Fetch(_ context.Context, name string, limit int64) ([]byte, error) {
	if !fileNameRE.MatchString(name) {
		return nil, fmt.Errorf("%q is not a bundle folder's file", name)
	}
	f, err := os.Open(filepath.Join(string(d), name))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: over %d bytes", name, limit)
	}
	return b, nil
}

// Remote is a bundle folder served over HTTP, read with the bounded
// directory client (its timeouts, no redirect off the origin).
type Remote struct{ C *client.Client }

func (r Remote) String() string { return r.C.String() }

// Fetch reads the file name under the client's base URL.
func (r Remote) Fetch(ctx context.Context, name string, limit int64) ([]byte, error) {
	if !fileNameRE.MatchString(name) {
		return nil, fmt.Errorf("%q is not a bundle folder's file", name)
	}
	return r.C.File(ctx, name, limit)
}

// ErrRefused classes every error of a bundle folder that fails a check:
// the folder is not the log's history as its checkpoint signs it.
var ErrRefused = errors.New("bundles refused")

// Error is a check a bundle failed: the evidence names the bundle.
type Error struct {
	// Bundle is the bundle's number (0: the index or its checkpoint).
	Bundle   int64
	File     string
	From, To int64 // the bundle's seqs
	Reason   string
}

func (e *Error) Error() string {
	if e.Bundle == 0 {
		return "bundles refused: " + e.Reason
	}
	return fmt.Sprintf("bundles refused: bundle %d (%s, seqs %d–%d): %s", e.Bundle, e.File, e.From, e.To, e.Reason)
}

func (e *Error) Is(target error) bool { return target == ErrRefused }

// Options configure Open.
type Options struct {
	// VKey is the log's checkpoint verifier key (required).
	VKey string
	// Policy, if set, is the witness policy the checkpoint's cosignatures
	// must meet.
	Policy *plctlog.Policy
}

// Reader reads a bundle folder's content, the export lines of its bundles
// in seq order, handing over each bundle only once it is checked (see the
// package doc). The next bundle is fetched and checked while the one
// before it is read.
//
// It is an oplog.LineSource: Next hands over each line with the parse its
// check made.
type Reader struct {
	idx   *Index
	cp    plc.CheckpointBody
	next  chan fetched
	lines []oplog.Line // the rest of the current bundle
	n     int64        // the lines handed over
	err   error
	stop  context.CancelFunc
	done  chan struct{}
}

type fetched struct {
	lines []oplog.Line // a checked bundle's lines, each with its parse
	err   error
}

// Open reads the folder's index and checks its checkpoint against the
// key and the policy. Errors of the folder's content are *Error (class
// ErrRefused); others are the fetcher's.
func Open(ctx context.Context, f Fetcher, opts Options) (*Reader, error) {
	b, err := f.Fetch(ctx, IndexName, MaxIndexBytes)
	if err != nil {
		return nil, fmt.Errorf("%s: reading the index: %w", f, err)
	}
	idx, err := ParseIndex(b)
	if err != nil {
		return nil, &Error{Reason: err.Error()}
	}
	cp, err := CheckCheckpoint([]byte(idx.Checkpoint), opts)
	if err != nil {
		return nil, err
	}
	if cp.Origin != idx.Origin {
		return nil, &Error{Reason: fmt.Sprintf("the index names the log %q, its checkpoint %q", idx.Origin, cp.Origin)}
	}
	if n := len(idx.Bundles); n > 0 && idx.Bundles[n-1].LastSeq > cp.Size {
		return nil, &Error{Reason: fmt.Sprintf("the checkpoint covers %d ops, the bundles %d", cp.Size, idx.Bundles[n-1].LastSeq)}
	}
	ctx, stop := context.WithCancel(ctx)
	r := &Reader{idx: idx, cp: cp, next: make(chan fetched, 1), stop: stop, done: make(chan struct{})}
	go r.run(ctx, f)
	return r, nil
}

// CheckCheckpoint opens a signed checkpoint note with the key opts.VKey
// and checks the cosignatures of opts.Policy's witnesses, if any: they
// must verify and meet its quorum.
func CheckCheckpoint(note []byte, opts Options) (plc.CheckpointBody, error) {
	if strings.TrimSpace(opts.VKey) == "" {
		return plc.CheckpointBody{}, errors.New("the log's verifier key is required to check bundles")
	}
	v, err := plctlog.NewVerifier(opts.VKey)
	if err != nil {
		return plc.CheckpointBody{}, fmt.Errorf("the verifier key: %w", err)
	}
	body, _, err := plctlog.OpenCheckpoint(note, v)
	if err != nil {
		return body, &Error{Reason: fmt.Sprintf("the checkpoint is not one the log's key %s signed: %v", v.Name(), err)}
	}
	if p := opts.Policy; p != nil {
		if err := p.CheckLog(opts.VKey); err != nil {
			return body, fmt.Errorf("witness policy: %w", err)
		}
		c := p.Cosignatures(note)
		if len(c.Invalid) > 0 {
			return body, &Error{Reason: fmt.Sprintf("the checkpoint of size %d carries cosignatures of the policy's witnesses %s that do not verify", body.Size, strings.Join(c.Invalid, ", "))}
		}
		if !p.Satisfied(c.Verified) {
			return body, &Error{Reason: fmt.Sprintf("the checkpoint of size %d is cosigned by %d of the policy's witnesses, which does not meet its quorum", body.Size, len(c.Verified))}
		}
	}
	return body, nil
}

// Index returns the folder's index.
func (r *Reader) Index() *Index { return r.idx }

// Checkpoint returns the body of the checkpoint the bundles were checked
// against.
func (r *Reader) Checkpoint() plc.CheckpointBody { return r.cp }

// LastSeq is the seq of the bundles' last op (0: none).
func (r *Reader) LastSeq() int64 {
	if n := len(r.idx.Bundles); n > 0 {
		return r.idx.Bundles[n-1].LastSeq
	}
	return 0
}

// Next returns the next checked line, parsed (see oplog.LineSource). A
// bundle that fails its checks ends the reader, after the bundles before
// it, with oplog.ErrInput wrapping its *Error.
func (r *Reader) Next(ctx context.Context) (oplog.Line, error) {
	for len(r.lines) == 0 {
		if errors.Is(r.err, io.EOF) {
			return oplog.Line{N: r.n}, r.err
		} else if r.err != nil {
			return oplog.Line{N: r.n}, fmt.Errorf("%w after line %d: %w", oplog.ErrInput, r.n, r.err)
		}
		select {
		case f, ok := <-r.next:
			if !ok {
				r.err = io.EOF
				continue
			}
			r.lines, r.err = f.lines, f.err
		case <-ctx.Done():
			return oplog.Line{}, ctx.Err()
		}
	}
	l := r.lines[0]
	r.lines[0] = oplog.Line{}
	r.lines = r.lines[1:]
	r.n++
	l.N = r.n
	return l, nil
}

// Ready reports whether Next would return without waiting for the next
// bundle's check.
func (r *Reader) Ready() bool { return len(r.lines) > 0 || len(r.next) > 0 }

// Close stops the fetching and waits for it.
func (r *Reader) Close() error {
	r.stop()
	<-r.done
	return nil
}

// run fetches and checks the bundles in order, the next one while the
// one before it is read.
func (r *Reader) run(ctx context.Context, f Fetcher) {
	defer close(r.done)
	defer close(r.next)
	dec, err := zstd.NewReader(nil, zstd.WithDecoderMaxWindow(1<<27), zstd.WithDecoderMaxMemory(MaxContentBytes), zstd.WithDecoderConcurrency(1))
	if err != nil {
		r.send(ctx, fetched{err: err})
		return
	}
	defer dec.Close()
	var tree compactRange
	for i := range r.idx.Bundles {
		e := &r.idx.Bundles[i]
		lines, err := r.check(ctx, f, dec, &tree, e)
		if !r.send(ctx, fetched{lines: lines, err: err}) || err != nil {
			return
		}
	}
}

func (r *Reader) send(ctx context.Context, f fetched) bool {
	select {
	case r.next <- f:
		return true
	case <-ctx.Done():
		return false
	}
}

// check fetches bundle e and checks it: its hashes, its lines' seqs, and
// that the tree of every leaf up to its last is a prefix of the
// checkpoint's tree. tree holds the leaves before e and is extended with
// e's. It returns e's lines, each with its parse.
func (r *Reader) check(ctx context.Context, f Fetcher, dec *zstd.Decoder, tree *compactRange, e *Entry) ([]oplog.Line, error) {
	fail := func(format string, a ...any) error {
		return &Error{Bundle: e.Number, File: e.File, From: e.FirstSeq, To: e.LastSeq, Reason: fmt.Sprintf(format, a...)}
	}
	file, err := f.Fetch(ctx, e.File, e.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: bundle %d: %w", f, e.Number, err)
	}
	if sum := sha256.Sum256(file); int64(len(file)) != e.Bytes || hex.EncodeToString(sum[:]) != e.SHA256 {
		return nil, fail("the file (%d bytes, SHA-256 %x) is not the one the index lists (%d bytes, SHA-256 %s)", len(file), sum, e.Bytes, e.SHA256)
	}
	content, err := dec.DecodeAll(file, make([]byte, 0, e.ContentBytes))
	if err != nil {
		return nil, fail("not a zstd stream: %v", err)
	}
	if sum := sha256.Sum256(content); int64(len(content)) != e.ContentBytes || hex.EncodeToString(sum[:]) != e.ContentSHA256 {
		return nil, fail("its content (%d bytes, SHA-256 %x) is not the one the index lists (%d bytes, SHA-256 %s)", len(content), sum, e.ContentBytes, e.ContentSHA256)
	}
	if tree.size != e.FirstSeq-1 {
		return nil, fail("it does not follow the bundle before it (which ends at seq %d)", tree.size)
	}
	rest := content
	var lines []oplog.Line
	for seq := e.FirstSeq; seq <= e.LastSeq; seq++ {
		line, after, ok := bytes.Cut(rest, []byte{'\n'})
		if !ok {
			return nil, fail("it ends at seq %d: %d ops where %d were listed", seq-1, seq-e.FirstSeq, e.Ops)
		}
		rest = after
		x, _, err := plc.ParseExportLine(line)
		if err != nil {
			return nil, fail("line %d: %v", seq-e.FirstSeq+1, err)
		}
		if x.Seq != seq {
			return nil, fail("line %d has seq %d, want %d: an op is missing, added or moved", seq-e.FirstSeq+1, x.Seq, seq)
		}
		leaf := plc.AppendLeaf(nil, &plc.Leaf{Seq: x.Seq, DID: x.DID, CID: x.CID, CreatedAt: x.CreatedAt, Op: x.Op.SignedCBOR()})
		tree.append(sumdb.RecordHash(leaf))
		lines = append(lines, oplog.Line{Raw: line, Parsed: &x})
	}
	if len(rest) > 0 {
		return nil, fail("it holds more lines than its %d ops", e.Ops)
	}
	if err := sumdb.CheckTree(e.proof(), r.cp.Size, r.cp.Root, tree.size, tree.root()); err != nil {
		return nil, fail("its ops are not the log's: the tree of seqs 1–%d they give is not a prefix of the tree the checkpoint of size %d signs (an op changed, or a bundle of another log)", e.LastSeq, r.cp.Size)
	}
	return lines, nil
}

// compactRange is the RFC 6962 tree of the leaves appended so far, as the
// roots of its perfect subtrees, largest (leftmost) first.
type compactRange struct {
	size  int64
	nodes []sumdb.Hash
}

func (c *compactRange) append(h sumdb.Hash) {
	c.nodes = append(c.nodes, h)
	for s := c.size; s&1 == 1; s >>= 1 {
		n := len(c.nodes)
		c.nodes = append(c.nodes[:n-2], sumdb.NodeHash(c.nodes[n-2], c.nodes[n-1]))
	}
	c.size++
}

// root is the tree's hash (RFC 6962 MTH): the subtree roots folded from
// the right.
func (c *compactRange) root() sumdb.Hash {
	n := len(c.nodes)
	if n == 0 {
		return sumdb.Hash{}
	}
	h := c.nodes[n-1]
	for i := n - 2; i >= 0; i-- {
		h = sumdb.NodeHash(c.nodes[i], h)
	}
	return h
}
