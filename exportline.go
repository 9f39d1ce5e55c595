package plc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/plcdir/plc/validate"
)

// MaxLineBytes is the longest export line read, in bytes. A longer line is
// rejected (ErrBadLine), never buffered whole.
const MaxLineBytes = 64 << 10

// ErrBadLine: a line is not a usable export line. Every error of
// ParseExportLine and ReadLineHead is one.
var ErrBadLine = errors.New("bad export line")

// LineError is an ErrBadLine with the message operators see, wrapping the
// op's own parse error where that is what is wrong.
type LineError struct {
	Msg string
	Err error
}

func (e *LineError) Error() string        { return e.Msg }
func (e *LineError) Unwrap() error        { return e.Err }
func (e *LineError) Is(target error) bool { return target == ErrBadLine }

func badLine(format string, args ...any) error {
	return &LineError{Msg: fmt.Sprintf(format, args...)}
}

// ExportLine is one line of an export, seq mode ({"type":"sequenced_op",
// did, operation, cid, createdAt, seq}) or legacy ({did, operation, cid,
// nullified, createdAt}). Op is nil when the line is rejected; Seq is 0
// on a legacy line; HasNullified reports whether the line states a
// nullified flag, which is the source's claim, not the chain rules'.
type ExportLine struct {
	DID, CID                string
	Op                      *validate.Op
	CreatedAt               time.Time
	Seq                     int64
	HasNullified, Nullified bool
}

// Fields of an export line, as bits.
const (
	fieldDID = 1 << iota
	fieldOperation
	fieldCID
	fieldCreatedAt
	fieldType
	fieldSeq
	fieldNullified
)

var exportFields = map[string]int{
	"did": fieldDID, "operation": fieldOperation, "cid": fieldCID, "createdAt": fieldCreatedAt,
	"type": fieldType, "seq": fieldSeq, "nullified": fieldNullified,
}

// ParseExportLine reads one export line strictly: one JSON object with no
// unknown or duplicate member, did a did:plc, operation an op that parses
// (validate.ParseJSON) and whose CID is cid, createdAt a timestamp, seq a
// positive integer in its canonical form, type (when present)
// "sequenced_op" with a seq, and never both seq and nullified. A line over
// MaxLineBytes is rejected unread.
//
// A rejected line's error is a *LineError; what could be read of it (its
// DID, CID, seq) is returned with it. looksLikeExport reports whether the
// line is at least a JSON object with a did and an operation: whether
// the input it comes from is an export at all.
func ParseExportLine(b []byte) (l ExportLine, looksLikeExport bool, err error) {
	var env envelope
	if err := env.scan(b, &l); err != nil {
		return l, false, err
	}
	looksLikeExport, err = env.finish(&l, positiveInt)
	return l, looksLikeExport, err
}

// LineHead is what an export line states of itself, besides its op; Seq
// is 0 when it states none.
type LineHead struct {
	DID, CID, CreatedAt string
	Seq                 int64
}

// ReadLineHead reads what an export line states of itself without
// parsing its op, by ParseExportLine's scanner and rules: one JSON object,
// no unknown or duplicate field, did, cid and createdAt strings, seq a
// positive integer in its canonical form. Where a line's place in an
// export is read (the seq of a page's last line), it is read by these
// rules, so that it is what the ingest of the line reads too.
func ReadLineHead(b []byte) (LineHead, error) {
	var (
		env envelope
		l   ExportLine
		ok  bool
	)
	err := env.scan(b, &l)
	if err == nil {
		err = env.first
	}
	if err == nil && env.seen&fieldSeq != 0 {
		if l.Seq, ok = positiveInt(env.seq); !ok {
			err = badLine("seq %s is not a positive integer", env.seq)
		}
	}
	if err != nil {
		return LineHead{}, err
	}
	return LineHead{DID: l.DID, CID: l.CID, CreatedAt: env.createdAt, Seq: l.Seq}, nil
}

// envelope is what a scan of an export line's object found, field by
// field: the scanners (this file's, and the tests' reference over
// encoding/json) differ in how they delimit and decode values, not in the
// rules.
type envelope struct {
	seen           int
	first          error // the first problem with a field
	op, seq, null  []byte
	createdAt, typ string
}

