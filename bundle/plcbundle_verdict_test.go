package bundle

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/internal/corpus"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/storetest"
	"github.com/plcdir/plc/validate"
)

// Imports of plcbundle repositories and weekly files written from a
// generated corpus with invalid lines mixed in, and with the real ops the
// directory purged on 2025-11-14 (which repositories cut before it hold):
// every valid op is imported, every other line rejected, recorded, and the
// import goes on.

// purged are real ops the rules reject, and what their rejection says.
var pbPurged = []struct {
	file   string
	reason *regexp.Regexp
}{
	{"../testdata/plc-audit-logs/invalid/log_invalid_sig_der.json", regexp.MustCompile(`signature`)},
	{"../testdata/plc-purged/invalidated-genesis-line13.json", regexp.MustCompile(`signature`)},
	{"../testdata/plc-purged/invalidated-genesis-line23.json", regexp.MustCompile(`vanity`)},
}

// pbPurgedLines returns the purged ops as legacy export lines (the audit
// log entries, compacted), with their CIDs.
func pbPurgedLines(t testing.TB) (lines [][]byte, cids []string) {
	t.Helper()
	for _, p := range pbPurged {
		b, err := os.ReadFile(p.file)
		if err != nil {
			t.Fatal(err)
		}
		var entries []json.RawMessage
		if err := json.Unmarshal(b, &entries); err != nil {
			t.Fatal(err)
		}
		last := entries[len(entries)-1]
		var c bytes.Buffer
		if err := json.Compact(&c, last); err != nil {
			t.Fatal(err)
		}
		var e struct{ CID string }
		json.Unmarshal(last, &e)
		lines, cids = append(lines, c.Bytes()), append(cids, e.CID)
	}
	return lines, cids
}

// pbVerdictCorpus is a generated corpus as legacy lines in createdAt order
// (seq-mode lines re-rendered, nullified false: a foreign file's flags
// are not trusted anyway), with which of them are invalid.
type pbVerdictCorpus struct {
	lines   [][]byte
	invalid []bool
	times   []time.Time
}

var (
	pbVCOnce sync.Once
	pbVC     pbVerdictCorpus
	pbVCErr  error
)

const pbVerdictOps = 2*PlcbundleOps + 400

func pbTheVerdictCorpus(t testing.TB) pbVerdictCorpus {
	t.Helper()
	pbVCOnce.Do(func() {
		var buf bytes.Buffer
		bad := map[int64]bool{}
		_, pbVCErr = corpus.Generate(context.Background(), &buf, corpus.Config{
			Ops: pbVerdictOps, Seed: 18, InvalidRate: 0.01,
			OnInvalid: func(seq int64, _ corpus.InvalidKind) { bad[seq] = true },
		})
		if pbVCErr != nil {
			return
		}
		for i, raw := range bytes.Split(buf.Bytes(), []byte("\n")) {
			x, _, err := plc.ParseExportLine(raw)
			if err != nil {
				pbVCErr = err
				return
			}
			pbVC.lines = append(pbVC.lines, validate.AppendAuditEntryJSON(nil, x.DID, x.Op, false, x.CreatedAt))
			pbVC.invalid = append(pbVC.invalid, bad[int64(i+1)])
			pbVC.times = append(pbVC.times, x.CreatedAt)
		}
	})
	if pbVCErr != nil {
		t.Fatal(pbVCErr)
	}
	return pbVC
}

// pbVerdictLines returns n lines: the corpus's first n-3 and the three
// purged ops among them (at 5000, 5001, 5002), with the number of valid
// ones.
func pbVerdictLines(t testing.TB, n int) (lines [][]byte, valid int, purgedCIDs []string) {
	t.Helper()
	c := pbTheVerdictCorpus(t)
	p, cids := pbPurgedLines(t)
	lines = append(lines, c.lines[:5000]...)
	lines = append(lines, p...)
	lines = append(lines, c.lines[5000:n-len(p)]...)
	for i := range n - len(p) {
		if !c.invalid[i] {
			valid++
		}
	}
	return lines, valid, cids
}

