package validate_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plcdir/plc/validate"
)

// The shared interop vectors (testdata/README.md). Helpers in this file are
// prefixed fx so they cannot collide with other test files of the package.

const fxLogsDir = "../testdata/plc-audit-logs"

// fxEntry is one element of a /:did/log/audit fixture.
type fxEntry struct {
	DID       string          `json:"did"`
	Operation json.RawMessage `json:"operation"`
	CID       string          `json:"cid"`
	Nullified bool            `json:"nullified"`
	CreatedAt string          `json:"createdAt"`
}

type fxLog struct {
	Name    string
	Entries []fxEntry
}

// fxLoadLogs reads every audit-log fixture of kind "valid" or "invalid".
func fxLoadLogs(tb testing.TB, kind string) []fxLog {
	tb.Helper()
	paths, err := filepath.Glob(filepath.Join(fxLogsDir, kind, "*.json"))
	if err != nil {
		tb.Fatal(err)
	}
	if len(paths) == 0 {
		tb.Fatalf("no %s audit-log fixtures under %s", kind, fxLogsDir)
	}
	var logs []fxLog
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		var entries []fxEntry
		if err := json.Unmarshal(b, &entries); err != nil {
			tb.Fatalf("%s: %v", p, err)
		}
		if len(entries) == 0 {
			tb.Fatalf("%s: empty log", p)
		}
		logs = append(logs, fxLog{Name: strings.TrimSuffix(filepath.Base(p), ".json"), Entries: entries})
	}
	return logs
}

// fxTime parses an entry's createdAt.
func fxTime(tb testing.TB, e fxEntry) time.Time {
	tb.Helper()
	ts, err := validate.ParseTimestamp(e.CreatedAt)
	if err != nil {
		tb.Fatalf("createdAt %q: %v", e.CreatedAt, err)
	}
	return ts
}

// fxStates replays a valid log and returns, for each entry i, the chain
// state just before it (states[i]) and its parsed op (ops[i]).
func fxStates(tb testing.TB, l fxLog) (states []validate.State, ops []*validate.Op) {
	tb.Helper()
	st := validate.State{DID: l.Entries[0].DID}
	for i, e := range l.Entries {
		op, err := validate.ParseJSON(e.Operation)
		if err != nil {
			tb.Fatalf("%s entry %d: ParseJSON: %v", l.Name, i, err)
		}
		states = append(states, st)
		ops = append(ops, op)
		next, _, err := st.Next(op, fxTime(tb, e))
		if err != nil {
			tb.Fatalf("%s entry %d: Next: %v", l.Name, i, err)
		}
		st = next
	}
	return states, ops
}

// fxCompact compacts raw JSON without reordering or re-escaping anything.
func fxCompact(tb testing.TB, raw []byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// fxKeyCompare is the reference's JSON key order, the DAG-CBOR map key
// order: shorter keys first, then bytewise. (Integer-like keys, which a
// JavaScript object would enumerate first, do not occur in the fixtures.)
func fxKeyCompare(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}

// fxReorder renders raw JSON compactly with every object's keys in the
// reference order, keeping each scalar's source text (and so its escaping)
// unchanged. For a fixture already in the reference order it equals
// json.Compact of the source.
func fxReorder(tb testing.TB, raw []byte) []byte {
	tb.Helper()
	raw = fxCompact(tb, raw)
	switch raw[0] {
	case '{':
		type member struct {
			key     string
			rawKey  []byte
			rawJSON []byte
		}
		var members []member
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if _, err := dec.Token(); err != nil { // {
			tb.Fatal(err)
		}
		for dec.More() {
			start := dec.InputOffset()
			tok, err := dec.Token()
			if err != nil {
				tb.Fatal(err)
			}
			key := tok.(string)
			rawKey := bytes.TrimLeft(raw[start:dec.InputOffset()], ",")
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				tb.Fatal(err)
			}
			members = append(members, member{key, rawKey, fxReorder(tb, v)})
		}
		slices.SortStableFunc(members, func(a, b member) int { return fxKeyCompare(a.key, b.key) })
		out := []byte{'{'}
		for i, m := range members {
			if i > 0 {
				out = append(out, ',')
			}
			out = append(out, m.rawKey...)
			out = append(out, ':')
			out = append(out, m.rawJSON...)
		}
		return append(out, '}')
	case '[':
		var elems []json.RawMessage
		if err := json.Unmarshal(raw, &elems); err != nil {
			tb.Fatal(err)
		}
		out := []byte{'['}
		for i, e := range elems {
			if i > 0 {
				out = append(out, ',')
			}
			out = append(out, fxReorder(tb, e)...)
		}
		return append(out, ']')
	}
	return raw
}

