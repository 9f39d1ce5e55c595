package validate_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/plcdir/plc/validate"
)

// fxReplacements are the bytes each position of an op is overwritten with:
// whitespace, a quote, a backslash, a digit, NUL and a non-UTF-8 byte. Two
// more depend on the original byte: its low bit flipped (a near miss: a
// neighbouring letter or digit, '"'↔'#', '{'↔'z', ','↔'-') and its case bit
// flipped (upper-case keys, types or base58/base64 characters). A sample,
// to keep the test fast under -race: every byte value at every position
// would be 30 times the work.
var fxReplacements = []byte{' ', '"', '\\', '0', 0x00, 0xff}

// TestSingleByteMangledOpsAreRejected overwrites every byte of every op of
// every valid log, one at a time, and replays the result in its place in the
// chain. An op that still parses and still passes the chain rules must be
// the very same op (same CID): no single-byte change may turn a signed op
// into a different op that verifies. This rules out parsers that skip or
// normalise bytes the signature does not cover (stray characters in the
// sig, lenient escapes, trailing data, case-insensitive keys or types).
func TestSingleByteMangledOpsAreRejected(t *testing.T) {
	t.Parallel()
	var tried, parsed, sameCID int
	type stats struct{ tried, parsed, sameCID int }
	results := make(chan stats, 64)
	logs := fxLoadLogs(t, "valid")
	t.Run("logs", func(t *testing.T) {
		for _, l := range logs {
			t.Run(l.Name, func(t *testing.T) {
				t.Parallel()
				var s stats
				defer func() { results <- s }()
				states, ops := fxStates(t, l)
				for i, e := range l.Entries {
					createdAt := fxTime(t, e)
					orig := fxCompact(t, e.Operation)
					// The unmangled op passes in this context.
					if _, _, err := states[i].Next(ops[i], createdAt); err != nil {
						t.Fatalf("entry %d: original op rejected: %v", i, err)
					}
					buf := make([]byte, len(orig))
					for pos := range orig {
						for _, r := range append(fxReplacements[:len(fxReplacements):len(fxReplacements)], orig[pos]^0x01, orig[pos]^0x20) {
							if r == orig[pos] {
								continue
							}
							copy(buf, orig)
							buf[pos] = r
							s.tried++
							op, err := validate.ParseJSON(buf)
							if err != nil {
								fxCheckClassed(t, err, "ParseJSON")
								continue
							}
							s.parsed++
							if op.CID() == e.CID {
								s.sameCID++
								continue
							}
							_, _, err = states[i].Next(op, createdAt)
							if err == nil {
								t.Errorf("%s entry %d: byte %d %q→%q gives a different op (%s) that passes the chain rules:\n%s",
									l.Name, i, pos, orig[pos], r, op.CID(), buf)
								continue
							}
							fxCheckClassed(t, err, "Next")
						}
					}
				}
			})
		}
	})
	close(results)
	for s := range results {
		tried += s.tried
		parsed += s.parsed
		sameCID += s.sameCID
	}
	if tried == 0 {
		t.Fatal("no mutations tried")
	}
	t.Logf("%d single-byte mutations tried; %d parsed, %d of those were the same op (same CID), the rest failed the chain rules",
		tried, parsed, sameCID)
}

// fxCheckClassed fails t unless err is a *validate.Error wrapping one of
// the package's classes.
func fxCheckClassed(t *testing.T, err error, what string) {
	t.Helper()
	var verr *validate.Error
	if !errors.As(err, &verr) || verr.Class == nil {
		t.Errorf("%s: error %v (%T) is not a classed *validate.Error", what, err, err)
		return
	}
	for _, c := range []error{
		validate.ErrMalformed, validate.ErrInvalidKey, validate.ErrInvalidSignature, validate.ErrMisordered,
		validate.ErrLateRecovery, validate.ErrGenesisHash, validate.ErrLimit, validate.ErrRateLimit,
	} {
		if errors.Is(err, c) {
			return
		}
	}
	t.Errorf("%s: error %v has unknown class %v", what, err, verr.Class)
}

// TestMangledOpsInDAGCBOR does the same for the signed DAG-CBOR encoding:
// every single-byte change of an op's signed bytes is either refused by
// ParseCBOR (which accepts only the canonical encoding) or yields an op that
// fails the chain rules. A byte change always changes the CID here, since
// ParseCBOR(b).SignedCBOR() equals b. To bound the time it takes, only the
// genesis op and the last op of each log are mangled.
func TestMangledOpsInDAGCBOR(t *testing.T) {
	t.Parallel()
	var tried, parsed int
	for _, l := range fxLoadLogs(t, "valid") {
		states, ops := fxStates(t, l)
		for i, e := range l.Entries {
			if i != 0 && i != len(l.Entries)-1 {
				continue
			}
			createdAt := fxTime(t, e)
			orig := ops[i].SignedCBOR()
			buf := make([]byte, len(orig))
			for pos := range orig {
				// Fewer replacements than for JSON: the low bit flipped (a
				// neighbouring character, or a head's length/major type off by
				// one), the high bit flipped (major type 0↔4, 1↔5, …, or
				// invalid UTF-8) and 0xff, which is no DAG-CBOR head at all.
				for _, r := range []byte{orig[pos] ^ 0x01, orig[pos] ^ 0x80, 0xff} {
					if r == orig[pos] {
						continue
					}
					copy(buf, orig)
					buf[pos] = r
					tried++
					op, err := validate.ParseCBOR(buf)
					if err != nil {
						fxCheckClassed(t, err, "ParseCBOR")
						continue
					}
					parsed++
					if !bytes.Equal(op.SignedCBOR(), buf) {
						t.Errorf("%s entry %d: ParseCBOR accepted non-canonical bytes (byte %d → %#x)", l.Name, i, pos, r)
					}
					if _, _, err := states[i].Next(op, createdAt); err == nil {
						t.Errorf("%s entry %d: byte %d → %#x of the DAG-CBOR gives a different op that passes: %s",
							l.Name, i, pos, r, fmt.Sprint(string(op.AppendJSON(nil))))
					}
				}
			}
		}
	}
	t.Logf("%d single-byte DAG-CBOR mutations tried; %d parsed, all failed the chain rules", tried, parsed)
}
