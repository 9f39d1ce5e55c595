package plc

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/plcdir/plc/validate"
)

// Leaf is a transparency-log leaf: the op with seq Seq, at leaf index
// Seq-1. Its data (AppendLeaf) is the DAG-CBOR map
//
//	{"op": <signed op bytes>, "cid": <CID>, "did": <DID>, "seq": <seq>, "createdAt": <time>}
//
// with keys in DAG-CBOR's canonical order, the op's exact signed DAG-CBOR
// bytes as a byte string, and createdAt as the API renders it
// (validate.AppendTimestamp). Nullification is derived state and not part
// of a leaf.
type Leaf struct {
	Seq       int64
	DID, CID  string
	CreatedAt time.Time
	// Op is the op's signed DAG-CBOR.
	Op []byte
}

// AppendLeaf appends the leaf data of l to dst.
func AppendLeaf(dst []byte, l *Leaf) []byte {
	var ts [32]byte
	dst = append(dst, 0xa5) // a map of 5 keys, each followed by its value
	dst = validate.AppendCBORHead(appendCBORText(dst, "op"), cborBytes, uint64(len(l.Op)))
	dst = appendCBORText(appendCBORText(append(dst, l.Op...), "cid"), l.CID)
	dst = appendCBORText(appendCBORText(dst, "did"), l.DID)
	dst = validate.AppendCBORHead(appendCBORText(dst, "seq"), cborUint, uint64(l.Seq))
	return appendCBORText(appendCBORText(dst, "createdAt"), validate.AppendTimestamp(ts[:0], l.CreatedAt))
}

// ParseLeaf decodes leaf data strictly: exactly the map AppendLeaf writes
// (so AppendLeaf of the result gives b back), with a positive seq and a
// createdAt in the layout of validate.TimestampLayout. The fields are not
// judged: whether the DID is valid and the op parses and has the CID are
// the caller's checks. Op aliases b.
func ParseLeaf(b []byte) (Leaf, error) {
	var l Leaf
	d := leafDecoder{b: b}
	if major, n := d.head(); d.err == nil && (major != cborMap || n != 5) {
		d.fail("want a CBOR map of 5 keys")
	}
	l.Op = d.field("op", cborBytes)
	l.CID = string(d.field("cid", cborText))
	l.DID = string(d.field("did", cborText))
	d.key("seq")
	if major, n := d.head(); d.err == nil && (major != cborUint || n == 0 || n > math.MaxInt64) {
		d.fail("seq is not a positive integer")
	} else {
		l.Seq = int64(n)
	}
	at := string(d.field("createdAt", cborText))
	if t, err := time.Parse(validate.TimestampLayout, at); d.err == nil && err != nil {
		d.fail("createdAt %q is not a %s time", at, validate.TimestampLayout)
	} else {
		l.CreatedAt = t
	}
	switch {
	case d.err != nil:
		return l, d.err
	case d.pos != len(b):
		return l, fmt.Errorf("%d bytes after the map", len(b)-d.pos)
	case !bytes.Equal(AppendLeaf(nil, &l), b):
		return l, errors.New("not in canonical form")
	}
	return l, nil
}

// AppendBundleEntry appends leaf to an entry bundle (C2SP tlog-tiles:
// each entry prefixed by its length, two bytes big-endian).
func AppendBundleEntry(bundle, leaf []byte) ([]byte, error) {
	if len(leaf) > math.MaxUint16 {
		return bundle, fmt.Errorf("%d bytes: too long for an entry bundle", len(leaf))
	}
	return append(binary.BigEndian.AppendUint16(bundle, uint16(len(leaf))), leaf...), nil
}

// SplitBundle splits an entry bundle into its entries, which must be n.
func SplitBundle(b []byte, n int) ([][]byte, error) {
	out := make([][]byte, 0, n)
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, fmt.Errorf("a truncated length after %d entries", len(out))
		}
		l := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+l {
			return nil, fmt.Errorf("entry %d is cut short (%d of %d bytes)", len(out), len(b)-2, l)
		}
		out = append(out, b[2:2+l])
		b = b[2+l:]
	}
	if len(out) != n {
		return nil, fmt.Errorf("%d entries, want %d", len(out), n)
	}
	return out, nil
}

