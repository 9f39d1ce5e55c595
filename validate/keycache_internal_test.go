package validate

import (
	"fmt"
	"testing"
)

// fakeKeys returns n distinct strings shaped like K-256 did:keys; the
// table never parses what it holds, so they need not be points.
func fakeKeys(prefix string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("did:key:zQ3s%s%043d", prefix, i)
	}
	return keys
}

// TestKeyTableFindsOnlyTheKeyItHolds: two keys whose hashes pick the same
// slot do not stand for each other. The second one stored replaces the
// first, which is then not found (and would be parsed again), and never
// answered with the other's key.
func TestKeyTableFindsOnlyTheKeyItHolds(t *testing.T) {
	tbl := &keyTable{seed: keyCache.seed}
	seen := map[uint64]string{}
	var a, b string
	for _, s := range fakeKeys("x", 1<<12) {
		i := tbl.index(s)
		if other, ok := seen[i]; ok {
			a, b = other, s
			break
		}
		seen[i] = s
	}
	if a == "" {
		t.Fatal("no two of 4096 keys share a slot of 65536: the hash is not spreading them")
	}
	ka, kb := &PublicKey{curve: CurveK256}, &PublicKey{curve: CurveP256}
	tbl.store(a, ka)
	if got := tbl.load(a); got != ka {
		t.Fatalf("load(a) = %p, want the key stored for a (%p)", got, ka)
	}
	if got := tbl.load(b); got != nil {
		t.Fatalf("load(b) before b was stored = %p, want nil (a holds the slot)", got)
	}
	tbl.store(b, kb)
	if got := tbl.load(a); got != nil {
		t.Fatalf("load(a) after b took its slot = %p, want nil", got)
	}
	if got := tbl.load(b); got != kb {
		t.Fatalf("load(b) = %p, want the key stored for b (%p)", got, kb)
	}
	tbl.clear()
	if tbl.load(b) != nil {
		t.Fatal("clear left a key in the table")
	}
}

// BenchmarkKeyTable is the cost of looking a rotation key up with a full
// table: "miss" as for the keys an import meets for the first time (most
// of them), "hit" as for a PDS's key shared by many DIDs.
func BenchmarkKeyTable(b *testing.B) {
	defer keyCache.clear()
	held := fakeKeys("held", keyTableSlots)
	k := &PublicKey{curve: CurveK256}
	for _, s := range held {
		keyCache.store(s, k)
	}
	var hits []string
	for _, s := range held {
		if keyCache.load(s) != nil {
			hits = append(hits, s)
		}
	}
	fresh := fakeKeys("new", 1<<17)
	b.Run("miss", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if keyCache.load(fresh[i&(len(fresh)-1)]) != nil {
				b.Fatal("a key never stored was found")
			}
			i++
		}
	})
	b.Run("hit", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if keyCache.load(hits[i%len(hits)]) == nil {
				b.Fatal("a key stored was not found")
			}
			i++
		}
	})
}