// Every op of every valid log parses, hashes to its recorded CID, renders
// back to the fixture's bytes in the reference key order, and survives a
// DAG-CBOR round trip unchanged; every genesis op hashes to its DID.
func TestFixtureOpsRoundTrip(t *testing.T) {
	var ops, inRefOrder int
	for _, l := range fxLoadLogs(t, "valid") {
		t.Run(l.Name, func(t *testing.T) {
			for i, e := range l.Entries {
				where := fmt.Sprintf("entry %d (%s)", i, e.CID)
				op, err := validate.ParseJSON(e.Operation)
				if err != nil {
					t.Errorf("%s: ParseJSON: %v", where, err)
					continue
				}
				ops++
				if got := op.CID(); got != e.CID {
					t.Errorf("%s: CID = %s", where, got)
				}
				if !validate.ValidCID(op.CID()) {
					t.Errorf("%s: CID %s is not a valid did:plc CID", where, op.CID())
				}

				// JSON rendering: the fixture's own bytes, keys in reference order.
				got := op.AppendJSON(nil)
				compact := fxCompact(t, e.Operation)
				want := fxReorder(t, e.Operation)
				if bytes.Equal(compact, want) {
					inRefOrder++
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s: AppendJSON\n got %s\nwant %s", where, got, want)
				}
				if m, err := op.MarshalJSON(); err != nil || !bytes.Equal(m, got) {
					t.Errorf("%s: MarshalJSON = %s, %v; want AppendJSON's bytes", where, m, err)
				}
				// Appending to a non-empty buffer leaves the prefix alone.
				if app := op.AppendJSON([]byte("xyz")); !bytes.Equal(app, append([]byte("xyz"), got...)) {
					t.Errorf("%s: AppendJSON does not append", where)
				}
				// The rendering parses back to the same op.
				op2, err := validate.ParseJSON(got)
				if err != nil {
					t.Errorf("%s: ParseJSON(AppendJSON): %v", where, err)
				} else if !bytes.Equal(op2.SignedCBOR(), op.SignedCBOR()) || op2.CID() != op.CID() {
					t.Errorf("%s: JSON round trip changed the op", where)
				}

				// DAG-CBOR round trip.
				signed := op.SignedCBOR()
				if c := validate.CIDForCBOR(signed); c != e.CID {
					t.Errorf("%s: CIDForCBOR(SignedCBOR) = %s", where, c)
				}
				op3, err := validate.ParseCBOR(signed)
				if err != nil {
					t.Errorf("%s: ParseCBOR(SignedCBOR): %v", where, err)
				} else {
					if !bytes.Equal(op3.SignedCBOR(), signed) || op3.CID() != e.CID {
						t.Errorf("%s: CBOR round trip changed the op", where)
					}
					if !bytes.Equal(op3.AppendJSON(nil), got) {
						t.Errorf("%s: CBOR round trip changed the JSON rendering", where)
					}
				}
				if !bytes.Equal(op.UnsignedCBOR(), validate.UnsignedCBOR(op.Operation())) {
					t.Errorf("%s: Op.UnsignedCBOR differs from UnsignedCBOR(Operation())", where)
				}
				if op.Type() == validate.TypeOperation || op.Type() == validate.TypeCreate {
					if _, ok := op.Data(); !ok {
						t.Errorf("%s: Data() reports no data for a %s", where, op.Type())
					}
				}

				if i == 0 {
					if op.Prev() != "" {
						t.Errorf("%s: genesis op has prev %q", where, op.Prev())
					}
					if did := op.GenesisDID(); did != e.DID {
						t.Errorf("%s: GenesisDID = %s, want %s", where, did, e.DID)
					}
				}
			}
		})
	}
	if ops == 0 {
		t.Fatal("no ops checked")
	}
	t.Logf("%d ops round-tripped, %d of them stored in the reference key order", ops, inRefOrder)
}

