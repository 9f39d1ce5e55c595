package audit

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/plcdir/plc"
	plctlog "github.com/plcdir/plc/tlog"
	"github.com/plcdir/plc/validate"
)

// ErrProof: an entry's inclusion proof is missing or does not verify.
var ErrProof = errors.New("inclusion proof")

// VerifyProofs checks the inclusion proof of every entry of an audit log
// fetched with ?proof=true: the checkpoint it is against must be signed
// by v, and the entry's leaf (recomputed from its did, operation, cid,
// createdAt and seq) must be at its seq in that checkpoint's tree. It
// returns the index of the first entry that fails, with the reason.
func VerifyProofs(entries []plc.AuditEntry, v note.Verifier) (int, error) {
	for i, e := range entries {
		if err := verifyProof(&e, v); err != nil {
			return i, fmt.Errorf("%w: %v", ErrProof, err)
		}
	}
	return -1, nil
}

func verifyProof(e *plc.AuditEntry, v note.Verifier) error {
	if e.Seq < 1 {
		return errors.New("the entry has no seq (fetch the log with ?proof=true)")
	}
	if e.Proof == nil {
		return errors.New("the entry has no proof (it is newer than the directory's latest checkpoint: fetch it again)")
	}
	p := e.Proof
	body, _, err := plctlog.OpenCheckpoint([]byte(p.Checkpoint), v)
	if err != nil {
		return err
	}
	if body.Size != p.TreeSize || p.LeafIndex != e.Seq-1 || e.Seq > body.Size {
		return fmt.Errorf("proof of leaf %d in a tree of %d does not fit seq %d and the checkpoint's size %d", p.LeafIndex, p.TreeSize, e.Seq, body.Size)
	}
	op, err := validate.ParseJSON(e.Operation)
	if err != nil {
		return fmt.Errorf("operation: %v", err)
	}
	if op.CID() != e.CID {
		return fmt.Errorf("cid %s is not the operation's (%s)", e.CID, op.CID())
	}
	at, err := time.Parse(time.RFC3339Nano, e.CreatedAt)
	if err != nil {
		return fmt.Errorf("createdAt %q: %v", e.CreatedAt, err)
	}
	hashes, err := plctlog.DecodeHashes(p.Hashes)
	if err != nil {
		return err
	}
	leaf := tlog.RecordHash(plc.AppendLeaf(nil, &plc.Leaf{Seq: e.Seq, DID: e.DID, CID: e.CID, CreatedAt: at, Op: op.SignedCBOR()}))
	if err := tlog.CheckRecord(tlog.RecordProof(hashes), body.Size, body.Root, e.Seq-1, leaf); err != nil {
		return fmt.Errorf("leaf %d is not in the checkpoint's tree: %v", e.Seq-1, err)
	}
	return nil
}