// scan reads b's members into e and l, by scanObject.
func (e *envelope) scan(b []byte, l *ExportLine) error {
	if len(b) > MaxLineBytes {
		return badLine("line longer than %d bytes", MaxLineBytes)
	}
	return scanObject(b, func(key string, v []byte) { e.field(l, key, v, jsonString) })
}

// field records member key with raw value v; str decodes a JSON string.
func (e *envelope) field(l *ExportLine, key string, v []byte, str func([]byte) (string, bool)) {
	f, known := exportFields[key]
	switch {
	case !known:
		if e.first == nil {
			e.first = badLine("unknown field %q", key)
		}
		return
	case e.seen&f != 0:
		if e.first == nil {
			e.first = badLine("duplicate field %q", key)
		}
		return
	}
	e.seen |= f
	setStr := func(dst *string) {
		s, ok := str(v)
		if !ok && e.first == nil {
			e.first = badLine("%s is not a string", key)
		}
		*dst = s
	}
	switch f {
	case fieldDID:
		setStr(&l.DID)
	case fieldCID:
		setStr(&l.CID)
	case fieldCreatedAt:
		setStr(&e.createdAt)
	case fieldType:
		setStr(&e.typ)
	case fieldOperation:
		e.op = v
	case fieldSeq:
		e.seq = v
	case fieldNullified:
		e.null = v
	}
}

// finish applies the line's rules to what the scan found (positive reads
// seq), parses the op into l, and reports whether the line looks like an
// export line (a did and an operation) and what is wrong with it.
func (e *envelope) finish(l *ExportLine, positive func([]byte) (int64, bool)) (looksLikeExport bool, err error) {
	seen, first := e.seen, e.first
	looksLikeExport = seen&fieldDID != 0 && seen&fieldOperation != 0
	if seen&fieldSeq != 0 {
		n, ok := positive(e.seq)
		if !ok {
			if first == nil {
				first = badLine("seq %s is not a positive integer", e.seq)
			}
		} else {
			l.Seq = n
		}
	}
	switch {
	case first != nil:
	case seen&fieldDID == 0:
		first = badLine("no did")
	case !validate.ValidDID(l.DID):
		first = badLine("invalid DID %q", l.DID)
	case seen&fieldOperation == 0:
		first = badLine("no operation")
	case seen&fieldCID == 0:
		first = badLine("no cid")
	case seen&fieldCreatedAt == 0:
		first = badLine("no createdAt")
	case seen&fieldType != 0 && e.typ != "sequenced_op":
		first = badLine("type %q is not sequenced_op", e.typ)
	case seen&fieldType != 0 && seen&fieldSeq == 0:
		first = badLine("a sequenced_op without seq")
	case seen&fieldSeq != 0 && seen&fieldNullified != 0:
		first = badLine("both seq and nullified: neither a seq-mode nor a legacy export line")
	case seen&fieldNullified != 0 && string(e.null) != "true" && string(e.null) != "false":
		first = badLine("nullified is not a boolean")
	}
	if first == nil {
		l.HasNullified = seen&fieldNullified != 0
		l.Nullified = string(e.null) == "true"
		t, err := validate.ParseTimestamp(e.createdAt)
		if err != nil {
			first = badLine("createdAt %q is not a timestamp", e.createdAt)
		}
		l.CreatedAt = t
	}
	if first == nil {
		parsed, err := validate.ParseJSON(e.op)
		switch {
		case err != nil:
			first = &LineError{Msg: "operation: " + opReason(err), Err: err}
		case parsed.CID() != l.CID:
			first = badLine("cid %s does not match the operation's CID %s", l.CID, parsed.CID())
		default:
			l.Op = parsed
		}
	}
	return looksLikeExport, first
}

// opReason is the reason an op that does not parse is rejected with: the
// validator's short explanation.
func opReason(err error) string {
	var ve *validate.Error
	if errors.As(err, &ve) {
		return ve.Short()
	}
	return err.Error()
}

