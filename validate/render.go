package validate

import (
	"slices"
	"strconv"
	"time"
)

// JSON rendering, byte-compatible with the reference: object keys in the
// order a JavaScript object built from Postgres jsonb enumerates them
// (integer-like keys first in numeric order, then the DAG-CBOR order), and
// strings escaped exactly as JSON.stringify escapes them.

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s as a JSON string, escaped as JSON.stringify
// does: only ", \ and control characters are escaped; everything else,
// including <, >, & and U+2028, is written as is.
func AppendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"':
			dst = append(dst, '\\', '"')
		case '\\':
			dst = append(dst, '\\', '\\')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

func appendJSONStrings(dst []byte, a []string) []byte {
	dst = append(dst, '[')
	for i, s := range a {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendJSONString(dst, s)
	}
	return append(dst, ']')
}

// arrayIndex reports whether k is an ECMAScript array index (a canonical
// decimal integer below 2^32-1), returning its value.
func arrayIndex(k string) (uint64, bool) {
	if k == "" || len(k) > 10 || (len(k) > 1 && k[0] == '0') {
		return 0, false
	}
	n, err := strconv.ParseUint(k, 10, 64)
	if err != nil || n >= 1<<32-1 {
		return 0, false
	}
	return n, true
}

// jsOrder returns the indices of keys (given in DAG-CBOR order) in the order
// a JavaScript object enumerates them. It returns nil when that order is the
// DAG-CBOR order, which is the common case.
func jsOrder(n int, key func(int) string) []int {
	var any bool
	for i := 0; i < n; i++ {
		if _, ok := arrayIndex(key(i)); ok {
			any = true
			break
		}
	}
	if !any {
		return nil
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		na, aok := arrayIndex(key(a))
		nb, bok := arrayIndex(key(b))
		switch {
		case aok && bok:
			if na < nb {
				return -1
			}
			if na > nb {
				return 1
			}
			return 0
		case aok:
			return -1
		case bok:
			return 1
		}
		return 0
	})
	return idx
}

func forEachJS(n int, key func(int) string, f func(i int)) {
	order := jsOrder(n, key)
	for j := 0; j < n; j++ {
		i := j
		if order != nil {
			i = order[j]
		}
		f(i)
	}
}

func appendVerificationMethodsJSON(dst []byte, vms []VerificationMethod) []byte {
	dst = append(dst, '{')
	first := true
	forEachJS(len(vms), func(i int) string { return vms[i].ID }, func(i int) {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = AppendJSONString(dst, vms[i].ID)
		dst = append(dst, ':')
		dst = AppendJSONString(dst, vms[i].Key)
	})
	return append(dst, '}')
}

func appendServicesJSON(dst []byte, svcs []Service) []byte {
	dst = append(dst, '{')
	first := true
	forEachJS(len(svcs), func(i int) string { return svcs[i].ID }, func(i int) {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = AppendJSONString(dst, svcs[i].ID)
		dst = append(dst, `:{"type":`...)
		dst = AppendJSONString(dst, svcs[i].Type)
		dst = append(dst, `,"endpoint":`...)
		dst = AppendJSONString(dst, svcs[i].Endpoint)
		dst = append(dst, '}')
	})
	return append(dst, '}')
}

func appendPrevJSON(dst []byte, prev string) []byte {
	dst = append(dst, `,"prev":`...)
	if prev == "" {
		return append(dst, "null"...)
	}
	return AppendJSONString(dst, prev)
}

// AppendJSON appends the op as compact JSON in the reference's key order
// (sig, prev, type, then the remaining keys by length and bytewise), as it
// appears in /log, /log/last, /log/audit and /export.
func (op *Op) AppendJSON(dst []byte) []byte {
	o := &op.op
	dst = append(dst, `{"sig":`...)
	dst = AppendJSONString(dst, o.Sig)
	dst = appendPrevJSON(dst, o.Prev)
	switch o.Type {
	case TypeOperation:
		dst = append(dst, `,"type":"plc_operation","services":`...)
		dst = appendServicesJSON(dst, o.Services)
		dst = append(dst, `,"alsoKnownAs":`...)
		dst = appendJSONStrings(dst, o.AlsoKnownAs)
		dst = append(dst, `,"rotationKeys":`...)
		dst = appendJSONStrings(dst, o.RotationKeys)
		dst = append(dst, `,"verificationMethods":`...)
		dst = appendVerificationMethodsJSON(dst, o.VerificationMethods)
	case TypeTombstone:
		dst = append(dst, `,"type":"plc_tombstone"`...)
	case TypeCreate:
		dst = append(dst, `,"type":"create","handle":`...)
		dst = AppendJSONString(dst, o.Handle)
		dst = append(dst, `,"service":`...)
		dst = AppendJSONString(dst, o.Service)
		dst = append(dst, `,"signingKey":`...)
		dst = AppendJSONString(dst, o.SigningKey)
		dst = append(dst, `,"recoveryKey":`...)
		dst = AppendJSONString(dst, o.RecoveryKey)
	}
	return append(dst, '}')
}

// MarshalJSON renders the op as AppendJSON does.
func (op *Op) MarshalJSON() ([]byte, error) { return op.AppendJSON(nil), nil }

// TimestampLayout is the one layout of a createdAt the directory writes
// (responses, exports, transparency-log leaves): YYYY-MM-DDTHH:mm:ss.sssZ
// in UTC, as the reference renders it. AppendTimestamp writes it;
// ParseTimestamp reads it (and the other RFC 3339 forms).
const TimestampLayout = "2006-01-02T15:04:05.000Z"