// CBOR major types of a leaf's items.
const (
	cborUint  = 0
	cborBytes = 2
	cborText  = 3
	cborMap   = 5
)

func appendCBORText[T string | []byte](dst []byte, s T) []byte {
	return append(validate.AppendCBORHead(dst, cborText, uint64(len(s))), s...)
}

// leafDecoder reads the few CBOR items a leaf is made of. The first
// error sticks: after it, every read returns zeros.
type leafDecoder struct {
	b   []byte
	pos int
	err error
}

func (d *leafDecoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

func (d *leafDecoder) head() (major byte, n uint64) {
	if d.err != nil || d.pos >= len(d.b) {
		d.fail("truncated")
		return 0, 0
	}
	c := d.b[d.pos]
	d.pos++
	major, info := c>>5, c&0x1f
	switch size := 1 << (info - 24); {
	case info < 24:
		return major, uint64(info)
	case info > 27:
		d.fail("unsupported CBOR item 0x%02x", c)
	case len(d.b)-d.pos < size:
		d.fail("truncated")
	default:
		for _, x := range d.b[d.pos : d.pos+size] {
			n = n<<8 | uint64(x)
		}
		d.pos += size
	}
	return major, n
}

// item reads a byte or text string (major type want).
func (d *leafDecoder) item(want byte) []byte {
	major, n := d.head()
	switch {
	case d.err != nil:
		return nil
	case major != want:
		d.fail("want CBOR major type %d, got %d", want, major)
	case n > uint64(len(d.b)-d.pos):
		d.fail("truncated")
	case want == cborText && !utf8.Valid(d.b[d.pos:d.pos+int(n)]):
		d.fail("a text string is not UTF-8")
	default:
		d.pos += int(n)
		return d.b[d.pos-int(n) : d.pos]
	}
	return nil
}

// key reads the map key k.
func (d *leafDecoder) key(k string) {
	if got := d.item(cborText); d.err == nil && string(got) != k {
		d.fail("key %q where %q belongs", got, k)
	}
}

// field reads the map key k and its value, a string of major type want.
func (d *leafDecoder) field(k string, want byte) []byte {
	d.key(k)
	return d.item(want)
}

// CheckpointBody is the body of a C2SP tlog-checkpoint: the log's origin,
// the tree size and the root hash. It is the text of the signed note the
// log publishes (the signatures are the note's, not the body's).
type CheckpointBody struct {
	Origin string
	Size   int64
	Root   tlog.Hash
}

// Format renders the body: origin, size and base64 root hash, one per line.
func (c CheckpointBody) Format() string {
	return fmt.Sprintf("%s\n%d\n%s\n", c.Origin, c.Size, base64.StdEncoding.EncodeToString(c.Root[:]))
}

// ParseCheckpointBody parses a checkpoint note's text (extension lines
// after the third are allowed and ignored): a non-empty origin, a size in
// its canonical decimal form, a base64 hash of tlog.HashSize bytes, each
// line ended by a newline.
func ParseCheckpointBody(text string) (CheckpointBody, error) {
	var c CheckpointBody
	lines := strings.SplitN(text, "\n", 4)
	if len(lines) < 4 || !strings.HasSuffix(text, "\n") {
		return c, errors.New("checkpoint: want origin, size and root hash lines")
	}
	c.Origin = lines[0]
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		return c, fmt.Errorf("checkpoint: bad tree size %q", lines[1])
	}
	c.Size = size
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		return c, fmt.Errorf("checkpoint: bad root hash %q", lines[2])
	}
	copy(c.Root[:], root)
	if c.Origin == "" {
		return c, errors.New("checkpoint: empty origin")
	}
	return c, nil
}

// TileHeight is the height of the log's tiles (C2SP tlog-tiles).
const TileHeight = 8

// TileWidth is the number of hashes (or entries) of a full tile.
const TileWidth = 1 << TileHeight

// TilePath is the C2SP tlog-tiles path of a tile under /tlog/: tlog's
// Tile.Path without the height, entries/ for entry bundles (data tiles).
func TilePath(t tlog.Tile) string {
	p := strings.TrimPrefix(t.Path(), "tile/"+strconv.Itoa(t.H)+"/")
	if rest, ok := strings.CutPrefix(p, "data/"); ok {
		p = "entries/" + rest
	}
	return "tile/" + p
}
