package plc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

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

// leafKeys are a leaf's keys, in their canonical order.
var leafKeys = [5]string{"op", "cid", "did", "seq", "createdAt"}

// AppendLeaf appends the leaf data of l to dst.
func AppendLeaf(dst []byte, l *Leaf) []byte {
	dst = append(dst, 0xa0|byte(len(leafKeys))) // a map of 5
	dst = appendCBORText(dst, leafKeys[0])
	dst = appendCBORHead(dst, cborBytes, uint64(len(l.Op)))
	dst = append(dst, l.Op...)
	dst = appendCBORText(dst, leafKeys[1])
	dst = appendCBORText(dst, l.CID)
	dst = appendCBORText(dst, leafKeys[2])
	dst = appendCBORText(dst, l.DID)
	dst = appendCBORText(dst, leafKeys[3])
	dst = appendCBORHead(dst, cborUint, uint64(l.Seq))
	dst = appendCBORText(dst, leafKeys[4])
	var ts [32]byte
	return appendCBORText(dst, validate.AppendTimestamp(ts[:0], l.CreatedAt))
}

// ParseLeaf decodes leaf data strictly: exactly the map AppendLeaf writes
// (so AppendLeaf of the result gives b back), with a positive seq and a
// createdAt in the layout of validate.TimestampLayout. The fields are not
// judged: whether the DID is valid and the op parses and has the CID are
// the caller's checks. Op aliases b.
func ParseLeaf(b []byte) (Leaf, error) {
	var l Leaf
	d := leafDecoder{b: b}
	if major, n, err := d.head(); err != nil || major != cborMap || n != uint64(len(leafKeys)) {
		return l, errors.New("want a CBOR map of 5 keys")
	}
	for _, key := range leafKeys {
		k, err := d.text()
		if err != nil {
			return l, err
		}
		if k != key {
			return l, fmt.Errorf("key %q where %q belongs", k, key)
		}
		switch key {
		case "op":
			l.Op, err = d.body(cborBytes, "byte string")
		case "cid":
			l.CID, err = d.text()
		case "did":
			l.DID, err = d.text()
		case "seq":
			var major byte
			var n uint64
			major, n, err = d.head()
			switch {
			case err != nil:
			case major != cborUint || n == 0 || n > math.MaxInt64:
				err = errors.New("seq is not a positive integer")
			default:
				l.Seq = int64(n)
			}
		case "createdAt":
			var s string
			if s, err = d.text(); err == nil {
				if l.CreatedAt, err = time.Parse(validate.TimestampLayout, s); err != nil {
					err = fmt.Errorf("createdAt %q is not a %s time", s, validate.TimestampLayout)
				}
			}
		}
		if err != nil {
			return l, err
		}
	}
	if d.pos != len(b) {
		return l, fmt.Errorf("%d bytes after the map", len(b)-d.pos)
	}
	if !bytes.Equal(AppendLeaf(nil, &l), b) {
		return l, errors.New("not in canonical form")
	}
	return l, nil
}

// CBOR major types of a leaf's items.
const (
	cborUint  = 0
	cborBytes = 2
	cborText  = 3
	cborMap   = 5
)

func appendCBORHead(dst []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(dst, m|byte(n))
	case n <= math.MaxUint8:
		return append(dst, m|24, byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, m|25), uint16(n))
	case n <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(dst, m|26), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(dst, m|27), n)
}

func appendCBORText[T string | []byte](dst []byte, s T) []byte {
	return append(appendCBORHead(dst, cborText, uint64(len(s))), s...)
}

// leafDecoder reads the few CBOR items a leaf is made of.
type leafDecoder struct {
	b   []byte
	pos int
}

func (d *leafDecoder) head() (major byte, n uint64, err error) {
	if d.pos >= len(d.b) {
		return 0, 0, errors.New("truncated")
	}
	c := d.b[d.pos]
	d.pos++
	major, info := c>>5, c&0x1f
	switch {
	case info < 24:
		return major, uint64(info), nil
	case info > 27:
		return 0, 0, fmt.Errorf("unsupported CBOR item 0x%02x", c)
	}
	size := 1 << (info - 24)
	if len(d.b)-d.pos < size {
		return 0, 0, errors.New("truncated")
	}
	for _, x := range d.b[d.pos : d.pos+size] {
		n = n<<8 | uint64(x)
	}
	d.pos += size
	return major, n, nil
}

func (d *leafDecoder) body(want byte, what string) ([]byte, error) {
	major, n, err := d.head()
	if err != nil {
		return nil, err
	}
	if major != want {
		return nil, fmt.Errorf("want a %s", what)
	}
	if n > uint64(len(d.b)-d.pos) {
		return nil, errors.New("truncated")
	}
	out := d.b[d.pos : d.pos+int(n)]
	d.pos += int(n)
	return out, nil
}

func (d *leafDecoder) text() (string, error) {
	b, err := d.body(cborText, "text string")
	if err != nil {
		return "", err
	}
	if !utf8.Valid(b) {
		return "", errors.New("a text string is not UTF-8")
	}
	return string(b), nil
}
