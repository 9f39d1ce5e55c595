package gcbudget

import (
	"runtime/debug"
	"testing"
)

func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

func TestStartLetsTheHeapGrowWithinTheHeadroomAndStopPutsBack(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	before, beforeLimit := gcPercent(), debug.SetMemoryLimit(-1)
	stop := Start(64 << 20)
	if p := gcPercent(); p != percent {
		t.Errorf("GC percent %d during the budget, want %d", p, percent)
	}
	during := debug.SetMemoryLimit(-1)
	if during < 64<<20 || during > 64<<20+2*(1<<30) {
		t.Errorf("memory limit %d during the budget, want twice the live heap plus 64 MiB", during)
	}
	// A second budget while one runs changes nothing, and its stop neither.
	Start(1 << 30)()
	if p, l := gcPercent(), debug.SetMemoryLimit(-1); p != percent || l != during {
		t.Errorf("a second Start changed the settings: %d %d", p, l)
	}
	stop()
	stop() // a second call does nothing
	if p, l := gcPercent(), debug.SetMemoryLimit(-1); p != before || l != beforeLimit {
		t.Errorf("after stop: GC percent %d, limit %d; want %d, %d", p, l, before, beforeLimit)
	}
}

func TestTheOperatorsGOGCStands(t *testing.T) {
	for _, env := range []string{"GOGC", "GOMEMLIMIT"} {
		t.Run(env, func(t *testing.T) {
			t.Setenv("GOGC", "")
			t.Setenv("GOMEMLIMIT", "")
			t.Setenv(env, "200")
			before := gcPercent()
			stop := Start(DefaultHeadroom)
			defer stop()
			if p := gcPercent(); p != before {
				t.Fatalf("GC percent %d with %s set, want it left at %d", p, env, before)
			}
		})
	}
}

func TestLimitIsTwiceTheLiveHeapPlusTheHeadroom(t *testing.T) {
	for _, c := range []struct{ live, headroom, want int64 }{
		{0, 512, 512},
		{100, 512, 712},
		{1 << 30, 1 << 29, 5 << 29},
	} {
		if got := limit(c.live, c.headroom); got != c.want {
			t.Errorf("limit(%d, %d) = %d, want %d", c.live, c.headroom, got, c.want)
		}
	}
}
