package web

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plcdir/plc/internal/optest"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

var h0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

// replay accepts ops in order at their times, as a store would, and
// returns the entries with the Nullified flags the chain rules give, and
// the signer indexes of the ops left on the chain (what a store records).
func replay(t *testing.T, did string, ops []*validate.Op, at []time.Duration) ([]oplog.Entry, map[int64]int) {
	t.Helper()
	st := validate.State{DID: did}
	var entries []oplog.Entry
	signers := map[int64]int{}
	bySeq := map[string]int64{}
	for i, op := range ops {
		next, applied, err := st.Next(op, h0.Add(at[i]))
		if err != nil {
			t.Fatalf("op %d: %v", i+1, err)
		}
		seq := int64(i + 1)
		entries = append(entries, oplog.Entry{Seq: seq, DID: did, CID: op.CID(), CreatedAt: h0.Add(at[i]), Op: op.SignedCBOR(), Decoded: op})
		signers[seq] = applied.Signer
		bySeq[op.CID()] = seq
		for _, cid := range applied.Nullified {
			entries[bySeq[cid]-1].Nullified = true
			delete(signers, bySeq[cid])
		}
		st = next
	}
	return entries, signers
}

// TestNestedForks: a recovery that is itself undone by a higher key puts
// the ops it nullified one lane further out; every signer is found, the
// nullified ones by checking their signatures.
func TestNestedForks(t *testing.T) {
	id := optest.NewIdentity(t, "nest.test", 3)
	g := optest.Sign(t, id.Body, id.Rotation[2])
	id.Head, id.DID = g, g.GenesisDID()
	a := id.Update(t, g, 2, "a.test")   // signed by key 2
	r1 := id.Update(t, g, 1, "r1.test") // key 1 < 2: nullifies a
	r2 := id.Update(t, g, 0, "r2.test") // key 0 < 1: nullifies r1
	u := id.Update(t, r2, 2, "u.test")
	entries, signers := replay(t, id.DID, []*validate.Op{g, a, r1, r2, u},
		[]time.Duration{0, time.Hour, 2 * time.Hour, 2*time.Hour + 72*time.Hour, 80 * time.Hour})
	if len(signers) != 3 {
		t.Fatalf("store's signers %v: want those of #1, #4, #5", signers)
	}
	ops, err := history(entries, signers)
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		depth, prev, nullifiedBy, signer int
		recovery                         []int
	}
	for i, w := range []want{
		{depth: 0, prev: 0, signer: 2},
		{depth: 2, prev: 1, nullifiedBy: 3, signer: 2},
		{depth: 1, prev: 1, nullifiedBy: 4, signer: 1, recovery: []int{2}},
		{depth: 0, prev: 1, signer: 0, recovery: []int{3}},
		{depth: 0, prev: 4, signer: 2},
	} {
		o := ops[i]
		var rec []int
		if o.Recovery != nil {
			rec = o.Recovery.Nullified
		}
		if o.Depth != w.depth || o.Prev != w.prev || o.NullifiedBy != w.nullifiedBy || o.SignerIndex != w.signer ||
			o.Signer != id.Rotation[w.signer].DID || !slices.Equal(rec, w.recovery) {
			t.Errorf("#%d: depth %d prev %d nullifiedBy %d signer %d (%s) recovery %v; want %+v",
				i+1, o.Depth, o.Prev, o.NullifiedBy, o.SignerIndex, o.Signer, rec, w)
		}
	}
	// The second recovery came exactly at the end of its window (72 h
	// after #3, the op it nullified): allowed, and the gauge is full.
	r := ops[3].Recovery
	if r.ForkAt != 1 || !r.WindowStart.Equal(h0.Add(2*time.Hour)) || !r.WindowEnd.Equal(h0.Add(74*time.Hour)) || r.Elapsed != 72*time.Hour {
		t.Errorf("window of #4: %+v", r)
	}

	g2 := layout(ops)
	if g2.Lanes != 3 {
		t.Errorf("%d lanes, want 3", g2.Lanes)
	}
	var branches, straight int
	for _, e := range g2.Edges {
		if strings.Contains(e.Class, "branch") {
			branches++
		} else {
			straight++
		}
	}
	if branches != 2 || straight != 2 {
		t.Errorf("%d branch and %d straight edges, want 2 and 2: %+v", branches, straight, g2.Edges)
	}
	if len(g2.Windows) != 2 {
		t.Fatalf("%d windows, want 2", len(g2.Windows))
	}
	// Each window sits on the lane of the ops its recovery cut off, from
	// the fork point (#1, row 0) down to the recovery.
	for i, w := range g2.Windows {
		rec := []int{2, 3}[i] // the rows of #3 and #4
		lane := []int{2, 1}[i]
		if w.Y != g2.Nodes[0].Y || w.Y+w.H != g2.Nodes[rec].Y || w.X > graphLeft+lane*graphLane || w.X+w.W < graphLeft+lane*graphLane {
			t.Errorf("window %d: %+v; want lane %d from row 0 to row %d", i, w, lane, rec)
		}
	}
	if n := g2.Nodes[3]; !n.Gauge || n.GaugeFill != gaugeW {
		t.Errorf("the recovery at the window's end: gauge %v fill %d, want full", n.Gauge, n.GaugeFill)
	}
	for i, n := range g2.Nodes {
		if n.X != graphLeft+ops[i].Depth*graphLane {
			t.Errorf("node #%d at x %d, want lane %d", i+1, n.X, ops[i].Depth)
		}
	}
}

