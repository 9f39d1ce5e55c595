package api

import (
	"fmt"
	"strconv"

	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// Renderings of log entries, byte-compatible with the reference.

// appendOpJSON appends the op of e as JSON in the reference key order.
func appendOpJSON(dst []byte, e *oplog.Entry) ([]byte, error) {
	if e.Decoded != nil {
		return e.Decoded.AppendJSON(dst), nil
	}
	op, err := validate.ParseCBOR(e.Op)
	if err != nil {
		// The log holds only ops that parsed when they were appended: this
		// is a corrupted database, not a client error.
		return dst, fmt.Errorf("op %d (%s) in the log does not parse: %w", e.Seq, e.CID, err)
	}
	return op.AppendJSON(dst), nil
}

// appendAuditEntry appends {did, operation, cid, nullified, createdAt}: an
// element of /:did/log/audit and a line of the legacy /export.
func appendAuditEntry(dst []byte, e *oplog.Entry) ([]byte, error) {
	dst = append(dst, `{"did":`...)
	dst = validate.AppendJSONString(dst, e.DID)
	dst = append(dst, `,"operation":`...)
	dst, err := appendOpJSON(dst, e)
	if err != nil {
		return dst, err
	}
	dst = append(dst, `,"cid":`...)
	dst = validate.AppendJSONString(dst, e.CID)
	dst = append(dst, `,"nullified":`...)
	dst = strconv.AppendBool(dst, e.Nullified)
	dst = append(dst, `,"createdAt":"`...)
	dst = validate.AppendTimestamp(dst, e.CreatedAt)
	return append(dst, `"}`...), nil
}

// appendSequencedEntry appends a seq-mode /export line and /export/stream
// event: {type: "sequenced_op", did, operation, cid, createdAt, seq}.
func appendSequencedEntry(dst []byte, e *oplog.Entry) ([]byte, error) {
	dst = append(dst, `{"type":"sequenced_op","did":`...)
	dst = validate.AppendJSONString(dst, e.DID)
	dst = append(dst, `,"operation":`...)
	dst, err := appendOpJSON(dst, e)
	if err != nil {
		return dst, err
	}
	dst = append(dst, `,"cid":`...)
	dst = validate.AppendJSONString(dst, e.CID)
	dst = append(dst, `,"createdAt":"`...)
	dst = validate.AppendTimestamp(dst, e.CreatedAt)
	dst = append(dst, `","seq":`...)
	dst = strconv.AppendInt(dst, e.Seq, 10)
	return append(dst, '}'), nil
}
