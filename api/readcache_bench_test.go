package api

import (
	"fmt"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"testing"
)

// fillReadCache returns a cache holding n answers of the document route,
// each with a body of its own of size bytes, current at seq 0.
func fillReadCache(tb testing.TB, n, size int) (*readCache, []string) {
	tb.Helper()
	c := newReadCache(nil, 8<<30, nil)
	c.at = 0
	dids := make([]string, n)
	for i := range n {
		did := fmt.Sprintf("did:plc:%024d", i)
		dids[i] = did
		body := make([]byte, size)
		for j := range body {
			body[j] = byte('a' + (i+j)%26)
		}
		c.put(cacheKey{routeDoc, did}, 0, &answer{
			contentType: contentDIDDoc,
			body:        body,
			etag:        fmt.Sprintf(`"doc-%d-bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"`, i+1),
			seq:         int64(i + 1),
		})
	}
	return c, dids
}

// gcCPUSeconds reads the runtime's estimate of the CPU time spent in the
// garbage collector so far.
func gcCPUSeconds() float64 {
	s := []metrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}}
	metrics.Read(s)
	return s[0].Value.Float64()
}

// BenchmarkReadCacheGCAtAMillion measures one forced collection with the
// cache holding a million answers of about 600 bytes (the shape of a
// gigabyte cache at a million DIDs): ns/op is the wall time of
// runtime.GC(), gc-cpu-s/op the CPU seconds the collector spent on it.
func BenchmarkReadCacheGCAtAMillion(b *testing.B) {
	// Only the cache keeps the DIDs: what is collected is the cache's.
	c, _ := fillReadCache(b, 1_000_000, 600)
	runtime.GC()
	b.ResetTimer()
	before := gcCPUSeconds()
	for b.Loop() {
		runtime.GC()
	}
	b.StopTimer()
	b.ReportMetric((gcCPUSeconds()-before)/float64(b.N), "gc-cpu-s/op")
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapObjects), "heap-objects")
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heap-MiB")
	runtime.KeepAlive(c)
}

// BenchmarkReadCacheHit measures hits from parallel requests on a cache
// of 100,000 answers.
func BenchmarkReadCacheHit(b *testing.B) {
	c, dids := fillReadCache(b, 100_000, 600)
	v := cacheView{c: c, at: 0}
	var next atomic.Int64
	var total atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(7919))
		n := 0
		for pb.Next() {
			a := v.lookup(routeDoc, dids[i%len(dids)])
			n += len(a.body)
			i++
		}
		total.Add(int64(n))
	})
	b.StopTimer()
	if total.Load() != int64(b.N)*600 {
		b.Fatalf("%d bytes answered, want %d: a lookup missed", total.Load(), int64(b.N)*600)
	}
}
