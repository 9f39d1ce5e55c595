package watch_test

import (
	"context"
	"testing"

	"github.com/plcdir/plc/internal/optest"
	"github.com/plcdir/plc/validate"
	"github.com/plcdir/plc/watch"
)

// BenchmarkHubFanOut: one op committed, then received by every Watch of
// its DID, with 256 Watches of 8 DIDs each over 64 DIDs (each DID in 32
// Watches). It measures commit-to-delivery per op, the Hub's read and
// description included.
func BenchmarkHubFanOut(b *testing.B) {
	e := newEnv(b)
	const nDIDs, nWatches, perWatch = 64, 256, 8
	ids := make([]*optest.Identity, nDIDs)
	for i := range ids {
		ids[i] = optest.NewIdentity(b, optest.Handle(i), 1)
		e.submit(ids[i].DID, ids[i].Head)
	}
	ctx := context.Background()
	byDID := map[string][]*watch.Watch{}
	for w := range nWatches {
		var dids []string
		for j := range perWatch {
			dids = append(dids, ids[(w*perWatch+j)%nDIDs].DID)
		}
		wt, err := e.hub.Watch(ctx, dids, -1, 1<<20)
		if err != nil {
			b.Fatal(err)
		}
		defer wt.Close()
		for _, d := range dids {
			byDID[d] = append(byDID[d], wt)
		}
	}
	ops := make([]*validate.Op, b.N)
	for i := range ops {
		id := ids[i%nDIDs]
		ops[i] = id.Update(b, nil, 0, optest.Handle(1000+i))
		id.Accept(ops[i])
	}
	b.ResetTimer()
	for i, op := range ops {
		did := ids[i%nDIDs].DID
		e.submit(did, op)
		for _, wt := range byDID[did] {
			if _, err := wt.Next(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkDescribe: the change of the last op of a DID with 20 ops.
func BenchmarkDescribe(b *testing.B) {
	e := newEnv(b)
	id := optest.NewIdentity(b, "bench.test", 1)
	e.submit(id.DID, id.Head)
	for i := range 19 {
		op := id.Update(b, nil, 0, optest.Handle(i))
		id.Accept(op)
		e.submit(id.DID, op)
	}
	ops, err := e.store.Ops(context.Background(), id.DID)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if _, err := watch.Describe(ops, 20); err != nil {
			b.Fatal(err)
		}
	}
}