// The nullified flags of the valid logs are exactly what the chain rules
// compute when the ops are replayed in order at their createdAt.
func TestFixtureLogsReplay(t *testing.T) {
	for _, l := range fxLoadLogs(t, "valid") {
		t.Run(l.Name, func(t *testing.T) {
			st := validate.State{DID: l.Entries[0].DID}
			nullified := map[string]bool{}
			for i, e := range l.Entries {
				op, err := validate.ParseJSON(e.Operation)
				if err != nil {
					t.Fatalf("entry %d: %v", i, err)
				}
				next, applied, err := st.Next(op, fxTime(t, e))
				if err != nil {
					t.Fatalf("entry %d: %v", i, err)
				}
				for _, c := range applied.Nullified {
					nullified[c] = true
				}
				// The accepted op becomes the head.
				if h, ok := next.Head(); !ok || h.CID != e.CID {
					t.Fatalf("entry %d: new head %v, want %s", i, h, e.CID)
				}
				st = next
			}
			for i, e := range l.Entries {
				if nullified[e.CID] != e.Nullified {
					t.Errorf("entry %d: recomputed nullified %t, recorded %t", i, nullified[e.CID], e.Nullified)
				}
			}
		})
	}
}

// fxEquivalentJSON returns other JSON spellings of fixture ops: whitespace,
// string escapes and key order change the bytes but not the op.
func fxEquivalentJSON(tb testing.TB) [][]byte {
	var out [][]byte
	for _, l := range fxLoadLogs(tb, "valid") {
		for _, e := range l.Entries {
			c := string(fxCompact(tb, e.Operation))
			out = append(out,
				[]byte(" \t\r\n"+c+"\n"),
				fxSpaced(c, " "),
				fxSpaced(c, "\r\n\t "),
				[]byte(strings.ReplaceAll(c, "/", `\/`)),
				[]byte(strings.Replace(c, `"type"`, `"\u0074ype"`, 1)),
				[]byte(strings.Replace(c, `"did:key:`, `"did\u003akey:`, 1)),
				[]byte(strings.Replace(c, `"plc_`, `"plc\u005F`, 1)),
				// Key order: the stored (log) order and the reference order.
				fxReorder(tb, e.Operation),
			)
		}
	}
	return out
}

// fxSpaced inserts ws before and after every structural character of the
// compact JSON c (outside strings).
func fxSpaced(c, ws string) []byte {
	var out []byte
	inString, escaped := false, false
	for i := 0; i < len(c); i++ {
		ch := c[i]
		switch {
		case inString:
			out = append(out, ch)
			switch {
			case escaped:
				escaped = false
			case ch == '\\':
				escaped = true
			case ch == '"':
				inString = false
			}
			continue
		case ch == '"':
			inString = true
			out = append(out, ch)
			continue
		case !strings.ContainsRune("{}[],:", rune(ch)):
			out = append(out, ch)
			continue
		}
		out = append(out, ws...)
		out = append(out, ch)
		out = append(out, ws...)
	}
	return out
}

// The CID is a function of the op, not of its JSON spelling: whitespace,
// escapes and key order are not signed, so they cannot make another op.
func TestEquivalentJSONHasOneCID(t *testing.T) {
	want := map[string]bool{}
	for _, l := range fxLoadLogs(t, "valid") {
		for _, e := range l.Entries {
			want[e.CID] = true
		}
	}
	n := 0
	for _, b := range fxEquivalentJSON(t) {
		op, err := validate.ParseJSON(b)
		if err != nil {
			t.Errorf("ParseJSON(%s): %v", b, err)
			continue
		}
		if !want[op.CID()] {
			t.Errorf("%s parses to an op with a new CID %s", b, op.CID())
		}
		n++
	}
	t.Logf("%d respellings checked", n)
}
