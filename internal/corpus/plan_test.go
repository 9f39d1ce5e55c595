package corpus

import (
	"slices"
	"testing"
	"time"
)

// TestPlanWindowsSurviveTimeShifts checks, on a plan far larger than the
// corpora the other tests sign, that making createdAt strictly increasing
// breaks no chain rule the plan relies on: each DID's lines stay in order,
// recoveries land within 72h of the op they nullify, late recoveries more
// than 72h after it, and no line follows a DID's last.
func TestPlanWindowsSurviveTimeShifts(t *testing.T) {
	n := 500_000
	if testing.Short() {
		n = 50_000
	}
	p := newPlanner(Config{Ops: n, Seed: 11, InvalidRate: 0.05})
	ops := p.plan()
	type didTrack struct {
		last    int64 // time of the latest valid line
		head    planOp
		n0      int64 // time of the op a pending recovery nullifies
		done    bool
		started bool
	}
	dids := make([]didTrack, p.stats.DIDs)
	window := (72 * time.Hour).Milliseconds()
	var valid int
	for i, op := range ops {
		if i > 0 && op.t <= ops[i-1].t {
			t.Fatalf("line %d: createdAt %d not after %d", i+1, op.t, ops[i-1].t)
		}
		d := &dids[op.did]
		if d.done {
			t.Fatalf("line %d: DID %d has a line after its last", i+1, op.did)
		}
		d.done = op.aux&auxLast != 0
		genesis := op.kind == kGenesis || op.kind == kGenesisLegacy
		if genesis == d.started {
			t.Fatalf("line %d: DID %d genesis %v after start %v", i+1, op.did, genesis, d.started)
		}
		d.started = true
		switch op.kind {
		case kForged, kHighS, kWrongPrev, kLateRecovery:
			if d.head.kind.tombstone() {
				t.Fatalf("line %d: invalid line after a tombstone", i+1)
			}
			if op.kind == kLateRecovery {
				h := d.head
				if h.aux&auxSigner != 1 || (h.kind != kHandle && h.kind != kPDS && h.kind != kVM) || op.t-h.t <= window {
					t.Fatalf("line %d: late recovery %dms after a head of kind %d signed by key %d", i+1, op.t-h.t, h.kind, h.aux&auxSigner)
				}
			}
			continue
		case kHostile, kTombstoneHostile:
			d.n0 = op.t
		case kRecover:
			if d.n0 == 0 || op.t-d.n0 > window-12*time.Hour.Milliseconds() {
				t.Fatalf("line %d: recovery %dms after the op it nullifies", i+1, op.t-d.n0)
			}
			d.n0 = 0
		}
		if d.head.kind == kTombstone {
			t.Fatalf("line %d: op after a final tombstone", i+1)
		}
		d.last, d.head = op.t, op
		valid++
	}
	if valid != n {
		t.Fatalf("%d valid lines, want %d", valid, n)
	}
	for i, d := range dids {
		if !d.done || d.n0 != 0 {
			t.Fatalf("DID %d: last line missing (%v) or recovery pending (%d)", i, d.done, d.n0)
		}
	}
}

// medianGap is the median, over every valid op after a DID's first, of
// the number of lines since the DID's op before it.
func medianGap(ops []planOp) int {
	last := map[uint32]int{}
	var gaps []int
	for i, op := range ops {
		if op.kind.invalid() {
			continue
		}
		if j, ok := last[op.did]; ok {
			gaps = append(gaps, i-j)
		}
		last[op.did] = i
	}
	slices.Sort(gaps)
	return gaps[len(gaps)/2]
}

// TestLongGapMedian: at the size of the corpora it is measured at, a DID's
// next op comes a median of about 2,800 lines later in the longgap shape,
// about 200 in the directory's; and the plan's windows hold there too.
func TestLongGapMedian(t *testing.T) {
	n := 186_000
	if testing.Short() {
		n = 100_000
	}
	dir := medianGap(newPlanner(Config{Ops: n, Seed: 1}).plan())
	long := medianGap(newPlanner(Config{Ops: n, Seed: 1, Shape: ShapeLongGap}).plan())
	t.Logf("median gap in lines at %d ops: directory %d, longgap %d", n, dir, long)
	if dir > 600 || long < 2000 || long > 4000 {
		t.Fatalf("median gaps: directory %d (want ≤ 600), longgap %d (want 2000..4000)", dir, long)
	}
}
