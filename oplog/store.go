// Package oplog is the directory's append-only operation log: the Store
// contract, its PostgreSQL and SQLite implementations, and the sequencer
// (Log) through which every op is appended.
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
//
// The conformance suite in this package's tests runs against both
// implementations.
package oplog

import (
	"context"
	"errors"
	"time"

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
	// Nullified is filled by reads that report it (Ops, ExportByTime); it
	// is derived state, as of the read.
	Nullified bool
}

// DIDRecord is the current, derived state of one DID.
type DIDRecord struct {
	DID     string
	HeadSeq int64
	// State is the chain state; Seqs[i] is the seq of State.Ops[i].
	State validate.State
	Seqs  []int64
	// Doc and Data are the rendered DID document and /data JSON of the
	// head op; nil when the DID is tombstoned.
	Doc, Data []byte
}

// Tombstoned reports whether the DID is deactivated.
func (r *DIDRecord) Tombstoned() bool { return r.State.Tombstoned() }

// AppendView is what decide sees inside the append transaction.
type AppendView struct {
	// LastSeq is the seq of the last committed op (0 for an empty log).
	LastSeq int64
	// LastCreatedAt is the createdAt of that op (zero for an empty log).
	LastCreatedAt time.Time
	// Records holds the current record of each requested DID that exists.
	Records map[string]*DIDRecord
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
	// Record is the DID's record after this op.
	Record DIDRecord
}

// DecideFunc chooses the ops to append given the current state. It runs
// inside the append transaction, under the append lock, and must not block
// on anything but CPU.
type DecideFunc func(view AppendView) ([]Write, error)

// Store is the log's storage. See the package doc for the contract.
type Store interface {
	// Append runs one append transaction: lock, read the last seq and the
	// records of dids, call decide, write its Writes, commit. If decide
	// returns an error or no writes, nothing is written.
	Append(ctx context.Context, dids []string, decide DecideFunc) error
	// Record returns the current record of did, or ErrNotFound.
	Record(ctx context.Context, did string) (*DIDRecord, error)
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
	// Ping checks that the database answers.
	Ping(ctx context.Context) error
	Close() error
}
