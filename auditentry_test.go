package plc_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/internal/optest"
	"github.com/plcdir/plc/validate"
)

func TestReadLogRejectsTrailingData(t *testing.T) {
	if _, err := plc.ReadAuditLog(strings.NewReader(`[] []`)); err == nil {
		t.Error("data after the array accepted")
	}
	if _, err := plc.ReadAuditLog(strings.NewReader(`{"did":"x"}`)); err == nil {
		t.Error("an object accepted as a log")
	}
}

// TestRenderedLinesReadBack holds validate's renderers of audit entries
// and export lines to this package's readers of them: what is rendered is
// read back as it was.
func TestRenderedLinesReadBack(t *testing.T) {
	id := optest.NewIdentity(t, "alice.test", 1)
	op := id.Head
	at := time.Date(2024, 5, 6, 7, 8, 9, 10e6, time.UTC)

	for _, nullified := range []bool{false, true} {
		b := validate.AppendAuditEntryJSON(nil, id.DID, op, nullified, at)
		entries, err := plc.ReadAuditLog(bytes.NewReader(append(append([]byte("["), b...), ']')))
		if err != nil || len(entries) != 1 {
			t.Fatalf("ReadAuditLog(%s): %v %v", b, entries, err)
		}
		e := entries[0]
		if e.DID != id.DID || e.CID != op.CID() || e.Nullified != nullified || e.CreatedAt != string(validate.AppendTimestamp(nil, at)) ||
			!json.Valid(e.Operation) || !bytes.Equal(e.Operation, op.AppendJSON(nil)) {
			t.Errorf("ReadAuditLog(%s) = %+v", b, e)
		}
		// The same line is a legacy export line, its flag kept as stated.
		l, looks, err := plc.ParseExportLine(b)
		if err != nil || !looks || l.DID != id.DID || l.CID != op.CID() || !l.CreatedAt.Equal(at) || l.Seq != 0 ||
			!l.HasNullified || l.Nullified != nullified || !bytes.Equal(l.Op.SignedCBOR(), op.SignedCBOR()) {
			t.Errorf("ParseExportLine(%s) = %+v, %v, %v", b, l, looks, err)
		}
	}

	b := validate.AppendSequencedJSON(nil, id.DID, op, at, 42)
	l, looks, err := plc.ParseExportLine(b)
	if err != nil || !looks || l.DID != id.DID || l.CID != op.CID() || !l.CreatedAt.Equal(at) || l.Seq != 42 || l.HasNullified ||
		!bytes.Equal(l.Op.SignedCBOR(), op.SignedCBOR()) {
		t.Errorf("ParseExportLine(%s) = %+v, %v, %v", b, l, looks, err)
	}
	h, err := plc.ReadLineHead(b)
	if err != nil || h != (plc.LineHead{DID: id.DID, CID: op.CID(), CreatedAt: string(validate.AppendTimestamp(nil, at)), Seq: 42}) {
		t.Errorf("ReadLineHead(%s) = %+v, %v", b, h, err)
	}
}
