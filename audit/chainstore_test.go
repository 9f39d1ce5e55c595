package audit

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/plcdir/plc/validate"
)

// chainOp is a ChainOp whose fields all depend on i.
func chainOp(i int) validate.ChainOp {
	return validate.ChainOp{
		CID:          fmt.Sprintf("bafyrei%052d", i),
		CreatedAt:    time.UnixMilli(1_700_000_000_000 + int64(i)).UTC(),
		Tombstone:    i%7 == 3,
		Signer:       i % 3,
		RotationKeys: []string{fmt.Sprintf("did:key:zQ3sh%040d", i), fmt.Sprintf("did:key:zDnae%040d", i+1)}[:1+i%2],
	}
}

// TestChainStore: states written, extended in place, rewritten after a
// nullification and moved when they outgrow their region all read back
// as written, and the strings of an earlier read stay intact.
func TestChainStore(t *testing.T) {
	c := newChainStore()
	const dids = 300
	want := make([][]validate.ChainOp, dids)
	wantLines := make([][]int64, dids)
	var held []validate.State // earlier reads, checked at the end
	var heldWant [][]validate.ChainOp
	key := func(d int) didKey { return keyOf(fmt.Sprintf("did:plc:%024d", d)) }
	check := func(d int) {
		t.Helper()
		b, ok := c.get(key(d))
		if !ok {
			t.Fatalf("DID %d: no state", d)
		}
		st, lines := decodeChain("did", b)
		if !slices.EqualFunc(st.Ops, want[d], chainOpEqual) || !slices.Equal(lines, wantLines[d]) {
			t.Fatalf("DID %d: read back %d ops %v, want %d ops %v", d, len(st.Ops), lines, len(want[d]), wantLines[d])
		}
		if d%50 == 0 {
			held = append(held, st)
			heldWant = append(heldWant, slices.Clone(want[d]))
		}
	}
	n := 0
	for round := range 40 {
		for d := range dids {
			if d%(round+1) != 0 { // DIDs with shorter and longer histories
				continue
			}
			n++
			extends := len(want[d]) > 0
			if round%9 == 8 && len(want[d]) > 2 { // a recovery: the last two ops nullified
				want[d], wantLines[d] = want[d][:len(want[d])-2], wantLines[d][:len(wantLines[d])-2]
				extends = false
			}
			want[d] = append(want[d], chainOp(n))
			wantLines[d] = append(wantLines[d], int64(n)<<2|int64(n%3))
			c.put(key(d), want[d], wantLines[d], extends)
			check(d)
		}
	}
	for d := range dids {
		check(d)
	}
	if c.len() != dids {
		t.Fatalf("%d states, want %d", c.len(), dids)
	}
	for i, st := range held {
		if !slices.EqualFunc(st.Ops, heldWant[i], chainOpEqual) {
			t.Fatalf("an earlier read (%d) changed under later writes", i)
		}
	}
	// A state larger than a slab gets a slab of its own.
	big := make([]validate.ChainOp, 0, 1)
	op := chainOp(1)
	for i := range 2 * chainSlab / 40 {
		op.RotationKeys = append(op.RotationKeys, fmt.Sprintf("did:key:zQ3sh%040d", i))
	}
	big = append(big, op)
	c.put(key(dids), big, []int64{4}, false)
	if b, _ := c.get(key(dids)); len(b) <= chainSlab {
		t.Fatalf("the large state is %d bytes", len(b))
	}
	if st, _ := decodeChain("did", func() []byte { b, _ := c.get(key(dids)); return b }()); !chainOpEqual(st.Ops[0], op) {
		t.Fatal("the large state does not read back")
	}
}

func chainOpEqual(a, b validate.ChainOp) bool {
	return a.CID == b.CID && a.CreatedAt.Equal(b.CreatedAt) && a.Tombstone == b.Tombstone &&
		a.Signer == b.Signer && slices.Equal(a.RotationKeys, b.RotationKeys)
}
