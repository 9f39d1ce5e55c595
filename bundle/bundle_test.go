package bundle_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/mod/sumdb/note"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/bundle"
	"github.com/plcdir/plc/client"
	"github.com/plcdir/plc/internal/testclock"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/storetest"
	"github.com/plcdir/plc/tlog"
)

// signedLog is a log of the first n ops of corpus seed, with a checkpoint
// signed by a key of origin plc.test.
type signedLog struct {
	store oplog.Store
	lines [][]byte
	vkey  string
	tl    *tlog.TLog
	clock *testclock.Clock
}

func newSignedLog(t *testing.T, seed uint64, n int) *signedLog {
	t.Helper()
	s, _ := storetest.SQLite(t)
	lines := storetest.Corpus(t, seed, n)[:n]
	storetest.Load(t, s, lines)
	skey, vkey, err := tlog.GenerateKey("plc.test")
	if err != nil {
		t.Fatal(err)
	}
	key, err := tlog.ParseKey(skey)
	if err != nil {
		t.Fatal(err)
	}
	clock := testclock.New(time.Now())
	l := &signedLog{store: s, lines: lines, vkey: vkey, tl: tlog.New(s, key, tlog.Options{Now: clock.Now}), clock: clock}
	l.sign(t)
	return l
}

func (l *signedLog) sign(t *testing.T) {
	t.Helper()
	l.clock.Advance(time.Minute)
	if _, _, err := l.tl.Sign(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, s oplog.Store, dir string, size int64) bundle.WriteResult {
	t.Helper()
	res, err := bundle.Write(context.Background(), s, dir, bundle.WriteOptions{Size: size})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// readAll opens dir and reads it to the end: the content read and the
// error that ended it.
func readAll(t *testing.T, f bundle.Fetcher, vkey string) ([]byte, error) {
	t.Helper()
	r, err := bundle.Open(context.Background(), f, bundle.Options{VKey: vkey})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var b []byte
	for {
		l, err := r.Next(context.Background())
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return b, err
		}
		b = append(append(b, l.Raw...), '\n')
	}
}

func joinLines(lines [][]byte) []byte {
	var b []byte
	for _, l := range lines {
		b = append(append(b, l...), '\n')
	}
	return b
}

func TestWriteReadRoundTripIncremental(t *testing.T) {
	ctx := context.Background()
	more := storetest.Corpus(t, 11, 330)
	l := newSignedLog(t, 11, 260)
	dir := t.TempDir()
	res := write(t, l.store, dir, 50)
	if res.Added != 5 || res.Bundles != 5 || res.CheckpointSize != 260 {
		t.Fatalf("first write: %+v", res)
	}
	got, err := readAll(t, bundle.Dir(dir), l.vkey)
	if err != nil {
		t.Fatal(err)
	}
	if want := joinLines(l.lines[:250]); !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, want the first 250 lines (%d bytes)", len(got), len(want))
	}
	var served bytes.Buffer
	if _, last, err := bundle.ExportLines(ctx, l.store, 0, &served); err != nil || last != 260 {
		t.Fatalf("ExportLines: last %d, %v", last, err)
	}
	if !bytes.HasPrefix(served.Bytes(), got) {
		t.Fatal("the bundles are not the export's lines")
	}

	// Old files stay as they were; the rerun adds the new full bundles.
	before := map[string][]byte{}
	for n := int64(1); n <= 5; n++ {
		b, err := os.ReadFile(filepath.Join(dir, bundle.FileName(n)))
		if err != nil {
			t.Fatal(err)
		}
		before[bundle.FileName(n)] = b
	}
	storetest.Load(t, l.store, more[260:])
	l.sign(t)
	res = write(t, l.store, dir, 0)
	if res.Added != 1 || res.Bundles != 6 || res.CheckpointSize != 330 {
		t.Fatalf("second write: %+v", res)
	}
	for name, b := range before {
		now, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Equal(now, b) {
			t.Fatalf("%s changed on the rerun", name)
		}
	}
	got, err = readAll(t, bundle.Dir(dir), l.vkey)
	if err != nil || !bytes.Equal(got, joinLines(more[:300])) {
		t.Fatalf("after the rerun: %d bytes, %v", len(got), err)
	}
	if _, err := bundle.Write(ctx, l.store, dir, bundle.WriteOptions{Size: 40}); err == nil || !strings.Contains(err.Error(), "bundles of 50 ops") {
		t.Fatalf("another bundle size: %v", err)
	}
	if tmp, _ := filepath.Glob(filepath.Join(dir, ".*")); len(tmp) != 0 {
		t.Fatalf("temporary files left: %v", tmp)
	}
}