// pbCheckVerdicts checks an import's totals and that every rejected line is
// recorded, the purged ones with their reasons.
func pbCheckVerdicts(t *testing.T, store oplog.Store, source string, st oplog.ImportStats, lines, valid int, purgedCIDs []string) {
	t.Helper()
	if st.Imported != int64(valid) || st.Rejected != int64(lines-valid) {
		t.Fatalf("imported %d, rejected %d; want %d and %d", st.Imported, st.Rejected, valid, lines-valid)
	}
	rjs, err := store.Rejections(context.Background(), source, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(rjs) != lines-valid {
		t.Fatalf("%d rejections recorded, want %d", len(rjs), lines-valid)
	}
	byCID := map[string]oplog.Rejection{}
	for _, r := range rjs {
		byCID[r.CID] = r
	}
	for i, cid := range purgedCIDs {
		r, ok := byCID[cid]
		if !ok {
			t.Errorf("purged op %s (%s) not recorded as rejected", cid, pbPurged[i].file)
			continue
		}
		if !pbPurged[i].reason.MatchString(r.Reason) {
			t.Errorf("purged op %s rejected for %q, want %v", cid, r.Reason, pbPurged[i].reason)
		}
	}
}

func pbImport(t *testing.T, store oplog.Store, src ForeignSource, source string) (int64, oplog.ImportStats) {
	t.Helper()
	l := oplog.NewLog(store, oplog.Options{NoRateLimit: true})
	defer l.Close()
	done, st, err := ReplayForeign(context.Background(), l, src, oplog.ImportOptions{Source: source, BatchSize: 1000, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	return done, st
}

func TestPlcbundleImportVerdicts(t *testing.T) {
	if testing.Short() {
		t.Skip("signs and verifies 20,000 ops")
	}
	lines, valid, cids := pbVerdictLines(t, 2*PlcbundleOps)
	dir := t.TempDir()
	es := writePbFixture(t, dir, lines, pbFixture{single: map[int]bool{2: true}})
	// First the repository as it was with one bundle; then grown by one.
	writePbIndex(t, dir, "https://plc.example", es[:1])
	store, _ := storetest.SQLite(t)
	r, err := OpenPlcbundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	source := r.Source()
	_, st1 := pbImport(t, store, r, source)

	writePbIndex(t, dir, "https://plc.example", es)
	r, err = OpenPlcbundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	if r.Source() != source {
		t.Fatalf("the grown repository is source %s, was %s", r.Source(), source)
	}
	done, st2 := pbImport(t, store, r, source)
	if done != PlcbundleOps {
		t.Fatalf("the second import passed over %d lines, want %d", done, PlcbundleOps)
	}
	st := oplog.ImportStats{Imported: st1.Imported + st2.Imported, Rejected: st1.Rejected + st2.Rejected}
	pbCheckVerdicts(t, store, source, st, len(lines), valid, cids)

	// Again: nothing left to do.
	r, _ = OpenPlcbundle(dir)
	done, st3 := pbImport(t, store, r, source)
	if done != 2*PlcbundleOps || st3.Imported != 0 || st3.Rejected != 0 || st3.Lines != 0 {
		t.Fatalf("a rerun passed over %d lines and did %+v", done, st3)
	}
}

// TestPlcbundleImportStopsAtAnAlteredBundle: the bundles before it are
// imported, none of its ops.
func TestPlcbundleImportStopsAtAnAlteredBundle(t *testing.T) {
	if testing.Short() {
		t.Skip("signs and verifies 20,000 ops")
	}
	lines, _, _ := pbVerdictLines(t, 2*PlcbundleOps)
	dir := t.TempDir()
	writePbFixture(t, dir, lines, pbFixture{})
	path := filepath.Join(dir, PlcbundleFileName(2))
	b, _ := os.ReadFile(path)
	b[len(b)-100] ^= 0x40
	os.WriteFile(path, b, 0o644)

	store, _ := storetest.SQLite(t)
	r, err := OpenPlcbundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	l := oplog.NewLog(store, oplog.Options{NoRateLimit: true})
	defer l.Close()
	_, st, err := ReplayForeign(context.Background(), l, r, oplog.ImportOptions{Source: r.Source(), BatchSize: 1000})
	if err == nil || !regexp.MustCompile(`bundle 2 .*altered file`).MatchString(err.Error()) {
		t.Fatalf("error %v, want bundle 2 refused", err)
	}
	if st.Lines != PlcbundleOps || st.Imported+st.Rejected != PlcbundleOps {
		t.Fatalf("%+v: want the 10,000 lines of bundle 1 done", st)
	}
	if c, _ := store.Cursor(context.Background(), r.Source()); c.Line != PlcbundleOps {
		t.Fatalf("cursor at line %d, want %d", c.Line, PlcbundleOps)
	}
}

// TestPlcbundleImportResumesMidBundle: an import interrupted inside a
// bundle goes on after its last committed batch; nothing is imported or
// rejected twice.
func TestPlcbundleImportResumesMidBundle(t *testing.T) {
	if testing.Short() {
		t.Skip("verifies 10,000 ops")
	}
	lines, valid, cids := pbVerdictLines(t, PlcbundleOps)
	dir := t.TempDir()
	writePbFixture(t, dir, lines, pbFixture{})
	store, _ := storetest.SQLite(t)
	l := oplog.NewLog(store, oplog.Options{NoRateLimit: true})
	defer l.Close()

	r, _ := OpenPlcbundle(dir)
	ctx, cancel := context.WithCancel(context.Background())
	_, st1, err := ReplayForeign(ctx, l, r, oplog.ImportOptions{Source: r.Source(), BatchSize: 1000, Workers: 2,
		Progress: func(st oplog.ImportStats) {
			if st.Batches == 3 {
				cancel()
			}
		}})
	cancel()
	if err == nil {
		t.Fatal("the interrupted import ended without an error")
	}
	r.Close()
	r, _ = OpenPlcbundle(dir)
	done, st2, err := ReplayForeign(context.Background(), l, r, oplog.ImportOptions{Source: r.Source(), BatchSize: 1000, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if done == 0 || done%1000 != 0 || done >= PlcbundleOps {
		t.Fatalf("the second import passed over %d lines, want whole batches of the first", done)
	}
	st := oplog.ImportStats{Imported: st1.Imported + st2.Imported, Rejected: st1.Rejected + st2.Rejected}
	pbCheckVerdicts(t, store, r.Source(), st, len(lines), valid, cids)
}
