package opbuild

import (
	"errors"
	"fmt"
	"time"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/audit"
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
// createdAt (audit.ReplayLog): every CID, signature and chain rule is
// recomputed, and the log's nullified flags must equal the recomputed ones.
func Replay(did string, log []plc.AuditEntry) (*History, error) {
	if !validate.ValidDID(did) {
		return nil, fmt.Errorf("%q is not a did:plc identifier", did)
	}
	r, f := audit.ReplayLog(did, log)
	if f != nil {
		msg := describe(f.Err)
		if errors.Is(f.Err, audit.ErrNullifiedMismatch) {
			said := log[f.Index].Nullified
			msg = fmt.Sprintf("the directory says nullified=%t, the chain rules say %t", said, !said)
		}
		return nil, fmt.Errorf("%w: entry %d (%s): %s", ErrHistory, f.Index, f.CID, msg)
	}
	h := &History{DID: did, State: r.State}
	for i, op := range r.Ops {
		h.Entries = append(h.Entries, Entry{Op: op, CreatedAt: r.CreatedAt[i].UTC().Truncate(time.Millisecond),
			Nullified: r.Nullified[i], Signer: r.Signers[i]})
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
