package chainstore

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/plcdir/plc/validate"
)

// chainOp is a ChainOp whose fields all depend on i; every fifth op keeps
// the rotation keys of op i-1 (as most updates do).
func chainOp(i int) validate.ChainOp {
	k := i
	if i%5 == 0 {
		k = i - 1
	}
	return validate.ChainOp{
		CID:          fmt.Sprintf("bafyrei%052d", i),
		CreatedAt:    time.UnixMilli(1_700_000_000_000 + int64(i)).UTC(),
		Tombstone:    i%7 == 3,
		Signer:       i % 3,
		RotationKeys: []string{fmt.Sprintf("did:key:zQ3sh%040d", k), fmt.Sprintf("did:key:zDnae%040d", k+1)}[:1+k%2],
	}
}

// TestStore: states written, extended in place, rewritten after a
// nullification and moved when they outgrow their region all read back
// as written, and what an earlier Get returned stays intact.
func TestStore(t *testing.T) {
	s := New[int](4096) // small slabs: many of them
	const keys = 300
	want := make([][]validate.ChainOp, keys)
	wantTags := make([][]int64, keys)
	var held [][]validate.ChainOp // earlier reads, checked at the end
	var heldWant [][]validate.ChainOp
	check := func(k int) {
		t.Helper()
		ops, tags, ok := s.Get(k)
		if !ok {
			t.Fatalf("key %d: no state", k)
		}
		if !slices.EqualFunc(ops, want[k], chainOpEqual) || !slices.Equal(tags, wantTags[k]) {
			t.Fatalf("key %d: read back %d ops %v, want %d ops %v", k, len(ops), tags, len(want[k]), wantTags[k])
		}
		if k%50 == 0 {
			held = append(held, ops)
			heldWant = append(heldWant, slices.Clone(want[k]))
		}
	}
	n := 0
	for round := range 40 {
		for k := range keys {
			if k%(round+1) != 0 { // shorter and longer histories
				continue
			}
			n++
			extends := len(want[k]) > 0
			if round%9 == 8 && len(want[k]) > 2 { // a recovery: the last two ops nullified
				want[k], wantTags[k] = want[k][:len(want[k])-2], wantTags[k][:len(wantTags[k])-2]
				extends = false
			}
			op := chainOp(n)
			if n%4 == 0 && len(want[k]) > 0 { // the keys of the DID's previous op
				op.RotationKeys = want[k][len(want[k])-1].RotationKeys
			}
			want[k] = append(want[k], op)
			wantTags[k] = append(wantTags[k], int64(n)<<2|int64(n%3))
			s.Put(k, want[k], wantTags[k], extends)
			check(k)
		}
	}
	for k := range keys {
		check(k)
	}
	if s.Len() != keys {
		t.Fatalf("%d states, want %d", s.Len(), keys)
	}
	if s.Used() < 10*4096 {
		t.Fatalf("Used() = %d: less than what was stored", s.Used())
	}
	for i, ops := range held {
		if !slices.EqualFunc(ops, heldWant[i], chainOpEqual) {
			t.Fatalf("an earlier read (%d) changed under later writes", i)
		}
	}
	if s.Has(keys) {
		t.Fatal("Has: a key never stored")
	}
	if _, _, ok := s.Get(keys); ok {
		t.Fatal("Get: a key never stored")
	}

	// A state larger than a slab gets a slab of its own.
	op := chainOp(1)
	for i := range 2 * 4096 / 40 {
		op.RotationKeys = append(op.RotationKeys, fmt.Sprintf("did:key:zQ3sh%040d", i))
	}
	before := s.Used()
	s.Put(keys, []validate.ChainOp{op}, []int64{4}, false)
	if s.Used()-before <= 4096 {
		t.Fatalf("the large state took %d bytes", s.Used()-before)
	}
	if ops, _, _ := s.Get(keys); len(ops) != 1 || !chainOpEqual(ops[0], op) {
		t.Fatal("the large state does not read back")
	}
}

// TestSameKeysTakeNoRoom: an op that keeps the rotation keys of the op
// before it is stored without them.
func TestSameKeysTakeNoRoom(t *testing.T) {
	a, b := chainOp(1), chainOp(2)
	same := b
	same.RotationKeys = slices.Clone(a.RotationKeys)
	ops := []validate.ChainOp{a, same}
	if got, other := opSize(ops, 1, 7), opSize([]validate.ChainOp{a, b}, 1, 7); got >= other-len(b.RotationKeys[0]) {
		t.Fatalf("an op with its previous op's keys takes %d bytes, one with keys of its own %d", got, other)
	}
	s := New[string](0)
	s.Put("d", ops, []int64{1, 2}, false)
	got, _, _ := s.Get("d")
	if !slices.EqualFunc(got, ops, chainOpEqual) {
		t.Fatalf("read back %v, want %v", got, ops)
	}
}

func chainOpEqual(a, b validate.ChainOp) bool {
	return a.CID == b.CID && a.CreatedAt.Equal(b.CreatedAt) && a.Tombstone == b.Tombstone &&
		a.Signer == b.Signer && slices.Equal(a.RotationKeys, b.RotationKeys)
}

// TestDeleteKeepsWhatGetReturned: a deleted state is gone from Has, Len
// and Get, what a Get returned before stays intact, and the other states
// are untouched.
func TestDeleteKeepsWhatGetReturned(t *testing.T) {
	s := New[int](0)
	a := []validate.ChainOp{chainOp(1), chainOp(2)}
	b := []validate.ChainOp{chainOp(3)}
	s.Put(1, a, []int64{1, 2}, false)
	s.Put(2, b, []int64{3}, false)
	held, _, _ := s.Get(1)
	s.Delete(1)
	if s.Has(1) || s.Len() != 1 {
		t.Fatalf("after Delete: Has %t, Len %d", s.Has(1), s.Len())
	}
	if _, _, ok := s.Get(1); ok {
		t.Fatal("Get finds a deleted state")
	}
	s.Put(3, []validate.ChainOp{chainOp(4), chainOp(5), chainOp(6)}, []int64{4, 5, 6}, false)
	if !slices.EqualFunc(held, a, chainOpEqual) {
		t.Fatalf("an earlier Get changed after Delete: %v, want %v", held, a)
	}
	if got, _, _ := s.Get(2); !slices.EqualFunc(got, b, chainOpEqual) {
		t.Fatalf("another state changed: %v, want %v", got, b)
	}
}
