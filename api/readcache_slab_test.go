package api

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"
)

// testAnswer is the answer of route for did that the tests store: every
// byte depends on both, so an answer of another key never passes for it.
func testAnswer(route readRoute, did string, version int) *answer {
	return &answer{
		contentType: contentJSON,
		body:        fmt.Appendf(nil, `{"route":%q,"did":%q,"version":%d,"pad":"%0200d"}`, readRouteNames[route], did, version, 0),
		etag:        fmt.Sprintf(`"%s-%d-%s"`, readRouteNames[route], version, did),
		seq:         int64(version),
	}
}

// testDID returns the i-th of distinct DIDs of the same length.
func testDID(i int) string { return fmt.Sprintf("did:plc:%024d", i) }

// expectAnswer fails t unless got is want, field by field.
func expectAnswer(t *testing.T, what string, got answer, want *answer) {
	t.Helper()
	if !got.found() {
		t.Fatalf("%s: not cached", what)
	}
	if got.contentType != want.contentType || got.etag != want.etag || got.seq != want.seq || !bytes.Equal(got.body, want.body) {
		t.Fatalf("%s: got %q %q %d %s, want %q %q %d %s", what,
			got.contentType, got.etag, got.seq, got.body, want.contentType, want.etag, want.seq, want.body)
	}
}

// checkCacheInvariants fails t unless the LRU list, the index, the free
// list and the byte count agree, within the bound.
func checkCacheInvariants(t *testing.T, c *readCache) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var sum int64
	listed := 0
	prev := uint32(0)
	for i := c.slots[0].next; i != 0; i = c.slots[i].next {
		if c.slots[i].prev != prev {
			t.Fatalf("slot %d: prev %d, want %d", i, c.slots[i].prev, prev)
		}
		if j, ok := c.index[c.slots[i].hash]; !ok || j != i {
			t.Fatalf("slot %d on the list is not indexed", i)
		}
		sum += c.costLocked(i)
		listed++
		prev = i
	}
	if c.slots[0].prev != prev {
		t.Fatalf("the list's tail is %d, want %d", c.slots[0].prev, prev)
	}
	free := 0
	for i := c.free; i != 0; i = c.slots[i].next {
		if c.data[i] != nil {
			t.Fatalf("free slot %d holds bytes", i)
		}
		free++
	}
	if listed != len(c.index) || listed+free+1 != len(c.slots) {
		t.Fatalf("%d listed, %d indexed, %d free, %d slots", listed, len(c.index), free, len(c.slots))
	}
	if sum != c.bytes || c.bytes > c.max {
		t.Fatalf("%d bytes counted, %d in the entries, max %d", c.bytes, sum, c.max)
	}
}

func TestReadCacheHashCollisionNeverAnswersAnotherDID(t *testing.T) {
	c := newReadCache(nil, 1<<20, nil)
	c.hash = func(readRoute, string) uint64 { return 42 } // every key collides
	c.at = 0
	a, b := "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"
	c.put(cacheKey{routeDoc, a}, 0, testAnswer(routeDoc, a, 1))
	expectAnswer(t, "a", c.lookup(cacheKey{routeDoc, a}), testAnswer(routeDoc, a, 1))
	if got := c.lookup(cacheKey{routeDoc, b}); got.found() {
		t.Fatalf("b got %s, which is a's answer", got.body)
	}
	if got := c.lookup(cacheKey{routeData, a}); got.found() {
		t.Fatalf("a's data got %s, the answer of its document", got.body)
	}
	// Storing b drops a, whose hash it shares.
	c.put(cacheKey{routeDoc, b}, 0, testAnswer(routeDoc, b, 2))
	expectAnswer(t, "b", c.lookup(cacheKey{routeDoc, b}), testAnswer(routeDoc, b, 2))
	if got := c.lookup(cacheKey{routeDoc, a}); got.found() {
		t.Fatalf("a got %s, which is b's answer", got.body)
	}
	// Invalidating a must not drop b, which holds a's hash.
	c.mu.Lock()
	n := c.invalidateLocked(a)
	c.mu.Unlock()
	if n != 0 {
		t.Fatalf("invalidating a dropped %d answers", n)
	}
	expectAnswer(t, "b after a's invalidation", c.lookup(cacheKey{routeDoc, b}), testAnswer(routeDoc, b, 2))
	checkCacheInvariants(t, c)
	c.mu.Lock()
	n = c.invalidateLocked(b)
	c.mu.Unlock()
	if n != 1 || c.lookup(cacheKey{routeDoc, b}).found() {
		t.Fatalf("invalidating b dropped %d answers", n)
	}
	checkCacheInvariants(t, c)
}

