package oplog

import (
	"sync"

	"github.com/plcdir/plc/internal/chainstore"
	"github.com/plcdir/plc/validate"
)

// DefaultRecordCache is the default memory, in bytes, of the DID records
// a Log keeps between append transactions: between 100,000 and 250,000
// DIDs of typical histories.
const DefaultRecordCache = 64 << 20

// recordCache keeps the chain records of the DIDs a Log recently read or
// wrote, so that the next append transactions need not read and decode
// their ops again. Every record in it is the DID's record as of the log's
// seq at: a transaction that finds another last seq under the append lock
// (another process appended) drops them all and reads from the store.
//
// Records are kept as bytes (chainstore), without Head (the chain rules do
// not need it); the records handed out are decoded from them and must not
// be modified (the chain rules derive new states, they do not change old
// ones). The cache holds two generations of at most max/2 bytes each: a
// lookup moves a record to the newer one, and when that is full the older
// one is dropped.
type recordCache struct {
	mu       sync.Mutex
	max      int64
	at       int64 // the log seq the records are current at; -1: none
	cur, old *chainstore.Store[chainstore.DIDKey]
}

func newRecordCache(max int64) *recordCache {
	c := &recordCache{max: max}
	c.reset()
	return c
}

// slab is the slab size of a generation: a quarter of it, at most
// chainstore's default.
func (c *recordCache) slab() int { return int(min(c.max/8, chainstore.DefaultSlab)) }

func (c *recordCache) reset() {
	c.at = -1
	c.cur, c.old = chainstore.New[chainstore.DIDKey](c.slab()), nil
}

// drop forgets every record: after a transaction whose outcome is not
// known.
func (c *recordCache) drop() {
	c.mu.Lock()
	c.reset()
	c.mu.Unlock()
}

// lookup returns did's cached record, fresh or not (nil when absent).
func (c *recordCache) lookup(did string) *DIDRecord {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.getLocked(did)
}

func (c *recordCache) getLocked(did string) *DIDRecord {
	k, ok := chainstore.KeyOf(did)
	if !ok {
		return nil
	}
	ops, seqs, ok := c.cur.Get(k)
	if !ok && c.old != nil {
		if ops, seqs, ok = c.old.Get(k); ok {
			c.room()
			c.cur.Put(k, ops, seqs, false)
		}
	}
	if !ok || len(ops) == 0 {
		return nil
	}
	rec := &DIDRecord{DID: did, HeadSeq: seqs[len(seqs)-1], Seqs: seqs}
	rec.State.DID, rec.State.Ops = did, ops
	return rec
}

// room makes the newer generation the older one when it is full.
func (c *recordCache) room() {
	if c.cur.Used() >= c.max/2 {
		c.old, c.cur = c.cur, chainstore.New[chainstore.DIDKey](c.slab())
	}
}

// hasLocked reports whether did has a record in either generation.
func (c *recordCache) hasLocked(did string) bool {
	k, ok := chainstore.KeyOf(did)
	return ok && (c.cur.Has(k) || (c.old != nil && c.old.Has(k)))
}

// putLocked stores rec in the newer generation. extends says rec is the
// stored record with one more op.
func (c *recordCache) putLocked(rec *DIDRecord, extends bool) {
	k, ok := chainstore.KeyOf(rec.DID)
	if !ok || len(rec.State.Ops) == 0 || len(rec.Seqs) != len(rec.State.Ops) {
		return
	}
	c.room()
	c.cur.Put(k, rec.State.Ops, rec.Seqs, extends)
}

// missing returns the DIDs of dids (each once) the cache has no record of:
// those an append transaction should read with its view.
func (c *recordCache) missing(dids []string) []string {
	if c == nil {
		return dids
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(dids))
	seen := make(map[string]bool, len(dids))
	for _, d := range dids {
		if seen[d] {
			continue
		}
		seen[d] = true
		if !c.hasLocked(d) {
			out = append(out, d)
		}
	}
	return out
}

// complete fills view.Records, under the append lock, with the records of
// dids it lacks: from the cache when the cache is current at view.LastSeq,
// else (and for DIDs evicted meanwhile) with view.Load. requested are the
// DIDs the view was read with.
func (c *recordCache) complete(view *View, dids, requested []string) error {
	if c == nil {
		return nil
	}
	asked := make(map[string]bool, len(requested))
	for _, d := range requested {
		asked[d] = true
	}
	var load []string
	c.mu.Lock()
	if c.at != view.LastSeq {
		c.reset()
	}
	for _, d := range dids {
		if asked[d] {
			continue
		}
		asked[d] = true
		if r := c.getLocked(d); r != nil {
			view.Records[d] = r
		} else {
			load = append(load, d)
		}
	}
	c.mu.Unlock()
	if len(load) == 0 {
		return nil
	}
	return view.Load(load)
}

// committed records the outcome of an append transaction that read view:
// the records it read and wrote are current at the seq of its last write.
// A transaction whose outcome is unknown (its commit failed) must reset
// the cache instead.
func (c *recordCache) committed(view View, writes []Write) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at != view.LastSeq && c.at != -1 {
		// Someone else's transaction came between: start again.
		c.reset()
	}
	// A record the newer generation holds is the view's (both are the
	// DID's record at view.LastSeq): only the others are stored.
	for d, r := range view.Records {
		if k, ok := chainstore.KeyOf(d); ok && !c.cur.Has(k) {
			c.putLocked(r, false)
		}
	}
	// Then each written DID's record after the batch: its last write's.
	type tally struct {
		last, n   int  // the DID's last write, and its number of writes
		nullifies bool // some write nullified ops
	}
	dids := map[string]*tally{}
	var order []string
	for i := range writes {
		w := &writes[i]
		t := dids[w.Entry.DID]
		if t == nil {
			t = &tally{}
			dids[w.Entry.DID] = t
			order = append(order, w.Entry.DID)
		}
		t.last, t.n = i, t.n+1
		t.nullifies = t.nullifies || len(w.Nullifies) > 0
	}
	for _, d := range order {
		t := dids[d]
		rec := writes[t.last].Record
		if rec == nil {
			continue
		}
		k, _ := chainstore.KeyOf(d)
		base := len(rec.State.Ops) - t.n
		if t.nullifies || base < 1 || !c.cur.Has(k) || len(rec.Seqs) != len(rec.State.Ops) {
			c.putLocked(rec, false)
			continue
		}
		// With nothing nullified, the record is the stored one (the view's)
		// with the batch's ops appended: one after the other, each in place
		// when there is room.
		for m := base + 1; m <= len(rec.State.Ops); m++ {
			c.putLocked(&DIDRecord{DID: d, State: validate.State{DID: d, Ops: rec.State.Ops[:m]}, Seqs: rec.Seqs[:m]}, true)
		}
	}
	c.at = view.LastSeq + int64(len(writes))
}
