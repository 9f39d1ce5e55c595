package validate

import (
	"encoding/binary"
	"unicode/utf8"
)

// The subset of DAG-CBOR that did:plc operations use: text strings, arrays,
// maps with text keys, and null. Encoding is canonical: minimal-length heads,
// definite lengths, map keys ordered by length then bytewise.

const (
	majorText  = 3
	majorArray = 4
	majorMap   = 5
	cborNull   = 0xf6
)

// AppendCBORHead appends the head of a CBOR item of major type major with
// argument n, in its shortest form (as DAG-CBOR requires).
func AppendCBORHead(dst []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(dst, m|byte(n))
	case n <= 0xff:
		return append(dst, m|24, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(dst, m|25), uint16(n))
	case n <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(dst, m|26), uint32(n))
	default:
		return binary.BigEndian.AppendUint64(append(dst, m|27), n)
	}
}

func appendText(dst []byte, s string) []byte {
	dst = AppendCBORHead(dst, majorText, uint64(len(s)))
	return append(dst, s...)
}

func appendTextArray(dst []byte, a []string) []byte {
	dst = AppendCBORHead(dst, majorArray, uint64(len(a)))
	for _, s := range a {
		dst = appendText(dst, s)
	}
	return dst
}

func appendPrev(dst []byte, prev string) []byte {
	dst = appendText(dst, "prev")
	if prev == "" {
		return append(dst, cborNull)
	}
	return appendText(dst, prev)
}

// encodeBody appends the key/value pairs of o, without sig, in canonical
// order, and returns them with their count. The map head is the caller's.
func encodeBody(dst []byte, o *Operation) ([]byte, int) {
	switch o.Type {
	case TypeOperation:
		// prev, type, services, alsoKnownAs, rotationKeys, verificationMethods
		dst = appendPrev(dst, o.Prev)
		dst = appendText(dst, "type")
		dst = appendText(dst, "plc_operation")
		dst = appendText(dst, "services")
		dst = AppendCBORHead(dst, majorMap, uint64(len(o.Services)))
		for _, s := range o.Services {
			dst = appendText(dst, s.ID)
			dst = AppendCBORHead(dst, majorMap, 2)
			dst = appendText(dst, "type")
			dst = appendText(dst, s.Type)
			dst = appendText(dst, "endpoint")
			dst = appendText(dst, s.Endpoint)
		}
		dst = appendText(dst, "alsoKnownAs")
		dst = appendTextArray(dst, o.AlsoKnownAs)
		dst = appendText(dst, "rotationKeys")
		dst = appendTextArray(dst, o.RotationKeys)
		dst = appendText(dst, "verificationMethods")
		dst = AppendCBORHead(dst, majorMap, uint64(len(o.VerificationMethods)))
		for _, vm := range o.VerificationMethods {
			dst = appendText(dst, vm.ID)
			dst = appendText(dst, vm.Key)
		}
		return dst, 6
	case TypeTombstone:
		dst = appendPrev(dst, o.Prev)
		dst = appendText(dst, "type")
		dst = appendText(dst, "plc_tombstone")
		return dst, 2
	case TypeCreate:
		// prev, type, handle, service, signingKey, recoveryKey
		dst = appendPrev(dst, o.Prev)
		dst = appendText(dst, "type")
		dst = appendText(dst, "create")
		dst = appendText(dst, "handle")
		dst = appendText(dst, o.Handle)
		dst = appendText(dst, "service")
		dst = appendText(dst, o.Service)
		dst = appendText(dst, "signingKey")
		dst = appendText(dst, o.SigningKey)
		dst = appendText(dst, "recoveryKey")
		dst = appendText(dst, o.RecoveryKey)
		return dst, 6
	}
	return dst, 0
}

// maxDepth bounds nesting in both decoders; operations nest three deep.
const maxDepth = 8

// cborDecoder decodes the op subset of DAG-CBOR into generic values. It
// rejects anything outside the subset (numbers, bytes, tags, floats other
// than null, indefinite lengths) and non-minimal heads; key order is checked
// by re-encoding in ParseCBOR.
type cborDecoder struct {
	b   []byte
	pos int
}

func (d *cborDecoder) head() (major byte, n uint64, err error) {
	if d.pos >= len(d.b) {
		return 0, 0, malformed("truncated DAG-CBOR")
	}
	ib := d.b[d.pos]
	d.pos++
	major, info := ib>>5, ib&0x1f
	var size int
	switch {
	case info < 24:
		return major, uint64(info), nil
	case info == 24:
		size = 1
	case info == 25:
		size = 2
	case info == 26:
		size = 4
	case info == 27:
		size = 8
	default:
		return 0, 0, malformed("unsupported DAG-CBOR item 0x%02x", ib)
	}
	if len(d.b)-d.pos < size {
		return 0, 0, malformed("truncated DAG-CBOR")
	}
	for i := 0; i < size; i++ {
		n = n<<8 | uint64(d.b[d.pos+i])
	}
	d.pos += size
	var min uint64
	switch size {
	case 1:
		min = 24
	case 2:
		min = 0x100
	case 4:
		min = 0x10000
	case 8:
		min = 0x100000000
	}
	if n < min {
		return 0, 0, malformed("non-minimal DAG-CBOR integer encoding")
	}
	return major, n, nil
}

func (d *cborDecoder) text() (string, error) {
	major, n, err := d.head()
	if err != nil {
		return "", err
	}
	if major != majorText {
		return "", malformed("map key is not a text string")
	}
	return d.textBody(n)
}

func (d *cborDecoder) textBody(n uint64) (string, error) {
	if n > uint64(len(d.b)-d.pos) {
		return "", malformed("truncated DAG-CBOR")
	}
	s := string(d.b[d.pos : d.pos+int(n)])
	d.pos += int(n)
	if !utf8.ValidString(s) {
		return "", malformed("text is not valid UTF-8")
	}
	return s, nil
}

func (d *cborDecoder) value(depth int) (value, error) {
	if depth > maxDepth {
		return value{}, malformed("nesting too deep")
	}
	if d.pos < len(d.b) && d.b[d.pos] == cborNull {
		d.pos++
		return value{kind: kindNull}, nil
	}
	major, n, err := d.head()
	if err != nil {
		return value{}, err
	}
	switch major {
	case majorText:
		s, err := d.textBody(n)
		return value{kind: kindString, str: s}, err
	case majorArray:
		if n > uint64(len(d.b)-d.pos) { // each item takes at least one byte
			return value{}, malformed("truncated DAG-CBOR")
		}
		arr := make([]value, 0, n)
		for i := uint64(0); i < n; i++ {
			v, err := d.value(depth + 1)
			if err != nil {
				return value{}, err
			}
			arr = append(arr, v)
		}
		return value{kind: kindArray, arr: arr}, nil
	case majorMap:
		if n > uint64(len(d.b)-d.pos)/2 {
			return value{}, malformed("truncated DAG-CBOR")
		}
		obj := make([]member, 0, n)
		for i := uint64(0); i < n; i++ {
			k, err := d.text()
			if err != nil {
				return value{}, err
			}
			v, err := d.value(depth + 1)
			if err != nil {
				return value{}, err
			}
			obj = append(obj, member{k, v})
		}
		return value{kind: kindObject, obj: obj}, nil
	}
	return value{}, malformed("unsupported DAG-CBOR major type %d", major)
}
