package tlog

import (
	"bytes"
	"compress/gzip"
	"container/list"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"

	sumdb "golang.org/x/mod/sumdb/tlog"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/oplog"
)

// ServeHTTP serves the transparency log under /tlog/:
//
//	GET /tlog/checkpoint                       the latest signed checkpoint (with cosignatures)
//	GET /tlog/tile/<L>/<N>[.p/<W>]             hash tiles (C2SP tlog-tiles)
//	GET /tlog/tile/entries/<N>[.p/<W>]         entry bundles: each leaf, length-prefixed
//	                                           (gzip-encoded when the client accepts it)
//	GET /tlog/proof/consistency?old=N&new=M    a consistency proof between two tree sizes
func (t *TLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		WriteJSONError(w, http.StatusMethodNotAllowed, "Method Not Allowed")
		return
	}
	path := r.URL.Path
	switch {
	case path == "/tlog/checkpoint":
		t.serveCheckpoint(w, r)
	case strings.HasPrefix(path, "/tlog/tile/"):
		t.serveTile(w, r, strings.TrimPrefix(path, "/tlog/tile/"))
	case path == "/tlog/proof/consistency":
		t.serveConsistency(w, r)
	default:
		WriteJSONError(w, http.StatusNotFound, "Not Found")
	}
}

// WriteJSONError answers code with the directory's JSON error body
// ({"message": msg}), not to be stored by any cache.
func WriteJSONError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	b, _ := json.Marshal(map[string]string{"message": msg})
	w.Write(b)
}

func (t *TLog) serveCheckpoint(w http.ResponseWriter, r *http.Request) {
	cp, _, err := t.WitnessedCheckpoint(r.Context())
	if err != nil {
		t.opts.Logger.Error("read the checkpoint", "err", err)
		WriteJSONError(w, http.StatusServiceUnavailable, "the checkpoint is not available")
		return
	}
	t.SetWitnessHeaders(w.Header(), cp.Note)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(cp.Note)
}

// maxTileLevel is the largest level a C2SP tile path may name.
const maxTileLevel = 63

// errTileBeyondTree reports a well-formed tile path that no tree of at most
// 2^63-1 entries can hold: an index that overflows int64, or a level whose
// tiles span more entries than that.
var errTileBeyondTree = errors.New("tile beyond any tree")

// parseTile parses the part of a C2SP tile path after "tile/", strictly:
// <L>/<N>[.p/<W>] or entries/<N>[.p/<W>], where L is 0 to 63 without
// leading zeros, N is groups of exactly three digits, all but the last
// prefixed with "x", with no leading "x000" group, and W is 1 to 255
// without leading zeros. Signs, spaces and any other spelling are
// malformed, so that every tile has one path (full tiles are cached and
// served as immutable under it). A well-formed path no tree can hold is
// errTileBeyondTree.
func parseTile(p string) (sumdb.Tile, error) {
	malformed := errors.New("malformed tile path")
	tile := sumdb.Tile{H: plc.TileHeight, W: plc.TileWidth}
	level, rest, ok := strings.Cut(p, "/")
	if !ok {
		return tile, malformed
	}
	if level == "entries" {
		tile.L = -1
	} else {
		l, ok := parseDecimal(level, maxTileLevel)
		if !ok {
			return tile, malformed
		}
		tile.L = int(l)
	}
	if idx, w, ok := strings.Cut(rest, ".p/"); ok {
		width, ok := parseDecimal(w, plc.TileWidth-1)
		if !ok || width == 0 {
			return tile, malformed
		}
		tile.W = int(width)
		rest = idx
	}
	groups := strings.Split(rest, "/")
	overflow := false
	for i, g := range groups {
		last := i == len(groups)-1
		if !last {
			if !strings.HasPrefix(g, "x") || (i == 0 && g == "x000") {
				return tile, malformed
			}
			g = g[1:]
		}
		if len(g) != 3 || !allDigits(g) {
			return tile, malformed
		}
		d := int64(g[0]-'0')*100 + int64(g[1]-'0')*10 + int64(g[2]-'0')
		if tile.N > (math.MaxInt64-d)/1000 {
			overflow = true
		} else {
			tile.N = tile.N*1000 + d
		}
	}
	// A level-L tile starts at entry N·256^(L+1): past level 7 (2^64
	// entries a tile) only a tree larger than int64 could hold one.
	if overflow || tile.L > 7 {
		return tile, errTileBeyondTree
	}
	return tile, nil
}

