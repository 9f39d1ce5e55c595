// Package oplog is the directory's append-only operation log: the Store
// contract, its PostgreSQL and SQLite implementations, and the sequencer
// (Log) through which every op is appended: submitted ops with Submit,
// replayed history (an imported export, a mirrored upstream) with Ingest,
// which Replay drives over the lines of any source (Import: an export
// file), and evidence found beside a source's lines (a mirror's
// divergence) with Reject. All three run one transaction skeleton over
// Store.Append, and ops go through one function that applies the chain
// rules under the append lock.
//
// # The Store contract
//
// A Store MUST:
//   - Durability: return from Append only after the transaction is durably
//     committed (fsync'd); an error means nothing of the batch was written.
//   - Ordering: assign seq densely (1, 2, 3, …) in commit order. Append
//     takes an exclusive append lock (across processes sharing the
//     database) before it reads the last seq and the DIDs' states, and holds
//     it until commit, so decide always sees the latest committed state and
//     no two transactions can assign the same seq.
//   - Immutability: never update or delete a row of operations or
//     nullified, and make the database itself refuse such changes.
//   - Atomicity: write the ops, their nullifications and the DIDs' new
//     records in one transaction.
//   - Concurrency: allow reads concurrently with Append; a read sees a
//     committed prefix of the log.
//   - Sources: an Append that names the source of replayed history (an
//     export file, an upstream) also reads, under the same lock, the
//     source's cursor, and writes the batch's rejections and the new cursor
//     in the same transaction as its ops. A cursor never moves back (the
//     database refuses it too), and rejections, like ops, are never updated
//     or deleted.
//
// The conformance suite in this package's tests runs against both
// implementations.
//
// # What is in the contract, and what is a capability
//
// Store holds what the log itself needs (Append, Record) and what every
// role of the directory reads on any backend: resolution and the exports
// (Head, Heads, Ops, Op, Export, ExportByTime, LatestSeq), the sources' cursors
// and rejections (Cursor, Rejections, RejectionsAt, HasRejection: the
// mirror's divergence records, whose lookups a mirror cannot do without),
// and the transparency log's storage, which Append writes in the same
// transaction as the ops (TreeSize, ReadHashes, ExtendTree, Checkpoint,
// SwapCheckpoint). What only some callers need, and what a backend could
// lack without the log being any less correct, is an interface of its own
// that the caller checks for where it uses it:
//   - DerivedReader (OpsByDID, StrayNullified): the startup check of the
//     derived state kept in tables beside the log (CheckDerived); plc serve
//     refuses to start on a store that cannot be checked.
//   - HandleIndex: the web UI's handle search, which does without it.
//   - Stats: counts for the web UI's status pages (shown without them) and
//     the size of a mirror's stored evidence (counted from what it stores
//     itself without them).
//   - ChangeProbe: a cheap token that changes at every commit by any
//     process (SQLite's WAL-index header; PostgreSQL's notices, when
//     listened for), which spares the API's cache of rendered answers its
//     latest-seq query while the log stands still.
//   - The handles of the concrete stores (SQLiteStore.DB,
//     PostgresStore.Pool) are for migrations, tests and diagnostics only.
package oplog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/plcdir/plc/validate"
)

// ErrNotFound: no such DID or op.
var ErrNotFound = errors.New("not found")

// Entry is one op of the log.
type Entry struct {
	Seq       int64
	DID       string
	CID       string
	CreatedAt time.Time
	Op        []byte // the exact signed DAG-CBOR bytes
	// Decoded is the parsed op, when the reader or writer has it (stores
	// set it on every read).
	Decoded *validate.Op
	// Nullified is filled by reads that report it (Ops, ExportByTime); it
	// is derived state, as of the read.
	Nullified bool
}

// ParsedOp returns the parsed op of e: Decoded, or the op parsed from its
// bytes. The log holds only ops that parsed when they were appended, so an
// error is a corrupted database, not a client's mistake.
func (e *Entry) ParsedOp() (*validate.Op, error) {
	if e.Decoded != nil {
		return e.Decoded, nil
	}
	op, err := validate.ParseCBOR(e.Op)
	if err != nil {
		return nil, fmt.Errorf("op %d (%s) in the log does not parse: %w", e.Seq, e.CID, err)
	}
	return op, nil
}

