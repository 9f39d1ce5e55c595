package oplog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/plcdir/plc/validate"
)

const recordVersion = 1

// encodeState encodes a DID's chain state and the seqs of its ops, for the
// dids table.
func encodeState(st validate.State, seqs []int64) []byte {
	b := make([]byte, 0, 64+len(st.Ops)*200)
	b = append(b, recordVersion)
	b = binary.AppendUvarint(b, uint64(len(st.Ops)))
	for i, op := range st.Ops {
		b = appendString(b, op.CID)
		b = binary.AppendVarint(b, op.CreatedAt.UnixMilli())
		var flags byte
		if op.Tombstone {
			flags |= 1
		}
		b = append(b, flags)
		b = binary.AppendUvarint(b, uint64(op.Signer))
		b = binary.AppendUvarint(b, uint64(seqs[i]))
		b = binary.AppendUvarint(b, uint64(len(op.RotationKeys)))
		for _, k := range op.RotationKeys {
			b = appendString(b, k)
		}
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

var errBadRecord = errors.New("corrupt DID state record")

type recordReader struct {
	b   []byte
	err error
}

func (r *recordReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errBadRecord
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *recordReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errBadRecord
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *recordReader) str() string {
	n := r.uvarint()
	if r.err != nil || n > uint64(len(r.b)) {
		r.err = errBadRecord
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *recordReader) byte1() byte {
	if r.err != nil || len(r.b) == 0 {
		r.err = errBadRecord
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// decodeState is the inverse of encodeState.
func decodeState(did string, b []byte) (validate.State, []int64, error) {
	r := recordReader{b: b}
	if v := r.byte1(); r.err == nil && v != recordVersion {
		return validate.State{}, nil, fmt.Errorf("%w: version %d", errBadRecord, v)
	}
	n := r.uvarint()
	if n > uint64(len(b)) {
		return validate.State{}, nil, errBadRecord
	}
	st := validate.State{DID: did, Ops: make([]validate.ChainOp, 0, n)}
	seqs := make([]int64, 0, n)
	for i := uint64(0); i < n && r.err == nil; i++ {
		var op validate.ChainOp
		op.CID = r.str()
		op.CreatedAt = time.UnixMilli(r.varint()).UTC()
		op.Tombstone = r.byte1()&1 != 0
		op.Signer = int(r.uvarint())
		seqs = append(seqs, int64(r.uvarint()))
		nk := r.uvarint()
		if nk > uint64(len(r.b)) {
			r.err = errBadRecord
			break
		}
		if nk > 0 {
			op.RotationKeys = make([]string, nk)
			for j := range op.RotationKeys {
				op.RotationKeys[j] = r.str()
			}
		}
		st.Ops = append(st.Ops, op)
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = errBadRecord
	}
	if r.err != nil {
		return validate.State{}, nil, r.err
	}
	return st, seqs, nil
}
