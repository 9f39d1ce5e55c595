// Package chainstore keeps DID chain states — each a DID's non-nullified
// ops as validate.ChainOp values, every op with an integer of the
// caller's (a seq, a line) — as bytes in large slabs, with a map of
// pointer-free references into them. A million DIDs then cost the garbage
// collector next to nothing to scan or sweep, and a fraction of the memory
// of validate.State values.
//
// A state's bytes are never overwritten once written: the strings Get
// returns alias them, and stay valid however the store changes. An op
// that extends a chain is appended in place when its region has room; a
// state that changed otherwise (ops nullified) or outgrew its region is
// written to a new region, with room to grow, and the old one is left
// unused. Space is given back only with the whole Store.
//
// A Store is not safe for concurrent use.
package chainstore

import (
	"encoding/binary"
	"time"
	"unsafe"

	"github.com/plcdir/plc/internal/defaults"
	"github.com/plcdir/plc/validate"
)

// DIDKey is a did:plc's key in a Store: the 24 characters after
// "did:plc:".
type DIDKey [24]byte

// KeyOf returns did's key; ok is false for a string not shaped like a
// did:plc.
func KeyOf(did string) (k DIDKey, ok bool) {
	const prefix = "did:plc:"
	if len(did) != len(prefix)+len(k) || did[:len(prefix)] != prefix {
		return k, false
	}
	copy(k[:], did[len(prefix):])
	return k, true
}

// DefaultSlab is the default size of a slab.
const DefaultSlab = 16 << 20

// Store holds the chain states of keys K.
type Store[K comparable] struct {
	refs  map[K]ref
	slabs [][]byte
	used  int   // bytes handed out of the last slab
	slab  int   // the size of a new slab
	total int64 // bytes of the regions handed out
}

// ref is a state's region: n bytes used of size, at off in slab.
type ref struct{ slab, off, n, size uint32 }

// New returns an empty Store whose slabs are slab bytes (DefaultSlab when
// slab ≤ 0); a larger state gets a slab of its own.
func New[K comparable](slab int) *Store[K] {
	defaults.Positive(&slab, DefaultSlab)
	return &Store[K]{refs: map[K]ref{}, slab: slab}
}

// Len returns the number of states.
func (s *Store[K]) Len() int { return len(s.refs) }

// Used returns the bytes of the regions handed out so far (those left
// unused included): the memory the states take, within at most one slab
// (the last one's room).
func (s *Store[K]) Used() int64 { return s.total }

// Has reports whether k has a state.
func (s *Store[K]) Has(k K) bool {
	_, ok := s.refs[k]
	return ok
}

func (s *Store[K]) bytes(r ref) []byte {
	return s.slabs[r.slab][r.off : r.off+r.n : r.off+r.size]
}

// Get returns k's state: its ops and their integers, decoded afresh on
// every call, so that it costs O(len(ops)). The two slices are the
// caller's: it may change them (apply ops to them in place, say). The
// ops' strings alias the store's slabs, and ops with the same rotation
// keys as the op before them share its RotationKeys slice, which must not
// be modified.
func (s *Store[K]) Get(k K) (ops []validate.ChainOp, tags []int64, ok bool) {
	r, ok := s.refs[k]
	if !ok {
		return nil, nil, false
	}
	ops, tags = decode(s.bytes(r))
	return ops, tags, true
}

// Delete forgets k's state (for a caller that keeps it in another form
// from now on). Its bytes are not reused: what Get returned stays intact.
func (s *Store[K]) Delete(k K) { delete(s.refs, k) }

// alloc returns a new region of size bytes.
func (s *Store[K]) alloc(size int) ref {
	if len(s.slabs) == 0 || s.used+size > len(s.slabs[len(s.slabs)-1]) {
		s.slabs = append(s.slabs, make([]byte, max(s.slab, size)))
		s.used = 0
	}
	r := ref{slab: uint32(len(s.slabs) - 1), off: uint32(s.used), size: uint32(size)}
	s.used += size
	s.total += int64(size)
	return r
}

