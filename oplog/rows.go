package oplog

import (
	"encoding/base32"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/plcdir/plc/validate"
)

// How rows are stored, the same on both backends:
//   - did is the 15 bytes a DID's 24 base32 characters encode;
//   - op is the op's compact form (validate.AppendCompact), from which the
//     exact signed DAG-CBOR — and so the CID — is reproduced on read;
//   - created_at is unix milliseconds;
//   - a DID's chain state and current document are not stored: they are
//     rebuilt from its non-nullified ops when read.

var didB32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

const didPrefix = "did:plc:"

// DIDKey returns the stored form of did: the 15 bytes its 24 base32
// characters encode (the did column of both backends).
func DIDKey(did string) ([]byte, error) {
	if !validate.ValidDID(did) {
		return nil, fmt.Errorf("oplog: %q is not a did:plc identifier", did)
	}
	return didB32.DecodeString(did[len(didPrefix):])
}

// didKeys returns the stored forms of dids, each once.
func didKeys(dids []string) ([][]byte, error) {
	seen := make(map[string]bool, len(dids))
	out := make([][]byte, 0, len(dids))
	for _, d := range dids {
		if seen[d] {
			continue
		}
		seen[d] = true
		k, err := DIDKey(d)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

func didFromKey(b []byte) string { return didPrefix + didB32.EncodeToString(b) }

// storedOp returns the stored form of an entry's op.
func storedOp(e *Entry) ([]byte, error) {
	op := e.Decoded
	if op == nil {
		var err error
		if op, err = validate.ParseCBOR(e.Op); err != nil {
			return nil, fmt.Errorf("oplog: op %d is not a valid op: %w", e.Seq, err)
		}
	}
	return op.Compact(), nil
}

// decodeEntry turns a stored row into an Entry.
func decodeEntry(seq int64, did []byte, ms int64, stored []byte, nullified bool) (Entry, error) {
	op, err := validate.ParseCompact(stored)
	if err != nil {
		return Entry{}, fmt.Errorf("oplog: stored op %d does not decode: %w", seq, err)
	}
	return Entry{
		Seq:       seq,
		DID:       didFromKey(did),
		CID:       op.CID(),
		CreatedAt: time.UnixMilli(ms).UTC(),
		Op:        op.SignedCBOR(),
		Decoded:   op,
		Nullified: nullified,
	}, nil
}

// opRows is what scanning needs of *sql.Rows and pgx.Rows.
type opRows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// scanEntries reads rows of (seq, did, created_at, op[, nullified]). The
// caller closes rows.
func scanEntries(rows opRows, withNullified bool) ([]Entry, error) {
	var out []Entry
	for rows.Next() {
		var (
			seq, ms     int64
			did, stored []byte
			nullified   bool
		)
		dest := []any{&seq, &did, &ms, &stored}
		if withNullified {
			dest = append(dest, &nullified)
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		e, err := decodeEntry(seq, did, ms, stored, nullified)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// scanRecords reads rows of (did, seq, created_at, op, signer) — the
// non-nullified ops of some DIDs, in (did, seq) order — into records.
func scanRecords(rows opRows, recs map[string]*DIDRecord) error {
	for rows.Next() {
		var (
			seq, ms     int64
			did, stored []byte
			signer      int
		)
		if err := rows.Scan(&did, &seq, &ms, &stored, &signer); err != nil {
			return err
		}
		e, err := decodeEntry(seq, did, ms, stored, false)
		if err != nil {
			return err
		}
		rec := recs[e.DID]
		if rec == nil {
			rec = &DIDRecord{DID: e.DID, State: validate.State{DID: e.DID}}
			recs[e.DID] = rec
		}
		rec.State.Ops = append(rec.State.Ops, validate.ChainOpOf(e.Decoded, e.CreatedAt, signer))
		rec.Seqs = append(rec.Seqs, seq)
		rec.HeadSeq, rec.Head = seq, e.Decoded
	}
	return rows.Err()
}

// exportByTime is ExportByTime over a store's two reads: page, up to limit
// entries with createdAt > after in (createdAt, seq) order, and tie, every
// entry of one millisecond. When the page ends inside a millisecond, all
// of it is read, so that the cut falls where (createdAt, cid) order — the
// legacy export's — puts it.
func exportByTime(limit int, page func() ([]Entry, error), tie func(ms int64) ([]Entry, error)) ([]Entry, error) {
	es, err := page()
	if err != nil || len(es) < limit {
		return orderByTime(es, limit), err
	}
	last := es[len(es)-1].CreatedAt
	same, err := tie(last.UnixMilli())
	if err != nil {
		return nil, err
	}
	es = slices.DeleteFunc(es, func(e Entry) bool { return e.CreatedAt.Equal(last) })
	return orderByTime(append(es, same...), limit), nil
}

// orderByTime puts entries in the legacy export's order, (createdAt, cid),
// and keeps the first limit.
func orderByTime(es []Entry, limit int) []Entry {
	slices.SortStableFunc(es, func(a, b Entry) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.CID, b.CID)
	})
	return es[:min(len(es), limit)]
}
