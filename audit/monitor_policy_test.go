package audit_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/plcdir/plc/audit"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/storetest"
	plctlog "github.com/plcdir/plc/tlog"
)

func monCosigner(t *testing.T, typ byte, name string) *plctlog.Cosigner {
	t.Helper()
	skey, _, err := plctlog.GenerateCosignerKey(typ, name)
	if err != nil {
		t.Fatal(err)
	}
	c, err := plctlog.NewCosigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// monCosign adds the cosigners' signature lines to the stored
// checkpoint; corrupt names one whose line is corrupted.
func monCosign(t *testing.T, s oplog.Store, key *plctlog.Key, corrupt string, cs ...*plctlog.Cosigner) {
	t.Helper()
	ctx := context.Background()
	cp, err := s.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, n, err := plctlog.OpenCheckpoint(cp.Note, key.Verifier)
	if err != nil {
		t.Fatal(err)
	}
	next := cp
	next.Note = bytes.Clone(cp.Note)
	for _, c := range cs {
		signed, err := note.Sign(&note.Note{Text: n.Text}, c)
		if err != nil {
			t.Fatal(err)
		}
		line := string(signed[len(n.Text)+1:])
		if c.Name() == corrupt {
			_, b64, _ := strings.Cut(strings.TrimSuffix(strings.TrimPrefix(line, "— "), "\n"), " ")
			raw, _ := base64.StdEncoding.DecodeString(b64)
			raw[len(raw)-1] ^= 1
			line = "— " + c.Name() + " " + base64.StdEncoding.EncodeToString(raw) + "\n"
		}
		next.Note = append(next.Note, line...)
	}
	if err := s.SwapCheckpoint(ctx, &cp, next); err != nil {
		t.Fatal(err)
	}
}

// TestMonitorChecksCosignaturesAgainstThePolicy: a checkpoint whose
// valid cosignatures do not meet the witness policy's quorum, or that
// carries a policy witness's cosignature that does not verify, is
// evidence; one that meets it (a stranger's line ignored) passes.
func TestMonitorChecksCosignaturesAgainstThePolicy(t *testing.T) {
	ctx := context.Background()
	lines := storetest.Corpus(t, 5, 300)
	s, _ := storetest.SQLite(t)
	key := wtKey(t, "plc.test/tlog")
	tl := monTLog(s, key)
	_, url := monServe(t, tl)
	ed := monCosigner(t, plctlog.CosignatureEd25519, "ed.example/w")
	pq := monCosigner(t, plctlog.CosignatureMLDSA44, "pq.example/w")
	stranger := monCosigner(t, plctlog.CosignatureEd25519, "stranger.example/w")
	policy, err := plctlog.ParsePolicy(fmt.Appendf(nil, "log %s\nwitness ed %s\nwitness pq %s\ngroup both all ed pq\nquorum both\n", key.VKey, ed.VKey(), pq.VKey()))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	m, err := audit.OpenMonitor(audit.MonitorOptions{URL: url, Dir: dir, VKey: key.VKey, Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	storetest.Load(t, s, lines[:200])
	monSign(t, tl)
	_, err = m.Round(ctx)
	ev := monInconsistent(t, err, audit.KindNoQuorum, dir)
	if !strings.Contains(ev.Reason, "witnesses none") || len(ev.Cosigners) != 0 {
		t.Fatalf("evidence: %+v", ev)
	}
	if _, err := os.Stat(filepath.Join(dir, "checkpoint")); !os.IsNotExist(err) {
		t.Fatalf("a checkpoint without the quorum was kept: %v", err)
	}

	monCosign(t, s, key, "", ed, stranger)
	_, err = m.Round(ctx)
	ev = monInconsistent(t, err, audit.KindNoQuorum, dir)
	if !strings.Contains(ev.Reason, "witnesses ed,") || len(ev.Cosigners) != 1 || ev.Cosigners[0] != ed.VKey() {
		t.Fatalf("evidence: %+v", ev)
	}

	monCosign(t, s, key, "", pq)
	res, err := m.Round(ctx)
	if err != nil || res.Size != 200 {
		t.Fatalf("a checkpoint cosigned by both: %+v, %v", res, err)
	}

	// The log grows; the ML-DSA-44 witness's line is corrupted.
	storetest.Load(t, s, lines[200:])
	monSign(t, tl)
	monCosign(t, s, key, pq.Name(), ed, pq)
	_, err = m.Round(ctx)
	ev = monInconsistent(t, err, audit.KindBadCosignature, dir)
	if !strings.Contains(ev.Reason, "witnesses pq ") || len(ev.InvalidCosigners) != 1 || ev.InvalidCosigners[0] != pq.VKey() {
		t.Fatalf("evidence: %+v", ev)
	}
	if !bytes.Contains(monState(t, dir), []byte("\n200\n")) {
		t.Fatalf("the state moved past the last checkpoint that met the policy:\n%s", monState(t, dir))
	}

	// A policy of another log is refused.
	other, err := plctlog.ParsePolicy(fmt.Appendf(nil, "log %s\nwitness ed %s\nquorum ed\n", wtKey(t, "plc.test/tlog").VKey, ed.VKey()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.OpenMonitor(audit.MonitorOptions{URL: url, Dir: t.TempDir(), VKey: key.VKey, Policy: other}); !errors.Is(err, audit.ErrMonitorUsage) || !strings.Contains(err.Error(), "witness policy") {
		t.Fatalf("OpenMonitor with another log's policy: %v", err)
	}
}
