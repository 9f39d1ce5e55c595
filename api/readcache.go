package api

import (
	"context"
	"hash/maphash"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/plcdir/plc/oplog"
)

// DefaultReadCacheBytes is the default memory, in bytes, of the cache of
// rendered answers plc serve keeps (Config.ReadCacheBytes): about 100,000
// DID documents.
const DefaultReadCacheBytes = 64 << 20

const (
	// readCacheMaxScan is how many appended ops a round reads to learn
	// which DIDs they touched; further behind, it forgets every answer.
	readCacheMaxScan = 4096
	// readCacheTimeout bounds the queries of one round.
	readCacheTimeout = 5 * time.Second
	// readCacheIndexBytes is an entry's share of the index: an 8-byte key
	// and a 4-byte value in a table that is at most 7/8 full, with its
	// control byte and room for growth.
	readCacheIndexBytes = 32
	// readCacheEntryOverhead is the memory counted for an entry besides
	// the allocation of its bytes: its slot, its slice header in data and
	// its share of the index.
	readCacheEntryOverhead = int64(unsafe.Sizeof(cacheSlot{})) + int64(unsafe.Sizeof([]byte(nil))) + readCacheIndexBytes
)

// readCache keeps rendered answers of the read routes of DIDs, keyed by
// route and DID, bounded by bytes (least recently used first out), and
// exact when any process appends to the log.
//
// Exactness comes from the log's seq. Every entry is the answer as of the
// seq at: no op appended at or before it changed the entry's DID since the
// entry was read. Before a request uses the cache, a round asks the store
// for its latest seq; if the log has grown, it reads the ops after at
// (Store.Export, at most readCacheMaxScan of them, else it drops
// everything), forgets the answers of the DIDs they touched, and moves at
// to the latest seq. A request only uses a round that started after it
// arrived, so it sees every op committed before it, by this process or any
// other sharing the database: the answer it gets equals a fresh read at a
// seq at least that high. Rounds run one at a time and the requests that
// arrive during one share the next, so under load the cost is one
// LatestSeq query per round, not per request.
//
// An answer read after a round is stored only if no other round moved at
// meanwhile, and the read must see the log at least at at: true of one
// database, and of any Store whose reads after LatestSeq returned N see
// at least N.
//
// A store that is an oplog.ChangeProbe spares the rounds while the log
// stands still: a round takes the probe's token before it reads the
// latest seq, and a request that then finds the same token knows nothing
// was committed since, so the cache is current at the round's seq for it
// too, and it answers from the cache without waiting for a round.
//
// # Storage
//
// A gigabyte of answers is a million entries, and the garbage collector
// marks the heap at every cycle; so the entries hold (almost) no pointers
// it has to follow. The index maps a seeded hash of (route, DID) to a slot
// number (a map of integers, which the collector does not scan); the slots
// are one slice of fixed-size structs, with the LRU list threaded through
// them as slot numbers; the bytes of an entry (DID, ETag, content type,
// body) are one allocation of their own, without pointers, referenced from
// data by slot number. The collector then follows one pointer per entry
// and scans nothing inside it.
//
// The index holds one entry per hash. Every lookup compares the route and
// the DID stored in the slot with the ones asked for, so two keys whose
// hashes collide never get each other's answer: storing one drops the
// other, which is then a miss.
//
// An entry's bytes are written once, before the entry is stored, and never
// again: evicting, invalidating or replacing an entry only drops the
// cache's reference, and a request that holds an answer built over them
// (lookup) keeps them alive and intact until it is done.
type readCache struct {
	store   oplog.Store
	probe   oplog.ChangeProbe // nil: every request waits for a round
	max     int64
	maxScan int64
	m       *readCacheMetrics
	// hash is the hash of a key in the index; it must be set before the
	// cache is used (tests inject collisions).
	hash func(route readRoute, did string) uint64

	// still is the token of the last round that brought the cache to the
	// store's latest seq, with that seq; nil when there is none.
	still atomic.Pointer[stillState]

	mu    sync.Mutex
	at    int64             // every entry is current at this seq; -1: none yet
	index map[uint64]uint32 // hash of the key → slot
	// slots[0] is the head of the LRU list: its next is the most recently
	// used entry, its prev the least; a free slot is on the free list,
	// chained by next.
	slots []cacheSlot
	// data[i] is the bytes of the entry in slot i (nil when free): the
	// DID, the ETag, the content type and the body, in that order.
	data    [][]byte
	free    uint32 // the first free slot; 0: none
	bytes   int64
	running bool       // a round is running
	next    *syncRound // the round the requests that arrived since the running one started wait for
}

