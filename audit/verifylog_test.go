package audit_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/audit"
	"github.com/plcdir/plc/validate"
)

const logsDir = "../testdata/plc-audit-logs"

// readLog reads one audit-log fixture through plc.ReadAuditLog.
func readLog(t *testing.T, path string) []plc.AuditEntry {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := plc.ReadAuditLog(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(entries) == 0 {
		t.Fatalf("%s: no entries", path)
	}
	return entries
}

func fixtureNames(t *testing.T, kind string) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(logsDir, kind, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatalf("no %s audit-log fixtures in %s", kind, logsDir)
	}
	names := make([]string, len(paths))
	for i, p := range paths {
		names[i] = strings.TrimSuffix(filepath.Base(p), ".json")
	}
	return names
}

// cloneLog deep-copies entries so a test can tamper with them freely.
func cloneLog(entries []plc.AuditEntry) []plc.AuditEntry {
	out := slices.Clone(entries)
	for i := range out {
		out[i].Operation = slices.Clone(out[i].Operation)
	}
	return out
}

func TestVerifyLogValidFixtures(t *testing.T) {
	// Nullified counts the fixtures are known to have; every other valid log
	// has none. The counts are also recomputed from the files' own flags.
	wantNullified := map[string][2]int{ // name → {ops, nullified}
		"log_nullification":                {3, 1},
		"log_nullification_at_exactly_72h": {4, 1},
		"log_nullification_nontrivial":     {8, 5},
		"log_nullified_tombstone":          {4, 1},
	}
	names := fixtureNames(t, "valid")
	if len(names) != 10 {
		t.Errorf("found %d valid fixtures, want 10", len(names))
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			entries := readLog(t, filepath.Join(logsDir, "valid", name+".json"))
			flagged := 0
			for _, e := range entries {
				if e.Nullified {
					flagged++
				}
			}
			res := audit.VerifyLog(entries)
			if res.Failure != nil {
				t.Fatalf("valid log rejected: %v", res.Failure)
			}
			if res.DID != entries[0].DID {
				t.Errorf("DID = %s, want %s", res.DID, entries[0].DID)
			}
			if res.Ops != len(entries) || res.Nullified != flagged {
				t.Errorf("ops/nullified = %d/%d, the file's flags say %d/%d", res.Ops, res.Nullified, len(entries), flagged)
			}
			want, ok := wantNullified[name]
			if !ok {
				want = [2]int{len(entries), 0}
			}
			if res.Ops != want[0] || res.Nullified != want[1] {
				t.Errorf("ops/nullified = %d/%d, want %d/%d", res.Ops, res.Nullified, want[0], want[1])
			}
		})
	}
}

func TestVerifyLogInvalidFixtures(t *testing.T) {
	wantClass := map[string]error{
		"log_invalid_nullification_reused_key": validate.ErrInvalidSignature,
		"log_invalid_nullification_too_slow":   validate.ErrLateRecovery,
		"log_invalid_sig_b64_newline":          validate.ErrInvalidSignature,
		"log_invalid_sig_b64_padding_bits":     validate.ErrInvalidSignature,
		"log_invalid_sig_b64_padding_chars":    validate.ErrInvalidSignature,
		"log_invalid_sig_der":                  validate.ErrInvalidSignature,
		"log_invalid_sig_k256_high_s":          validate.ErrInvalidSignature,
		"log_invalid_sig_p256_high_s":          validate.ErrInvalidSignature,
		"log_invalid_update_nullified":         validate.ErrMisordered,
		"log_invalid_update_tombstoned":        validate.ErrMisordered,
	}
	names := fixtureNames(t, "invalid")
	if len(names) != len(wantClass) {
		t.Errorf("found %d invalid fixtures, want %d", len(names), len(wantClass))
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			class, ok := wantClass[name]
			if !ok {
				t.Fatalf("no expected verdict for new fixture %s", name)
			}
			entries := readLog(t, filepath.Join(logsDir, "invalid", name+".json"))
			res := audit.VerifyLog(entries)
			if res.Failure == nil {
				t.Fatal("invalid log accepted")
			}
			last := len(entries) - 1
			if res.Failure.Index != last {
				t.Errorf("failed at entry %d, want the last entry %d: %v", res.Failure.Index, last, res.Failure)
			}
			if res.Failure.CID != entries[last].CID {
				t.Errorf("failure names cid %s, want %s", res.Failure.CID, entries[last].CID)
			}
			if !errors.Is(res.Failure, class) {
				t.Errorf("failure %v is not %v", res.Failure, class)
			}
			var verr *validate.Error
			if !errors.As(res.Failure, &verr) {
				t.Errorf("failure %v carries no *validate.Error", res.Failure)
			}
			// The ops before the bad one break no rule: only their recorded
			// nullified flags may disagree (they were recorded with the bad
			// op, which may have nullified some of them, in the log).
			if last > 0 {
				pre := audit.VerifyLog(entries[:last])
				if pre.Failure != nil && !errors.Is(pre.Failure, audit.ErrNullifiedMismatch) {
					t.Errorf("the entries before the bad op are rejected: %v", pre.Failure)
				}
			}
		})
	}
}