// AppendTimestamp appends t as the reference renders createdAt, in
// TimestampLayout.
func AppendTimestamp(dst []byte, t time.Time) []byte {
	return t.UTC().AppendFormat(dst, TimestampLayout)
}

// ParseTimestamp parses a createdAt value. It accepts RFC 3339 with any
// fractional precision and truncates to milliseconds, the precision of the
// log.
func ParseTimestamp(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, err
	}
	return t.UTC().Truncate(time.Millisecond), nil
}

// AppendDocumentJSON appends the DID document for did with data d, as
// GET /:did renders it.
func AppendDocumentJSON(dst []byte, did string, d Data) []byte {
	dst = append(dst, `{"@context":["https://www.w3.org/ns/did/v1","https://w3id.org/security/multikey/v1"`...)
	var haveP256, haveK256 bool
	vms := d.VerificationMethods
	keyOf := func(i int) string { return vms[i].ID }
	forEachJS(len(vms), keyOf, func(i int) {
		switch keyCurveOf(vms[i].Key) {
		case CurveP256:
			if !haveP256 {
				haveP256 = true
				dst = append(dst, `,"https://w3id.org/security/suites/ecdsa-2019/v1"`...)
			}
		case CurveK256:
			if !haveK256 {
				haveK256 = true
				dst = append(dst, `,"https://w3id.org/security/suites/secp256k1-2019/v1"`...)
			}
		}
	})
	dst = append(dst, `],"id":`...)
	dst = AppendJSONString(dst, did)
	dst = append(dst, `,"alsoKnownAs":`...)
	dst = appendJSONStrings(dst, d.AlsoKnownAs)
	dst = append(dst, `,"verificationMethod":[`...)
	first := true
	forEachJS(len(vms), keyOf, func(i int) {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, `{"id":`...)
		dst = AppendJSONString(dst, did+"#"+vms[i].ID)
		dst = append(dst, `,"type":"Multikey","controller":`...)
		dst = AppendJSONString(dst, did)
		dst = append(dst, `,"publicKeyMultibase":`...)
		dst = AppendJSONString(dst, multibaseOf(vms[i].Key))
		dst = append(dst, '}')
	})
	dst = append(dst, `],"service":[`...)
	first = true
	svcs := d.Services
	forEachJS(len(svcs), func(i int) string { return svcs[i].ID }, func(i int) {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, `{"id":`...)
		dst = AppendJSONString(dst, "#"+svcs[i].ID)
		dst = append(dst, `,"type":`...)
		dst = AppendJSONString(dst, svcs[i].Type)
		dst = append(dst, `,"serviceEndpoint":`...)
		dst = AppendJSONString(dst, svcs[i].Endpoint)
		dst = append(dst, '}')
	})
	return append(dst, "]}"...)
}

// AppendDataJSON appends the /:did/data rendering:
// {did, verificationMethods, rotationKeys, alsoKnownAs, services}.
func AppendDataJSON(dst []byte, did string, d Data) []byte {
	dst = append(dst, `{"did":`...)
	dst = AppendJSONString(dst, did)
	dst = append(dst, `,"verificationMethods":`...)
	dst = appendVerificationMethodsJSON(dst, d.VerificationMethods)
	dst = append(dst, `,"rotationKeys":`...)
	dst = appendJSONStrings(dst, d.RotationKeys)
	dst = append(dst, `,"alsoKnownAs":`...)
	dst = appendJSONStrings(dst, d.AlsoKnownAs)
	dst = append(dst, `,"services":`...)
	dst = appendServicesJSON(dst, d.Services)
	return append(dst, '}')
}

// AppendAuditEntryJSON appends {did, operation, cid, nullified, createdAt}:
// an element of /:did/log/audit and a line of the legacy /export.
func AppendAuditEntryJSON(dst []byte, did string, op *Op, nullified bool, createdAt time.Time) []byte {
	dst = appendEntryStart(dst, `{`, did, op)
	dst = append(dst, `,"nullified":`...)
	dst = strconv.AppendBool(dst, nullified)
	dst = append(dst, `,"createdAt":"`...)
	dst = AppendTimestamp(dst, createdAt)
	return append(dst, `"}`...)
}

// AppendSequencedJSON appends a seq-mode /export line and /export/stream
// event: {type: "sequenced_op", did, operation, cid, createdAt, seq}.
func AppendSequencedJSON(dst []byte, did string, op *Op, createdAt time.Time, seq int64) []byte {
	dst = appendEntryStart(dst, `{"type":"sequenced_op",`, did, op)
	dst = append(dst, `,"createdAt":"`...)
	dst = AppendTimestamp(dst, createdAt)
	dst = append(dst, `","seq":`...)
	dst = strconv.AppendInt(dst, seq, 10)
	return append(dst, '}')
}

// appendEntryStart appends open, then "did":…,"operation":…,"cid":…: what
// the two log-entry renderings share.
func appendEntryStart(dst []byte, open, did string, op *Op) []byte {
	dst = append(dst, open...)
	dst = append(dst, `"did":`...)
	dst = AppendJSONString(dst, did)
	dst = append(dst, `,"operation":`...)
	dst = op.AppendJSON(dst)
	dst = append(dst, `,"cid":`...)
	return AppendJSONString(dst, op.CID())
}
