package main

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAttackSuiteHolds runs the quick attack modes that need no database
// server or root against a freshly built plc, so the suite cannot rot
// unnoticed: every check of malformed, flood and tamper must pass.
func TestAttackSuiteHolds(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and attacks the real binary")
	}
	work := t.TempDir()
	bin := filepath.Join(work, "plc")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/plc")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	raiseFileLimit()
	var out bytes.Buffer
	r := &report{out: &out}
	c := &config{plc: bin, quick: true, work: work}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, m := range modes {
		switch m.name {
		case "malformed", "flood", "tamper":
		default:
			continue
		}
		if err := m.run(ctx, c, r.mode(m.name)); err != nil {
			r.mode(m.name).fail("run", "%v", err)
		}
	}
	code := r.summary()
	t.Log("\n" + out.String())
	if code != 0 || r.passed == 0 {
		t.Fatalf("the attack suite failed:\n%s", strings.Join(r.failures, "\n"))
	}
}