// TestStoredSignersAreUsed: the signer index a store recorded is taken
// as it is (no signature is checked again for the current chain).
func TestStoredSignersAreUsed(t *testing.T) {
	id := optest.NewIdentity(t, "s.test", 2)
	entries, _ := replay(t, id.DID, []*validate.Op{id.Head}, []time.Duration{0})
	ops, err := history(entries, map[int64]int{1: 1})
	if err != nil {
		t.Fatal(err)
	}
	if ops[0].SignerIndex != 1 || ops[0].Signer != id.Rotation[1].DID {
		t.Errorf("signer %d %s, want the recorded 1", ops[0].SignerIndex, ops[0].Signer)
	}
	// A record that names no key of the op (a corrupt store) is not
	// trusted: the signature decides.
	ops, _ = history(entries, map[int64]int{1: 7})
	if ops[0].SignerIndex != 0 {
		t.Errorf("signer %d, want 0 from the signature", ops[0].SignerIndex)
	}
}

// TestLegacyCreateAndTombstoneChanges: a legacy create op shows its
// normalised handle and PDS; a tombstone says it deactivates.
func TestLegacyCreateAndTombstoneChanges(t *testing.T) {
	rec, sig := optest.NewKey(t, false), optest.NewKey(t, true)
	create := optest.Sign(t, validate.Operation{
		Type: validate.TypeCreate, SigningKey: sig.DID, RecoveryKey: rec.DID, Handle: "https://old.test", Service: "pds.old.test",
	}, sig)
	did := create.GenesisDID()
	upd := optest.Sign(t, validate.Operation{
		Type: validate.TypeOperation, Prev: create.CID(),
		RotationKeys:        []string{rec.DID, sig.DID},
		VerificationMethods: []validate.VerificationMethod{{ID: "atproto", Key: sig.DID}},
		AlsoKnownAs:         []string{"at://old.test"},
		Services:            []validate.Service{{ID: "atproto_pds", Type: "AtprotoPersonalDataServer", Endpoint: "https://pds.old.test"}},
	}, rec)
	ts := optest.Sign(t, validate.Operation{Type: validate.TypeTombstone, Prev: upd.CID()}, rec)
	entries, signers := replay(t, did, []*validate.Op{create, upd, ts}, []time.Duration{0, time.Hour, 2 * time.Hour})
	ops, err := history(entries, signers)
	if err != nil {
		t.Fatal(err)
	}
	if ops[0].TypeName() != "create" || ops[0].SignerIndex != 1 || ops[0].Signer != sig.DID {
		t.Errorf("create: %s signed by %d", ops[0].TypeName(), ops[0].SignerIndex)
	}
	var got []string
	for _, c := range ops[0].Changes {
		got = append(got, c.Summary())
	}
	want := []string{"handle: at://old.test", "PDS: https://pds.old.test", "verification key atproto: " + sig.DID,
		"rotation keys: 0: " + rec.DID + ", 1: " + sig.DID}
	if !slices.Equal(got, want) {
		t.Errorf("create changes:\n got  %q\n want %q", got, want)
	}
	if len(ops[1].Changes) != 0 {
		t.Errorf("an update equal to the normalised create changes %v", ops[1].Changes)
	}
	if !ops[2].Tombstone() || len(ops[2].Changes) != 1 || ops[2].Changes[0].Summary() != "deactivated (tombstone)" {
		t.Errorf("tombstone: %+v", ops[2])
	}
}