// parseDecimal parses a canonical decimal number up to max: ASCII digits
// only, no sign, no leading zero (but "0"), no overflow.
func parseDecimal(s string, max int64) (int64, bool) {
	if s == "" || len(s) > 19 || !allDigits(s) || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > max {
		return 0, false
	}
	return n, true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// tileInTree reports whether the tree of size entries holds every hash
// (or, for an entry bundle, every entry) of tile, without overflowing: a
// level-L tile needs hashes N·256 … N·256+W-1 of level L, of which the tree
// has size>>(8L).
func tileInTree(tile sumdb.Tile, size int64) bool {
	level := max(tile.L, 0)
	if tile.N < 0 || level > 7 || size <= 0 {
		return false
	}
	have := size >> (uint(level) * plc.TileHeight)
	if have < int64(tile.W) {
		return false
	}
	return tile.N <= (have-int64(tile.W))/plc.TileWidth
}

func (t *TLog) serveTile(w http.ResponseWriter, r *http.Request, p string) {
	tile, err := parseTile(p)
	if errors.Is(err, errTileBeyondTree) {
		WriteJSONError(w, http.StatusNotFound, "tile not found: no tree holds it")
		return
	}
	if err != nil {
		WriteJSONError(w, http.StatusBadRequest, fmt.Sprintf("%s: want /tlog/tile/<L>/<N>[.p/<W>] or /tlog/tile/entries/<N>[.p/<W>]", err))
		return
	}
	full := tile.W == plc.TileWidth
	key := tile.Path()
	gz := tile.L == -1 && acceptsGzip(r.Header.Values("Accept-Encoding"))
	if full {
		if b, ok := t.tiles.get(cacheKey(key, gz)); ok {
			writeTile(w, b, tile.L == -1, gz)
			return
		}
	}
	ctx := r.Context()
	size, err := t.store.TreeSize(ctx)
	if err != nil {
		t.opts.Logger.Error("read the tree size", "err", err)
		WriteJSONError(w, http.StatusServiceUnavailable, "the tree is not available")
		return
	}
	if !tileInTree(tile, size) {
		WriteJSONError(w, http.StatusNotFound, fmt.Sprintf("tile not found: the tree holds %d entries", size))
		return
	}
	var b []byte
	if tile.L == -1 {
		es, err := t.store.Export(ctx, tile.N*plc.TileWidth, tile.W)
		if err == nil && len(es) != tile.W {
			err = fmt.Errorf("read %d entries of tile %s, want %d", len(es), key, tile.W)
		}
		if err == nil {
			b, err = leafBundle(es)
		}
		if err == nil && gz {
			b, err = gzipBytes(b)
		}
		if err != nil {
			t.opts.Logger.Error("read an entry bundle", "tile", key, "err", err)
			WriteJSONError(w, http.StatusServiceUnavailable, "the entries are not available")
			return
		}
	} else {
		b, err = sumdb.ReadTileData(tile, oplog.HashReader(ctx, t.store))
		if err != nil {
			t.opts.Logger.Error("read a tile", "tile", key, "err", err)
			WriteJSONError(w, http.StatusServiceUnavailable, "the tile is not available")
			return
		}
	}
	if full {
		t.tiles.put(cacheKey(key, gz), b)
	}
	writeTile(w, b, tile.L == -1, gz)
}

// cacheKey is the tile cache's key of a tile's bytes: its path, and a
// suffix no path has for an entry bundle's gzip encoding.
func cacheKey(path string, gz bool) string {
	if gz {
		return path + " gzip"
	}
	return path
}

// writeTile writes a tile or an entry bundle. Every tile the tree holds,
// full or partial (a partial tile is named by its width, so its bytes never
// change either), is immutable: C2SP tlog-tiles asks for long-lived caching
// headers on both. Entry bundles are gzip-compressed at the HTTP layer when
// the client accepts it (tlog-tiles: they SHOULD be compressed), and vary
// by Accept-Encoding so that a cache keeps both forms apart.
func writeTile(w http.ResponseWriter, b []byte, bundle, gz bool) {
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	if bundle {
		h.Set("Vary", "Accept-Encoding")
	}
	if gz {
		h.Set("Content-Encoding", "gzip")
	}
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

// gzipBytes compresses b in the gzip format.
func gzipBytes(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// acceptsGzip reports whether Accept-Encoding header values allow a gzip
// body (RFC 9110, section 12.5.3): gzip (or x-gzip) or "*" listed with a
// non-zero weight, and not excluded by gzip;q=0. Without the header the
// answer is no: a client that says nothing gets the identity encoding.
func acceptsGzip(values []string) bool {
	gz, star := -1.0, -1.0
	for _, v := range values {
		for _, item := range strings.Split(v, ",") {
			coding, params, _ := strings.Cut(item, ";")
			coding = strings.ToLower(strings.TrimSpace(coding))
			q := 1.0
			for _, p := range strings.Split(params, ";") {
				name, val, ok := strings.Cut(strings.TrimSpace(p), "=")
				if !ok || strings.ToLower(strings.TrimSpace(name)) != "q" {
					continue
				}
				f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
				if err != nil || f < 0 || f > 1 {
					f = 0
				}
				q = f
			}
			switch coding {
			case "gzip", "x-gzip":
				gz = max(gz, q)
			case "*":
				star = max(star, q)
			}
		}
	}
	if gz >= 0 {
		return gz > 0
	}
	return star > 0
}

// ConsistencyResponse is the body of /tlog/proof/consistency.
type ConsistencyResponse struct {
	Old   int64    `json:"old"`
	New   int64    `json:"new"`
	Proof []string `json:"proof"` // base64 hashes
}

func (t *TLog) serveConsistency(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	param := func(name string) (int64, bool) {
		if len(q[name]) != 1 {
			return 0, false
		}
		return parseDecimal(q[name][0], math.MaxInt64)
	}
	oldSize, ok1 := param("old")
	newSize, ok2 := param("new")
	if !ok1 || !ok2 || newSize < oldSize {
		WriteJSONError(w, http.StatusBadRequest, "want old and new tree sizes with 0 <= old <= new")
		return
	}
	ctx := r.Context()
	size, err := t.store.TreeSize(ctx)
	if err != nil {
		WriteJSONError(w, http.StatusServiceUnavailable, "the tree is not available")
		return
	}
	if newSize > size {
		WriteJSONError(w, http.StatusNotFound, fmt.Sprintf("tree size %d not found: the tree holds %d entries", newSize, size))
		return
	}
	p, err := t.ConsistencyProof(ctx, oldSize, newSize)
	if err != nil {
		t.opts.Logger.Error("consistency proof", "old", oldSize, "new", newSize, "err", err)
		WriteJSONError(w, http.StatusServiceUnavailable, "the proof is not available")
		return
	}
	resp := ConsistencyResponse{Old: oldSize, New: newSize, Proof: EncodeHashes(p)}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	json.NewEncoder(w).Encode(resp)
}

// EncodeHashes renders hashes in base64.
func EncodeHashes(hs []sumdb.Hash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = base64.StdEncoding.EncodeToString(h[:])
	}
	return out
}

// DecodeHashes parses base64 hashes.
func DecodeHashes(ss []string) ([]sumdb.Hash, error) {
	out := make([]sumdb.Hash, len(ss))
	for i, s := range ss {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(b) != sumdb.HashSize {
			return nil, fmt.Errorf("hash %d: not a base64 SHA-256 hash", i)
		}
		copy(out[i][:], b)
	}
	return out, nil
}

// Bounds of the cache of full tiles: a hash tile is 8 KiB, an entry bundle
// up to about a megabyte (256 ops of up to 4000 bytes and their envelope).
const tileCacheMaxBytes = 64 << 20

// tileCache keeps full tiles, which never change, LRU-bounded by count and
// by bytes. A tile larger than the byte bound is not kept.
type tileCache struct {
	mu       sync.Mutex
	maxItems int
	maxBytes int64
	bytes    int64
	ll       *list.List
	items    map[string]*list.Element
}

type tileItem struct {
	key string
	b   []byte
}

// tileItemOverhead is what the cache spends on a tile besides its bytes
// (the key, the list element, the map entry), counted against maxBytes.
const tileItemOverhead = 128

func newTileCache(maxItems int) *tileCache {
	return &tileCache{maxItems: maxItems, maxBytes: tileCacheMaxBytes, ll: list.New(), items: map[string]*list.Element{}}
}

func (c *tileCache) get(k string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[k]; ok {
		c.ll.MoveToFront(e)
		return e.Value.(*tileItem).b, true
	}
	return nil, false
}

func itemCost(it *tileItem) int64 { return int64(len(it.b)+len(it.key)) + tileItemOverhead }

func (c *tileCache) put(k string, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	it := &tileItem{k, b}
	if _, ok := c.items[k]; ok || itemCost(it) > c.maxBytes {
		return
	}
	c.items[k] = c.ll.PushFront(it)
	c.bytes += itemCost(it)
	for c.ll.Len() > c.maxItems || c.bytes > c.maxBytes {
		e := c.ll.Back()
		c.ll.Remove(e)
		old := e.Value.(*tileItem)
		delete(c.items, old.key)
		c.bytes -= itemCost(old)
	}
}

// size returns the number of tiles and the bytes the cache holds.
func (c *tileCache) size() (int, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len(), c.bytes
}
