package validate

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"slices"
	"strings"

	"github.com/mr-tron/base58"
)

// The compact encoding is a storage form of an op, about half the size of
// its DAG-CBOR: did:keys, signatures and CIDs are kept as the bytes they
// encode, and the most common strings as one-byte references. It is
// lossless — ParseCompact(AppendCompact(op)) yields an op with identical
// SignedCBOR, checked by AppendCompact itself, which falls back to storing
// the DAG-CBOR as is if it ever were not.

const (
	compactRaw = 0 // the rest is the signed DAG-CBOR
	compactV1  = 1
)

// Field tags.
const (
	tagString = iota // uvarint length + bytes
	tagDIDKey        // "did:key:z" + base58(bytes): uvarint length + bytes
	tagSig           // base64url of 64 bytes: 64 bytes
	tagCID           // a did:plc CID: its 32-byte digest
	tagNull          // null prev
	tagDict          // one byte: index into compactDict
	tagAt            // "at://" + string
	tagHTTPS         // "https://" + string
)

// compactDict holds frequent strings. Append only: indexes are stored.
var compactDict = [...]string{
	"atproto",
	"atproto_pds",
	"AtprotoPersonalDataServer",
	"https://bsky.social",
	"atproto_labeler",
	"AtprotoLabeler",
}

var errCompact = errors.New("malformed compact op")

// AppendCompact appends op's compact encoding to dst.
func AppendCompact(dst []byte, op *Op) []byte {
	start := len(dst)
	dst = appendCompactV1(dst, &op.op)
	// The compact form is kept only if it decodes to the same signed bytes
	// (and so the same op and CID: the checks NewOp would make on read pass
	// for the same content). NewOp made op's signed bytes from its content
	// alone, so the same content has the same signed bytes.
	if back, err := decodeCompactV1(dst[start:]); err == nil && sameOperation(&back, &op.op) {
		return dst
	}
	dst = append(dst[:start], compactRaw)
	return append(dst, op.signed...)
}

// sameOperation reports whether a and b have the same content: the same
// signed encoding (which reads every field, and slices by their elements).
func sameOperation(a, b *Operation) bool {
	return a.Type == b.Type && a.Prev == b.Prev && a.Sig == b.Sig &&
		a.SigningKey == b.SigningKey && a.RecoveryKey == b.RecoveryKey && a.Handle == b.Handle && a.Service == b.Service &&
		slices.Equal(a.RotationKeys, b.RotationKeys) && slices.Equal(a.VerificationMethods, b.VerificationMethods) &&
		slices.Equal(a.AlsoKnownAs, b.AlsoKnownAs) && slices.Equal(a.Services, b.Services)
}

// Compact returns op's compact encoding (AppendCompact), computed once and
// shared: the caller must not modify it. Safe for concurrent use.
func (op *Op) Compact() []byte {
	op.compactOnce.Do(func() { op.compact = AppendCompact(nil, op) })
	return op.compact
}

func appendCompactV1(dst []byte, o *Operation) []byte {
	dst = append(dst, compactV1, byte(o.Type))
	dst = appendField(dst, o.Sig)
	if o.Prev == "" {
		dst = append(dst, tagNull)
	} else {
		dst = appendField(dst, o.Prev)
	}
	switch o.Type {
	case TypeOperation:
		dst = binary.AppendUvarint(dst, uint64(len(o.RotationKeys)))
		for _, k := range o.RotationKeys {
			dst = appendField(dst, k)
		}
		dst = binary.AppendUvarint(dst, uint64(len(o.VerificationMethods)))
		for _, vm := range o.VerificationMethods {
			dst = appendField(dst, vm.ID)
			dst = appendField(dst, vm.Key)
		}
		dst = binary.AppendUvarint(dst, uint64(len(o.AlsoKnownAs)))
		for _, a := range o.AlsoKnownAs {
			dst = appendField(dst, a)
		}
		dst = binary.AppendUvarint(dst, uint64(len(o.Services)))
		for _, s := range o.Services {
			dst = appendField(dst, s.ID)
			dst = appendField(dst, s.Type)
			dst = appendField(dst, s.Endpoint)
		}
	case TypeCreate:
		dst = appendField(dst, o.SigningKey)
		dst = appendField(dst, o.RecoveryKey)
		dst = appendField(dst, o.Handle)
		dst = appendField(dst, o.Service)
	}
	return dst
}

