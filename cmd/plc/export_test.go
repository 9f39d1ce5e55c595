package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/plcdir/plc/api"
	"github.com/plcdir/plc/bundle"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/storetest"
	"github.com/plcdir/plc/tlog"
)

// servedExport is the concatenation of the seq-mode /export pages of the
// directory at url, each line ended by a newline.
func servedExport(t *testing.T, url string) []byte {
	t.Helper()
	var b []byte
	for _, l := range exportLines(t, url) {
		b = append(append(b, l...), '\n')
	}
	return b
}

// loadedDB imports lines into db (either backend) with plc import.
func loadedDB(t *testing.T, db string, lines [][]byte) {
	t.Helper()
	in := writeFile(t, "corpus.jsonl", append(bytes.Join(lines, []byte("\n")), '\n'))
	if code, _, stderr := runPLC(t, context.Background(), nil, "import", "--db", db, in); code != exitOK {
		t.Fatalf("import: exit %d\n%s", code, stderr)
	}
}

// serveDB serves db's log with plc's API.
func serveDB(t *testing.T, store oplog.Store) string {
	t.Helper()
	l := oplog.NewLog(store, oplog.Options{NoRateLimit: true})
	srv := httptest.NewServer(api.New(api.Config{Log: l}))
	t.Cleanup(func() { srv.Close(); l.Close() })
	return srv.URL
}

