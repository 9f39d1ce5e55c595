package validate_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/plcdir/plc/validate"
)

// TestNextRejectsOpNotAfterItsPrev: an op dated before (or at the same
// millisecond as) its prev is misordered, for updates and tombstones as
// for forks, submitted or replayed alike. Without the rule, replayed
// history could hold a child dated before its parent: the timestamp
// export then lists the child first and no replay of it succeeds.
func TestNextRejectsOpNotAfterItsPrev(t *testing.T) {
	k := k256Keys(t, 2)
	g := newGenesis(t, k[0], k[0].did, k[1].did)
	st := replay(t, timedOp{g, at(time.Hour)})
	u := newUpdate(t, g, k[1], k[0].did, k[1].did)
	ts := newTombstone(t, g, k[0])

	for _, tc := range []struct {
		name string
		op   *validate.Op
		at   time.Time
		ok   bool
	}{
		{"update a minute before its prev", u, at(time.Hour - time.Minute), false},
		{"update 1ms before its prev", u, at(time.Hour - time.Millisecond), false},
		{"update at its prev's millisecond", u, at(time.Hour), false},
		{"update at its prev's millisecond, sub-millisecond later", u, at(time.Hour + 999*time.Microsecond), false},
		{"update 1ms after its prev", u, at(time.Hour + time.Millisecond), true},
		{"tombstone before its prev", ts, at(0), false},
		{"tombstone 1ms after its prev", ts, at(time.Hour + time.Millisecond), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := st.Next(tc.op, tc.at)
			if tc.ok {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			misordered.check(t, err)
			var ve *validate.Error
			if !errors.As(err, &ve) || !strings.Contains(ve.Short(), "timestamp order") || !strings.Contains(ve.Short(), g.CID()) {
				t.Fatalf("reason %q does not say the op is dated before its prev %s", ve.Short(), g.CID())
			}
		})
	}
}

// TestNextChainOfOpsOneMillisecondApart: the strict rule leaves room for
// a chain whose ops are each 1ms after the one before.
func TestNextChainOfOpsOneMillisecondApart(t *testing.T) {
	k := k256Keys(t, 1)
	g := newGenesis(t, k[0], k[0].did)
	st := replay(t, timedOp{g, at(0)})
	prev := g
	for i := 1; i <= 5; i++ {
		u := newUpdate(t, prev, k[0], k[0].did)
		st, _ = mustNext(t, st, u, at(time.Duration(i)*time.Millisecond))
		prev = u
	}
	if len(st.Ops) != 6 {
		t.Fatalf("%d ops in the state, want 6", len(st.Ops))
	}
}