// The envelope of an export line is read by hand: encoding/json's
// tokenizer cost twice as much as parsing the op itself. Values are not
// decoded here, only delimited: the fields that are used are then decoded
// strictly (strings by jsonString, the op by validate.ParseJSON, seq and
// nullified by their exact forms) and any other value is checked with
// json.Valid, so that every line that is not valid JSON is rejected.

var errNotObject = &LineError{Msg: "not a JSON object"}

func invalidJSON(msg string) error { return &LineError{Msg: "invalid JSON: " + msg} }

// scanObject reads b as one JSON object and calls visit with each member's
// key (decoded) and raw value, in order.
func scanObject(b []byte, visit func(key string, v []byte)) error {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errNotObject
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		i++
	} else {
		for {
			if i >= len(b) || b[i] != '"' {
				return invalidJSON("expected a member name")
			}
			end, ok := skipString(b, i)
			if !ok {
				return invalidJSON("unterminated string")
			}
			key, ok := jsonString(b[i:end])
			if !ok {
				return invalidJSON("bad member name")
			}
			i = skipSpace(b, end)
			if i >= len(b) || b[i] != ':' {
				return invalidJSON("expected ':' after a member name")
			}
			i = skipSpace(b, i+1)
			end, err := skipValue(b, i)
			if err != nil {
				return err
			}
			v := b[i:end]
			if _, known := exportFields[key]; !known && !json.Valid(v) {
				return invalidJSON("bad value of " + strconv.Quote(key))
			}
			visit(key, v)
			i = skipSpace(b, end)
			if i < len(b) && b[i] == ',' {
				i = skipSpace(b, i+1)
				continue
			}
			if i < len(b) && b[i] == '}' {
				i++
				break
			}
			return invalidJSON("expected ',' or '}' after a member")
		}
	}
	if skipSpace(b, i) != len(b) {
		return badLine("data after the JSON object")
	}
	return nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the end of the string that starts at b[i] ('"'): past
// the first quote not escaped by a backslash. It looks for the next quote
// and for a backslash before it with bytes.IndexByte, not byte by byte: an
// op's strings (signatures, keys, URLs) are long and seldom escaped.
func skipString(b []byte, i int) (int, bool) {
	j := i + 1
	for j < len(b) {
		q := bytes.IndexByte(b[j:], '"')
		if q < 0 {
			return 0, false
		}
		e := bytes.IndexByte(b[j:j+q], '\\')
		if e < 0 {
			return j + q + 1, true
		}
		j += e + 2 // past the backslash and the byte it escapes
	}
	return 0, false
}

// skipValue returns the end of the value that starts at b[i]: a string, an
// object or array (delimited by counting brackets outside strings), or a
// run of the characters of numbers and literals. A value's own syntax is
// checked by whoever decodes it.
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, invalidJSON("expected a value")
	}
	switch c := b[i]; {
	case c == '"':
		end, ok := skipString(b, i)
		if !ok {
			return 0, invalidJSON("unterminated string")
		}
		return end, nil
	case c == '{' || c == '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, ok := skipString(b, j)
				if !ok {
					return 0, invalidJSON("unterminated string")
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, invalidJSON("unterminated object or array")
	default:
		j := i
		for j < len(b) && (b[j] == '-' || b[j] == '+' || b[j] == '.' || b[j] >= '0' && b[j] <= '9' || b[j] >= 'a' && b[j] <= 'z' || b[j] >= 'A' && b[j] <= 'Z') {
			j++
		}
		if j == i {
			return 0, invalidJSON("expected a value")
		}
		return j, nil
	}
}

// jsonString decodes v, a whole JSON string with its quotes. Strings
// without escapes, control characters or invalid UTF-8 (all of an
// export's, in practice) are taken as they are; others go through
// encoding/json, which also decides what is invalid.
func jsonString(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", false
	}
	body := v[1 : len(v)-1]
	plain := true
	for _, c := range body {
		if c == '\\' || c == '"' || c < 0x20 || c >= utf8.RuneSelf {
			plain = false
			break
		}
	}
	if plain {
		return string(body), true
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", false
	}
	return s, true
}

