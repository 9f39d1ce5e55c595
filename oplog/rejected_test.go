package oplog_test

import (
	"context"
	"testing"
	"time"

	"github.com/plcdir/plc/oplog"
)

// testRejectionLookups checks HasRejection and RejectionsAt (part of the
// conformance suite, through testIngest).
func testRejectionLookups(t *testing.T, migrated func(t *testing.T) (oplog.Store, string)) {
	ctx := context.Background()
	t.Run("RejectionLookups", func(t *testing.T) {
		s, _ := migrated(t)
		const src, other = "upstream:https://a.test", "upstream:https://b.test"
		base := oplog.Rejection{Source: src, Line: 0, DID: "did:plc:x", CID: "bafyx", Raw: []byte("evidence\x00\xff"), Reason: "bad_response: status 500", CreatedAt: at(time.Minute)}
		empty := oplog.Rejection{Source: src, Line: 0, Raw: nil, Reason: "bad_response: at least 5 ops", CreatedAt: at(time.Minute)}
		atLine := []oplog.Rejection{
			{Source: src, Line: 7, DID: "did:plc:y", CID: "bafyy", Raw: []byte(`{"seq":7}`), Reason: "invalid signature", CreatedAt: at(2 * time.Minute)},
			{Source: src, Line: 7, Raw: []byte("again"), Reason: "reordered", CreatedAt: at(3 * time.Minute)},
			{Source: other, Line: 7, Raw: []byte("other"), Reason: "r", CreatedAt: at(3 * time.Minute)},
		}
		var stored []oplog.Rejection
		stored = append(stored, base, empty)
		stored = append(stored, atLine...)
		for _, batch := range [][]oplog.Rejection{stored[:4], stored[4:]} {
			err := s.Append(ctx, batch[0].Source, nil, func(v oplog.View) (oplog.Batch, error) {
				return oplog.Batch{Rejections: batch, Cursor: v.Cursor}, nil
			})
			if err != nil {
				t.Fatalf("Ingest: %v", err)
			}
		}

		has := func(r oplog.Rejection) bool {
			t.Helper()
			ok, err := s.HasRejection(ctx, r)
			if err != nil {
				t.Fatalf("HasRejection: %v", err)
			}
			return ok
		}
		for i, r := range stored {
			r.CreatedAt = at(time.Hour) // not part of the match
			r.ID = 99
			if !has(r) {
				t.Errorf("HasRejection of stored rejection %d (%q): false", i, r.Reason)
			}
		}
		withEmptyRaw := empty
		withEmptyRaw.Raw = []byte{}
		if !has(withEmptyRaw) {
			t.Error("HasRejection with []byte{} evidence of a rejection stored with nil evidence: false")
		}
		for name, edit := range map[string]func(r *oplog.Rejection){
			"another source": func(r *oplog.Rejection) { r.Source = other },
			"another line":   func(r *oplog.Rejection) { r.Line = 1 },
			"another did":    func(r *oplog.Rejection) { r.DID = "did:plc:z" },
			"another cid":    func(r *oplog.Rejection) { r.CID = "bafyz" },
			"another reason": func(r *oplog.Rejection) { r.Reason = "bad_response: status 502" },
			"another raw":    func(r *oplog.Rejection) { r.Raw = []byte("evidence\x00\xfe") },
			"a prefix raw":   func(r *oplog.Rejection) { r.Raw = []byte("evidence") },
			"no raw":         func(r *oplog.Rejection) { r.Raw = nil },
		} {
			r := base
			edit(&r)
			if has(r) {
				t.Errorf("HasRejection with %s: true", name)
			}
		}

		got, err := s.RejectionsAt(ctx, src, 7)
		if err != nil {
			t.Fatalf("RejectionsAt: %v", err)
		}
		want := []oplog.Rejection{atLine[0], atLine[1]}
		want[0].ID, want[1].ID = 3, 4
		if len(got) != len(want) || !sameRejection(got[0], want[0]) || !sameRejection(got[1], want[1]) {
			t.Fatalf("RejectionsAt(%s, 7):\n got  %+v\n want %+v", src, got, want)
		}
		if got, err := s.RejectionsAt(ctx, src, 8); err != nil || len(got) != 0 {
			t.Fatalf("RejectionsAt of a line without any: %+v, %v", got, err)
		}
	})
}