// DIDRecord is the current, derived state of one DID.
type DIDRecord struct {
	DID     string
	HeadSeq int64
	// State is the chain state; Seqs[i] is the seq of State.Ops[i].
	State validate.State
	Seqs  []int64
	// Head is the latest non-nullified op (the one at HeadSeq): the source
	// of the DID document (none when it is a tombstone).
	Head *validate.Op
}

// Tombstoned reports whether the DID is deactivated.
func (r *DIDRecord) Tombstoned() bool { return r.State.Tombstoned() }

// View is what decide sees inside the append transaction.
type View struct {
	// LastSeq is the seq of the last committed op (0 for an empty log).
	LastSeq int64
	// LastCreatedAt is the createdAt of that op (zero for an empty log).
	LastCreatedAt time.Time
	// Records holds the current record of each requested DID that exists.
	Records map[string]*DIDRecord
	// Load reads, inside the transaction, the current records of more DIDs
	// into Records (those that exist). Set by the store.
	Load func(dids []string) error
	// Cursor is the source's committed cursor when the append names a
	// source (Line and Seq 0 when the source is new); zero otherwise.
	Cursor Cursor
}

// Write is one op to append. Seq must be LastSeq+1 for the first Write of
// a batch and increase by one for each next Write.
type Write struct {
	Entry Entry
	Type  validate.Type
	// Signer is the index of the signing key (validate.Applied.Signer).
	Signer int
	// Nullifies lists the seqs of the ops this op nullifies.
	Nullifies []int64
	// Record is the DID's record after the batch's writes: the Log's
	// writes of one DID in one batch share it (a record per op would make a
	// batch of one DID's ops cost the square of its history). Stores do not
	// read it; the Log's record cache keeps the one of each DID's last
	// write.
	Record *DIDRecord
}

// Batch is what one append transaction writes.
type Batch struct {
	// Writes are the ops to append.
	Writes []Write
	// Rejections are the lines of the source not applied (ID is assigned
	// by the store). Only an append that names a source may write them.
	Rejections []Rejection
	// Cursor is the source's new position (zero when the append names no
	// source). It must not be behind the view's.
	Cursor Cursor
}

// DecideFunc chooses what an append transaction writes given the current
// state. It runs inside the transaction, under the append lock, and must
// not block on anything but CPU.
type DecideFunc func(view View) (Batch, error)

// Cursor is how far the ingest of one source of replayed history (an
// export file, an upstream) has come. It is committed in the same
// transaction as the ops it covers.
type Cursor struct {
	// Source names the input: see ImportOptions.Source.
	Source string
	// Line is the last line done (lines are numbered from 1; 0: none).
	Line int64
	// Seq is the upstream seq of the last seq-mode line done (0: none).
	Seq int64
	// UpdatedAt is when the cursor was last moved (zero when never).
	UpdatedAt time.Time
}

// Rejection is a line of replayed history that was not applied, kept as
// evidence.
type Rejection struct {
	// ID is assigned by the store (1, 2, 3 … in insertion order).
	ID     int64
	Source string
	Line   int64
	// DID and CID are what the line states; empty when it did not say (or
	// could not be read).
	DID, CID string
	// Raw is the line as read.
	Raw []byte
	// Kind says what the rejection is evidence of (empty: KindInvalidOp).
	Kind RejectionKind
	// Reason says why it was rejected.
	Reason string
	// CreatedAt is when it was rejected.
	CreatedAt time.Time
}

// RejectionKind says what a rejection is evidence of. The kinds are a
// bounded set: they label metrics.
type RejectionKind string

const (
	// KindInvalidOp: an op the rules reject (bad signature, CID or DID
	// mismatch, chain-rule violation) or a line that is not one.
	KindInvalidOp RejectionKind = "invalid_op"
	// KindReordered: ops served out of order, or served again.
	KindReordered RejectionKind = "reordered"
	// KindHistoryRewrite: an op the mirror holds is gone from the
	// upstream's audit log, or its createdAt there changed.
	KindHistoryRewrite RejectionKind = "history_rewrite"
	// KindNullification: the upstream's audit log and the mirror disagree
	// on whether an op is nullified.
	KindNullification RejectionKind = "nullification_mismatch"
	// KindBadResponse: an answer that could not be used (bad status, cut
	// off, oversized).
	KindBadResponse RejectionKind = "bad_response"
)