func TestWriteWithoutCheckpointIsRefused(t *testing.T) {
	s, _ := storetest.SQLite(t)
	storetest.Load(t, s, storetest.Corpus(t, 1, 20))
	if _, err := bundle.Write(context.Background(), s, t.TempDir(), bundle.WriteOptions{Size: 10}); !errors.Is(err, bundle.ErrNoCheckpoint) {
		t.Fatalf("got %v, want ErrNoCheckpoint", err)
	}
}

// folder is a written bundle folder that a test tampers with.
type folder struct {
	dir string
	idx *bundle.Index
}

func openFolder(t *testing.T, dir string) *folder {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, bundle.IndexName))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := bundle.ParseIndex(b)
	if err != nil {
		t.Fatal(err)
	}
	return &folder{dir: dir, idx: idx}
}

func (f *folder) content(t *testing.T, n int64) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, bundle.FileName(n)))
	if err != nil {
		t.Fatal(err)
	}
	d, _ := zstd.NewReader(nil)
	defer d.Close()
	c, err := d.DecodeAll(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// put writes content as bundle n and lists it in the index with its true
// hashes, as a host that tampers with the folder would.
func (f *folder) put(t *testing.T, n int64, content []byte) {
	t.Helper()
	e, _ := zstd.NewWriter(nil)
	file := e.EncodeAll(content, nil)
	e.Close()
	if err := os.WriteFile(filepath.Join(f.dir, bundle.FileName(n)), file, 0o644); err != nil {
		t.Fatal(err)
	}
	x := &f.idx.Bundles[n-1]
	s, c := sha256.Sum256(file), sha256.Sum256(content)
	x.Bytes, x.SHA256 = int64(len(file)), hex.EncodeToString(s[:])
	x.ContentBytes, x.ContentSHA256 = int64(len(content)), hex.EncodeToString(c[:])
	f.save(t)
}

func (f *folder) save(t *testing.T) {
	t.Helper()
	b, err := f.idx.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.dir, bundle.IndexName), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// refused reads dir and wants it refused with an *Error naming bundle n
// (0: the checkpoint) and saying want, after exactly the bundles before n.
func refused(t *testing.T, dir, vkey string, n int64, size int, want string) {
	t.Helper()
	got, err := readAll(t, bundle.Dir(dir), vkey)
	var be *bundle.Error
	if !errors.As(err, &be) || !errors.Is(err, bundle.ErrRefused) || be.Bundle != n || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want bundle %d refused: %q", err, n, want)
	}
	if n > 0 && bytes.Count(got, []byte("\n")) != int(n-1)*size {
		t.Fatalf("%d lines handed over before the refusal, want those of the %d bundles before it", bytes.Count(got, []byte("\n")), n-1)
	}
}

func tampered(t *testing.T) (*signedLog, *folder) {
	l := newSignedLog(t, 2, 200)
	dir := t.TempDir()
	write(t, l.store, dir, 50)
	return l, openFolder(t, dir)
}

func TestRefusesAChangedOp(t *testing.T) {
	l, f := tampered(t)
	c := f.content(t, 2)
	lines := bytes.Split(bytes.TrimSuffix(c, []byte("\n")), []byte("\n"))
	// Another createdAt: the line still parses, its leaf is another.
	i := bytes.Index(lines[7], []byte(`"createdAt":"`)) + len(`"createdAt":"20`)
	lines[7][i] ^= 1
	f.put(t, 2, joinLines(lines))
	refused(t, f.dir, l.vkey, 2, 50, "not a prefix of the tree the checkpoint")
}