// stillState: the probe's token, taken before a round read the latest
// seq at, with the cache current at at.
type stillState struct {
	tok oplog.ChangeToken
	at  int64
}

type cacheKey struct {
	route readRoute
	did   string
}

// cacheSlot is an entry of the cache, without its bytes. It holds no
// pointers.
type cacheSlot struct {
	hash       uint64
	seq        int64 // answer.seq
	prev, next uint32
	// The lengths of the DID, the ETag and the content type at the start
	// of the entry's bytes; the body is the rest.
	didLen, etagLen, typeLen uint32
	route                    readRoute
}

// answer returns the answer over b, the slot's bytes. The strings share
// b's memory, which is never written after the entry was stored (see
// readCache), so they stay immutable as strings must; the body's capacity
// ends with it, so an append copies instead of writing into b.
func (s *cacheSlot) answer(b []byte) answer {
	etag := b[s.didLen : s.didLen+s.etagLen]
	typ := b[s.didLen+s.etagLen : s.didLen+s.etagLen+s.typeLen]
	body := b[s.didLen+s.etagLen+s.typeLen : len(b) : len(b)]
	return answer{contentType: bytesString(typ), body: body, etag: bytesString(etag), seq: s.seq}
}

// bytesString returns a string sharing b's memory; b must never be
// written again.
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// seededKeyHash returns a hash of keys under a random seed: the hash of
// the DID, plus a multiple of the route by an odd constant, so the routes
// of one DID never collide with each other.
func seededKeyHash() func(readRoute, string) uint64 {
	seed := maphash.MakeSeed()
	return func(route readRoute, did string) uint64 {
		return maphash.String(seed, did) + uint64(route+1)*0x9e3779b97f4a7c15
	}
}

// syncRound is one check of the store's latest seq, shared by the requests
// that wait for it.
type syncRound struct {
	done chan struct{}
	at   int64
	err  error
}

// newReadCache returns a cache of max bytes over store, or nil (no cache)
// when max is 0 or less.
func newReadCache(store oplog.Store, max int64, reg prometheus.Registerer) *readCache {
	if max <= 0 {
		return nil
	}
	probe, _ := store.(oplog.ChangeProbe)
	c := &readCache{
		store:   store,
		probe:   probe,
		max:     max,
		maxScan: readCacheMaxScan,
		m:       newReadCacheMetrics(reg),
		hash:    seededKeyHash(),
		at:      -1,
	}
	c.clearLocked()
	return c
}

// get returns the answer of route for did: the cached one when it is
// current, else render's (stored for the next requests). A nil cache
// always renders.
func (c *readCache) get(ctx context.Context, route readRoute, did string, render func() (*answer, error)) (answer, error) {
	if c == nil {
		return rendered(render())
	}
	at, err := c.current(ctx)
	if err != nil {
		// What changed is not known: read, and store nothing.
		c.m.bypass.Inc()
		return rendered(render())
	}
	k := cacheKey{route, did}
	if a := c.lookup(k); a.found() {
		c.m.hits.Inc()
		return a, nil
	}
	c.m.misses.Inc()
	a, err := render()
	if err != nil {
		return answer{}, err
	}
	c.put(k, at, a)
	return *a, nil
}

func rendered(a *answer, err error) (answer, error) {
	if err != nil {
		return answer{}, err
	}
	return *a, nil
}