// entryCost returns what the cache counts for testAnswer's answers.
func entryCost(t *testing.T) int64 {
	c := newReadCache(nil, 1<<20, nil)
	c.at = 0
	did := testDID(0)
	c.put(cacheKey{routeDoc, did}, 0, testAnswer(routeDoc, did, 1))
	if c.bytes == 0 {
		t.Fatal("nothing stored")
	}
	return c.bytes
}

func TestReadCacheEvictsTheLeastRecentlyUsedFirstWithinItsBytes(t *testing.T) {
	const fit = 10
	c := newReadCache(nil, fit*entryCost(t)+1, nil)
	c.at = 0
	key := func(i int) cacheKey { return cacheKey{routeDoc, testDID(i)} }
	for i := range fit {
		c.put(key(i), 0, testAnswer(routeDoc, testDID(i), 1))
		checkCacheInvariants(t, c)
	}
	if len(c.index) != fit {
		t.Fatalf("%d entries, want %d", len(c.index), fit)
	}
	// Use 0 and 1: 2 is now the least recently used, then 3.
	c.lookup(key(0))
	c.lookup(key(1))
	c.put(key(fit), 0, testAnswer(routeDoc, testDID(fit), 1))
	checkCacheInvariants(t, c)
	if c.lookup(key(2)).found() {
		t.Fatal("2, the least recently used, was kept")
	}
	for _, i := range []int{0, 1, 3, fit} {
		expectAnswer(t, fmt.Sprint(i), c.lookup(key(i)), testAnswer(routeDoc, testDID(i), 1))
	}
	// The order of use is now 4…9, 0, 1, 3, fit: 4 goes next, then 5.
	c.put(key(fit+1), 0, testAnswer(routeDoc, testDID(fit+1), 1))
	c.put(key(fit+2), 0, testAnswer(routeDoc, testDID(fit+2), 1))
	checkCacheInvariants(t, c)
	for i := range fit + 3 {
		want := i != 2 && i != 4 && i != 5
		if got := c.lookup(key(i)).found(); got != want {
			t.Errorf("%d cached: %v, want %v", i, got, want)
		}
	}
	// Replacing an answer counts it once.
	c.put(key(0), 0, testAnswer(routeDoc, testDID(0), 2))
	checkCacheInvariants(t, c)
	expectAnswer(t, "0 replaced", c.lookup(key(0)), testAnswer(routeDoc, testDID(0), 2))
}

func TestReadCacheAnswerHeldByARequestOutlivesItsEntry(t *testing.T) {
	const fit = 4
	c := newReadCache(nil, 8*entryCost(t)+1, nil)
	c.at = 0
	did := testDID(0)
	held := map[string]answer{}
	hold := func(what string) {
		a := c.lookup(cacheKey{routeDoc, did})
		if !a.found() {
			t.Fatalf("%s: not cached", what)
		}
		held[what] = a
	}
	churn := func(from int) {
		for i := from; i < from+8*fit; i++ {
			c.put(cacheKey{routeDoc, testDID(i)}, 0, testAnswer(routeDoc, testDID(i), 1))
		}
		runtime.GC()
	}
	c.put(cacheKey{routeDoc, did}, 0, testAnswer(routeDoc, did, 1))
	hold("evicted")
	churn(1)
	if c.lookup(cacheKey{routeDoc, did}).found() {
		t.Fatal("not evicted")
	}
	c.put(cacheKey{routeDoc, did}, 0, testAnswer(routeDoc, did, 2))
	hold("replaced")
	c.put(cacheKey{routeDoc, did}, 0, testAnswer(routeDoc, did, 3))
	hold("invalidated")
	c.mu.Lock()
	c.invalidateLocked(did)
	c.mu.Unlock()
	c.put(cacheKey{routeDoc, did}, 0, testAnswer(routeDoc, did, 4))
	hold("reset")
	c.reset(0)
	churn(1000)
	for what, v := range map[string]int{"evicted": 1, "replaced": 2, "invalidated": 3, "reset": 4} {
		expectAnswer(t, what, held[what], testAnswer(routeDoc, did, v))
	}
}

func TestReadCacheReusesFreeSlotsUnderChurn(t *testing.T) {
	const fit = 16
	c := newReadCache(nil, fit*entryCost(t)+1, nil)
	c.at = 0
	for i := range 100 * fit {
		c.put(cacheKey{readRoute(i % int(numReadRoutes)), testDID(i)}, 0, testAnswer(readRoute(i%int(numReadRoutes)), testDID(i), 1))
		if i%7 == 0 {
			c.mu.Lock()
			c.invalidateLocked(testDID(i - 3))
			c.mu.Unlock()
		}
		if len(c.slots) > fit+1 {
			t.Fatalf("after %d answers stored: %d slots for at most %d entries", i+1, len(c.slots), fit)
		}
	}
	checkCacheInvariants(t, c)
	if got := metricValue(c.m.evictions); got < 50*fit {
		t.Fatalf("%v evictions", got)
	}
}