// positiveInt reads v as a JSON integer above zero, in its one canonical
// form (no sign, no leading zero, no fraction or exponent).
func positiveInt(v []byte) (int64, bool) {
	if len(v) == 0 || v[0] < '1' || v[0] > '9' {
		return 0, false
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	return n, err == nil
}

// ExportLines returns the non-blank lines of an export body (a page of
// /export, or the event lines of a stream), in order.
func ExportLines(body []byte) [][]byte {
	var out [][]byte
	for l := range bytes.SplitSeq(body, []byte{'\n'}) {
		if len(bytes.TrimSpace(l)) > 0 {
			out = append(out, l)
		}
	}
	return out
}

// ErrPageEnd: the last line of a seq-mode export page is not a seq-mode
// line (a body cut off, or an export without seq mode), so where the next
// page starts is not known.
var ErrPageEnd = errors.New("the last line is not a seq-mode export line")

// SeqPage is a page of a seq-mode export: its lines, their seqs as
// ReadLineHead reads them (0: none, or unreadable), and the last line's.
type SeqPage struct {
	Lines [][]byte
	Seqs  []int64
	Last  int64
}

// ParseSeqPage splits a seq-mode export page into its lines and reads
// their seqs by ReadLineHead, the rules the ingest of the lines applies.
// The last line's seq is where the next page starts: it must be readable
// (else ErrPageEnd) and above every other seq of the page.
func ParseSeqPage(body []byte) (SeqPage, error) {
	p := SeqPage{Lines: ExportLines(body)}
	n := len(p.Lines)
	if n == 0 {
		return p, nil
	}
	p.Seqs = make([]int64, n)
	for i, l := range p.Lines {
		if h, err := ReadLineHead(l); err == nil {
			p.Seqs[i] = h.Seq
		} else if i == n-1 {
			return SeqPage{}, fmt.Errorf("%w (cut off?): %v", ErrPageEnd, err)
		}
	}
	p.Last = p.Seqs[n-1]
	if p.Last == 0 {
		return SeqPage{}, fmt.Errorf("%w: it has no seq", ErrPageEnd)
	}
	for _, s := range p.Seqs[:n-1] {
		if s >= p.Last {
			return SeqPage{}, fmt.Errorf("the last line's seq %d is not above the page's seq %d", p.Last, s)
		}
	}
	return p, nil
}

// AuditEntry is one element of a /:did/log/audit response: an op of the
// DID with its CID, whether it is nullified, and its createdAt, as the
// directory states them (validate.AppendAuditEntryJSON renders one).
type AuditEntry struct {
	DID       string          `json:"did"`
	Operation json.RawMessage `json:"operation"`
	CID       string          `json:"cid"`
	Nullified bool            `json:"nullified"`
	CreatedAt string          `json:"createdAt"`
	// Seq and Proof are present in GET /:did/log/audit?proof=true.
	Seq   int64       `json:"seq,omitempty"`
	Proof *AuditProof `json:"proof,omitempty"`
}

// AuditProof is an entry's inclusion proof in the transparency log: the
// leaf with index LeafIndex (Leaf) in the tree of size TreeSize, whose
// root the signed checkpoint note Checkpoint states.
type AuditProof struct {
	TreeSize   int64    `json:"treeSize"`
	LeafIndex  int64    `json:"leafIndex"`
	Hashes     []string `json:"hashes"`
	Checkpoint string   `json:"checkpoint"`
}

// ReadAuditLog decodes an audit log: one JSON array of entries and nothing
// after it. The envelope is decoded leniently (extra fields are ignored);
// the entries' ops and values are the caller's to judge.
func ReadAuditLog(r io.Reader) ([]AuditEntry, error) {
	var entries []AuditEntry
	dec := json.NewDecoder(r)
	if err := dec.Decode(&entries); err != nil {
		return nil, fmt.Errorf("not an audit log (a JSON array of entries): %w", err)
	}
	if dec.More() {
		return nil, errors.New("not an audit log: data after the JSON array")
	}
	return entries, nil
}
