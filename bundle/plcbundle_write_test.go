package bundle

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/oplog"
)

// Tests of WritePlcbundles: what it writes is what the reader reads, what
// a plain zstd decoder and plain SHA-256 agree with, and the same whether
// written in one run or several.

// pbTimeSource serves entries (sorted by createdAt, cid) as
// ExportByTime's pages, cut at limit wherever it falls (a millisecond's
// ops may straddle two pages).
type pbTimeSource struct{ es []oplog.Entry }

func (s *pbTimeSource) ExportByTime(_ context.Context, after time.Time, limit int) ([]oplog.Entry, error) {
	ms := after.UnixMilli()
	i := sort.Search(len(s.es), func(i int) bool { return s.es[i].CreatedAt.UnixMilli() > ms })
	return slices.Clone(s.es[i:min(i+limit, len(s.es))]), nil
}

var pbT0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// pbEntries returns n entries of the corpus's ops, seven per millisecond
// (so a bundle's last millisecond goes on in the next bundle), one in 13
// nullified, in (createdAt, cid) order.
func pbEntries(t testing.TB, n int) []oplog.Entry {
	t.Helper()
	c := pbTheVerdictCorpus(t)
	es := make([]oplog.Entry, n)
	for i := range es {
		x, _, err := plc.ParseExportLine(c.lines[i])
		if err != nil {
			t.Fatal(err)
		}
		es[i] = oplog.Entry{Seq: int64(i + 1), DID: x.DID, CID: x.CID, Decoded: x.Op,
			CreatedAt: pbT0.Add(time.Duration(i/7) * time.Millisecond), Nullified: i%13 == 0}
	}
	slices.SortStableFunc(es, func(a, b oplog.Entry) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.CID, b.CID)
	})
	return es
}

func writePb(t *testing.T, src PlcbundleOpSource, dir string, before time.Time, page int) (PlcbundleExportStats, error) {
	t.Helper()
	return WritePlcbundles(context.Background(), src, dir, PlcbundleExportOptions{
		Origin: "https://plc.example", Before: before, PageSize: page,
		Now: func() time.Time { return pbT0.Add(100 * time.Hour) },
	})
}

