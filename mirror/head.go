package mirror

import (
	"bytes"
	"context"
	"fmt"
	"strconv"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// The head check. An empty page after the cursor says either that the
// upstream is idle or that it has lost ops the mirror holds: its export
// now ends before the cursor. To tell them apart, the mirror asks for the
// op at the cursor again (/export?after=<cursor-1>&count=1), which must be
// the export line it took at that seq: the same seq, did, cid, createdAt
// and operation.

// heldLine is the export line the mirror took at its cursor's seq.
type heldLine struct {
	line     []byte
	did, cid string
}

// checkHead checks, at most once per PollInterval, that the upstream still
// serves the op at the committed cursor. When its answer has no op at the
// cursor's seq, or another one, the upstream has dropped or rewritten
// history the mirror holds: that is a history_rewrite divergence, with the
// answer as evidence (recorded once). An answer that cannot be read is a
// bad response, returned as the error.
func (m *Mirror) checkHead(ctx context.Context) error {
	now := m.cfg.Now()
	m.mu.Lock()
	if !m.headChecked.IsZero() && now.Sub(m.headChecked) < m.cfg.PollInterval {
		m.mu.Unlock()
		return nil
	}
	m.headChecked = now
	m.mu.Unlock()

	c, err := m.store.Cursor(ctx, m.source)
	if err != nil || c.Seq == 0 {
		return err
	}
	held, ok, err := m.heldAt(ctx, c)
	if err != nil || !ok {
		return err
	}
	after := c.Seq - 1
	body, err := m.up.Export(ctx, strconv.FormatInt(after, 10), 1)
	if err != nil {
		return err
	}
	lines := plc.ExportLines(body)
	var answer string
	if len(lines) == 0 {
		answer = "nothing"
	} else {
		pl, err := plc.ReadLineHead(lines[0])
		if err != nil {
			return badResponse(body, "GET /export?after=%d&count=1: the first line is not an export line: %v", after, err)
		}
		switch {
		case pl.Seq == 0:
			return badResponse(body, "GET /export?after=%d&count=1: the first line has no seq", after)
		case pl.Seq != c.Seq:
			answer = "seq " + strconv.FormatInt(pl.Seq, 10)
		case sameExportLine(lines[0], held.line):
			return nil
		default:
			m.record(ctx, Divergence{Kind: oplog.KindHistoryRewrite, DID: held.did, CID: held.cid, Evidence: body,
				Detail: fmt.Sprintf("the upstream now serves another op at seq %d than the one this mirror took from it there (%s of %s)", c.Seq, held.cid, held.did)})
			return nil
		}
	}
	m.record(ctx, Divergence{Kind: oplog.KindHistoryRewrite, DID: held.did, CID: held.cid, Evidence: body,
		Detail: fmt.Sprintf("seq %d, the last op this mirror took from the upstream (%s of %s), is gone from its export: asked for the op after seq %d, it answered %s", c.Seq, held.cid, held.did, after, answer)})
	return nil
}

// heldAt returns the export line the mirror took at the seq of cursor c:
// the line at c.Line, which carries that seq (the last line of a page
// always has one, and stream events without one are rejected). If that
// line was rejected, it is the rejection's evidence; else it was applied,
// and is the log's latest op (a mirror's log has no other writer). ok is
// false when the line at c.Line was rejected as out of order or has no
// seq: the op at c.Seq came earlier, and is not looked for.
func (m *Mirror) heldAt(ctx context.Context, c oplog.Cursor) (heldLine, bool, error) {
	rs, err := m.store.RejectionsAt(ctx, m.source, c.Line)
	if err != nil {
		return heldLine{}, false, err
	}
	for _, r := range rs {
		if r.Kind == oplog.KindReordered {
			continue
		}
		if l, _, _ := plc.ParseExportLine(r.Raw); l.Seq == c.Seq {
			return heldLine{line: r.Raw, did: r.DID, cid: r.CID}, true, nil
		}
	}
	if len(rs) > 0 || m.droppedAt(c.Line) {
		// Rejected: the op at c.Seq came earlier. Or rejected past the
		// evidence cap, not stored: not known.
		return heldLine{}, false, nil
	}
	seq, err := m.store.LatestSeq(ctx)
	if err != nil || seq == 0 {
		return heldLine{}, false, err
	}
	e, err := m.store.Op(ctx, seq)
	if err != nil {
		return heldLine{}, false, err
	}
	op, err := e.ParsedOp()
	if err != nil {
		return heldLine{}, false, err
	}
	return heldLine{line: validate.AppendSequencedJSON(nil, e.DID, op, e.CreatedAt, c.Seq), did: e.DID, cid: e.CID}, true, nil
}

// sameExportLine reports whether two export lines say the same: the same
// seq, did, cid, createdAt and operation (as signed bytes), whatever their
// spacing or key order. Lines that do not parse are compared as bytes.
func sameExportLine(a, b []byte) bool {
	x, _, errX := plc.ParseExportLine(a)
	y, _, errY := plc.ParseExportLine(b)
	if errX != nil || errY != nil {
		return bytes.Equal(bytes.TrimSpace(a), bytes.TrimSpace(b))
	}
	return x.Seq == y.Seq && x.DID == y.DID && x.CID == y.CID && x.CreatedAt.Equal(y.CreatedAt) &&
		bytes.Equal(x.Op.SignedCBOR(), y.Op.SignedCBOR())
}