// ErrReordered classes the rejection of a line that comes out of order (a
// seq not after the one before it): its kind is KindReordered.
var ErrReordered = errors.New("out of order")

// Reordered returns err, with its text and classes, classed also as
// ErrReordered.
func Reordered(err error) error { return reorderedError{err} }

type reorderedError struct{ error }

func (e reorderedError) Unwrap() []error { return []error{e.error, ErrReordered} }

// rejectionKind is the kind of the rejection of a line of replayed history
// for err.
func rejectionKind(err error) RejectionKind {
	if errors.Is(err, ErrReordered) {
		return KindReordered
	}
	return KindInvalidOp
}

// Store is the log's storage. See the package doc for the contract.
type Store interface {
	// Append runs one append transaction: lock, read the last seq, the
	// records of dids and, when source is not empty, the source's cursor;
	// call decide; write its ops, and its rejections and cursor; commit.
	// If decide returns an error, or a batch that changes nothing (no ops,
	// no rejections, the cursor where it was), nothing is written.
	Append(ctx context.Context, source string, dids []string, decide DecideFunc) error
	// Cursor returns the committed cursor of source (Line and Seq 0 when
	// there is none).
	Cursor(ctx context.Context, source string) (Cursor, error)
	// Rejections returns up to limit rejections with ID > after, in ID
	// order: every source's when source is empty, else that source's.
	Rejections(ctx context.Context, source string, after int64, limit int) ([]Rejection, error)
	// RejectionsAt returns the rejections of source at line, in ID order.
	RejectionsAt(ctx context.Context, source string, line int64) ([]Rejection, error)
	// HasRejection reports whether a rejection with r's Source, Line, DID,
	// CID, Raw and Reason is stored (whatever its ID and CreatedAt).
	HasRejection(ctx context.Context, r Rejection) (bool, error)
	// Record returns the current record of did, or ErrNotFound.
	Record(ctx context.Context, did string) (*DIDRecord, error)
	// Head returns the latest non-nullified op of did (what resolution
	// needs: one op, not the whole record), or ErrNotFound.
	Head(ctx context.Context, did string) (Entry, error)
	// Heads returns what Head returns for each of dids that is
	// registered, keyed by DID (the others are absent), in one query per
	// HeadsPerQuery DIDs: bulk resolution.
	Heads(ctx context.Context, dids []string) (map[string]Entry, error)
	// Ops returns every op of did in log order, with Nullified set.
	Ops(ctx context.Context, did string) ([]Entry, error)
	// Op returns the op with the given seq, or ErrNotFound.
	Op(ctx context.Context, seq int64) (Entry, error)
	// Export returns up to limit ops with seq > after, in seq order.
	Export(ctx context.Context, after int64, limit int) ([]Entry, error)
	// ExportByTime returns up to limit ops with createdAt > after, ordered
	// by (createdAt, cid), with Nullified set.
	ExportByTime(ctx context.Context, after time.Time, limit int) ([]Entry, error)
	// LatestSeq returns the seq of the last committed op (0 when empty).
	LatestSeq(ctx context.Context) (int64, error)
	// TreeSize returns the number of leaves (ops) the stored transparency
	// log covers: LatestSeq, unless the database predates it (see
	// CatchUpTree).
	TreeSize(ctx context.Context) (int64, error)
	// ReadHashes returns the transparency log's stored hashes with the
	// given indexes (golang.org/x/mod/sumdb/tlog's numbering).
	ReadHashes(ctx context.Context, idx []int64) ([]tlog.Hash, error)
	// ExtendTree computes and stores, under the append lock, the tree
	// hashes of up to limit ops the tree does not cover yet, and returns
	// how many it covered (0: the tree covers the log).
	ExtendTree(ctx context.Context, limit int) (int, error)
	// Checkpoint returns the latest signed checkpoint, or ErrNotFound.
	Checkpoint(ctx context.Context) (Checkpoint, error)
	// SwapCheckpoint replaces the checkpoint old (nil: none yet) with
	// next, atomically: ErrCheckpointRace when the stored one is not old.
	// The database refuses a smaller checkpoint, or another root for the
	// same size.
	SwapCheckpoint(ctx context.Context, old *Checkpoint, next Checkpoint) error
	// Ping checks that the database answers.
	Ping(ctx context.Context) error
	Close() error
}

var (
	_ Store = (*SQLiteStore)(nil)
	_ Store = (*PostgresStore)(nil)
)
