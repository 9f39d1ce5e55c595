package oplog_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/tamper"
)

// independentRoots returns the RFC 6962 root of every prefix of leaves,
// computed with transparency-dev/merkle (an implementation independent of
// golang.org/x/mod/sumdb/tlog, which the store uses).
func independentRoots(t *testing.T, leaves [][]byte) [][]byte {
	t.Helper()
	h := rfc6962.DefaultHasher
	rf := compact.RangeFactory{Hash: h.HashChildren}
	r := rf.NewEmptyRange(0)
	roots := [][]byte{h.EmptyRoot()}
	for _, l := range leaves {
		if err := r.Append(h.HashLeaf(l), nil); err != nil {
			t.Fatal(err)
		}
		root, err := r.GetRootHash(nil)
		if err != nil {
			t.Fatal(err)
		}
		roots = append(roots, root)
	}
	return roots
}

// checkTree fails unless the store's tree covers every op and its hash at
// every size equals the independent computation over the ops' leaves.
func checkTree(t *testing.T, s oplog.Store) {
	t.Helper()
	ctx := context.Background()
	all, err := s.Export(ctx, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	size, err := s.TreeSize(ctx)
	if err != nil || size != int64(len(all)) {
		t.Fatalf("TreeSize = %d, %v; the log holds %d ops", size, err, len(all))
	}
	leaves := make([][]byte, len(all))
	for i := range all {
		leaves[i] = oplog.LeafData(&all[i])
	}
	want := independentRoots(t, leaves)
	r := oplog.HashReader(ctx, s)
	for n := int64(0); n <= size; n++ {
		got, err := tlog.TreeHash(n, r)
		if err != nil {
			t.Fatalf("TreeHash(%d): %v", n, err)
		}
		if !bytes.Equal(got[:], want[n]) {
			t.Fatalf("tree hash of size %d: %x, independent computation %x", n, got, want[n])
		}
	}
}

// geneses returns n genesis ops of distinct DIDs.
func geneses(t *testing.T, n int, prefix string) []item {
	k := keys(t, 1)
	out := make([]item, n)
	for i := range out {
		out[i] = gen(genesis(t, fmt.Sprintf("%s%d.test", prefix, i), k[0]), at(time.Duration(i)*time.Millisecond))
	}
	return out
}

func testTree(t *testing.T, migrated func(t *testing.T) (oplog.Store, string)) {
	ctx := context.Background()

	t.Run("TreeMatchesAnIndependentImplementation", func(t *testing.T) {
		s, dsn := migrated(t)
		other := reopen(t, dsn) // a second process: its appends invalidate the first's frontier
		ops := geneses(t, 300, "tree")
		at := 0
		for i, n := range []int{1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 1, 100, 7, 49} {
			st := s
			if i%3 == 2 {
				st = other
			}
			appendOps(t, st, ops[at:at+n]...)
			at += n
		}
		checkTree(t, s)
		checkTree(t, other)
		roots, err := oplog.VerifyTree(ctx, s, []int64{0, 1, 17, int64(at)}, nil)
		if err != nil {
			t.Fatalf("VerifyTree: %v", err)
		}
		for _, n := range []int64{0, 1, 17, int64(at)} {
			want, err := tlog.TreeHash(n, oplog.HashReader(ctx, s))
			if err != nil || roots[n] != want {
				t.Fatalf("VerifyTree root of %d = %x, stored tree gives %x (%v)", n, roots[n], want, err)
			}
		}
	})

	t.Run("LeafDataIsCanonicalDAGCBOR", func(t *testing.T) {
		s, _ := migrated(t)
		es := appendOps(t, s, geneses(t, 1, "leaf")...)
		got, err := s.Op(ctx, es[0].Seq)
		if err != nil {
			t.Fatal(err)
		}
		leaf := oplog.LeafData(&got)
		var v struct {
			Op        []byte `cbor:"op"`
			CID       string `cbor:"cid"`
			DID       string `cbor:"did"`
			Seq       uint64 `cbor:"seq"`
			CreatedAt string `cbor:"createdAt"`
		}
		dm, err := cbor.DecOptions{DupMapKey: cbor.DupMapKeyEnforcedAPF, ExtraReturnErrors: cbor.ExtraDecErrorUnknownField}.DecMode()
		if err != nil {
			t.Fatal(err)
		}
		if err := dm.Unmarshal(leaf, &v); err != nil {
			t.Fatalf("leaf does not decode as CBOR: %v", err)
		}
		if v.DID != got.DID || v.CID != got.CID || v.CreatedAt != got.CreatedAt.Format("2006-01-02T15:04:05.000Z") ||
			v.Seq != uint64(got.Seq) || !bytes.Equal(v.Op, got.Op) {
			t.Fatalf("leaf decodes to %+v", v)
		}
		// Canonical: re-encoding with length-first key order (DAG-CBOR's)
		// gives the same bytes.
		em, err := cbor.CTAP2EncOptions().EncMode()
		if err != nil {
			t.Fatal(err)
		}
		var generic map[string]any
		if err := cbor.Unmarshal(leaf, &generic); err != nil {
			t.Fatal(err)
		}
		again, err := em.Marshal(generic)
		if err != nil || !bytes.Equal(again, leaf) {
			t.Fatalf("leaf is not canonical: %x, re-encoded %x (%v)", leaf, again, err)
		}
	})

	t.Run("TamperingIsFound", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			attack func(t *testing.T, dsn string)
			seq    int64
		}{
			{"OpChanged", func(t *testing.T, dsn string) {
				tamper.Exec(t, dsn, `UPDATE operations SET op = (SELECT op FROM operations WHERE seq = 5) WHERE seq = 3`)
			}, 3},
			{"OpDeleted", func(t *testing.T, dsn string) {
				tamper.Exec(t, dsn, `DELETE FROM operations WHERE seq = 4`)
			}, 4},
			{"OpsReordered", func(t *testing.T, dsn string) {
				tamper.Exec(t, dsn, `UPDATE operations SET seq = -1 WHERE seq = 2`,
					`UPDATE operations SET seq = 2 WHERE seq = 6`,
					`UPDATE operations SET seq = 6 WHERE seq = -1`)
			}, 2},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s, dsn := migrated(t)
				appendOps(t, s, geneses(t, 4, "x")...)
				appendOps(t, s, geneses(t, 4, "y")...)
				if _, err := oplog.VerifyTree(ctx, s, nil, nil); err != nil {
					t.Fatalf("VerifyTree before the attack: %v", err)
				}
				tc.attack(t, dsn)
				_, err := oplog.VerifyTree(ctx, reopen(t, dsn), nil, nil)
				var m *oplog.TreeMismatch
				if !errors.As(err, &m) || m.Seq != tc.seq {
					t.Fatalf("VerifyTree after the attack: %v, want a mismatch at seq %d", err, tc.seq)
				}
			})
		}
	})

	t.Run("CatchUpFillsATreeThatIsBehind", func(t *testing.T) {
		s, dsn := migrated(t)
		appendOps(t, s, geneses(t, 10, "a")...)
		appendOps(t, s, geneses(t, 7, "b")...)
		want, err := tlog.TreeHash(17, oplog.HashReader(ctx, s))
		if err != nil {
			t.Fatal(err)
		}
		// A database written before the transparency log: ops, no hashes.
		tamper.Exec(t, dsn, `DELETE FROM tree_hashes`)
		behind := reopen(t, dsn)
		if n, err := behind.TreeSize(ctx); err != nil || n != 0 {
			t.Fatalf("TreeSize after the delete = %d, %v", n, err)
		}
		c := geneses(t, 1, "c")[0]
		err = behind.Append(ctx, "", nil, func(v oplog.View) (oplog.Batch, error) {
			w, err := buildWrite(c.did, v.LastSeq+1, at(time.Hour), c.op, nil)
			return oplog.Batch{Writes: []oplog.Write{w}}, err
		})
		if !errors.Is(err, oplog.ErrTreeBehind) {
			t.Fatalf("append onto a tree that is behind: %v, want ErrTreeBehind", err)
		}
		n, err := oplog.CatchUpTree(ctx, behind, 5)
		if err != nil || n != 17 {
			t.Fatalf("CatchUpTree = %d, %v; want 17", n, err)
		}
		got, err := tlog.TreeHash(17, oplog.HashReader(ctx, behind))
		if err != nil || got != want {
			t.Fatalf("tree hash after the catch-up %x (%v), before %x", got, err, want)
		}
		appendOps(t, behind, geneses(t, 3, "d")...)
		checkTree(t, behind)
	})

	t.Run("CheckpointIsACompareAndSwap", func(t *testing.T) {
		s, dsn := migrated(t)
		if _, err := s.Checkpoint(ctx); !errors.Is(err, oplog.ErrNotFound) {
			t.Fatalf("Checkpoint of a new log: %v", err)
		}
		cp := func(size int64, root byte, note string) oplog.Checkpoint {
			return oplog.Checkpoint{Size: size, Root: tlog.Hash{root}, Note: []byte(note), SignedAt: at(time.Duration(size) * time.Second)}
		}
		c1, c2 := cp(1, 1, "one"), cp(2, 2, "two")
		if err := s.SwapCheckpoint(ctx, nil, c1); err != nil {
			t.Fatal(err)
		}
		other := reopen(t, dsn)
		if err := other.SwapCheckpoint(ctx, nil, c2); !errors.Is(err, oplog.ErrCheckpointRace) {
			t.Fatalf("a second first checkpoint: %v", err)
		}
		if err := s.SwapCheckpoint(ctx, &c1, c2); err != nil {
			t.Fatal(err)
		}
		if err := other.SwapCheckpoint(ctx, &c1, cp(3, 3, "three")); !errors.Is(err, oplog.ErrCheckpointRace) {
			t.Fatalf("a swap from a stale checkpoint: %v", err)
		}
		if err := s.SwapCheckpoint(ctx, &c2, cp(1, 1, "back")); err == nil {
			t.Fatal("the database accepted a smaller checkpoint")
		}
		if err := s.SwapCheckpoint(ctx, &c2, cp(2, 9, "fork")); err == nil {
			t.Fatal("the database accepted another root for the same size")
		}
		cosigned := cp(2, 2, "two\n— witness sig")
		if err := s.SwapCheckpoint(ctx, &c2, cosigned); err != nil {
			t.Fatalf("adding cosignatures: %v", err)
		}
		got, err := other.Checkpoint(ctx)
		if err != nil || got.Size != 2 || got.Root != cosigned.Root || string(got.Note) != string(cosigned.Note) || !got.SignedAt.Equal(cosigned.SignedAt) {
			t.Fatalf("Checkpoint = %+v, %v", got, err)
		}
	})
}