func appendRaw(dst []byte, tag byte, b []byte) []byte {
	dst = append(dst, tag)
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// appendField appends s in the smallest form that decodes back to exactly s.
func appendField(dst []byte, s string) []byte {
	for i, d := range compactDict {
		if s == d {
			return append(dst, tagDict, byte(i))
		}
	}
	// A field is taken in binary form when it decodes; whether it decodes
	// back to the same text is AppendCompact's one check of the whole op.
	if len(s) == 86 {
		if sig, err := DecodeSignature(s); err == nil {
			return append(append(dst, tagSig), sig[:]...)
		}
	}
	if ValidCID(s) {
		raw, _ := b32.DecodeString(s[1:])
		return append(append(dst, tagCID), raw[4:]...)
	}
	if rest, ok := strings.CutPrefix(s, didKeyPrefix+"z"); ok && len(s) <= maxDIDKeyLen {
		if b, err := base58.Decode(rest); err == nil && len(b) > 0 {
			return appendRaw(dst, tagDIDKey, b)
		}
	}
	if rest, ok := strings.CutPrefix(s, "at://"); ok {
		return appendRaw(dst, tagAt, []byte(rest))
	}
	if rest, ok := strings.CutPrefix(s, "https://"); ok {
		return appendRaw(dst, tagHTTPS, []byte(rest))
	}
	return appendRaw(dst, tagString, []byte(s))
}

type compactReader struct {
	b   []byte
	err error
}

func (r *compactReader) uvarint() int {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 || v > uint64(len(r.b)) {
		r.err = errCompact
		return 0
	}
	r.b = r.b[n:]
	return int(v)
}

func (r *compactReader) take(n int) []byte {
	if r.err != nil || n > len(r.b) {
		r.err = errCompact
		return nil
	}
	b := r.b[:n]
	r.b = r.b[n:]
	return b
}

func (r *compactReader) field() string {
	t := r.take(1)
	if r.err != nil {
		return ""
	}
	switch t[0] {
	case tagDict:
		i := r.take(1)
		if r.err != nil || int(i[0]) >= len(compactDict) {
			r.err = errCompact
			return ""
		}
		return compactDict[i[0]]
	case tagSig:
		return base64.RawURLEncoding.EncodeToString(r.take(64))
	case tagCID:
		d := r.take(32)
		if r.err != nil {
			return ""
		}
		var raw [36]byte
		copy(raw[:], cidPrefix)
		copy(raw[4:], d)
		return "b" + b32.EncodeToString(raw[:])
	case tagNull:
		return ""
	case tagDIDKey:
		return didKeyPrefix + "z" + base58.Encode(r.take(r.uvarint()))
	case tagAt:
		return "at://" + string(r.take(r.uvarint()))
	case tagHTTPS:
		return "https://" + string(r.take(r.uvarint()))
	case tagString:
		return string(r.take(r.uvarint()))
	}
	r.err = errCompact
	return ""
}

// ParseCompact decodes a compact op (see AppendCompact).
func ParseCompact(b []byte) (*Op, error) {
	if len(b) >= 1 && b[0] == compactRaw {
		return ParseCBOR(b[1:])
	}
	o, err := decodeCompactV1(b)
	if err != nil {
		return nil, err
	}
	return NewOp(o)
}

// decodeCompactV1 decodes a compactV1 encoding into the op's content,
// unchecked.
func decodeCompactV1(b []byte) (Operation, error) {
	if len(b) < 2 || b[0] != compactV1 {
		return Operation{}, errCompact
	}
	r := compactReader{b: b[2:]}
	o := Operation{Type: Type(b[1])}
	o.Sig = r.field()
	o.Prev = r.field()
	switch o.Type {
	case TypeOperation:
		o.RotationKeys = make([]string, r.uvarint())
		for i := range o.RotationKeys {
			o.RotationKeys[i] = r.field()
		}
		o.VerificationMethods = make([]VerificationMethod, r.uvarint())
		for i := range o.VerificationMethods {
			o.VerificationMethods[i] = VerificationMethod{ID: r.field(), Key: r.field()}
		}
		o.AlsoKnownAs = make([]string, r.uvarint())
		for i := range o.AlsoKnownAs {
			o.AlsoKnownAs[i] = r.field()
		}
		o.Services = make([]Service, r.uvarint())
		for i := range o.Services {
			o.Services[i] = Service{ID: r.field(), Type: r.field(), Endpoint: r.field()}
		}
	case TypeCreate:
		o.SigningKey = r.field()
		o.RecoveryKey = r.field()
		o.Handle = r.field()
		o.Service = r.field()
	case TypeTombstone:
	default:
		return Operation{}, errCompact
	}
	if r.err != nil || len(r.b) != 0 {
		return Operation{}, errCompact
	}
	return o, nil
}

// appendSigned is the signed encoding of an op from its unsigned body (the
// encoded map entries without "sig", n of them): "sig", the shortest key,
// comes first.
func appendSigned(body []byte, n int, sig string) []byte {
	signed := make([]byte, 0, len(body)+len(sig)+10)
	signed = AppendCBORHead(signed, majorMap, uint64(n+1))
	signed = appendText(signed, "sig")
	signed = appendText(signed, sig)
	return append(signed, body...)
}
