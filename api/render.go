package api

import (
	"fmt"

	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// Renderings of log entries, byte-compatible with the reference.

// entryOp returns the parsed op of e.
func entryOp(e *oplog.Entry) (*validate.Op, error) {
	if e.Decoded != nil {
		return e.Decoded, nil
	}
	op, err := validate.ParseCBOR(e.Op)
	if err != nil {
		// The log holds only ops that parsed when they were appended: this
		// is a corrupted database, not a client error.
		return nil, fmt.Errorf("op %d (%s) in the log does not parse: %w", e.Seq, e.CID, err)
	}
	return op, nil
}

// appendOpJSON appends the op of e as JSON in the reference key order.
func appendOpJSON(dst []byte, e *oplog.Entry) ([]byte, error) {
	op, err := entryOp(e)
	if err != nil {
		return dst, err
	}
	return op.AppendJSON(dst), nil
}

// appendAuditEntry appends e as an /:did/log/audit element (a legacy
// /export line).
func appendAuditEntry(dst []byte, e *oplog.Entry) ([]byte, error) {
	op, err := entryOp(e)
	if err != nil {
		return dst, err
	}
	return validate.AppendAuditEntryJSON(dst, e.DID, op, e.Nullified, e.CreatedAt), nil
}

// appendSequencedEntry appends e as a seq-mode /export line (an
// /export/stream event).
func appendSequencedEntry(dst []byte, e *oplog.Entry) ([]byte, error) {
	op, err := entryOp(e)
	if err != nil {
		return dst, err
	}
	return validate.AppendSequencedJSON(dst, e.DID, op, e.CreatedAt, e.Seq), nil
}
