package validate

import (
	"bytes"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

type kind uint8

const (
	kindNull kind = iota + 1
	kindString
	kindArray
	kindObject
	kindOther // booleans and numbers: never valid in an op
)

func (k kind) String() string {
	switch k {
	case kindNull:
		return "null"
	case kindString:
		return "a string"
	case kindArray:
		return "an array"
	case kindObject:
		return "an object"
	}
	return "a number or boolean"
}

// value is a generic JSON / DAG-CBOR value of the kinds ops are made of.
type value struct {
	kind kind
	str  string
	arr  []value
	obj  []member
}

type member struct {
	key string
	val value
}

// ParseJSON parses one operation from JSON, strictly: one object, no unknown
// or duplicate keys (at any level), exact types, valid UTF-8, nothing but
// whitespace after it.
func ParseJSON(b []byte) (*Op, error) {
	// One copy of the input as a string: unescaped strings (nearly all of
	// them) are then substrings of it, with no allocation each.
	p := jsonParser{b: b, src: string(b)}
	p.skipSpace()
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.pos != len(p.b) {
		return nil, malformed("unexpected data after the JSON object at offset %d", p.pos)
	}
	o, err := operationFromValue(v)
	if err != nil {
		return nil, err
	}
	return NewOp(o)
}

// ParseCBOR parses one operation from its signed DAG-CBOR bytes. The bytes
// must be exactly the canonical encoding: anything else (key order, integer
// widths, trailing data) is rejected, so SignedCBOR() of the result equals b.
func ParseCBOR(b []byte) (*Op, error) {
	d := cborDecoder{b: b}
	v, err := d.value(0)
	if err != nil {
		return nil, err
	}
	if d.pos != len(b) {
		return nil, malformed("trailing bytes after DAG-CBOR value")
	}
	o, err := operationFromValue(v)
	if err != nil {
		return nil, err
	}
	op, err := NewOp(o)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(op.signed, b) {
		return nil, malformed("DAG-CBOR is not in canonical form")
	}
	return op, nil
}

type jsonParser struct {
	b   []byte
	src string // the same bytes as b
	pos int
}

func (p *jsonParser) skipSpace() {
	for p.pos < len(p.b) {
		switch p.b[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *jsonParser) errAt(what string) error {
	if p.pos >= len(p.b) {
		return malformed("invalid JSON: unexpected end of input")
	}
	return malformed("invalid JSON: %s at offset %d", what, p.pos)
}

func (p *jsonParser) value(depth int) (value, error) {
	if depth > maxDepth {
		return value{}, malformed("nesting too deep")
	}
	if p.pos >= len(p.b) {
		return value{}, p.errAt("")
	}
	switch c := p.b[p.pos]; {
	case c == '{':
		return p.object(depth)
	case c == '[':
		return p.array(depth)
	case c == '"':
		s, err := p.str()
		return value{kind: kindString, str: s}, err
	case c == 'n':
		return p.literal("null", kindNull)
	case c == 't':
		return p.literal("true", kindOther)
	case c == 'f':
		return p.literal("false", kindOther)
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	}
	return value{}, p.errAt("unexpected character")
}

func (p *jsonParser) literal(lit string, k kind) (value, error) {
	if !bytes.HasPrefix(p.b[p.pos:], []byte(lit)) {
		return value{}, p.errAt("invalid literal")
	}
	p.pos += len(lit)
	return value{kind: k}, nil
}

func (p *jsonParser) number() (value, error) {
	start := p.pos
	if p.b[p.pos] == '-' {
		p.pos++
	}
	digits := func() int {
		s := p.pos
		for p.pos < len(p.b) && p.b[p.pos] >= '0' && p.b[p.pos] <= '9' {
			p.pos++
		}
		return p.pos - s
	}
	if p.pos < len(p.b) && p.b[p.pos] == '0' {
		p.pos++
	} else if digits() == 0 {
		return value{}, p.errAt("invalid number")
	}
	if p.pos < len(p.b) && p.b[p.pos] == '.' {
		p.pos++
		if digits() == 0 {
			return value{}, p.errAt("invalid number")
		}
	}
	if p.pos < len(p.b) && (p.b[p.pos] == 'e' || p.b[p.pos] == 'E') {
		p.pos++
		if p.pos < len(p.b) && (p.b[p.pos] == '+' || p.b[p.pos] == '-') {
			p.pos++
		}
		if digits() == 0 {
			return value{}, p.errAt("invalid number")
		}
	}
	_ = start
	return value{kind: kindOther}, nil
}

func (p *jsonParser) array(depth int) (value, error) {
	p.pos++ // [
	arr := make([]value, 0, 2)
	p.skipSpace()
	if p.pos < len(p.b) && p.b[p.pos] == ']' {
		p.pos++
		return value{kind: kindArray, arr: arr}, nil
	}
	for {
		p.skipSpace()
		v, err := p.value(depth + 1)
		if err != nil {
			return value{}, err
		}
		arr = append(arr, v)
		p.skipSpace()
		if p.pos >= len(p.b) {
			return value{}, p.errAt("")
		}
		switch p.b[p.pos] {
		case ',':
			p.pos++
		case ']':
			p.pos++
			return value{kind: kindArray, arr: arr}, nil
		default:
			return value{}, p.errAt("expected , or ]")
		}
	}
}

func (p *jsonParser) object(depth int) (value, error) {
	p.pos++ // {
	// An op's top level has at most 7 keys; nested maps are mostly small.
	obj := make([]member, 0, 2)
	if depth == 0 {
		obj = make([]member, 0, 7)
	}
	var seen map[string]bool
	p.skipSpace()
	if p.pos < len(p.b) && p.b[p.pos] == '}' {
		p.pos++
		return value{kind: kindObject, obj: obj}, nil
	}
	for {
		p.skipSpace()
		if p.pos >= len(p.b) || p.b[p.pos] != '"' {
			return value{}, p.errAt("expected a string key")
		}
		k, err := p.str()
		if err != nil {
			return value{}, err
		}
		if seen != nil {
			if seen[k] {
				return value{}, malformed("duplicate key %q", k)
			}
			seen[k] = true
		} else {
			for _, m := range obj {
				if m.key == k {
					return value{}, malformed("duplicate key %q", k)
				}
			}
			// Past a few keys, a set keeps duplicate detection linear.
			if len(obj) == 16 {
				seen = make(map[string]bool, 32)
				for _, m := range obj {
					seen[m.key] = true
				}
				seen[k] = true
			}
		}
		p.skipSpace()
		if p.pos >= len(p.b) || p.b[p.pos] != ':' {
			return value{}, p.errAt("expected :")
		}
		p.pos++
		p.skipSpace()
		v, err := p.value(depth + 1)
		if err != nil {
			return value{}, err
		}
		obj = append(obj, member{k, v})
		p.skipSpace()
		if p.pos >= len(p.b) {
			return value{}, p.errAt("")
		}
		switch p.b[p.pos] {
		case ',':
			p.pos++
		case '}':
			p.pos++
			return value{kind: kindObject, obj: obj}, nil
		default:
			return value{}, p.errAt("expected , or }")
		}
	}
}

func hexVal(c byte) rune {
	switch {
	case c >= '0' && c <= '9':
		return rune(c - '0')
	case c >= 'a' && c <= 'f':
		return rune(c - 'a' + 10)
	case c >= 'A' && c <= 'F':
		return rune(c - 'A' + 10)
	}
	return -1
}

func (p *jsonParser) hex4() (rune, bool) {
	if len(p.b)-p.pos < 4 {
		return 0, false
	}
	var r rune
	for i := 0; i < 4; i++ {
		h := hexVal(p.b[p.pos+i])
		if h < 0 {
			return 0, false
		}
		r = r<<4 | h
	}
	p.pos += 4
	return r, true
}

// str parses a JSON string at p.pos (which is '"'). Invalid UTF-8, raw
// control characters, lone surrogates and bad escapes are errors.
func (p *jsonParser) str() (string, error) {
	p.pos++ // opening quote
	start := p.pos
	// Fast path: no escapes.
	for p.pos < len(p.b) {
		c := p.b[p.pos]
		if c == '"' {
			s := p.src[start:p.pos]
			p.pos++
			if !utf8.ValidString(s) {
				return "", malformed("string is not valid UTF-8")
			}
			return s, nil
		}
		if c == '\\' {
			break
		}
		if c < 0x20 {
			return "", p.errAt("control character in string")
		}
		p.pos++
	}
	buf := append([]byte(nil), p.b[start:p.pos]...)
	for p.pos < len(p.b) {
		c := p.b[p.pos]
		switch {
		case c == '"':
			p.pos++
			if !utf8.Valid(buf) {
				return "", malformed("string is not valid UTF-8")
			}
			return string(buf), nil
		case c < 0x20:
			return "", p.errAt("control character in string")
		case c != '\\':
			buf = append(buf, c)
			p.pos++
			continue
		}
		p.pos++ // backslash
		if p.pos >= len(p.b) {
			return "", p.errAt("")
		}
		e := p.b[p.pos]
		p.pos++
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, ok := p.hex4()
			if !ok {
				return "", p.errAt("invalid \\u escape")
			}
			if utf16.IsSurrogate(r) {
				if r >= 0xdc00 || len(p.b)-p.pos < 6 || p.b[p.pos] != '\\' || p.b[p.pos+1] != 'u' {
					return "", p.errAt("lone surrogate in \\u escape")
				}
				p.pos += 2
				r2, ok := p.hex4()
				if !ok || r2 < 0xdc00 || r2 > 0xdfff {
					return "", p.errAt("lone surrogate in \\u escape")
				}
				r = utf16.DecodeRune(r, r2)
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return "", p.errAt("invalid escape " + strconv.QuoteRune(rune(e)))
		}
	}
	return "", p.errAt("")
}