func decompressed(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader
	switch filepath.Ext(path) {
	case ".gz":
		if r, err = gzip.NewReader(f); err != nil {
			t.Fatal(err)
		}
	case ".zst":
		d, err := zstd.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		r = d
	default:
		r = f
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestExportEqualsTheServedPages: plc export writes, byte for byte, the
// seq-mode /export pages a server of the same database serves, whole or
// after a seq, plain or compressed, on both backends.
func TestExportEqualsTheServedPages(t *testing.T) {
	lines := storetest.Corpus(t, 21, 2300)[:2300]
	backends(t, func(t *testing.T, db string) {
		ctx := context.Background()
		loadedDB(t, db, lines)
		want := servedExport(t, serveDB(t, openDB(t, db)))
		if n := bytes.Count(want, []byte("\n")); n != len(lines) {
			t.Fatalf("served %d lines, want %d", n, len(lines))
		}
		code, stdout, stderr := runPLC(t, ctx, nil, "export", "--db", db)
		if code != exitOK || stdout != string(want) {
			t.Fatalf("exit %d, %d bytes, want the served %d\n%s", code, len(stdout), len(want), stderr)
		}
		cut := bytes.Index(want, lines[1233])
		code, stdout, _ = runPLC(t, ctx, nil, "export", "--db", db, "--after", "1233")
		if code != exitOK || stdout != string(want[cut:]) {
			t.Fatalf("--after 1233: exit %d, %d bytes, want %d", code, len(stdout), len(want)-cut)
		}
		for _, name := range []string{"out.jsonl", "out.jsonl.gz", "out.jsonl.zst"} {
			out := filepath.Join(t.TempDir(), name)
			if code, _, stderr := runPLC(t, ctx, nil, "export", "--db", db, "--out", out); code != exitOK {
				t.Fatalf("--out %s: exit %d\n%s", name, code, stderr)
			}
			if got := decompressed(t, out); !bytes.Equal(got, want) {
				t.Fatalf("--out %s: %d bytes, want %d", name, len(got), len(want))
			}
		}
	})
}

func TestExportUsageErrors(t *testing.T) {
	db := filepath.Join(t.TempDir(), "plc.sqlite")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--after", "-1"}, "--after must not be negative"},
		{[]string{"--compress", "lz4"}, `--compress "lz4": want none, gzip or zstd`},
		{[]string{"--bundles", "x", "--after", "5"}, "--after, --out and --compress are for export lines"},
		{[]string{"--bundle-size", "5"}, "--bundle-size is for --bundles"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{nil, "no database at " + db},
	} {
		code, _, stderr := runPLC(t, context.Background(), nil, append([]string{"export", "--db", db}, tc.args...)...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d %q, want %q", tc.args, code, stderr, tc.want)
		}
	}
}

// signedDB is an SQLite log of lines with a signed checkpoint; it returns
// the database and the key's verifier key.
func signedDB(t *testing.T, lines [][]byte) (db, vkey string) {
	t.Helper()
	db = filepath.Join(t.TempDir(), "plc.sqlite")
	loadedDB(t, db, lines)
	return db, signCheckpoint(t, openDB(t, db))
}

func signCheckpoint(t *testing.T, s oplog.Store) string {
	t.Helper()
	skey, vkey, err := tlog.GenerateKey("plc.test")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := tlog.ParseKey(skey)
	if _, _, err := tlog.New(s, key, tlog.Options{}).Sign(context.Background()); err != nil {
		t.Fatal(err)
	}
	return vkey
}

// TestImportOfABundleFolder: plc export --bundles, then plc import of
// the folder into a fresh database, gives the log's first full bundles,
// on both backends; a second import of the folder takes nothing twice.
func TestImportOfABundleFolder(t *testing.T) {
	lines := storetest.Corpus(t, 22, 250)[:250]
	backends(t, func(t *testing.T, db string) {
		ctx := context.Background()
		loadedDB(t, db, lines)
		vkey := signCheckpoint(t, openDB(t, db))
		dir := filepath.Join(t.TempDir(), "bundles")
		code, stdout, stderr := runPLC(t, ctx, nil, "export", "--db", db, "--bundles", dir, "--bundle-size", "100")
		if code != exitOK || !strings.Contains(stdout, "2 bundles (2 new), checkpoint of size 250") {
			t.Fatalf("export --bundles: exit %d %q\n%s", code, stdout, stderr)
		}
		fresh := filepath.Join(t.TempDir(), "fresh.sqlite")
		if code, _, stderr := runPLC(t, ctx, nil, "import", "--db", fresh, dir); code != exitUsage || !strings.Contains(stderr, "--vkey VKEY is required") {
			t.Fatalf("without --vkey: exit %d\n%s", code, stderr)
		}
		code, stdout, stderr = runPLC(t, ctx, nil, "import", "--db", fresh, "--vkey", vkey, dir)
		if code != exitOK || !strings.Contains(stdout, "200 imported, 0 rejected") {
			t.Fatalf("import: exit %d %q\n%s", code, stdout, stderr)
		}
		_, got, _ := runPLC(t, ctx, nil, "export", "--db", fresh)
		if want := string(append(bytes.Join(lines[:200], []byte("\n")), '\n')); got != want {
			t.Fatalf("the imported log is not the bundles' %d ops", 200)
		}
		code, stdout, _ = runPLC(t, ctx, nil, "import", "--db", fresh, "--vkey", vkey, dir)
		if code != exitOK || !strings.Contains(stdout, "0 imported, 0 rejected, 200 skipped") {
			t.Fatalf("again: exit %d %q", code, stdout)
		}
		// A key that did not sign: refused, nothing imported.
		_, other, _ := tlog.GenerateKey("plc.test")
		fresh2 := filepath.Join(t.TempDir(), "fresh2.sqlite")
		code, _, stderr = runPLC(t, ctx, nil, "import", "--db", fresh2, "--vkey", other, dir)
		if code != exitUsage || !strings.Contains(stderr, "bundles refused: the checkpoint is not one the log's key plc.test signed") {
			t.Fatalf("another key: exit %d\n%s", code, stderr)
		}
	})
}

// TestMirrorBootstrapsFromBundlesOnAStaticServerThenFollows is the round
// trip: a directory's bundles, served by a plain file server, bootstrap a
// fresh mirror, which then follows the upstream past them (ops added
// after the bundles were written): the two logs end up identical, and
// the upstream was asked only for what comes after the bundles.
func TestMirrorBootstrapsFromBundlesOnAStaticServerThenFollows(t *testing.T) {
	ctx := context.Background()
	lines := storetest.Corpus(t, 23, 380)[:380]
	db, vkey := signedDB(t, lines[:320])
	dir := filepath.Join(t.TempDir(), "bundles")
	if code, _, stderr := runPLC(t, ctx, nil, "export", "--db", db, "--bundles", dir, "--bundle-size", "100"); code != exitOK {
		t.Fatalf("export --bundles: exit %d\n%s", code, stderr)
	}
	store := openDB(t, db)
	storetest.Load(t, store, lines[320:])

	var (
		mu      sync.Mutex
		afters  []string
		fetched []string
	)
	l := oplog.NewLog(store, oplog.Options{NoRateLimit: true})
	h := api.New(api.Config{Log: l})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/export" && r.URL.Query().Get("count") != "1" { // not the mode detection
			mu.Lock()
			afters = append(afters, r.URL.Query().Get("after"))
			mu.Unlock()
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { upstream.Close(); l.Close() })
	up := upstream.URL
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		fetched = append(fetched, r.URL.Path)
		mu.Unlock()
		http.FileServer(http.Dir(dir)).ServeHTTP(w, r)
	}))
	t.Cleanup(files.Close)

	mdb := filepath.Join(t.TempDir(), "mirror.sqlite")
	code, stdout, stderr := runPLC(t, ctx, nil, "mirror", "--once", "--upstream", up, "--db", mdb, "--listen", "127.0.0.1:0",
		"--audit-interval", "0", "--log-format", "json", "--bootstrap", files.URL, "--bootstrap-vkey", vkey)
	if code != exitOK || !strings.Contains(stdout, "caught up") {
		t.Fatalf("mirror: exit %d %q\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, `"msg":"bootstrap done","imported":300`) {
		t.Fatalf("no bootstrap of 300 ops in the log:\n%s", stderr)
	}
	mu.Lock()
	if len(fetched) != 4 || fetched[0] != "/"+bundle.IndexName {
		t.Errorf("files fetched: %v, want the index and 3 bundles", fetched)
	}
	if len(afters) == 0 || afters[0] != "300" {
		t.Errorf("the upstream's export was asked after %v, first after 300 (the bundles' end)", afters)
	}
	mu.Unlock()
	got := servedExport(t, serveDB(t, openDB(t, mdb)))
	if want := servedExport(t, up); !bytes.Equal(got, want) || bytes.Count(want, []byte("\n")) != 380 {
		t.Fatalf("the mirror's log (%d bytes) is not the upstream's (%d bytes)", len(got), len(want))
	}
}

