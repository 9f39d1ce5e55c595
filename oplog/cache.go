package oplog

import (
	"slices"
	"strings"
	"sync"

	"github.com/plcdir/plc/validate"
)

// DefaultRecordCache is the default number of DID records a Log keeps
// between append transactions.
const DefaultRecordCache = 100_000

// recordCache keeps the chain records of the DIDs a Log recently read or
// wrote, so that the next append transactions need not read and decode
// their ops again. Every record in it is the DID's record as of the log's
// seq at: a transaction that finds another last seq under the append lock
// (another process appended) drops them all and reads from the store.
//
// Records are kept without Head (the chain rules do not need it) and are
// never modified: the chain rules derive new states, they do not change
// old ones. The cache holds at most max records, in two generations: a
// lookup moves a record to the newer one, and when it is full the older
// one is dropped.
type recordCache struct {
	mu       sync.Mutex
	max      int
	at       int64 // the log seq the records are current at; -1: none
	cur, old map[string]*DIDRecord
}

func newRecordCache(max int) *recordCache {
	c := &recordCache{max: max}
	c.reset()
	return c
}

func (c *recordCache) reset() {
	c.at = -1
	c.cur, c.old = map[string]*DIDRecord{}, nil
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
	if r, ok := c.cur[did]; ok {
		return r
	}
	r, ok := c.old[did]
	if ok {
		c.putLocked(did, r)
	}
	return r
}

func (c *recordCache) putLocked(did string, r *DIDRecord) {
	if _, ok := c.cur[did]; !ok && len(c.cur) >= c.max/2 {
		c.old, c.cur = c.cur, make(map[string]*DIDRecord, len(c.cur))
	}
	c.cur[did] = r
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
		if _, ok := c.cur[d]; ok {
			continue
		}
		if _, ok := c.old[d]; ok {
			continue
		}
		out = append(out, d)
	}
	return out
}

// complete fills view.Records, under the append lock, with the records of
// dids it lacks: from the cache when the cache is current at view.LastSeq,
// else (and for DIDs evicted meanwhile) with view.Load. requested are the
// DIDs the view was read with.
func (c *recordCache) complete(view *AppendView, dids, requested []string) error {
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
func (c *recordCache) committed(view AppendView, writes []Write) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at != view.LastSeq && c.at != -1 {
		// Someone else's transaction came between: start again.
		c.reset()
	}
	for d, r := range view.Records {
		c.putLocked(d, bare(r))
	}
	for i := range writes {
		c.putLocked(writes[i].Record.DID, bare(&writes[i].Record))
	}
	c.at = view.LastSeq + int64(len(writes))
}

// bare returns a copy of r without its head op, whose strings are its own:
// a record's CIDs and keys may be parts of a larger buffer (the op they
// were parsed from) that the cache must not keep alive.
func bare(r *DIDRecord) *DIDRecord {
	b := &DIDRecord{DID: strings.Clone(r.DID), HeadSeq: r.HeadSeq, Seqs: slices.Clone(r.Seqs)}
	b.State.DID = b.DID
	b.State.Ops = make([]validate.ChainOp, len(r.State.Ops))
	for i, c := range r.State.Ops {
		c.CID = strings.Clone(c.CID)
		keys := make([]string, len(c.RotationKeys))
		for j, k := range c.RotationKeys {
			keys[j] = strings.Clone(k)
		}
		c.RotationKeys = keys
		b.State.Ops[i] = c
	}
	return b
}
