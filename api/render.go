package api

import (
	"encoding/base64"
	"strconv"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// Renderings of log entries, byte-compatible with the reference.

// appendOpJSON appends the op of e as JSON in the reference key order.
func appendOpJSON(dst []byte, e *oplog.Entry) ([]byte, error) {
	op, err := e.ParsedOp()
	if err != nil {
		return dst, err
	}
	return op.AppendJSON(dst), nil
}

// appendAuditEntry appends e as an /:did/log/audit element (a legacy
// /export line).
func appendAuditEntry(dst []byte, e *oplog.Entry) ([]byte, error) {
	op, err := e.ParsedOp()
	if err != nil {
		return dst, err
	}
	return validate.AppendAuditEntryJSON(dst, e.DID, op, e.Nullified, e.CreatedAt), nil
}

// appendSequencedEntry appends e as a seq-mode /export line (an
// /export/stream event).
func appendSequencedEntry(dst []byte, e *oplog.Entry) ([]byte, error) {
	op, err := e.ParsedOp()
	if err != nil {
		return dst, err
	}
	return validate.AppendSequencedJSON(dst, e.DID, op, e.CreatedAt, e.Seq), nil
}

// appendProof appends, to an audit entry whose closing brace was cut, its
// seq and its inclusion proof against cp (null when the op is newer than
// cp), and closes it:
//
//	,"seq":N,"proof":{"treeSize":S,"leafIndex":N-1,"hashes":[…],"checkpoint":"…"}}
func appendProof(dst []byte, seq int64, cp *oplog.Checkpoint, proof []tlog.Hash) []byte {
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendInt(dst, seq, 10)
	dst = append(dst, `,"proof":`...)
	if proof == nil {
		return append(dst, `null}`...)
	}
	dst = append(dst, `{"treeSize":`...)
	dst = strconv.AppendInt(dst, cp.Size, 10)
	dst = append(dst, `,"leafIndex":`...)
	dst = strconv.AppendInt(dst, seq-1, 10)
	dst = append(dst, `,"hashes":[`...)
	for i, h := range proof {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, h[:])
		dst = append(dst, '"')
	}
	dst = append(dst, `],"checkpoint":`...)
	dst = validate.AppendJSONString(dst, string(cp.Note))
	return append(dst, `}}`...)
}