// TestMirrorBootstrapRefusesBundlesOfAnotherKey: a mirror told to start
// from bundles another key signed stops, naming the failure, and has
// taken nothing.
func TestMirrorBootstrapRefusesBundlesOfAnotherKey(t *testing.T) {
	ctx := context.Background()
	db, _ := signedDB(t, storetest.Corpus(t, 24, 120)[:120])
	dir := filepath.Join(t.TempDir(), "bundles")
	if code, _, stderr := runPLC(t, ctx, nil, "export", "--db", db, "--bundles", dir, "--bundle-size", "50"); code != exitOK {
		t.Fatalf("export --bundles: exit %d\n%s", code, stderr)
	}
	_, other, _ := tlog.GenerateKey("plc.test")
	up := serveDB(t, openDB(t, db))
	mdb := filepath.Join(t.TempDir(), "mirror.sqlite")
	code, _, stderr := runPLC(t, ctx, nil, "mirror", "--once", "--upstream", up, "--db", mdb, "--listen", "127.0.0.1:0",
		"--audit-interval", "0", "--bootstrap", dir, "--bootstrap-vkey", other)
	if code != exitFailure || !strings.Contains(stderr, "bundles refused: the checkpoint is not one the log's key plc.test signed") {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	if n, _ := openDB(t, mdb).LatestSeq(ctx); n != 0 {
		t.Fatalf("the mirror took %d ops", n)
	}
	code, _, stderr = runPLC(t, ctx, nil, "mirror", "--once", "--upstream", up, "--db", mdb, "--bootstrap", dir)
	if code != exitUsage || !strings.Contains(stderr, "--bootstrap-vkey VKEY is required") {
		t.Fatalf("without a key: exit %d\n%s", code, stderr)
	}
}

func TestServeBundlesMustBeAFolder(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none")
	code, _, stderr := runPLC(t, context.Background(), nil, "serve", "--db", filepath.Join(t.TempDir(), "plc.sqlite"), "--bundles", missing)
	if code != exitUsage || !strings.Contains(stderr, "--bundles "+missing+": not a folder") {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
}

// TestBenchBundlesRunsAtASmallSize: the benchmark of exports and the
// bootstrap works end to end on a small corpus.
func TestBenchBundlesRunsAtASmallSize(t *testing.T) {
	ctx := context.Background()
	corpus := writeFile(t, "corpus.jsonl", append(bytes.Join(storetest.Corpus(t, 25, 300)[:300], []byte("\n")), '\n'))
	db := filepath.Join(t.TempDir(), "dst.sqlite")
	code, stdout, stderr := runPLC(t, ctx, nil, "bench", "bundles", "--db", db, "--bundle-size", "100", corpus)
	if code != exitOK || !strings.Contains(stdout, "export bundles   3 bundles of 100 ops") || !strings.Contains(stdout, "bootstrap        300 ops (0 rejected)") || !strings.Contains(stdout, "ratio") {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	if code, _, stderr := runPLC(t, ctx, nil, "bench", "bundles", "--db", db, corpus); code != exitUsage || !strings.Contains(stderr, "must be an empty database") {
		t.Fatalf("a database not empty: exit %d\n%s", code, stderr)
	}
}

// TestImportRefusesSwappedBundlesAfterTheGoodOnes: bundles 2 and 3
// swapped (their index entries' hashes too, as a host would): plc import
// takes bundle 1, then stops, naming bundle 2 and what is wrong with it.
func TestImportRefusesSwappedBundlesAfterTheGoodOnes(t *testing.T) {
	ctx := context.Background()
	db, vkey := signedDB(t, storetest.Corpus(t, 26, 150)[:150])
	dir := filepath.Join(t.TempDir(), "bundles")
	if code, _, stderr := runPLC(t, ctx, nil, "export", "--db", db, "--bundles", dir, "--bundle-size", "50"); code != exitOK {
		t.Fatalf("export --bundles: exit %d\n%s", code, stderr)
	}
	b, _ := os.ReadFile(filepath.Join(dir, bundle.IndexName))
	idx, err := bundle.ParseIndex(b)
	if err != nil {
		t.Fatal(err)
	}
	x2, x3 := &idx.Bundles[1], &idx.Bundles[2]
	x2.Bytes, x3.Bytes = x3.Bytes, x2.Bytes
	x2.SHA256, x3.SHA256 = x3.SHA256, x2.SHA256
	x2.ContentBytes, x3.ContentBytes = x3.ContentBytes, x2.ContentBytes
	x2.ContentSHA256, x3.ContentSHA256 = x3.ContentSHA256, x2.ContentSHA256
	if b, err = idx.Marshal(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, bundle.IndexName), b, 0o644)
	f2, _ := os.ReadFile(filepath.Join(dir, x2.File))
	f3, _ := os.ReadFile(filepath.Join(dir, x3.File))
	os.WriteFile(filepath.Join(dir, x2.File), f3, 0o644)
	os.WriteFile(filepath.Join(dir, x3.File), f2, 0o644)

	fresh := filepath.Join(t.TempDir(), "fresh.sqlite")
	code, stdout, stderr := runPLC(t, ctx, nil, "import", "--db", fresh, "--vkey", vkey, dir)
	if code != exitUsage || !strings.Contains(stderr, "bundles refused: bundle 2 (000002.jsonl.zst, seqs 51–100): line 1 has seq 101, want 51") {
		t.Fatalf("exit %d %q\n%s", code, stdout, stderr)
	}
	if n, _ := openDB(t, fresh).LatestSeq(ctx); n != 50 {
		t.Fatalf("imported up to seq %d, want bundle 1's 50", n)
	}
}

// TestServeBundlesServesTheFolder: plc serve --bundles DIR serves the
// folder's files at /bundles/ (the real binary).
func TestServeBundlesServesTheFolder(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, bundle.IndexName), []byte(`{"format":"plc-bundles/1"}`), 0o644)
	s := startServer(t, filepath.Join(t.TempDir(), "plc.sqlite"), "--bundles", dir)
	code, body := getBody(t, s.url+"/bundles/"+bundle.IndexName)
	if code != http.StatusOK || string(body) != `{"format":"plc-bundles/1"}` {
		t.Fatalf("%d %s", code, body)
	}
	if code, _ := getBody(t, s.url+"/bundles/"+bundle.FileName(1)); code != http.StatusNotFound {
		t.Fatalf("a bundle not there: %d", code)
	}
}