// current returns the seq the cache is current at for a request that
// arrived before the call: without a query when the probe shows nothing
// committed since the last round, else after a round that starts after
// the call.
func (c *readCache) current(ctx context.Context) (int64, error) {
	if at, ok := c.stillAt(); ok {
		return at, nil
	}
	return c.sync(ctx)
}

// stillAt returns the seq the cache is current at when the probe shows no
// commit since the last round that read the latest seq.
func (c *readCache) stillAt() (int64, bool) {
	if c.probe == nil {
		return 0, false
	}
	s := c.still.Load()
	if s == nil {
		return 0, false
	}
	tok, ok := c.probe.ChangeToken()
	if !ok || tok != s.tok {
		return 0, false
	}
	c.m.still.Inc()
	return s.at, true
}

// cacheView is the cache as one request that reads many DIDs uses it
// (POST /dids): one round for the whole request, then a lookup and,
// on a miss, a fill per DID. The zero value (no cache, or a round that
// failed) finds nothing and stores nothing.
type cacheView struct {
	c  *readCache
	at int64
	// bypass: the round failed; what changed is not known.
	bypass bool
}

// view finds the seq the cache is current at, as get does, and returns
// the view of the cache at it.
func (c *readCache) view(ctx context.Context) cacheView {
	if c == nil {
		return cacheView{}
	}
	at, err := c.current(ctx)
	if err != nil {
		return cacheView{c: c, bypass: true}
	}
	return cacheView{c: c, at: at}
}

// lookup returns the cached answer of route for did, or the zero answer.
func (v cacheView) lookup(route readRoute, did string) answer {
	if v.c == nil {
		return answer{}
	}
	if v.bypass {
		v.c.m.bypass.Inc()
		return answer{}
	}
	a := v.c.lookup(cacheKey{route, did})
	if a.found() {
		v.c.m.hits.Inc()
	} else {
		v.c.m.misses.Inc()
	}
	return a
}

// put stores a, read after the view's round, as route's answer for did.
func (v cacheView) put(route readRoute, did string, a *answer) {
	if v.c != nil && !v.bypass {
		v.c.put(cacheKey{route, did}, v.at, a)
	}
}

