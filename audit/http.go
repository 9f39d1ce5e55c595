package audit

import (
	"container/list"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/plcdir/plc/oplog"
)

// TileHeight is the height of the tiles the log serves (C2SP tlog-tiles).
const TileHeight = 8

const tileWidth = 1 << TileHeight

// ServeHTTP serves the transparency log under /tlog/:
//
//	GET /tlog/checkpoint                       the latest signed checkpoint (with cosignatures)
//	GET /tlog/tile/<L>/<N>[.p/<W>]             hash tiles (C2SP tlog-tiles)
//	GET /tlog/tile/entries/<N>[.p/<W>]         entry bundles: each leaf, length-prefixed
//	GET /tlog/proof/consistency?old=N&new=M    a consistency proof between two tree sizes
func (t *TLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "Method Not Allowed")
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
		writeError(w, http.StatusNotFound, "Not Found")
	}
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	b, _ := json.Marshal(map[string]string{"message": msg})
	w.Write(b)
}

func (t *TLog) serveCheckpoint(w http.ResponseWriter, r *http.Request) {
	cp, err := t.CheckpointNote(r.Context())
	if err != nil {
		t.opts.Logger.Error("read the checkpoint", "err", err)
		writeError(w, http.StatusServiceUnavailable, "the checkpoint is not available")
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(cp.Note)
}

// parseTile parses the part of a C2SP tile path after "tile/".
func parseTile(p string) (tlog.Tile, error) {
	goPath := "tile/" + strconv.Itoa(TileHeight) + "/" + p
	if rest, ok := strings.CutPrefix(p, "entries/"); ok {
		goPath = "tile/" + strconv.Itoa(TileHeight) + "/data/" + rest
	}
	tile, err := tlog.ParseTilePath(goPath)
	if err != nil || strings.HasPrefix(p, "data/") {
		return tile, errors.New("malformed tile path")
	}
	return tile, nil
}

func (t *TLog) serveTile(w http.ResponseWriter, r *http.Request, p string) {
	tile, err := parseTile(p)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%s: want /tlog/tile/<L>/<N>[.p/<W>] or /tlog/tile/entries/<N>[.p/<W>]", err))
		return
	}
	full := tile.W == tileWidth
	key := tile.Path()
	if full {
		if b, ok := t.tiles.get(key); ok {
			writeTile(w, b, true)
			return
		}
	}
	ctx := r.Context()
	size, err := t.store.TreeSize(ctx)
	if err != nil {
		t.opts.Logger.Error("read the tree size", "err", err)
		writeError(w, http.StatusServiceUnavailable, "the tree is not available")
		return
	}
	level := max(tile.L, 0)
	if need := (tile.N*tileWidth + int64(tile.W)) << (uint(level) * TileHeight); need > size || need <= 0 {
		writeError(w, http.StatusNotFound, fmt.Sprintf("tile not found: the tree holds %d entries", size))
		return
	}
	var b []byte
	if tile.L == -1 {
		es, err := t.store.Export(ctx, tile.N*tileWidth, tile.W)
		if err == nil && len(es) != tile.W {
			err = fmt.Errorf("read %d entries of tile %s, want %d", len(es), key, tile.W)
		}
		if err == nil {
			b, err = leafBundle(es)
		}
		if err != nil {
			t.opts.Logger.Error("read an entry bundle", "tile", key, "err", err)
			writeError(w, http.StatusServiceUnavailable, "the entries are not available")
			return
		}
	} else {
		b, err = tlog.ReadTileData(tile, oplog.HashReader(ctx, t.store))
		if err != nil {
			t.opts.Logger.Error("read a tile", "tile", key, "err", err)
			writeError(w, http.StatusServiceUnavailable, "the tile is not available")
			return
		}
	}
	if full {
		t.tiles.put(key, b)
	}
	writeTile(w, b, full)
}

func writeTile(w http.ResponseWriter, b []byte, full bool) {
	w.Header().Set("Content-Type", "application/octet-stream")
	if full {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "public, max-age=1")
	}
	w.Write(b)
}

// ConsistencyResponse is the body of /tlog/proof/consistency.
type ConsistencyResponse struct {
	Old   int64    `json:"old"`
	New   int64    `json:"new"`
	Proof []string `json:"proof"` // base64 hashes
}

func (t *TLog) serveConsistency(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	oldSize, err1 := strconv.ParseInt(q.Get("old"), 10, 64)
	newSize, err2 := strconv.ParseInt(q.Get("new"), 10, 64)
	if err1 != nil || err2 != nil || oldSize < 0 || newSize < oldSize {
		writeError(w, http.StatusBadRequest, "want old and new tree sizes with 0 <= old <= new")
		return
	}
	ctx := r.Context()
	size, err := t.store.TreeSize(ctx)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "the tree is not available")
		return
	}
	if newSize > size {
		writeError(w, http.StatusNotFound, fmt.Sprintf("tree size %d not found: the tree holds %d entries", newSize, size))
		return
	}
	p, err := t.ConsistencyProof(ctx, oldSize, newSize)
	if err != nil {
		t.opts.Logger.Error("consistency proof", "old", oldSize, "new", newSize, "err", err)
		writeError(w, http.StatusServiceUnavailable, "the proof is not available")
		return
	}
	resp := ConsistencyResponse{Old: oldSize, New: newSize, Proof: EncodeHashes(p)}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	json.NewEncoder(w).Encode(resp)
}

// EncodeHashes renders hashes in base64.
func EncodeHashes(hs []tlog.Hash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = base64.StdEncoding.EncodeToString(h[:])
	}
	return out
}

// DecodeHashes parses base64 hashes.
func DecodeHashes(ss []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(ss))
	for i, s := range ss {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(b) != tlog.HashSize {
			return nil, fmt.Errorf("hash %d: not a base64 SHA-256 hash", i)
		}
		copy(out[i][:], b)
	}
	return out, nil
}

// tileCache keeps full tiles, which never change, LRU-bounded.
type tileCache struct {
	mu    sync.Mutex
	max   int
	ll    *list.List
	items map[string]*list.Element
}

type tileItem struct {
	key string
	b   []byte
}

func newTileCache(n int) *tileCache {
	return &tileCache{max: n, ll: list.New(), items: map[string]*list.Element{}}
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

func (c *tileCache) put(k string, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[k]; ok {
		return
	}
	c.items[k] = c.ll.PushFront(&tileItem{k, b})
	for c.ll.Len() > c.max {
		e := c.ll.Back()
		c.ll.Remove(e)
		delete(c.items, e.Value.(*tileItem).key)
	}
}
