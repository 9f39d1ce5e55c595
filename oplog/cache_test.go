package oplog

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/plcdir/plc/validate"
)

// cacheDID is the i-th DID of these tests.
func cacheDID(i int) string { return fmt.Sprintf("did:plc:%024d", i) }

// cacheOp is a chain op whose fields depend on n.
func cacheOp(n int64) validate.ChainOp {
	return validate.ChainOp{
		CID:          fmt.Sprintf("bafyrei%052d", n),
		CreatedAt:    time.UnixMilli(1_700_000_000_000 + n).UTC(),
		Signer:       int(n % 2),
		RotationKeys: []string{fmt.Sprintf("did:key:zQ3sh%040d", n/3)},
	}
}

// cacheModel replays appends against a recordCache and keeps the records
// they should leave, to check what the cache hands out.
type cacheModel struct {
	t     *testing.T
	c     *recordCache
	seq   int64
	truth map[string]*DIDRecord
}

func newCacheModel(t *testing.T, max int64) *cacheModel {
	return &cacheModel{t: t, c: newRecordCache(max), truth: map[string]*DIDRecord{}}
}

// appendOps commits one transaction of one op per DID in dids; when
// nullify is set, the op nullifies the DID's last op (if it has two).
// The view holds what the cache lacks, as a store would read it.
func (m *cacheModel) appendOps(dids []string, nullify bool) {
	view := View{LastSeq: m.seq, Records: map[string]*DIDRecord{}}
	requested := m.c.missing(dids)
	for _, d := range requested {
		if r := m.truth[d]; r != nil {
			view.Records[d] = r
		}
	}
	view.Load = func(more []string) error {
		for _, d := range more {
			if r := m.truth[d]; r != nil {
				view.Records[d] = r
			}
		}
		return nil
	}
	if err := m.c.complete(&view, dids, requested); err != nil {
		m.t.Fatal(err)
	}
	var writes []Write
	latest := map[string]int{} // the index of each DID's last write
	for _, d := range dids {
		prev := view.Records[d]
		if w, ok := latest[d]; ok {
			prev = writes[w].Record
		}
		if r, want := prev, m.truth[d]; (r == nil) != (want == nil) || r != nil && !recordsEqual(r, want) {
			m.t.Fatalf("DID %s: the transaction saw %v, want %v", d, r, want)
		}
		m.seq++
		var ops []validate.ChainOp
		var seqs, nullifies []int64
		if prev != nil {
			ops, seqs = slices.Clone(prev.State.Ops), slices.Clone(prev.Seqs)
		}
		if nullify && len(ops) > 1 {
			nullifies = []int64{seqs[len(seqs)-1]}
			ops, seqs = ops[:len(ops)-1], seqs[:len(seqs)-1]
		}
		ops, seqs = append(ops, cacheOp(m.seq)), append(seqs, m.seq)
		rec := DIDRecord{DID: d, HeadSeq: m.seq, State: validate.State{DID: d, Ops: ops}, Seqs: seqs}
		latest[d] = len(writes)
		writes = append(writes, Write{Entry: Entry{Seq: m.seq, DID: d}, Nullifies: nullifies, Record: &rec})
		m.truth[d] = &rec
	}
	m.c.committed(view, writes)
}

func recordsEqual(a, b *DIDRecord) bool {
	return a.DID == b.DID && a.HeadSeq == b.HeadSeq && slices.Equal(a.Seqs, b.Seqs) && a.State.DID == b.State.DID &&
		slices.EqualFunc(a.State.Ops, b.State.Ops, func(x, y validate.ChainOp) bool {
			return x.CID == y.CID && x.CreatedAt.Equal(y.CreatedAt) && x.Tombstone == y.Tombstone &&
				x.Signer == y.Signer && slices.Equal(x.RotationKeys, y.RotationKeys)
		})
}

// TestRecordCacheHandsOutCurrentRecords: over appends that extend DIDs'
// chains, nullify ops and repeat a DID within a transaction, with a cache
// small enough to drop generations many times, every record the cache
// hands out (to the transactions, and to lookup) is the DID's record, and
// the cache stays within its size.
func TestRecordCacheHandsOutCurrentRecords(t *testing.T) {
	const max = 16 << 10
	m := newCacheModel(t, max)
	hits, rotated := 0, false
	for round := range 200 {
		var dids []string
		for i := range 20 {
			dids = append(dids, cacheDID((round*7+i*13)%300))
		}
		dids = append(dids, dids[0]) // twice in one transaction
		m.appendOps(dids, round%5 == 4)
		for _, d := range dids[:5] {
			if r := m.c.lookup(d); r != nil {
				hits++
				if !recordsEqual(r, m.truth[d]) {
					t.Fatalf("round %d: lookup(%s) = %v, want %v", round, d, r, m.truth[d])
				}
			}
		}
		m.c.mu.Lock()
		used := m.c.cur.Used()
		if m.c.old != nil {
			used += m.c.old.Used()
			rotated = true
		}
		m.c.mu.Unlock()
		if used > max+max/2 { // two generations of half, each overrun by at most one record
			t.Fatalf("round %d: the cache holds %d bytes, over its %d", round, used, max)
		}
	}
	if hits == 0 {
		t.Fatal("no lookup found a record: the cache keeps nothing")
	}
	if !rotated {
		t.Fatal("the cache never made a new generation: the test does not exercise eviction")
	}
}

// TestRecordCacheDropsRecordsOfAnotherWriter: a transaction that finds a
// last seq the cache is not current at (another process appended) reads
// every record from the store.
func TestRecordCacheDropsRecordsOfAnotherWriter(t *testing.T) {
	m := newCacheModel(t, DefaultRecordCache)
	d := cacheDID(1)
	m.appendOps([]string{d}, false)
	if m.c.lookup(d) == nil {
		t.Fatal("the record of the transaction's write is not kept")
	}
	// Another process appends an op of d: the store's record moves on.
	m.seq++
	rec := *m.truth[d]
	rec.State.Ops = append(slices.Clone(rec.State.Ops), cacheOp(m.seq))
	rec.Seqs, rec.HeadSeq = append(slices.Clone(rec.Seqs), m.seq), m.seq
	m.truth[d] = &rec
	// The next transaction must see the store's record, not the cached one
	// (appendOps fails if it does not).
	m.appendOps([]string{d}, false)
	if r := m.c.lookup(d); r == nil || !recordsEqual(r, m.truth[d]) {
		t.Fatalf("after the other writer: lookup = %v, want %v", r, m.truth[d])
	}
}