// loadValid returns the entries of one valid fixture.
func loadValid(t *testing.T, name string) []plc.AuditEntry {
	t.Helper()
	return readLog(t, filepath.Join(logsDir, "valid", name+".json"))
}

func wantFailure(t *testing.T, res audit.LogResult, index int, class error) {
	t.Helper()
	if res.Failure == nil {
		t.Fatal("tampered log accepted")
	}
	if index >= 0 && res.Failure.Index != index {
		t.Errorf("failed at entry %d, want %d: %v", res.Failure.Index, index, res.Failure)
	}
	if class != nil && !errors.Is(res.Failure, class) {
		t.Errorf("failure %v is not %v", res.Failure, class)
	}
}

// A log whose nullified flags were edited (hiding a recovery, or inventing
// one) must not verify, whichever entry was edited.
func TestFlippedNullifiedFlagIsDetected(t *testing.T) {
	for _, name := range fixtureNames(t, "valid") {
		entries := loadValid(t, name)
		for i := range entries {
			tampered := cloneLog(entries)
			tampered[i].Nullified = !tampered[i].Nullified
			res := audit.VerifyLog(tampered)
			if res.Failure == nil {
				t.Errorf("%s: flipping entry %d's nullified flag went unnoticed", name, i)
				continue
			}
			if res.Failure.Index != i || !errors.Is(res.Failure, audit.ErrNullifiedMismatch) {
				t.Errorf("%s: flipped entry %d: got %v at %d, want ErrNullifiedMismatch at %d", name, i, res.Failure, res.Failure.Index, i)
			}
		}
	}
}

// A log cannot claim a CID its operation does not hash to (a mirror that
// serves ops under forged CIDs could otherwise splice histories).
func TestForgedCIDIsDetected(t *testing.T) {
	for _, name := range []string{"log_bskyapp", "log_nullification_nontrivial", "log_legacy_dholms"} {
		entries := loadValid(t, name)
		for i := range entries {
			tampered := cloneLog(entries)
			// Another well-formed CID: the next entry's, or the first's.
			other := entries[(i+1)%len(entries)].CID
			tampered[i].CID = other
			wantFailure(t, audit.VerifyLog(tampered), i, audit.ErrCIDMismatch)

			tampered = cloneLog(entries)
			tampered[i].CID = "bafyreiaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
			wantFailure(t, audit.VerifyLog(tampered), i, audit.ErrCIDMismatch)
		}
	}
}

// An entry that names another DID cannot be slipped into a log.
func TestForeignDIDEntryIsDetected(t *testing.T) {
	for _, name := range []string{"log_bskyapp", "log_nullification", "log_tombstone"} {
		entries := loadValid(t, name)
		for i := 1; i < len(entries); i++ {
			tampered := cloneLog(entries)
			tampered[i].DID = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
			wantFailure(t, audit.VerifyLog(tampered), i, audit.ErrDIDMismatch)
		}
		// Relabelling the whole log with another DID: the genesis op no
		// longer hashes to it.
		tampered := cloneLog(entries)
		for i := range tampered {
			tampered[i].DID = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
		}
		wantFailure(t, audit.VerifyLog(tampered), 0, validate.ErrGenesisHash)
		// A DID that is not a did:plc identifier at all.
		tampered = cloneLog(entries)
		for i := range tampered {
			tampered[i].DID = "did:web:example.com"
		}
		wantFailure(t, audit.VerifyLog(tampered), 0, audit.ErrDIDMismatch)
	}
}