func TestRefusesADroppedOp(t *testing.T) {
	l, f := tampered(t)
	c := f.content(t, 3)
	lines := bytes.Split(bytes.TrimSuffix(c, []byte("\n")), []byte("\n"))
	f.put(t, 3, joinLines(append(lines[:10:10], lines[11:]...)))
	refused(t, f.dir, l.vkey, 3, 50, "line 11 has seq 112, want 111")
}

func TestRefusesSwappedBundles(t *testing.T) {
	l, f := tampered(t)
	b2, b3 := f.content(t, 2), f.content(t, 3)
	f.put(t, 2, b3)
	f.put(t, 3, b2)
	refused(t, f.dir, l.vkey, 2, 50, "line 1 has seq 101, want 51")
}

func TestRefusesABundleOfAnotherLog(t *testing.T) {
	l, f := tampered(t)
	other := newSignedLog(t, 3, 200)
	odir := t.TempDir()
	write(t, other.store, odir, 50)
	f.put(t, 4, openFolder(t, odir).content(t, 4))
	refused(t, f.dir, l.vkey, 4, 50, "not a prefix of the tree the checkpoint")
}

func TestRefusesACheckpointSignedByAnotherKey(t *testing.T) {
	l, f := tampered(t)
	// The same log and tree, signed by another key of the same origin.
	skey, _, err := tlog.GenerateKey("plc.test")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := tlog.ParseKey(skey)
	s2, _ := storetest.SQLite(t)
	storetest.Load(t, s2, l.lines)
	cp, _, err := tlog.New(s2, key, tlog.Options{}).Sign(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f.idx.Checkpoint = string(cp.Note)
	f.save(t)
	refused(t, f.dir, l.vkey, 0, 50, "not one the log's key plc.test signed")
}

func TestRefusesAFileNotTheIndexs(t *testing.T) {
	l, f := tampered(t)
	// Bytes changed behind the index: named, before anything is parsed.
	p := filepath.Join(f.dir, bundle.FileName(2))
	b, _ := os.ReadFile(p)
	b[len(b)-1] ^= 1
	os.WriteFile(p, b, 0o644)
	refused(t, f.dir, l.vkey, 2, 50, "is not the one the index lists")
}

func TestHandlerServesTheFolderOnly(t *testing.T) {
	l := newSignedLog(t, 1, 60)
	dir := t.TempDir()
	write(t, l.store, dir, 25)
	os.WriteFile(filepath.Join(filepath.Dir(dir), "secret"), []byte("x"), 0o644)
	srv := httptest.NewServer(bundle.Handler(dir))
	defer srv.Close()
	for _, tc := range []struct {
		path, cache string
		status      int
	}{
		{"/" + bundle.IndexName, "no-cache", 200},
		{"/000001.jsonl.zst", "public, max-age=31536000, immutable", 200},
		{"/000003.jsonl.zst", "no-store", 404},
		{"/../secret", "no-store", 404},
		{"/%2e%2e/secret", "no-store", 404},
		{"/..%2fsecret", "no-store", 404},
		{"/", "no-store", 404},
		{"/.bundles.json.tmp-1", "no-store", 404},
	} {
		resp, err := http.Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || resp.Header.Get("Cache-Control") != tc.cache {
			t.Errorf("%s: %d %q, want %d %q", tc.path, resp.StatusCode, resp.Header.Get("Cache-Control"), tc.status, tc.cache)
		}
		if tc.status != 200 && !bytes.HasPrefix(body, []byte(`{"message":`)) {
			t.Errorf("%s: body %q, want a JSON message", tc.path, body)
		}
	}
	resp, err := http.Post(srv.URL+"/"+bundle.IndexName, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("POST: %d, want 405", resp.StatusCode)
	}

	// Over HTTP, the reader reads what it reads from the folder.
	c, err := client.New(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAll(t, bundle.Remote{C: c}, l.vkey)
	if err != nil || !bytes.Equal(got, joinLines(l.lines[:50])) {
		t.Fatalf("over HTTP: %d bytes, %v", len(got), err)
	}
}

// TestWitnessPolicyIsChecked: with a witness policy, a checkpoint without
// the quorum's cosignatures, or with a forged one, is refused; a
// cosigned one is read.
func TestWitnessPolicyIsChecked(t *testing.T) {
	l, f := tampered(t)
	wskey, wvkey, err := tlog.GenerateCosignerKey(tlog.CosignatureEd25519, "w.example/w1")
	if err != nil {
		t.Fatal(err)
	}
	w, err := tlog.NewCosigner(wskey)
	if err != nil {
		t.Fatal(err)
	}
	policy, err := tlog.ParsePolicy([]byte("log " + l.vkey + "\nwitness w1 " + wvkey + "\nquorum w1\n"))
	if err != nil {
		t.Fatal(err)
	}
	open := func() error {
		r, err := bundle.Open(context.Background(), bundle.Dir(f.dir), bundle.Options{VKey: l.vkey, Policy: policy})
		if err == nil {
			for err == nil {
				_, err = r.Next(context.Background())
			}
			if errors.Is(err, io.EOF) {
				err = nil
			}
			r.Close()
		}
		return err
	}
	if err := open(); !errors.Is(err, bundle.ErrRefused) || !strings.Contains(err.Error(), "does not meet its quorum") {
		t.Fatalf("without the cosignature: %v", err)
	}
	v, _ := tlog.NewVerifier(l.vkey)
	n, err := note.Open([]byte(f.idx.Checkpoint), note.VerifierList(v))
	if err != nil {
		t.Fatal(err)
	}
	cosigned, err := note.Sign(n, w)
	if err != nil {
		t.Fatal(err)
	}
	f.idx.Checkpoint = string(cosigned)
	f.save(t)
	if err := open(); err != nil {
		t.Fatalf("cosigned: %v", err)
	}
	forged := bytes.Clone(cosigned)
	i := len(forged) - 10 // inside the cosignature's base64
	forged[i] = map[bool]byte{true: 'B', false: 'A'}[forged[i] == 'A']
	f.idx.Checkpoint = string(forged)
	f.save(t)
	if err := open(); !errors.Is(err, bundle.ErrRefused) || !strings.Contains(err.Error(), "do not verify") {
		t.Fatalf("a forged cosignature: %v", err)
	}
}

// TestNextHandsOverTheCheckedLinesParsed: read as an oplog.LineSource, a
// Reader hands over the lines Read gives, numbered from 1, each with the
// parse its check made (so an import does not read it again); a refused
// bundle ends it with oplog.ErrInput wrapping the *Error, after the lines
// of the bundles before it.
func TestNextHandsOverTheCheckedLinesParsed(t *testing.T) {
	ctx := context.Background()
	l, f := tampered(t)
	r, err := bundle.Open(ctx, bundle.Dir(f.dir), bundle.Options{VKey: l.vkey})
	if err != nil {
		t.Fatal(err)
	}
	var got []oplog.Line
	for {
		line, err := r.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		got = append(got, line)
	}
	r.Close()
	if len(got) != 200 {
		t.Fatalf("%d lines, want 200", len(got))
	}
	for i, line := range got {
		want, _, err := plc.ParseExportLine(l.lines[i])
		if err != nil {
			t.Fatal(err)
		}
		if line.N != int64(i+1) || !bytes.Equal(line.Raw, l.lines[i]) || line.Parsed == nil ||
			line.Parsed.Seq != want.Seq || line.Parsed.CID != want.CID || !bytes.Equal(line.Parsed.Op.SignedCBOR(), want.Op.SignedCBOR()) {
			t.Fatalf("line %d: N %d, %q, parsed %+v; want line %d %q", i+1, line.N, line.Raw, line.Parsed, i+1, l.lines[i])
		}
	}

	c := f.content(t, 3)
	lines := bytes.Split(bytes.TrimSuffix(c, []byte("\n")), []byte("\n"))
	f.put(t, 3, joinLines(append(lines[:10:10], lines[11:]...)))
	r, err = bundle.Open(ctx, bundle.Dir(f.dir), bundle.Options{VKey: l.vkey})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	n := 0
	for {
		line, err := r.Next(ctx)
		if err == nil {
			n++
			continue
		}
		var be *bundle.Error
		if !errors.Is(err, oplog.ErrInput) || !errors.As(err, &be) || be.Bundle != 3 || n != 100 || line.N != 100 {
			t.Fatalf("after %d lines (N %d): %v; want bundle 3 refused as ErrInput after 100", n, line.N, err)
		}
		break
	}
}
