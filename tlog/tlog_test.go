package tlog_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	sumdb "golang.org/x/mod/sumdb/tlog"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/internal/corpus"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/storetest"
	"github.com/plcdir/plc/oplog/tamper"
	"github.com/plcdir/plc/tlog"
)

// corpusCache holds generated corpora by size: generating signs ops.
var corpusCache sync.Map

func corpusLines(t *testing.T, ops int) []byte {
	t.Helper()
	if b, ok := corpusCache.Load(ops); ok {
		return b.([]byte)
	}
	var buf bytes.Buffer
	if _, err := corpus.Generate(context.Background(), &buf, corpus.Config{Ops: ops, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	corpusCache.Store(ops, buf.Bytes())
	return buf.Bytes()
}

// load imports the first n ops of the corpus into s, in transactions of
// batch lines.
func load(t *testing.T, s oplog.Store, lines []byte, batch int) {
	t.Helper()
	l := oplog.NewLog(s, oplog.Options{})
	defer l.Close()
	st, err := oplog.Import(context.Background(), l, bytes.NewReader(lines), oplog.ImportOptions{BatchSize: batch, Source: "test"})
	if err != nil || st.Rejected != 0 {
		t.Fatalf("import: %+v, %v", st, err)
	}
}

func newKey(t testing.TB, origin string) *tlog.Key {
	t.Helper()
	skey, _, err := tlog.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	k, err := tlog.ParseKey(skey)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// leafHashes returns the RFC 6962 leaf hashes of the store's ops, and the
// root of every prefix, computed with transparency-dev/merkle.
func leafHashes(t *testing.T, s oplog.Store) (leaves, roots [][]byte) {
	t.Helper()
	es, err := s.Export(context.Background(), 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	h := rfc6962.DefaultHasher
	r := (&compact.RangeFactory{Hash: h.HashChildren}).NewEmptyRange(0)
	roots = [][]byte{h.EmptyRoot()}
	for i := range es {
		lh := h.HashLeaf(oplog.LeafData(&es[i]))
		leaves = append(leaves, lh)
		if err := r.Append(lh, nil); err != nil {
			t.Fatal(err)
		}
		root, err := r.GetRootHash(nil)
		if err != nil {
			t.Fatal(err)
		}
		roots = append(roots, root)
	}
	return leaves, roots
}

func hashBytes(hs []sumdb.Hash) [][]byte {
	out := make([][]byte, len(hs))
	for i := range hs {
		out[i] = hs[i][:]
	}
	return out
}

func TestProofsVerifyWithAnIndependentImplementation(t *testing.T) {
	ctx := context.Background()
	s, _ := storetest.SQLite(t)
	load(t, s, corpusLines(t, 300), 37)
	tl := tlog.New(s, newKey(t, "plc.test"), tlog.Options{})
	leaves, roots := leafHashes(t, s)
	n := int64(len(leaves))
	h := rfc6962.DefaultHasher
	r := oplog.HashReader(ctx, s)
	for size := int64(1); size <= n; size++ {
		root, err := sumdb.TreeHash(size, r)
		if err != nil || !bytes.Equal(root[:], roots[size]) {
			t.Fatalf("tree hash of %d: %x, independent %x (%v)", size, root, roots[size], err)
		}
		// Inclusion of a spread of leaves in this size.
		for _, i := range []int64{0, size / 3, size / 2, size - 1} {
			p, err := sumdb.ProveRecord(size, i, r)
			if err != nil {
				t.Fatal(err)
			}
			if err := proof.VerifyInclusion(h, uint64(i), uint64(size), leaves[i], hashBytes(p), roots[size]); err != nil {
				t.Fatalf("inclusion of %d in %d: %v", i, size, err)
			}
		}
		// Consistency from a spread of older sizes, through the log's API.
		for _, old := range []int64{0, 1, size / 2, size - 1, size} {
			p, err := tl.ConsistencyProof(ctx, old, size)
			if err != nil {
				t.Fatalf("ConsistencyProof(%d, %d): %v", old, size, err)
			}
			if err := proof.VerifyConsistency(h, uint64(old), uint64(size), hashBytes(p), roots[old], roots[size]); err != nil {
				t.Fatalf("consistency %d → %d: %v", old, size, err)
			}
		}
	}
	// The audit log's proofs: against the signed checkpoint.
	cp, proofs, err := tl.InclusionProofs(ctx, []int64{1, n / 2, n})
	if err != nil || cp.Size != n || len(proofs) != 3 {
		t.Fatalf("InclusionProofs: size %d, %d proofs, %v", cp.Size, len(proofs), err)
	}
	body, _, err := tlog.OpenCheckpoint(cp.Note, tl.Key().Verifier)
	if err != nil || body.Size != n || !bytes.Equal(body.Root[:], roots[n]) {
		t.Fatalf("checkpoint %+v, %v", body, err)
	}
	for seq, p := range proofs {
		if err := proof.VerifyInclusion(h, uint64(seq-1), uint64(n), leaves[seq-1], hashBytes(p), body.Root[:]); err != nil {
			t.Fatalf("inclusion proof of seq %d: %v", seq, err)
		}
	}
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestSignAndCheck(t *testing.T) {
	ctx := context.Background()
	lines := corpusLines(t, 300)
	cut := bytes.Index(lines[20000:], []byte("\n")) + 20001

	t.Run("CheckpointsExtendEachOther", func(t *testing.T) {
		s, path := storetest.SQLite(t)
		key := newKey(t, "plc.test")
		c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
		a := tlog.New(s, key, tlog.Options{Now: c.Now})
		other, err := oplog.OpenSQLite(path)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		b := tlog.New(other, key, tlog.Options{Now: c.Now})
		if err := a.Check(ctx, nil); err != nil {
			t.Fatalf("Check of an empty log: %v", err)
		}
		cp0, signed, err := a.Sign(ctx)
		if err != nil || !signed || cp0.Size != 0 {
			t.Fatalf("first checkpoint %+v %v %v", cp0, signed, err)
		}
		if _, signed, _ := a.Sign(ctx); signed {
			t.Fatal("signed again without growth")
		}
		load(t, s, lines[:cut], 50)
		if _, signed, _ := b.Sign(ctx); signed {
			t.Fatal("signed twice within the interval")
		}
		c.Add(time.Second)
		cp1, signed, err := b.Sign(ctx)
		if err != nil || !signed || cp1.Size == 0 {
			t.Fatalf("second checkpoint %+v %v %v", cp1, signed, err)
		}
		// a's view is stale; its swap loses and it adopts b's checkpoint.
		got, signed, err := a.Sign(ctx)
		if err != nil || signed || got.Size != cp1.Size || got.Root != cp1.Root {
			t.Fatalf("a after b signed: %+v %v %v", got, signed, err)
		}
		load(t, s, lines[cut:], 50)
		c.Add(time.Second)
		cp2, _, err := a.Sign(ctx)
		if err != nil || cp2.Size <= cp1.Size {
			t.Fatalf("third checkpoint %+v %v", cp2, err)
		}
		p, err := a.ConsistencyProof(ctx, cp1.Size, cp2.Size)
		if err != nil || sumdb.CheckTree(p, cp2.Size, cp2.Root, cp1.Size, cp1.Root) != nil {
			t.Fatalf("checkpoints %d and %d are not consistent: %v", cp1.Size, cp2.Size, err)
		}
		if err := tlog.New(other, key, tlog.Options{}).Check(ctx, nil); err != nil {
			t.Fatalf("Check of an honest log: %v", err)
		}
	})

	t.Run("AnotherKeyIsRefused", func(t *testing.T) {
		s, _ := storetest.SQLite(t)
		load(t, s, lines[:cut], 50)
		if _, _, err := tlog.New(s, newKey(t, "plc.test"), tlog.Options{}).Sign(ctx); err != nil {
			t.Fatal(err)
		}
		err := tlog.New(s, newKey(t, "plc.test"), tlog.Options{}).Check(ctx, nil)
		var se *tlog.StartupError
		if !errors.As(err, &se) || !strings.Contains(err.Error(), "does not verify with the checkpoint key") {
			t.Fatalf("Check with another key: %v", err)
		}
	})

	t.Run("TamperedDatabaseIsRefused", func(t *testing.T) {
		for _, tc := range []struct{ name, stmt, want string }{
			{"Changed", `UPDATE operations SET created_at = created_at + 1 WHERE seq = 5`, "seq 5"},
			{"Deleted", `DELETE FROM operations WHERE seq = 9`, "seq 9"},
			// Rows and their tree hashes both replaced: the stored tree is
			// self-consistent but not the signed one.
			{"RewrittenWithHashes", `DELETE FROM operations WHERE seq > 100`, "fewer"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s, path := storetest.SQLite(t)
				load(t, s, lines, 50)
				key := newKey(t, "plc.test")
				if _, _, err := tlog.New(s, key, tlog.Options{}).Sign(ctx); err != nil {
					t.Fatal(err)
				}
				stmts := []string{tc.stmt}
				if tc.name == "RewrittenWithHashes" {
					stmts = append(stmts, `DELETE FROM tree_hashes WHERE last_seq > 100`, `DELETE FROM nullified WHERE seq > 100 OR by_seq > 100`)
				}
				tamper.Exec(t, path, stmts...)
				s2, err := oplog.OpenSQLite(path)
				if err != nil {
					t.Fatal(err)
				}
				defer s2.Close()
				if tc.name == "RewrittenWithHashes" {
					// Fill the tree in again, as a new start would.
					if _, err := oplog.CatchUpTree(ctx, s2, 0); err != nil {
						t.Fatal(err)
					}
				}
				err = tlog.New(s2, key, tlog.Options{}).Check(ctx, nil)
				var se *tlog.StartupError
				if !errors.As(err, &se) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Check after tampering: %v, want a StartupError naming %q", err, tc.want)
				}
			})
		}
	})
}

func TestTilesServeTheTree(t *testing.T) {
	ctx := context.Background()
	s, _ := storetest.SQLite(t)
	load(t, s, corpusLines(t, 700), 100)
	tl := tlog.New(s, newKey(t, "plc.test"), tlog.Options{})
	srv := httptest.NewServer(tl)
	defer srv.Close()
	get := func(path string) (int, http.Header, []byte) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, b
	}
	code, _, note := get("/tlog/checkpoint")
	if code != 200 {
		t.Fatalf("checkpoint: %d %s", code, note)
	}
	body, _, err := tlog.OpenCheckpoint(note, tl.Key().Verifier)
	if err != nil || body.Size != 700 {
		t.Fatalf("checkpoint %+v %v", body, err)
	}
	// A client that trusts only the checkpoint reads the tree from tiles:
	// sumdb.TileHashReader checks every tile against the root.
	tree := sumdb.Tree{N: body.Size, Hash: body.Root}
	reader := sumdb.TileHashReader(tree, tileReader{t, get})
	leaves, roots := leafHashes(t, s)
	for _, i := range []int64{0, 255, 256, 511, 699} {
		p, err := sumdb.ProveRecord(tree.N, i, reader)
		if err != nil {
			t.Fatalf("proof of %d from tiles: %v", i, err)
		}
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(i), uint64(tree.N), leaves[i], hashBytes(p), roots[tree.N]); err != nil {
			t.Fatalf("inclusion of %d: %v", i, err)
		}
	}
	// Entry bundles: each leaf, length-prefixed, hashing to the tiles'.
	for _, tc := range []struct {
		path  string
		first int
		n     int
	}{{"/tlog/tile/entries/000", 0, 256}, {"/tlog/tile/entries/002.p/188", 512, 188}} {
		code, h, b := get(tc.path)
		if code != 200 {
			t.Fatalf("%s: %d %s", tc.path, code, b)
		}
		if !strings.Contains(h.Get("Cache-Control"), "immutable") {
			t.Fatalf("%s: Cache-Control %q", tc.path, h.Get("Cache-Control"))
		}
		for i := 0; i < tc.n; i++ {
			if len(b) < 2 {
				t.Fatalf("%s: bundle ends at entry %d", tc.path, i)
			}
			l := int(b[0])<<8 | int(b[1])
			leaf := b[2 : 2+l]
			b = b[2+l:]
			if got := rfc6962.DefaultHasher.HashLeaf(leaf); !bytes.Equal(got, leaves[tc.first+i]) {
				t.Fatalf("%s: entry %d hashes to %x, want %x", tc.path, i, got, leaves[tc.first+i])
			}
		}
		if len(b) != 0 {
			t.Fatalf("%s: %d bytes after the last entry", tc.path, len(b))
		}
	}
	for _, tc := range []struct {
		path string
		code int
	}{
		{"/tlog/tile/0/003", 404},       // not full yet
		{"/tlog/tile/0/002.p/189", 404}, // beyond the tree
		{"/tlog/tile/1/000", 404},       // needs 65536 leaves
		{"/tlog/tile/1/000.p/2", 200},   // 512 leaves
		{"/tlog/tile/0/x001", 400},      // malformed
		{"/tlog/tile/data/000", 400},    // the Go sumdb form is not ours
		{"/tlog/proof/consistency?old=5&new=4", 400},
		{"/tlog/proof/consistency?old=5&new=701", 404},
		{"/tlog/proof/consistency?old=5&new=700", 200},
		{"/tlog/nothing", 404},
	} {
		if code, _, b := get(tc.path); code != tc.code {
			t.Errorf("GET %s: %d %s, want %d", tc.path, code, b, tc.code)
		}
	}
	if p, err := tl.ConsistencyProof(ctx, 5, 700); err != nil || len(p) == 0 {
		t.Fatalf("ConsistencyProof: %v", err)
	}
}

type tileReader struct {
	t   *testing.T
	get func(string) (int, http.Header, []byte)
}

func (r tileReader) Height() int { return plc.TileHeight }

func (r tileReader) ReadTiles(tiles []sumdb.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, tile := range tiles {
		// The C2SP path: tlog's without the height.
		p := strings.TrimPrefix(tile.Path(), fmt.Sprintf("tile/%d/", plc.TileHeight))
		code, _, b := r.get("/tlog/tile/" + p)
		if code != 200 {
			return nil, fmt.Errorf("tile %s: %d %s", p, code, b)
		}
		out[i] = b
	}
	return out, nil
}

func (r tileReader) SaveTiles([]sumdb.Tile, [][]byte) {}
