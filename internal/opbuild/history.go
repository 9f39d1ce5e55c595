package opbuild

import (
	"errors"
	"fmt"
	"time"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/validate"
)

// ErrHistory is the class of errors about a fetched audit log that does
// not replay: the directory sent a history the chain rules refuse.
var ErrHistory = errors.New("audit log does not replay")

// Entry is one op of a DID's history.
type Entry struct {
	Op        *validate.Op
	CreatedAt time.Time
	Nullified bool
	// Signer is the index, among the keys allowed to sign it, of the key
	// that signed the op (validate.ChainOp.Signer).
	Signer int
}

// History is a DID's history, replayed: every op in log order, and the
// chain state of its non-nullified ops. The zero History with DID set is
// that of a DID with no ops.
type History struct {
	DID     string
	Entries []Entry
	State   validate.State
}

// Replay replays a DID's audit log (GET /:did/log/audit), each op at its
// createdAt: every CID, signature and chain rule is recomputed, and the
// log's nullified flags must equal the recomputed ones.
func Replay(did string, log []plc.AuditEntry) (*History, error) {
	if !validate.ValidDID(did) {
		return nil, fmt.Errorf("%q is not a did:plc identifier", did)
	}
	h := &History{DID: did, State: validate.State{DID: did}}
	index := make(map[string]int, len(log))
	for i, e := range log {
		fail := func(format string, a ...any) error {
			return fmt.Errorf("%w: entry %d (%s): %s", ErrHistory, i, e.CID, fmt.Sprintf(format, a...))
		}
		if e.DID != did {
			return nil, fail("it is an op of %s", e.DID)
		}
		at, err := validate.ParseTimestamp(e.CreatedAt)
		if err != nil {
			return nil, fail("createdAt %q: %v", e.CreatedAt, err)
		}
		op, err := validate.ParseJSON(e.Operation)
		if err != nil {
			return nil, fail("%v", err)
		}
		if op.CID() != e.CID {
			return nil, fail("the op hashes to %s", op.CID())
		}
		applied, err := h.State.Apply(op, at) // the state is ours: extended in place
		if err != nil {
			return nil, fail("%s", describe(err))
		}
		for _, c := range applied.Nullified {
			h.Entries[index[c]].Nullified = true
		}
		index[op.CID()] = len(h.Entries)
		h.Entries = append(h.Entries, Entry{Op: op, CreatedAt: at.UTC().Truncate(time.Millisecond), Signer: applied.Signer})
	}
	for i, e := range log {
		if e.Nullified != h.Entries[i].Nullified {
			return nil, fmt.Errorf("%w: entry %d (%s): the directory says nullified=%t, the chain rules say %t",
				ErrHistory, i, e.CID, e.Nullified, h.Entries[i].Nullified)
		}
	}
	return h, nil
}

// op returns the non-nullified op with cid.
func (h *History) op(cid string) *validate.Op {
	for i := len(h.Entries) - 1; i >= 0; i-- {
		if e := h.Entries[i]; !e.Nullified && e.Op.CID() == cid {
			return e.Op
		}
	}
	return nil
}

// describe is a validate verdict's short reason, or err's text.
func describe(err error) string {
	var ve *validate.Error
	if errors.As(err, &ve) {
		switch {
		case ve.Reason == "" || ve.Reason == ve.Message:
		case len(ve.Message) > 160: // it embeds the whole op
			return ve.Reason
		default:
			return ve.Message + " (" + ve.Reason + ")"
		}
		return ve.Message
	}
	return err.Error()
}