// Put stores k's state: ops and their integers (tags, one per op, each
// ≥ 0). extends says the state is k's stored one with the last op
// appended (it is then written in place when there is room).
func (s *Store[K]) Put(k K, ops []validate.ChainOp, tags []int64, extends bool) {
	last := len(ops) - 1
	if r, ok := s.refs[k]; ok && extends && last >= 0 {
		add := opSize(ops, last, tags[last])
		if int(r.n)+add <= int(r.size) {
			encodeOp(s.bytes(r), ops, last, tags[last])
			r.n += uint32(add)
			s.refs[k] = r
			return
		}
	}
	size := 0
	for i := range ops {
		size += opSize(ops, i, tags[i])
	}
	room := size
	if len(ops) > 1 {
		room = 2 * size // a DID with a history tends to go on
	}
	r := s.alloc(room)
	b := s.slabs[r.slab][r.off : r.off : r.off+r.size]
	for i := range ops {
		b = encodeOp(b, ops, i, tags[i])
	}
	r.n = uint32(len(b))
	s.refs[k] = r
}

// The encoding of an op: its CID, createdAt (Unix ms, varint), a flags
// byte, signer, tag and — unless the flags say they are the previous op's
// — its rotation keys.
const (
	flagTombstone = 1 << iota
	flagSameKeys  // the rotation keys are the previous op's
)

// sameKeys reports whether ops[i] has the rotation keys of ops[i-1].
func sameKeys(ops []validate.ChainOp, i int) bool {
	if i == 0 || len(ops[i].RotationKeys) != len(ops[i-1].RotationKeys) {
		return false
	}
	for j, k := range ops[i].RotationKeys {
		if ops[i-1].RotationKeys[j] != k {
			return false
		}
	}
	return true
}

// opSize is the length of ops[i]'s encoding (with tag).
func opSize(ops []validate.ChainOp, i int, tag int64) int {
	c := &ops[i]
	size := uvarintLen(uint64(len(c.CID))) + len(c.CID) + varintLen(c.CreatedAt.UnixMilli()) + 1 +
		uvarintLen(uint64(c.Signer)) + uvarintLen(uint64(tag))
	if !sameKeys(ops, i) {
		size += uvarintLen(uint64(len(c.RotationKeys)))
		for _, k := range c.RotationKeys {
			size += uvarintLen(uint64(len(k))) + len(k)
		}
	}
	return size
}

// encodeOp appends ops[i]'s encoding (with tag) to dst.
func encodeOp(dst []byte, ops []validate.ChainOp, i int, tag int64) []byte {
	c := &ops[i]
	dst = appendString(dst, c.CID)
	dst = binary.AppendVarint(dst, c.CreatedAt.UnixMilli())
	flags, same := byte(0), sameKeys(ops, i)
	if c.Tombstone {
		flags |= flagTombstone
	}
	if same {
		flags |= flagSameKeys
	}
	dst = append(dst, flags)
	dst = binary.AppendUvarint(dst, uint64(c.Signer))
	dst = binary.AppendUvarint(dst, uint64(tag))
	if !same {
		dst = binary.AppendUvarint(dst, uint64(len(c.RotationKeys)))
		for _, k := range c.RotationKeys {
			dst = appendString(dst, k)
		}
	}
	return dst
}

// decode decodes what encodeOp wrote (it trusts it: the store wrote it).
// The strings it returns alias b, which is never overwritten.
func decode(b []byte) ([]validate.ChainOp, []int64) {
	s := unsafe.String(unsafe.SliceData(b), len(b))
	var (
		ops  []validate.ChainOp
		tags []int64
		pos  int
	)
	uvarint := func() int {
		v, n := binary.Uvarint(b[pos:])
		pos += n
		return int(v)
	}
	str := func() string {
		n := uvarint()
		pos += n
		return s[pos-n : pos]
	}
	for pos < len(b) {
		var c validate.ChainOp
		c.CID = str()
		ms, n := binary.Varint(b[pos:])
		pos += n
		c.CreatedAt = time.UnixMilli(ms).UTC()
		flags := b[pos]
		pos++
		c.Tombstone = flags&flagTombstone != 0
		c.Signer = uvarint()
		tags = append(tags, int64(uvarint()))
		if flags&flagSameKeys != 0 {
			c.RotationKeys = ops[len(ops)-1].RotationKeys
		} else if nk := uvarint(); nk > 0 {
			c.RotationKeys = make([]string, nk)
			for i := range c.RotationKeys {
				c.RotationKeys[i] = str()
			}
		}
		ops = append(ops, c)
	}
	return ops, tags
}

func varintLen(v int64) int { return uvarintLen(uint64(v<<1) ^ uint64(v>>63)) }

func uvarintLen(v uint64) int {
	n := 1
	for ; v >= 0x80; v >>= 7 {
		n++
	}
	return n
}

func appendString(dst []byte, s string) []byte {
	return append(binary.AppendUvarint(dst, uint64(len(s))), s...)
}