func TestChangeSummaries(t *testing.T) {
	svc := func(id, typ, ep string) validate.Service { return validate.Service{ID: id, Type: typ, Endpoint: ep} }
	for _, tc := range []struct {
		name string
		got  []change
		want []string
	}{
		{"one handle for another", listChanges("handle", []string{"at://a"}, []string{"at://b"}), []string{"handle: at://a → at://b"}},
		{"handles added", listChanges("handle", []string{"at://a"}, []string{"at://a", "at://b", "at://c"}),
			[]string{"handle added: at://b", "handle added: at://c"}},
		{"handle removed", listChanges("handle", []string{"at://a", "at://b"}, []string{"at://b"}), []string{"handle removed: at://a"}},
		{"same handles", listChanges("handle", []string{"at://a"}, []string{"at://a"}), nil},
		{"pds moved", serviceChanges([]validate.Service{svc("atproto_pds", "P", "https://a")}, []validate.Service{svc("atproto_pds", "P", "https://b")}),
			[]string{"PDS: https://a → https://b"}},
		{"service added, type changed", serviceChanges([]validate.Service{svc("x", "T1", "https://x")}, []validate.Service{svc("x", "T2", "https://x"), svc("y", "T", "https://y")}),
			[]string{"service x type: T1 → T2", "service y added: https://y"}},
		{"service removed", serviceChanges([]validate.Service{svc("x", "T", "https://x")}, nil), []string{"service x removed: https://x"}},
		{"key rotated", methodChanges([]validate.VerificationMethod{{ID: "atproto", Key: "k1"}}, []validate.VerificationMethod{{ID: "atproto", Key: "k2"}}),
			[]string{"verification key atproto: k1 → k2"}},
		{"method removed", methodChanges([]validate.VerificationMethod{{ID: "x", Key: "k1"}}, nil), []string{"verification key x removed: k1"}},
		{"rotation key removed", rotationChanges([]string{"a", "b"}, []string{"b"}), []string{"rotation key 0 removed: a"}},
		{"rotation key added", rotationChanges([]string{"a"}, []string{"c", "a"}), []string{"rotation key 0 added: c"}},
		{"rotation keys reordered", rotationChanges([]string{"a", "b"}, []string{"b", "a"}), []string{"rotation keys reordered: 0: a, 1: b → 0: b, 1: a"}},
		{"rotation keys the same", rotationChanges([]string{"a", "b"}, []string{"a", "b"}), nil},
	} {
		var got []string
		for _, c := range tc.got {
			got = append(got, c.Summary())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestReveal(t *testing.T) {
	for in, want := range map[string]string{
		"at://alice.test":                   "at://alice.test",
		"at://\u202eevil\u202c.test":        "at://⟨U+202E⟩evil⟨U+202C⟩.test",
		"zero\u200bwidth\u2066iso":          "zero⟨U+200B⟩width⟨U+2066⟩iso",
		"nul\x00bell\x07del\x7f":            "nul⟨U+0000⟩bell⟨U+0007⟩del⟨U+007F⟩",
		"line\nbreak\ttab\r":                "line\nbreak\ttab⟨U+000D⟩",
		"c1\u0085ls\u2028ps\u2029bom\ufeff": "c1⟨U+0085⟩ls⟨U+2028⟩ps⟨U+2029⟩bom⟨U+FEFF⟩",
		"日本語.example":                       "日本語.example",
	} {
		if got := reveal(in); got != want {
			t.Errorf("reveal(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSpan(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                               "0s",
		1500 * time.Millisecond:         "1.5s",
		30 * time.Second:                "30s",
		90 * time.Second:                "1m",
		3 * time.Hour:                   "3h 0m",
		72 * time.Hour:                  "3d 0h 0m",
		72*time.Hour + time.Millisecond: "3d 0h 0m",
		-2 * time.Hour:                  "-2h 0m",
	} {
		if got := span(d); got != want {
			t.Errorf("span(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestLinkable(t *testing.T) {
	for in, want := range map[string]string{
		"https://pds.example.com":         "https://pds.example.com",
		"http://localhost:2583":           "http://localhost:2583",
		"javascript:alert(1)":             "",
		"JavaScript:alert(1)":             "",
		"data:text/html,x":                "",
		"//evil.example":                  "",
		"https://user:pw@pds.example.com": "",
		"https://":                        "",
		"ftp://x.example":                 "",
		" https://x.example":              "",
	} {
		if got := linkable(in); got != want {
			t.Errorf("linkable(%q) = %q, want %q", in, got, want)
		}
	}
}