// TestImportOfABundleFolderChecksTheWitnessPolicy: with --witness-policy,
// a checkpoint without the quorum's cosignatures is refused; a policy of
// another log is a usage error.
func TestImportOfABundleFolderChecksTheWitnessPolicy(t *testing.T) {
	ctx := context.Background()
	db, vkey := signedDB(t, storetest.Corpus(t, 27, 60)[:60])
	dir := filepath.Join(t.TempDir(), "bundles")
	if code, _, stderr := runPLC(t, ctx, nil, "export", "--db", db, "--bundles", dir, "--bundle-size", "30"); code != exitOK {
		t.Fatalf("export --bundles: exit %d\n%s", code, stderr)
	}
	_, wvkey, err := tlog.GenerateCosignerKey(tlog.CosignatureEd25519, "w.example/w1")
	if err != nil {
		t.Fatal(err)
	}
	policy := writeFile(t, "w.policy", []byte("witness w1 "+wvkey+"\nquorum w1\n"))
	fresh := filepath.Join(t.TempDir(), "fresh.sqlite")
	code, _, stderr := runPLC(t, ctx, nil, "import", "--db", fresh, "--vkey", vkey, "--witness-policy", policy, dir)
	if code != exitUsage || !strings.Contains(stderr, "does not meet its quorum") {
		t.Fatalf("no cosignature: exit %d\n%s", code, stderr)
	}
	_, other, _ := tlog.GenerateKey("plc.test")
	otherLog := writeFile(t, "o.policy", []byte("log "+other+"\nwitness w1 "+wvkey+"\nquorum w1\n"))
	code, _, stderr = runPLC(t, ctx, nil, "import", "--db", fresh, "--vkey", vkey, "--witness-policy", otherLog, dir)
	if code != exitUsage || !strings.Contains(stderr, "--witness-policy: the policy's log lines name other keys") {
		t.Fatalf("a policy of another log: exit %d\n%s", code, stderr)
	}
}
