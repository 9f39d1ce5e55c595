package validate_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/plcdir/plc/validate"
)

// TestApplyEqualsNextOverForksAndRejections: Apply, which builds the new
// state in the state's own array, ends every step where Next does —
// through appends, recovery forks that overwrite the nullified ops, and
// rejected ops, which leave the state as it was.
func TestApplyEqualsNextOverForksAndRejections(t *testing.T) {
	k := k256Keys(t, 4)
	rot := dids(k[0], k[1], k[2])
	g := newGenesis(t, k[0], rot...)
	byNext := emptyState(g)
	byApply := emptyState(g)
	when := at(0)
	step := func(op *validate.Op, wantErr bool) {
		t.Helper()
		next, nApplied, nErr := byNext.Next(op, when)
		before := cloneState(byApply)
		aApplied, aErr := byApply.Apply(op, when)
		if (nErr != nil) != wantErr || (aErr != nil) != wantErr {
			t.Fatalf("op %s: Next error %v, Apply error %v; want an error: %v", op.CID(), nErr, aErr, wantErr)
		}
		if wantErr {
			if !reflect.DeepEqual(cloneState(byApply), before) {
				t.Fatalf("a rejected op changed the state: %v, was %v", stateCIDs(byApply), stateCIDs(before))
			}
			return
		}
		if !reflect.DeepEqual(nApplied, aApplied) || !reflect.DeepEqual(cloneState(byApply), cloneState(next)) {
			t.Fatalf("op %s: Apply gives %v %+v, Next %v %+v", op.CID(), stateCIDs(byApply), aApplied, stateCIDs(next), nApplied)
		}
		byNext = next
		when = when.Add(time.Minute)
	}
	step(g, false)
	head := g
	for range 20 {
		// An update by the lowest key, then a recovery by a higher one
		// that nullifies it, then the same again on the recovery.
		a := newUpdate(t, head, k[2], rot...)
		step(a, false)
		step(newUpdate(t, a, k[3], rot...), true) // k[3] is no rotation key
		f := newUpdate(t, head, k[1], rot...)
		step(f, false)
		step(newUpdate(t, a, k[0], rot...), true) // a is nullified
		head = f
	}
	if got := len(byApply.Ops); got != 21 {
		t.Fatalf("the state holds %d ops, want 21 (the genesis and 20 recoveries)", got)
	}
}
