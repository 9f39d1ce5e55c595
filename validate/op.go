package validate

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
)

// Type is an operation type.
type Type uint8

const (
	// TypeOperation is "plc_operation": the regular create/update op.
	TypeOperation Type = iota + 1
	// TypeTombstone is "plc_tombstone": deactivates the DID.
	TypeTombstone
	// TypeCreate is the legacy "create" genesis op (v1). Valid in history,
	// never accepted as a new submission.
	TypeCreate
)

func (t Type) String() string {
	switch t {
	case TypeOperation:
		return "plc_operation"
	case TypeTombstone:
		return "plc_tombstone"
	case TypeCreate:
		return "create"
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

func parseType(s string) (Type, bool) {
	switch s {
	case "plc_operation":
		return TypeOperation, true
	case "plc_tombstone":
		return TypeTombstone, true
	case "create":
		return TypeCreate, true
	}
	return 0, false
}

// VerificationMethod is one entry of the verificationMethods map.
type VerificationMethod struct {
	ID  string
	Key string // a did:key
}

// Service is one entry of the services map.
type Service struct {
	ID       string
	Type     string
	Endpoint string
}

// Operation is the plain content of an operation. Which fields are meaningful
// depends on Type:
//   - TypeOperation: RotationKeys, VerificationMethods, AlsoKnownAs, Services, Prev, Sig
//   - TypeTombstone: Prev, Sig
//   - TypeCreate:    SigningKey, RecoveryKey, Handle, Service, Prev (always empty), Sig
//
// Map-valued fields are held as slices; NewOp puts them in canonical
// (DAG-CBOR) key order. Prev is the CID string of the previous op, or empty
// for null.
type Operation struct {
	Type                Type
	RotationKeys        []string
	VerificationMethods []VerificationMethod
	AlsoKnownAs         []string
	Services            []Service
	Prev                string

	SigningKey  string
	RecoveryKey string
	Handle      string
	Service     string

	Sig string
}

// Op is a parsed, structurally valid operation with its canonical encodings
// computed once. It is immutable: the slices returned by its methods must not
// be modified.
type Op struct {
	op           Operation
	signed       []byte   // canonical DAG-CBOR with sig
	unsignedHash [32]byte // sha256 of canonical DAG-CBOR without sig
	cid          string
	// memo remembers signature checks by key: verification is the
	// expensive step, and a directory checks an op once before taking its
	// append lock and again under it.
	memoMu sync.Mutex
	memo   [4]verdict
	memoN  int
	// compact is the op's compact encoding, made once (see Compact).
	compactOnce sync.Once
	compact     []byte
	// sig is the op's decoded signature, decoded once (see signature).
	sigOnce sync.Once
	sig     Signature
	sigErr  error
}

// signature returns op's decoded signature (DecodeSignature of its sig
// field), decoding it once: the stored form, the check ahead of the append
// lock and the chain rules all need it.
func (op *Op) signature() (*Signature, error) {
	op.sigOnce.Do(func() { op.sig, op.sigErr = DecodeSignature(op.op.Sig) })
	return &op.sig, op.sigErr
}

type verdict struct {
	key string
	ok  bool
}

// verifiedBy reports whether key's signature check of op succeeds, using
// and filling the memo (bounded: a hostile key list cannot grow it). Safe
// for concurrent use.
func (op *Op) verifiedBy(key string, check func() bool) bool {
	op.memoMu.Lock()
	for _, v := range op.memo[:op.memoN] {
		if v.key == key {
			op.memoMu.Unlock()
			return v.ok
		}
	}
	op.memoMu.Unlock()
	ok := check()
	op.memoMu.Lock()
	if op.memoN < len(op.memo) {
		op.memo[op.memoN] = verdict{key, ok}
		op.memoN++
	}
	op.memoMu.Unlock()
	return ok
}

// NewOp checks the structure of o (every field of its type well-formed,
// map keys unique, prev a valid CID) and computes its canonical encodings.
// Signatures and keys are not checked here: that is the chain rules' job.
func NewOp(o Operation) (*Op, error) {
	if err := checkStructure(&o); err != nil {
		return nil, err
	}
	op := &Op{op: o}
	// The signed encoding is the unsigned one with "sig" (the shortest key,
	// so the first) inserted after the map head: encode the shared body once.
	var head [9]byte
	body, n := encodeBody(make([]byte, 0, 512), &op.op)
	h := sha256.New()
	h.Write(AppendCBORHead(head[:0], majorMap, uint64(n)))
	h.Write(body)
	h.Sum(op.unsignedHash[:0])

	op.signed = appendSigned(body, n, o.Sig)
	op.cid = cidOf(op.signed)
	return op, nil
}

// Operation returns the op's content. Its slices are shared with the Op.
func (op *Op) Operation() Operation { return op.op }

// Type returns the op's type.
func (op *Op) Type() Type { return op.op.Type }

// Prev returns the CID of the previous op, or "" for a genesis op.
func (op *Op) Prev() string { return op.op.Prev }

// CID returns the op's CID: CIDv1, dag-cbor, sha2-256, base32 lower ("bafyrei…").
func (op *Op) CID() string { return op.cid }

// SignedCBOR returns the canonical DAG-CBOR encoding of the whole signed op:
// the bytes the CID and (for a genesis op) the DID are computed from.
func (op *Op) SignedCBOR() []byte { return op.signed }

// UnsignedCBOR returns the canonical DAG-CBOR encoding of the op without its
// sig field: the bytes that are signed.
func (op *Op) UnsignedCBOR() []byte { return UnsignedCBOR(op.op) }

// UnsignedCBOR encodes o without its sig field, in canonical DAG-CBOR: the
// bytes a signer signs. o must be structurally valid (see NewOp).
func UnsignedCBOR(o Operation) []byte {
	body, n := encodeBody(nil, &o)
	out := AppendCBORHead(make([]byte, 0, len(body)+1), majorMap, uint64(n))
	return append(out, body...)
}

// GenesisDID returns the DID a genesis op creates:
// "did:plc:" + the first 24 characters of base32lower(sha256(signed bytes)).
// It is meaningful only for genesis ops.
func (op *Op) GenesisDID() string {
	h := sha256.Sum256(op.signed)
	return "did:plc:" + b32.EncodeToString(h[:])[:24]
}

var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// cidPrefix is CIDv1 ‖ dag-cbor ‖ sha2-256 ‖ 32-byte digest length.
var cidPrefix = []byte{0x01, 0x71, 0x12, 0x20}

func cidOf(signed []byte) string {
	var raw [36]byte
	copy(raw[:], cidPrefix)
	h := sha256.Sum256(signed)
	copy(raw[4:], h[:])
	return "b" + b32.EncodeToString(raw[:])
}

// CIDForCBOR returns the CID of arbitrary DAG-CBOR bytes.
func CIDForCBOR(b []byte) string { return cidOf(b) }

// ValidCID reports whether s is a CID in the only form did:plc uses: CIDv1,
// dag-cbor, sha2-256, multibase base32 lower, 59 characters.
func ValidCID(s string) bool {
	if len(s) != 59 || s[0] != 'b' {
		return false
	}
	raw, err := b32.DecodeString(s[1:])
	if err != nil || len(raw) != 36 || !bytes.Equal(raw[:4], cidPrefix) {
		return false
	}
	// Reject non-canonical trailing bits: re-encode must give the same text.
	return b32.EncodeToString(raw) == s[1:]
}

// ValidDID reports whether s is a syntactically valid did:plc identifier:
// "did:plc:" followed by 24 characters of [a-z2-7].
func ValidDID(s string) bool {
	if len(s) != 32 || !strings.HasPrefix(s, "did:plc:") {
		return false
	}
	for i := 8; i < 32; i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

func cborKeyCompare(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}

func checkString(field, s string) error {
	if !utf8.ValidString(s) {
		return malformed("%s is not valid UTF-8", field)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return malformed("%s contains a NUL character", field)
	}
	return nil
}

func checkStructure(o *Operation) error {
	if err := checkString("sig", o.Sig); err != nil {
		return err
	}
	switch o.Type {
	case TypeOperation:
		if o.SigningKey != "" || o.RecoveryKey != "" || o.Handle != "" || o.Service != "" {
			return malformed("plc_operation has legacy create fields")
		}
		if o.Prev != "" && !ValidCID(o.Prev) {
			return malformed("invalid prev CID: %q", o.Prev)
		}
		if o.RotationKeys == nil {
			o.RotationKeys = []string{}
		}
		if o.AlsoKnownAs == nil {
			o.AlsoKnownAs = []string{}
		}
		for _, k := range o.RotationKeys {
			if err := checkString("rotationKeys entry", k); err != nil {
				return err
			}
		}
		for _, a := range o.AlsoKnownAs {
			if err := checkString("alsoKnownAs entry", a); err != nil {
				return err
			}
		}
		if !slices.IsSortedFunc(o.VerificationMethods, func(a, b VerificationMethod) int { return cborKeyCompare(a.ID, b.ID) }) {
			o.VerificationMethods = slices.Clone(o.VerificationMethods)
			slices.SortStableFunc(o.VerificationMethods, func(a, b VerificationMethod) int { return cborKeyCompare(a.ID, b.ID) })
		}
		for i, vm := range o.VerificationMethods {
			if i > 0 && o.VerificationMethods[i-1].ID == vm.ID {
				return malformed("duplicate verificationMethods id %q", vm.ID)
			}
			if err := checkString("verificationMethods id", vm.ID); err != nil {
				return err
			}
			if err := checkString("verificationMethods key", vm.Key); err != nil {
				return err
			}
		}
		if !slices.IsSortedFunc(o.Services, func(a, b Service) int { return cborKeyCompare(a.ID, b.ID) }) {
			o.Services = slices.Clone(o.Services)
			slices.SortStableFunc(o.Services, func(a, b Service) int { return cborKeyCompare(a.ID, b.ID) })
		}
		for i, s := range o.Services {
			if i > 0 && o.Services[i-1].ID == s.ID {
				return malformed("duplicate services id %q", s.ID)
			}
			for _, f := range [...]string{s.ID, s.Type, s.Endpoint} {
				if err := checkString("services entry", f); err != nil {
					return err
				}
			}
		}
	case TypeTombstone:
		if o.RotationKeys != nil || o.VerificationMethods != nil || o.AlsoKnownAs != nil || o.Services != nil ||
			o.SigningKey != "" || o.RecoveryKey != "" || o.Handle != "" || o.Service != "" {
			return malformed("plc_tombstone has fields other than type, prev and sig")
		}
		if o.Prev == "" {
			return malformed("plc_tombstone requires a prev")
		}
		if !ValidCID(o.Prev) {
			return malformed("invalid prev CID: %q", o.Prev)
		}
	case TypeCreate:
		if o.RotationKeys != nil || o.VerificationMethods != nil || o.AlsoKnownAs != nil || o.Services != nil {
			return malformed("create has plc_operation fields")
		}
		if o.Prev != "" {
			return malformed("create must have a null prev")
		}
		for _, f := range [...]string{o.SigningKey, o.RecoveryKey, o.Handle, o.Service} {
			if err := checkString("create field", f); err != nil {
				return err
			}
		}
	default:
		return malformed("unknown operation type")
	}
	return nil
}

// Data is the identity state an op establishes: the normalised content of a
// plc_operation or legacy create. A tombstone establishes none.
type Data struct {
	RotationKeys        []string
	VerificationMethods []VerificationMethod
	AlsoKnownAs         []string
	Services            []Service
}

// Data returns the normalised identity data of op. For a legacy create op
// this applies the reference's normalisation; for a tombstone it returns
// the zero Data and false.
func (op *Op) Data() (Data, bool) {
	o := &op.op
	switch o.Type {
	case TypeOperation:
		return Data{o.RotationKeys, o.VerificationMethods, o.AlsoKnownAs, o.Services}, true
	case TypeCreate:
		return Data{
			RotationKeys:        []string{o.RecoveryKey, o.SigningKey},
			VerificationMethods: []VerificationMethod{{ID: "atproto", Key: o.SigningKey}},
			AlsoKnownAs:         []string{legacyHandle(o.Handle)},
			Services: []Service{{
				ID: "atproto_pds", Type: "AtprotoPersonalDataServer", Endpoint: legacyEndpoint(o.Service),
			}},
		}, true
	}
	return Data{}, false
}

// rotationKeys returns the normalised rotation keys (nil for a tombstone).
func (op *Op) rotationKeys() []string {
	switch op.op.Type {
	case TypeOperation:
		return op.op.RotationKeys
	case TypeCreate:
		return []string{op.op.RecoveryKey, op.op.SigningKey}
	}
	return nil
}

func legacyHandle(h string) string {
	if strings.HasPrefix(h, "at://") {
		return h
	}
	if rest, ok := strings.CutPrefix(h, "http://"); ok {
		h = rest
	} else if rest, ok := strings.CutPrefix(h, "https://"); ok {
		h = rest
	}
	return "at://" + h
}

func legacyEndpoint(s string) string {
	if strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") {
		return s
	}
	return "https://" + s
}
