package oplog

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"

	"github.com/plcdir/plc/validate"
)

type chainKey struct {
	priv atcrypto.PrivateKey
	did  string
}

func (k chainKey) HashAndSign(b []byte) ([]byte, error) { return k.priv.HashAndSign(b) }

func chainKeys(t *testing.T, n int) []chainKey {
	t.Helper()
	ks := make([]chainKey, n)
	for i := range ks {
		priv, err := atcrypto.GeneratePrivateKeyK256()
		if err != nil {
			t.Fatal(err)
		}
		pub, err := priv.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		ks[i] = chainKey{priv: priv, did: pub.DIDKey()}
	}
	return ks
}

func chainOpAfter(t *testing.T, prev *validate.Op, handle string, signer chainKey, rot ...chainKey) *validate.Op {
	t.Helper()
	o := validate.Operation{
		Type:                validate.TypeOperation,
		VerificationMethods: []validate.VerificationMethod{{ID: "atproto", Key: rot[0].did}},
		AlsoKnownAs:         []string{"at://" + handle},
		Services:            []validate.Service{{ID: "atproto_pds", Type: "AtprotoPersonalDataServer", Endpoint: "https://pds.example.com"}},
	}
	for _, k := range rot {
		o.RotationKeys = append(o.RotationKeys, k.did)
	}
	if prev != nil {
		o.Prev = prev.CID()
	}
	op, err := validate.Sign(o, signer)
	if err != nil {
		t.Fatal(err)
	}
	return op
}

func cidsOf(st validate.State) []string {
	var out []string
	for _, c := range st.Ops {
		out = append(out, c.CID)
	}
	return out
}

// TestChainInPlaceLeavesTheViewAndRefusedOpsNoTrace: the chain changes
// its own copy of a DID's record in place, so a batch costs no copy of the
// DID's history per op; that must not show. A recovery fork in the batch
// overwrites the nullified ops in the copy only: the view's record, which
// the record cache keeps, stays as the store read it. An op the rate limit
// refuses after the chain rules appended it is taken back: the next op is
// judged, and its write recorded, as if it had never come. The writes of
// the DID share one record, the DID's record after the batch.
func TestChainInPlaceLeavesTheViewAndRefusedOpsNoTrace(t *testing.T) {
	k := chainKeys(t, 3)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	g := chainOpAfter(t, nil, "g.test", k[0], k...)
	a := chainOpAfter(t, g, "a.test", k[2], k...)
	b := chainOpAfter(t, a, "b.test", k[2], k...)
	did := g.GenesisDID()
	st := validate.State{DID: did}
	for i, op := range []*validate.Op{g, a, b} {
		var err error
		if st, _, err = st.Next(op, base.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	view := &DIDRecord{DID: did, HeadSeq: 3, State: st, Seqs: []int64{1, 2, 3}, Head: b}
	wantView, wantSeqs := cidsOf(st), slices.Clone(view.Seqs)

	c := newChain(View{LastSeq: 3, Records: map[string]*DIDRecord{did: view}})
	f := chainOpAfter(t, g, "f.test", k[1], k...) // nullifies a and b
	if _, head, err := c.apply(did, f, base.Add(time.Hour), nil); err != nil || head != 3 {
		t.Fatalf("recovery: head %d, %v", head, err)
	}
	limited := errors.New("rate limited")
	var judged []string
	refused := chainOpAfter(t, f, "refused.test", k[2], k...)
	_, _, err := c.apply(did, refused, base.Add(2*time.Hour), func(before *validate.State) error {
		judged = cidsOf(*before)
		return limited
	})
	if !errors.Is(err, limited) {
		t.Fatalf("refused op: %v", err)
	}
	if want := []string{g.CID(), f.CID()}; !slices.Equal(judged, want) {
		t.Fatalf("the rate limit judged the state %v, want %v", judged, want)
	}
	next := chainOpAfter(t, f, "next.test", k[2], k...)
	if _, head, err := c.apply(did, next, base.Add(3*time.Hour), nil); err != nil || head != 4 {
		t.Fatalf("op after the refused one: head %d, %v", head, err)
	}

	if got := cidsOf(view.State); !slices.Equal(got, wantView) || !slices.Equal(view.Seqs, wantSeqs) || view.HeadSeq != 3 {
		t.Fatalf("the view's record changed: ops %v seqs %v head %d; want %v %v 3", got, view.Seqs, view.HeadSeq, wantView, wantSeqs)
	}
	if len(c.writes) != 2 {
		t.Fatalf("%d writes, want 2", len(c.writes))
	}
	w0, w1 := c.writes[0], c.writes[1]
	if !slices.Equal(w0.Nullifies, []int64{2, 3}) || len(w1.Nullifies) != 0 {
		t.Fatalf("nullifies %v and %v, want [2 3] and none", w0.Nullifies, w1.Nullifies)
	}
	if w0.Record != w1.Record {
		t.Fatal("the writes of one DID in a batch do not share its record")
	}
	rec := w1.Record
	if got, want := cidsOf(rec.State), []string{g.CID(), f.CID(), next.CID()}; !slices.Equal(got, want) ||
		!slices.Equal(rec.Seqs, []int64{1, 4, 5}) || rec.HeadSeq != 5 || rec.Head != next {
		t.Fatalf("record after the batch: ops %v seqs %v head %d; want %v [1 4 5] 5", got, rec.Seqs, rec.HeadSeq, want)
	}
}
