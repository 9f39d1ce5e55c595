package audit

import (
	"errors"
	"fmt"
	"time"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/validate"
)

// Classes of audit-log failures that are not did:plc rule violations (those
// wrap the validate.Err* classes).
var (
	// ErrEntry: an entry is not a well-formed audit-log entry.
	ErrEntry = errors.New("malformed audit log entry")
	// ErrDIDMismatch: an entry names another DID than the log's.
	ErrDIDMismatch = errors.New("did mismatch")
	// ErrCIDMismatch: an entry's cid is not the CID of its operation.
	ErrCIDMismatch = errors.New("cid mismatch")
	// ErrNullifiedMismatch: an entry's nullified flag differs from the one
	// the chain rules compute.
	ErrNullifiedMismatch = errors.New("nullified flag mismatch")
	// ErrEmptyLog: the log has no entries.
	ErrEmptyLog = errors.New("empty audit log")
)

// LogResult is the verdict on one audit log.
type LogResult struct {
	DID       string
	Ops       int
	Nullified int
	// Failure is nil when the whole log is valid.
	Failure *LogFailure
}

// LogFailure locates the first problem in a log.
type LogFailure struct {
	Index int    // 0-based index of the entry
	CID   string // the entry's recorded cid
	Err   error
}

func (f *LogFailure) Error() string {
	return fmt.Sprintf("op %d %s: %v", f.Index, f.CID, f.Err)
}

func (f *LogFailure) Unwrap() error { return f.Err }

// Replayed is an audit log as ReplayLog replayed it: per entry, in order,
// the parsed op, its createdAt, the index of the key that signed it among
// those allowed to (validate.ChainOp.Signer) and its nullified flag as the
// chain rules compute it; and the chain state after the last.
type Replayed struct {
	Ops       []*validate.Op
	CreatedAt []time.Time
	Signers   []int
	Nullified []bool
	State     validate.State
}

// ReplayLog replays the audit log entries of did in order, each at its
// createdAt, and checks every entry's DID and CID, every signature, the
// chain rules, and that the recorded nullified flags equal the recomputed
// ones. It returns the first failure, or the replayed log (that of a DID
// with no ops when entries is empty).
func ReplayLog(did string, entries []plc.AuditEntry) (*Replayed, *LogFailure) {
	r := &Replayed{State: validate.State{DID: did}}
	fail := func(i int, err error) (*Replayed, *LogFailure) {
		return nil, &LogFailure{Index: i, CID: entries[i].CID, Err: err}
	}
	if len(entries) == 0 {
		return r, nil
	}
	if !validate.ValidDID(did) {
		return fail(0, fmt.Errorf("%w: %q is not a did:plc identifier", ErrDIDMismatch, did))
	}
	r.Nullified = make([]bool, len(entries))
	index := make(map[string]int, len(entries))
	for i, e := range entries {
		if e.DID != did {
			return fail(i, fmt.Errorf("%w: entry is for %s", ErrDIDMismatch, e.DID))
		}
		createdAt, err := validate.ParseTimestamp(e.CreatedAt)
		if err != nil {
			return fail(i, fmt.Errorf("%w: createdAt %q: %v", ErrEntry, e.CreatedAt, err))
		}
		if len(e.Operation) == 0 {
			return fail(i, fmt.Errorf("%w: no operation", ErrEntry))
		}
		op, err := validate.ParseJSON(e.Operation)
		if err != nil {
			return fail(i, err)
		}
		if op.CID() != e.CID {
			return fail(i, fmt.Errorf("%w: operation hashes to %s", ErrCIDMismatch, op.CID()))
		}
		applied, err := r.State.Apply(op, createdAt) // the state is ours: extended in place
		if err != nil {
			return fail(i, err)
		}
		for _, c := range applied.Nullified {
			r.Nullified[index[c]] = true
		}
		index[op.CID()] = i
		r.Ops = append(r.Ops, op)
		r.CreatedAt = append(r.CreatedAt, createdAt)
		r.Signers = append(r.Signers, applied.Signer)
	}
	for i, e := range entries {
		if e.Nullified != r.Nullified[i] {
			return fail(i, fmt.Errorf("%w: recorded %t, recomputed %t", ErrNullifiedMismatch, e.Nullified, r.Nullified[i]))
		}
	}
	return r, nil
}

// VerifyLog replays entries in order, each at its createdAt, and checks
// every CID, the DID, every signature, the chain rules, and that the
// recorded nullified flags equal the recomputed ones (see ReplayLog).
func VerifyLog(entries []plc.AuditEntry) LogResult {
	if len(entries) == 0 {
		return LogResult{Failure: &LogFailure{Index: -1, Err: ErrEmptyLog}}
	}
	did := entries[0].DID
	res := LogResult{DID: did, Ops: len(entries)}
	r, f := ReplayLog(did, entries)
	if f != nil {
		res.Failure = f
		return res
	}
	for _, n := range r.Nullified {
		if n {
			res.Nullified++
		}
	}
	return res
}