// sync waits for a round that starts after the call and returns the seq
// the cache is current at after it.
func (c *readCache) sync(ctx context.Context) (int64, error) {
	c.mu.Lock()
	r := c.next
	if r == nil {
		r = &syncRound{done: make(chan struct{})}
		c.next = r
	}
	if !c.running {
		c.running = true
		go c.run()
	}
	c.mu.Unlock()
	select {
	case <-r.done:
		return r.at, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// run runs the waiting rounds, one after the other, until none waits.
func (c *readCache) run() {
	for {
		c.mu.Lock()
		r := c.next
		c.next = nil
		if r == nil {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		r.at, r.err = c.advance()
		close(r.done)
	}
}

// advance brings the cache to the store's latest seq: it forgets the
// answers of the DIDs the ops after at touched (everything, when they are
// too many to read or cannot all be read). Only run calls it, so only one
// runs at a time and nothing else moves at.
func (c *readCache) advance() (int64, error) {
	c.m.rounds.Inc()
	var tok oplog.ChangeToken
	tokOK := false
	if c.probe != nil {
		// Before the latest seq is read: a commit after the token was
		// taken changes the token, whether or not the seq read shows it.
		tok, tokOK = c.probe.ChangeToken()
	}
	ctx, cancel := context.WithTimeout(context.Background(), readCacheTimeout)
	defer cancel()
	latest, err := c.store.LatestSeq(ctx)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	at := c.at
	c.mu.Unlock()
	if latest == at {
		c.setStill(tok, tokOK, at)
		return at, nil
	}
	if at < 0 || latest < at || latest-at > c.maxScan {
		// A first round, a log that shrank (another database), or too much
		// to read: start again.
		c.reset(latest)
		c.setStill(tok, tokOK, latest)
		return latest, nil
	}
	changed := map[string]bool{}
	after := at
	for after < latest {
		es, err := c.store.Export(ctx, after, int(min(latest-after, maxExportCount)))
		if err != nil {
			return 0, err
		}
		if len(es) == 0 {
			break
		}
		for i := range es {
			changed[es[i].DID] = true
			after = max(after, es[i].Seq)
		}
	}
	if after < latest {
		// The ops the latest seq counts could not all be read.
		c.reset(latest)
		c.setStill(tok, tokOK, latest)
		return latest, nil
	}
	c.mu.Lock()
	n := 0
	for did := range changed {
		n += c.invalidateLocked(did)
	}
	c.at = latest
	c.setGaugesLocked()
	c.mu.Unlock()
	c.m.invalidations.Add(float64(n))
	c.setStill(tok, tokOK, latest)
	return latest, nil
}

// setStill records the token taken before a round read the latest seq,
// with the seq the cache is current at after it (or forgets the last one,
// when the probe could not tell).
func (c *readCache) setStill(tok oplog.ChangeToken, ok bool, at int64) {
	if !ok {
		c.still.Store(nil)
		return
	}
	c.still.Store(&stillState{tok: tok, at: at})
}

// reset forgets every answer; the cache is then current at at.
func (c *readCache) reset(at int64) {
	c.mu.Lock()
	c.clearLocked()
	c.at = at
	c.setGaugesLocked()
	c.mu.Unlock()
	c.m.resets.Inc()
}

// clearLocked empties the cache, letting go of the memory of its index,
// slots and entries.
func (c *readCache) clearLocked() {
	c.index = map[uint64]uint32{}
	c.slots = make([]cacheSlot, 1)
	c.data = make([][]byte, 1)
	c.free = 0
	c.bytes = 0
}

// findLocked returns the slot holding route's answer for did, whose hash
// is h.
func (c *readCache) findLocked(h uint64, route readRoute, did string) (uint32, bool) {
	i, ok := c.index[h]
	if !ok {
		return 0, false
	}
	// The hash may be another key's.
	if s := &c.slots[i]; s.route != route || string(c.data[i][:s.didLen]) != did {
		return 0, false
	}
	return i, true
}

// lookup returns the cached answer of k, or the zero answer. The answer
// shares the entry's bytes, which stay intact when the entry goes.
func (c *readCache) lookup(k cacheKey) answer {
	h := c.hash(k.route, k.did)
	c.mu.Lock()
	defer c.mu.Unlock()
	i, ok := c.findLocked(h, k.route, k.did)
	if !ok {
		return answer{}
	}
	c.unlinkLocked(i)
	c.linkFrontLocked(i)
	return c.slots[i].answer(c.data[i])
}

// invalidateLocked forgets the answers of did on every route and returns
// how many there were.
func (c *readCache) invalidateLocked(did string) int {
	n := 0
	for r := range numReadRoutes {
		if i, ok := c.findLocked(c.hash(r, did), r, did); ok {
			c.removeLocked(i)
			n++
		}
	}
	return n
}

// put stores a, read after the round that left the cache current at at,
// unless another round came since (the read may predate an op that round
// saw) or a is too large to be worth a share of the cache.
func (c *readCache) put(k cacheKey, at int64, a *answer) {
	n := len(k.did) + len(a.etag) + len(a.contentType) + len(a.body)
	if uint64(n) > math.MaxUint32 || int64(n)+readCacheEntryOverhead > c.max/8 {
		return
	}
	// A fresh allocation, of the size class append rounds n up to, which
	// is the memory it takes; written here and never again.
	b := slices.Grow([]byte(nil), n)
	b = append(b, k.did...)
	b = append(b, a.etag...)
	b = append(b, a.contentType...)
	b = append(b, a.body...)
	cost := int64(cap(b)) + readCacheEntryOverhead
	if cost > c.max/8 {
		return
	}
	h := c.hash(k.route, k.did)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at != at {
		return
	}
	if i, ok := c.index[h]; ok {
		// The key's older answer, or another key with the same hash: the
		// index holds one entry per hash.
		c.removeLocked(i)
	}
	// Room first, so the slot of the least recently used entry is free for
	// this one.
	for c.bytes+cost > c.max {
		c.removeLocked(c.slots[0].prev)
		c.m.evictions.Inc()
	}
	i, ok := c.allocLocked()
	if !ok {
		c.setGaugesLocked()
		return
	}
	c.slots[i] = cacheSlot{
		hash:    h,
		seq:     a.seq,
		didLen:  uint32(len(k.did)),
		etagLen: uint32(len(a.etag)),
		typeLen: uint32(len(a.contentType)),
		route:   k.route,
	}
	c.data[i] = b
	c.index[h] = i
	c.linkFrontLocked(i)
	c.bytes += cost
	c.setGaugesLocked()
}

// allocLocked returns a free slot: the first on the free list, else a new
// one.
func (c *readCache) allocLocked() (uint32, bool) {
	if i := c.free; i != 0 {
		c.free = c.slots[i].next
		return i, true
	}
	if uint64(len(c.slots)) > math.MaxUint32 {
		return 0, false
	}
	c.slots = append(c.slots, cacheSlot{})
	c.data = append(c.data, nil)
	return uint32(len(c.slots) - 1), true
}

// costLocked is the memory counted for the entry in slot i.
func (c *readCache) costLocked(i uint32) int64 {
	return int64(cap(c.data[i])) + readCacheEntryOverhead
}

// linkFrontLocked puts slot i first (most recently used) in the LRU list.
func (c *readCache) linkFrontLocked(i uint32) {
	first := c.slots[0].next
	c.slots[i].prev, c.slots[i].next = 0, first
	c.slots[first].prev = i
	c.slots[0].next = i
}

// unlinkLocked takes slot i out of the LRU list.
func (c *readCache) unlinkLocked(i uint32) {
	prev, next := c.slots[i].prev, c.slots[i].next
	c.slots[prev].next = next
	c.slots[next].prev = prev
}

// removeLocked forgets the entry in slot i and frees the slot. The entry's
// bytes are only let go of: whoever holds an answer over them keeps them.
func (c *readCache) removeLocked(i uint32) {
	c.unlinkLocked(i)
	delete(c.index, c.slots[i].hash)
	c.bytes -= c.costLocked(i)
	c.data[i] = nil
	c.slots[i] = cacheSlot{next: c.free}
	c.free = i
}

func (c *readCache) setGaugesLocked() {
	c.m.bytes.Set(float64(c.bytes))
	c.m.entries.Set(float64(len(c.index)))
}

type readCacheMetrics struct {
	hits, misses, bypass, evictions, invalidations, resets prometheus.Counter
	rounds, still                                          prometheus.Counter
	bytes, entries                                         prometheus.Gauge
}

func newReadCacheMetrics(reg prometheus.Registerer) *readCacheMetrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "plc_read_cache_" + name, Help: help})
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: "plc_read_cache_" + name, Help: help})
	}
	m := &readCacheMetrics{
		hits:          counter("hits_total", "Reads of a DID answered from the cache of rendered answers."),
		misses:        counter("misses_total", "Reads of a DID the cache of rendered answers did not hold (read from the database)."),
		bypass:        counter("bypass_total", "Reads of a DID answered from the database without the cache, because the log's latest seq could not be read."),
		evictions:     counter("evictions_total", "Answers dropped from the cache to stay within its size."),
		invalidations: counter("invalidations_total", "Answers dropped from the cache because an op of their DID was appended."),
		resets:        counter("resets_total", "Times the cache dropped every answer (at start, or too many ops appended at once to read)."),
		rounds:        counter("rounds_total", "Reads of the log's latest seq by the cache of rendered answers, each shared by the requests that arrived before it."),
		still:         counter("still_total", "Reads of a DID that found, without a query, that nothing was committed since the cache's last read of the latest seq (SQLite's WAL-index header)."),
		bytes:         gauge("bytes", "Memory the cache of rendered answers counts for its entries."),
		entries:       gauge("entries", "Answers in the cache of rendered answers."),
	}
	if reg != nil {
		reg.MustRegister(m.hits, m.misses, m.bypass, m.evictions, m.invalidations, m.resets, m.rounds, m.still, m.bytes, m.entries)
	}
	return m
}