// Reordering history must not verify.
func TestSwappedEntriesAreDetected(t *testing.T) {
	for _, name := range fixtureNames(t, "valid") {
		entries := loadValid(t, name)
		for i := 0; i+1 < len(entries); i++ {
			tampered := cloneLog(entries)
			tampered[i], tampered[i+1] = tampered[i+1], tampered[i]
			if res := audit.VerifyLog(tampered); res.Failure == nil {
				t.Errorf("%s: swapping entries %d and %d went unnoticed", name, i, i+1)
			}
			// Swapping only the operations (keeping times and flags in place).
			tampered = cloneLog(entries)
			tampered[i].Operation, tampered[i+1].Operation = tampered[i+1].Operation, tampered[i].Operation
			tampered[i].CID, tampered[i+1].CID = tampered[i+1].CID, tampered[i].CID
			if res := audit.VerifyLog(tampered); res.Failure == nil {
				t.Errorf("%s: swapping the ops of entries %d and %d went unnoticed", name, i, i+1)
			}
		}
	}
}

// Silently dropping an op from the middle of a history must not verify.
//
// This holds for every op that is part of the DID's current history (not
// nullified): the next such op names it as prev. A nullified op that no
// surviving op builds on can be dropped without a trace in the audit-log
// format itself (the result is a history in which it was never submitted),
// so only the non-nullified ones are required to fail here.
func TestDeletedMiddleEntryIsDetected(t *testing.T) {
	tested := 0
	for _, name := range fixtureNames(t, "valid") {
		entries := loadValid(t, name)
		for i := 1; i+1 < len(entries); i++ {
			tampered := slices.Delete(cloneLog(entries), i, i+1)
			res := audit.VerifyLog(tampered)
			if entries[i].Nullified {
				if res.Failure == nil {
					t.Logf("%s: dropping nullified entry %d is not detectable from the log alone", name, i)
				}
				continue
			}
			if res.Failure == nil {
				t.Errorf("%s: deleting entry %d went unnoticed", name, i)
			}
			tested++
		}
	}
	if tested == 0 {
		t.Fatal("no log long enough to delete a middle entry")
	}
}

// Dropping the genesis op leaves a log whose first op is not a genesis op.
func TestDeletedGenesisIsDetected(t *testing.T) {
	for _, name := range fixtureNames(t, "valid") {
		entries := loadValid(t, name)
		if len(entries) < 2 {
			continue
		}
		res := audit.VerifyLog(cloneLog(entries)[1:])
		wantFailure(t, res, 0, nil)
	}
}

func TestEmptyLogIsRejected(t *testing.T) {
	for _, entries := range [][]plc.AuditEntry{nil, {}} {
		res := audit.VerifyLog(entries)
		if res.Failure == nil || !errors.Is(res.Failure, audit.ErrEmptyLog) {
			t.Errorf("empty log: got %+v, want ErrEmptyLog", res.Failure)
		}
	}
	entries, err := plc.ReadAuditLog(strings.NewReader("[]"))
	if err != nil {
		t.Fatal(err)
	}
	if res := audit.VerifyLog(entries); res.Failure == nil || !errors.Is(res.Failure, audit.ErrEmptyLog) {
		t.Errorf("[]: got %+v, want ErrEmptyLog", res.Failure)
	}
}

// A replayed log cannot smuggle an op in through an unusable createdAt or a
// missing operation.
func TestMalformedEntryIsRejected(t *testing.T) {
	entries := loadValid(t, "log_bskyapp")
	for _, tc := range []struct {
		name   string
		tamper func(e *plc.AuditEntry)
	}{
		{"bad createdAt", func(e *plc.AuditEntry) { e.CreatedAt = "yesterday" }},
		{"no createdAt", func(e *plc.AuditEntry) { e.CreatedAt = "" }},
		{"no operation", func(e *plc.AuditEntry) { e.Operation = nil }},
	} {
		tampered := cloneLog(entries)
		tc.tamper(&tampered[1])
		res := audit.VerifyLog(tampered)
		if res.Failure == nil || res.Failure.Index != 1 || !errors.Is(res.Failure, audit.ErrEntry) {
			t.Errorf("%s: got %+v, want ErrEntry at 1", tc.name, res.Failure)
		}
	}
	// An operation that is not an object is a malformed op.
	tampered := cloneLog(entries)
	tampered[1].Operation = json.RawMessage(`"hello"`)
	wantFailure(t, audit.VerifyLog(tampered), 1, validate.ErrMalformed)
}