func TestWritePlcbundlesIsReadBackAndIndependentlyChecked(t *testing.T) {
	es := pbEntries(t, 2*PlcbundleOps+321)
	dir := t.TempDir()
	st, err := writePb(t, &pbTimeSource{es}, dir, pbT0.Add(time.Hour), 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Existing != 0 || st.Written != 2 {
		t.Fatalf("%+v: want 2 bundles written", st)
	}
	// The reader reads every op, in order, with its flag.
	got, err := readAllPb(t, dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2*PlcbundleOps {
		t.Fatalf("read %d lines", len(got))
	}
	for i, l := range got {
		x, _, err := plc.ParseExportLine(l)
		e := es[i]
		if err != nil || x.DID != e.DID || x.CID != e.CID || !x.CreatedAt.Equal(e.CreatedAt) || !x.HasNullified || x.Nullified != e.Nullified {
			t.Fatalf("line %d: %s (%v), want op %s of %s at %s, nullified %v", i+1, l, err, e.CID, e.DID, e.CreatedAt, e.Nullified)
		}
	}

	// Independently: a plain zstd decoder, plain SHA-256, the documented
	// chain and frame offsets.
	var idx struct {
		Version, Origin string
		LastBundle      int `json:"last_bundle"`
		Bundles         []map[string]any
	}
	b, _ := os.ReadFile(filepath.Join(dir, "plc_bundles.json"))
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	if idx.Version != "1.0" || idx.Origin != "https://plc.example" || idx.LastBundle != 2 || len(idx.Bundles) != 2 {
		t.Fatalf("index %s", b)
	}
	dec, _ := zstd.NewReader(nil)
	defer dec.Close()
	parent, prevEnd := "", ""
	for i, m := range idx.Bundles {
		file, _ := os.ReadFile(filepath.Join(dir, PlcbundleFileName(i+1)))
		content, err := dec.DecodeAll(file, nil)
		if err != nil {
			t.Fatal(err)
		}
		if want := pbContent(got[i*PlcbundleOps : (i+1)*PlcbundleOps]); !bytes.Equal(content, want) {
			t.Fatalf("bundle %d: a plain zstd decoder reads other content", i+1)
		}
		ch := pbSHA(content)
		hash := pbSHA([]byte("plcbundle:genesis:" + ch))
		if parent != "" {
			hash = pbSHA([]byte(parent + ":" + ch))
		}
		if m["content_hash"] != ch || m["hash"] != hash || m["parent"] != parent || m["cursor"] != prevEnd || m["compressed_hash"] != pbSHA(file) {
			t.Fatalf("bundle %d: index entry %v; want content_hash %s, hash %s, parent %q, cursor %q", i+1, m, ch, hash, parent, prevEnd)
		}
		first, last := es[i*PlcbundleOps], es[(i+1)*PlcbundleOps-1]
		if m["start_time"] != first.CreatedAt.Format(time.RFC3339Nano) || m["end_time"] != last.CreatedAt.Format(time.RFC3339Nano) {
			t.Fatalf("bundle %d: times %v and %v", i+1, m["start_time"], m["end_time"])
		}
		if magic := binary.LittleEndian.Uint32(file); magic != 0x184D2A50 {
			t.Fatalf("bundle %d: starts with %#x, not a skippable frame", i+1, magic)
		}
		n := binary.LittleEndian.Uint32(file[4:])
		var md struct {
			Format       string
			Origin       string
			BundleNumber int     `json:"bundle_number"`
			ContentHash  string  `json:"content_hash"`
			FrameCount   int     `json:"frame_count"`
			FrameOffsets []int64 `json:"frame_offsets"`
		}
		if err := json.Unmarshal(file[8:8+n], &md); err != nil {
			t.Fatal(err)
		}
		frames := file[8+n:]
		if md.Format != "plcbundle-v1" || md.BundleNumber != i+1 || md.ContentHash != ch || md.FrameCount != 100 ||
			len(md.FrameOffsets) != 101 || md.FrameOffsets[100] != int64(len(frames)) {
			t.Fatalf("bundle %d: metadata %+v", i+1, md)
		}
		for f := range 100 {
			part, err := dec.DecodeAll(frames[md.FrameOffsets[f]:md.FrameOffsets[f+1]], nil)
			if err != nil || !bytes.Equal(part, pbContent(got[i*PlcbundleOps+f*100:i*PlcbundleOps+f*100+100])) {
				t.Fatalf("bundle %d frame %d: not lines %d to %d (%v)", i+1, f, f*100, f*100+99, err)
			}
		}
		parent, prevEnd = hash, m["end_time"].(string)
	}
}

// TestWritePlcbundlesRerunEqualsOneRun: bundles written over several runs,
// whatever the page size, equal those of one run; the ops of the
// millisecond the first bundle ends in are neither lost nor repeated.
func TestWritePlcbundlesRerunEqualsOneRun(t *testing.T) {
	es := pbEntries(t, 2*PlcbundleOps+321)
	src := &pbTimeSource{es}
	one := t.TempDir()
	if _, err := writePb(t, src, one, pbT0.Add(time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	want, _ := ReadPlcbundleIndex(one)
	for _, page := range []int{0, 50, 3} {
		dir := t.TempDir()
		// The first run sees ops up to the 15,000th.
		st, err := writePb(t, src, dir, es[15_000].CreatedAt, page)
		if err != nil || st.Written != 1 {
			t.Fatalf("page %d: first run: %+v, %v", page, st, err)
		}
		st, err = writePb(t, src, dir, pbT0.Add(time.Hour), page)
		if err != nil || st.Existing != 1 || st.Written != 1 {
			t.Fatalf("page %d: second run: %+v, %v", page, st, err)
		}
		got, err := ReadPlcbundleIndex(dir)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want.Bundles {
			if got.Bundles[i].Hash != want.Bundles[i].Hash {
				t.Fatalf("page %d: bundle %d has hash %s, %s in one run", page, i+1, got.Bundles[i].Hash, want.Bundles[i].Hash)
			}
		}
		// A third run has nothing to add.
		if st, err := writePb(t, src, dir, pbT0.Add(time.Hour), page); err != nil || st.Written != 0 {
			t.Fatalf("page %d: third run: %+v, %v", page, st, err)
		}
	}
}

// TestWritePlcbundlesTakesOnlyOpsBeforeTheCutoff: the ops at and after
// Before wait, and only full bundles are written.
func TestWritePlcbundlesTakesOnlyOpsBeforeTheCutoff(t *testing.T) {
	es := pbEntries(t, PlcbundleOps+100)
	dir := t.TempDir()
	st, err := writePb(t, &pbTimeSource{es}, dir, es[PlcbundleOps-1].CreatedAt, 0)
	if err != nil || st.Written != 0 {
		t.Fatalf("%+v, %v: want nothing written", st, err)
	}
	// A new repository has its index from the start, empty.
	if idx, err := ReadPlcbundleIndex(dir); err != nil || len(idx.Bundles) != 0 {
		t.Fatalf("index of the new repository: %v, %v", idx, err)
	}
	st, err = writePb(t, &pbTimeSource{es}, dir, es[PlcbundleOps+50].CreatedAt, 0)
	if err != nil || st.Written != 1 {
		t.Fatalf("%+v, %v: want one bundle", st, err)
	}
	idx, _ := ReadPlcbundleIndex(dir)
	if idx.Bundles[0].EndTime != es[PlcbundleOps-1].CreatedAt.Format(time.RFC3339Nano) {
		t.Fatalf("bundle ends at %s", idx.Bundles[0].EndTime)
	}
}

func TestWritePlcbundlesRefusesAnotherOrigin(t *testing.T) {
	es := pbEntries(t, PlcbundleOps)
	dir := t.TempDir()
	if _, err := writePb(t, &pbTimeSource{es}, dir, pbT0.Add(time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	_, err := WritePlcbundles(context.Background(), &pbTimeSource{es}, dir, PlcbundleExportOptions{Origin: "https://other.example", Before: pbT0.Add(time.Hour)})
	if !errors.Is(err, ErrPlcbundleOrigin) || !strings.Contains(err.Error(), "https://plc.example") {
		t.Fatalf("error %v, want ErrPlcbundleOrigin", err)
	}
}

// TestWritePlcbundlesDoesNotExtendAnAlteredRepository: a rerun checks the
// last bundle before it goes on from it.
func TestWritePlcbundlesDoesNotExtendAnAlteredRepository(t *testing.T) {
	es := pbEntries(t, PlcbundleOps+10)
	dir := t.TempDir()
	if _, err := writePb(t, &pbTimeSource{es}, dir, pbT0.Add(time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, PlcbundleFileName(1))
	b, _ := os.ReadFile(path)
	b[len(b)-10] ^= 1
	os.WriteFile(path, b, 0o644)
	_, err := writePb(t, &pbTimeSource{es}, dir, pbT0.Add(time.Hour), 0)
	if !errors.Is(err, ErrPlcbundleRefused) || !strings.Contains(err.Error(), "bundle 1") {
		t.Fatalf("error %v, want bundle 1 refused", err)
	}
}
