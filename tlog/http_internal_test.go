package tlog

import (
	"fmt"
	"testing"
)

// Full entry bundles are up to about a megabyte each: 4096 of them are
// gigabytes. The tile cache is bounded by bytes as well as by count.
func TestTileCacheIsBoundedByBytes(t *testing.T) {
	c := newTileCache(4096)
	bundle := make([]byte, 1<<20)
	for i := range 4096 {
		c.put(fmt.Sprintf("tile/8/data/%03d", i), bundle)
		if _, b := c.size(); b > tileCacheMaxBytes {
			t.Fatalf("after %d bundles the cache holds %d bytes, over its %d", i+1, b, tileCacheMaxBytes)
		}
	}
	n, b := c.size()
	if n == 0 || b < tileCacheMaxBytes/2 {
		t.Fatalf("the cache keeps %d tiles, %d bytes: it should fill up to its bound", n, b)
	}
	// The most recent tile is kept, the oldest evicted.
	if _, ok := c.get("tile/8/data/4095"); !ok {
		t.Fatal("the latest tile is not cached")
	}
	if _, ok := c.get("tile/8/data/000"); ok {
		t.Fatal("the oldest tile is still cached")
	}
	// A tile over the whole bound is not kept at all.
	c.put("tile/8/data/huge", make([]byte, tileCacheMaxBytes+1))
	if _, ok := c.get("tile/8/data/huge"); ok {
		t.Fatal("a tile larger than the bound was cached")
	}
	if _, b := c.size(); b > tileCacheMaxBytes {
		t.Fatalf("cache at %d bytes, over its %d", b, tileCacheMaxBytes)
	}
}
