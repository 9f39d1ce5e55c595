package corpus_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plcdir/plc/internal/corpus"
	"github.com/plcdir/plc/validate"
)

// generate runs corpus.Generate and returns the bytes, the stats and the
// kinds of the invalid lines by seq.
func generate(t testing.TB, cfg corpus.Config) ([]byte, corpus.Stats, map[int64]corpus.InvalidKind) {
	t.Helper()
	invalid := map[int64]corpus.InvalidKind{}
	cfg.OnInvalid = func(seq int64, k corpus.InvalidKind) { invalid[seq] = k }
	var buf bytes.Buffer
	st, err := corpus.Generate(context.Background(), &buf, cfg)
	if err != nil {
		t.Fatalf("Generate(%+v): %v", cfg, err)
	}
	return buf.Bytes(), st, invalid
}

type line struct {
	Type      string          `json:"type"`
	DID       string          `json:"did"`
	Operation json.RawMessage `json:"operation"`
	CID       string          `json:"cid"`
	CreatedAt string          `json:"createdAt"`
	Seq       int64           `json:"seq"`
}

// replayed is what a replay of a corpus found.
type replayed struct {
	lines, valid    int
	dids            []string // in order of genesis
	opsPerDID       map[string]int
	nullifiedOps    int
	recoveredDIDs   map[string]bool // a non-tombstone op of theirs was nullified
	tombstonedDIDs  map[string]bool
	nullifiedTombs  int
	legacyDIDs      int
	p256DIDs        int
	interleavedDIDs int // DIDs whose lines are not all adjacent
	rejected        [corpus.NumInvalidKinds]int
	firstRotKey     map[string]int // DIDs by the first rotation key of their genesis
	updates         int            // valid plc_operations after a plc_operation
	rotReplaced     int            // of those, updates that replace every rotation key
}

// replay checks every line of data the way a mirror would: the line
// renders the op canonically, the cid is the op's CID, seq is dense,
// createdAt strictly increases, and each DID's ops pass the chain rules at
// their createdAt. Lines listed in invalid must be rejected with their
// kind's class and leave the DID as it was; every other line must be
// accepted.
func replay(t *testing.T, data []byte, invalid map[int64]corpus.InvalidKind) replayed {
	t.Helper()
	if len(data) == 0 {
		t.Fatal("empty corpus")
	}
	if data[len(data)-1] == '\n' {
		t.Fatal("corpus ends with a newline; the export does not")
	}
	r := replayed{
		opsPerDID:      map[string]int{},
		recoveredDIDs:  map[string]bool{},
		tombstonedDIDs: map[string]bool{},
		firstRotKey:    map[string]int{},
	}
	states := map[string]*validate.State{}
	tombs := map[string]bool{} // CIDs of tombstones
	lastLine := map[string]int64{}
	interleaved := map[string]bool{}
	var prevTime time.Time
	for i, raw := range bytes.Split(data, []byte("\n")) {
		seq := int64(i + 1)
		var l line
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			t.Fatalf("line %d: %v", seq, err)
		}
		if l.Type != "sequenced_op" || l.Seq != seq {
			t.Fatalf("line %d: type %q seq %d", seq, l.Type, l.Seq)
		}
		op, err := validate.ParseJSON(l.Operation)
		if err != nil {
			t.Fatalf("line %d: %v", seq, err)
		}
		if !bytes.Equal(op.AppendJSON(nil), l.Operation) {
			t.Fatalf("line %d: operation not in canonical JSON form", seq)
		}
		if op.CID() != l.CID {
			t.Fatalf("line %d: cid %s, op hashes to %s", seq, l.CID, op.CID())
		}
		at, err := validate.ParseTimestamp(l.CreatedAt)
		if err != nil {
			t.Fatalf("line %d: %v", seq, err)
		}
		if string(validate.AppendTimestamp(nil, at)) != l.CreatedAt {
			t.Fatalf("line %d: createdAt %q is not in the export's form", seq, l.CreatedAt)
		}
		if !at.After(prevTime) {
			t.Fatalf("line %d: createdAt %s not after %s", seq, at, prevTime)
		}
		prevTime = at
		// The exact line the export renders.
		want := fmt.Sprintf(`{"type":"sequenced_op","did":%q,"operation":%s,"cid":%q,"createdAt":%q,"seq":%d}`,
			l.DID, l.Operation, l.CID, l.CreatedAt, seq)
		if string(raw) != want {
			t.Fatalf("line %d:\n got %s\nwant %s", seq, raw, want)
		}
		r.lines++

		st := states[l.DID]
		if st == nil {
			st = &validate.State{DID: l.DID}
		}
		next, applied, err := st.Next(op, at)
		if kind, bad := invalid[seq]; bad {
			if !errors.Is(err, kind.Class()) {
				t.Fatalf("line %d (%s): got %v, want %v", seq, kind, err, kind.Class())
			}
			r.rejected[kind]++
			continue
		}
		if err != nil {
			t.Fatalf("line %d (%s): %v", seq, l.DID, err)
		}
		r.valid++
		if st.Ops == nil {
			r.dids = append(r.dids, l.DID)
			if op.Type() == validate.TypeCreate {
				r.legacyDIDs++
			}
			d, _ := op.Data()
			if strings.HasPrefix(d.RotationKeys[0], "did:key:zDnae") {
				r.p256DIDs++
			}
			r.firstRotKey[d.RotationKeys[0]]++
		} else if head, _ := st.Head(); !head.Tombstone && op.Type() == validate.TypeOperation {
			after, _ := op.Data()
			r.updates++
			if !slices.ContainsFunc(after.RotationKeys, func(k string) bool { return slices.Contains(head.RotationKeys, k) }) {
				r.rotReplaced++
			}
		}
		if p, ok := lastLine[l.DID]; ok && p != seq-1 {
			interleaved[l.DID] = true
		}
		lastLine[l.DID] = seq
		states[l.DID] = &next
		r.opsPerDID[l.DID]++
		if op.Type() == validate.TypeTombstone {
			tombs[l.CID] = true
			r.tombstonedDIDs[l.DID] = true
		}
		for _, c := range applied.Nullified {
			r.nullifiedOps++
			if tombs[c] {
				r.nullifiedTombs++
			} else {
				r.recoveredDIDs[l.DID] = true
			}
		}
	}
	r.interleavedDIDs = len(interleaved)
	return r
}

func TestCorpusReplaysClean(t *testing.T) {
	n := 3000
	if raceEnabled || testing.Short() {
		n = 1000
	}
	data, st, invalid := generate(t, corpus.Config{Ops: n, Seed: 1})
	if len(invalid) != 0 {
		t.Fatalf("%d invalid lines at rate 0", len(invalid))
	}
	r := replay(t, data, nil)
	if r.valid != n || st.Ops != n || st.Lines != n {
		t.Fatalf("%d valid lines, stats %d ops %d lines; want %d", r.valid, st.Ops, st.Lines, n)
	}
	if len(r.dids) != st.DIDs || r.nullifiedOps != st.Nullified || len(r.recoveredDIDs) != st.Recovered ||
		len(r.tombstonedDIDs) != st.Tombstoned || r.nullifiedTombs != st.TombstonesNullified ||
		r.legacyDIDs != st.Legacy || r.p256DIDs != st.P256DIDs {
		t.Fatalf("replay found %+v; stats say %+v", r, st)
	}
	if r.interleavedDIDs == 0 {
		t.Fatal("no DID's ops interleave with other DIDs'")
	}
	t.Logf("%d DIDs, %d ops, %d nullified, %d interleaved DIDs", st.DIDs, st.Ops, st.Nullified, r.interleavedDIDs)
}

func TestDIDsCount(t *testing.T) {
	_, st, _ := generate(t, corpus.Config{DIDs: 200, Seed: 3})
	if st.DIDs != 200 || st.Ops < 200 {
		t.Fatalf("stats %+v for 200 DIDs", st)
	}
}

// TestDistribution pins the shape of a larger corpus, measured by
// replaying it, not taken from the generator's own counts.
func TestDistribution(t *testing.T) {
	if raceEnabled || testing.Short() {
		t.Skip("20k DIDs take too long under -race or -short")
	}
	const n = 20000
	data, st, _ := generate(t, corpus.Config{DIDs: n, Seed: 7})
	r := replay(t, data, nil)
	if len(r.dids) != n {
		t.Fatalf("%d DIDs, want %d", len(r.dids), n)
	}
	share := func(c int) float64 { return float64(c) / n }
	check := func(what string, got, want, tol float64) {
		t.Helper()
		t.Logf("%-30s %.4f (want %.4f ± %.4f)", what, got, want, tol)
		if got < want-tol || got > want+tol {
			t.Errorf("%s: %.4f, want %.4f ± %.4f", what, got, want, tol)
		}
	}
	check("DIDs recovered from a hostile op", share(len(r.recoveredDIDs)), 0.01, 0.003)
	check("DIDs tombstoned", share(len(r.tombstonedDIDs)), 0.005, 0.002)
	check("DIDs with a legacy genesis", share(r.legacyDIDs), 0.03, 0.005)
	check("DIDs with P-256 keys", share(r.p256DIDs), 0.15, 0.012)
	check("mean ops per DID", float64(r.valid)/n, 1.8, 0.3)
	maxOps := 0
	var one int
	for _, c := range r.opsPerDID {
		maxOps = max(maxOps, c)
		if c == 1 {
			one++
		}
	}
	check("DIDs with one op", share(one), 0.74, 0.03)
	if maxOps < 20 {
		t.Errorf("longest DID log has %d ops, want ≥ 20", maxOps)
	}
	if r.nullifiedTombs == 0 {
		t.Error("no tombstone is nullified")
	}
	years := st.Last.Sub(st.First).Hours() / 24 / 365
	if years < 2.5 {
		t.Errorf("corpus spans %.1f years, want ≥ 2.5", years)
	}
}

func TestDeterministicAcrossWorkers(t *testing.T) {
	n := 2000
	if raceEnabled {
		n = 500
	}
	cfg := corpus.Config{Ops: n, Seed: 42, InvalidRate: 0.05, Workers: 1}
	one, _, _ := generate(t, cfg)
	cfg.Workers = 4
	four, _, _ := generate(t, cfg)
	if !bytes.Equal(one, four) {
		t.Fatal("1 and 4 workers give different corpora")
	}
	cfg.Seed = 43
	other, _, _ := generate(t, cfg)
	if bytes.Equal(one, other) {
		t.Fatal("seeds 42 and 43 give the same corpus")
	}
}

// TestInvalidLinesAreRejectedAndHarmless: every injected line is rejected
// with its class, every other line replays clean, and the valid lines are
// those of the corpus without invalid ones.
func TestInvalidLinesAreRejectedAndHarmless(t *testing.T) {
	n := 3000
	if raceEnabled || testing.Short() {
		n = 1500
	}
	data, st, invalid := generate(t, corpus.Config{Ops: n, Seed: 5, InvalidRate: 0.2})
	if len(invalid) != st.InvalidTotal() || st.Lines != n+len(invalid) {
		t.Fatalf("%d invalid lines reported, stats %+v", len(invalid), st)
	}
	r := replay(t, data, invalid)
	if r.valid != n {
		t.Fatalf("%d valid lines, want %d", r.valid, n)
	}
	for k := range corpus.InvalidKind(corpus.NumInvalidKinds) {
		if r.rejected[k] == 0 || r.rejected[k] != st.Invalid[k] {
			t.Errorf("%s: %d rejected, %d generated", k, r.rejected[k], st.Invalid[k])
		}
	}
	t.Logf("rejected %v of %d lines", r.rejected, r.lines)

	clean, _, _ := generate(t, corpus.Config{Ops: n, Seed: 5})
	var kept [][]byte
	for i, raw := range bytes.Split(data, []byte("\n")) {
		if _, bad := invalid[int64(i+1)]; !bad {
			kept = append(kept, raw)
		}
	}
	for i, raw := range bytes.Split(clean, []byte("\n")) {
		var a, b line
		if err := errors.Join(json.Unmarshal(raw, &a), json.Unmarshal(kept[i], &b)); err != nil {
			t.Fatal(err)
		}
		if a.DID != b.DID || a.CID != b.CID {
			t.Fatalf("valid line %d differs with invalid lines mixed in: %s vs %s", i+1, a.CID, b.CID)
		}
	}
}

// TestLongChainShapeIsOneValidDID: --shape longchain is one DID whose
// every op replays, in order, on the one before it.
func TestLongChainShapeIsOneValidDID(t *testing.T) {
	const n = 300
	data, st, invalid := generate(t, corpus.Config{Ops: n, Seed: 2, Shape: corpus.ShapeLongChain})
	if st.DIDs != 1 || st.Ops != n || st.Lines != n || st.MaxOpsPerDID != n || st.Nullified != 0 {
		t.Fatalf("stats %+v, want one DID of %d ops", st, n)
	}
	r := replay(t, data, invalid)
	if len(r.dids) != 1 || r.valid != n || r.opsPerDID[r.dids[0]] != n {
		t.Fatalf("replayed %d DIDs, %d valid ops; want one DID of %d", len(r.dids), r.valid, n)
	}
}

// TestNewShapesReplayClean: every shape but longchain replays clean, with
// invalid lines mixed in rejected by their class, and is deterministic.
func TestNewShapesReplayClean(t *testing.T) {
	n := 3000
	if raceEnabled || testing.Short() {
		n = 1200
	}
	for _, shape := range []corpus.Shape{corpus.ShapeLongGap, corpus.ShapeKeyChurn, corpus.ShapeSharedKeys} {
		t.Run(string(shape), func(t *testing.T) {
			data, st, invalid := generate(t, corpus.Config{Ops: n, Seed: 9, InvalidRate: 0.1, Shape: shape})
			r := replay(t, data, invalid)
			if r.valid != n || st.Ops != n || len(invalid) != st.InvalidTotal() || len(r.dids) != st.DIDs ||
				r.nullifiedOps != st.Nullified || r.legacyDIDs != st.Legacy || r.p256DIDs != st.P256DIDs {
				t.Fatalf("replay found %+v; stats say %+v", r, st)
			}
			again, _, _ := generate(t, corpus.Config{Ops: n, Seed: 9, InvalidRate: 0.1, Shape: shape, Workers: 1})
			if !bytes.Equal(data, again) {
				t.Fatal("the same config gives different corpora")
			}
			dir, _, _ := generate(t, corpus.Config{Ops: n, Seed: 9, InvalidRate: 0.1})
			if bytes.Equal(data, dir) {
				t.Fatal("the shape gives the directory's corpus")
			}
			t.Logf("%d DIDs, %d ops, %d invalid rejected %v, %d interleaved", st.DIDs, st.Ops, len(invalid), r.rejected, r.interleavedDIDs)
		})
	}
}

// TestKeyChurnReplacesKeys: in the keychurn shape most updates replace
// every rotation key; in the directory shape few do.
func TestKeyChurnReplacesKeys(t *testing.T) {
	const n = 1500
	share := func(shape corpus.Shape) float64 {
		data, _, _ := generate(t, corpus.Config{Ops: n, Seed: 4, Shape: shape})
		r := replay(t, data, nil)
		if r.updates < 100 {
			t.Fatalf("%s: only %d updates", shape, r.updates)
		}
		return float64(r.rotReplaced) / float64(r.updates)
	}
	churn, dir := share(corpus.ShapeKeyChurn), share(corpus.ShapeDirectory)
	t.Logf("updates replacing every rotation key: keychurn %.2f, directory %.2f", churn, dir)
	if churn < 0.7 || dir > 0.1 {
		t.Fatalf("keychurn replaces every rotation key in %.2f of updates (want ≥ 0.7), directory in %.2f (want ≤ 0.1)", churn, dir)
	}
}

// TestSharedKeysAreFewAndFirst: in the sharedkeys shape most DIDs have one
// of a handful of rotation keys first; in the directory shape no key is
// shared.
func TestSharedKeysAreFewAndFirst(t *testing.T) {
	const n = 1500
	data, st, _ := generate(t, corpus.Config{Ops: n, Seed: 6, Shape: corpus.ShapeSharedKeys})
	r := replay(t, data, nil)
	sharedKeys, sharedDIDs := 0, 0
	for _, c := range r.firstRotKey {
		if c > 1 {
			sharedKeys++
			sharedDIDs += c
		}
	}
	t.Logf("%d of %d DIDs share %d first rotation keys", sharedDIDs, st.DIDs, sharedKeys)
	if sharedKeys == 0 || sharedKeys > 6 || float64(sharedDIDs) < 0.7*float64(st.DIDs) {
		t.Fatalf("%d of %d DIDs share %d first rotation keys; want most of them, a handful of keys", sharedDIDs, st.DIDs, sharedKeys)
	}
	data, _, _ = generate(t, corpus.Config{Ops: n, Seed: 6})
	for k, c := range replay(t, data, nil).firstRotKey {
		if c > 1 {
			t.Fatalf("directory shape: %d DIDs have rotation key %s first", c, k)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []corpus.Config{
		{},
		{DIDs: 1, Ops: 1},
		{DIDs: -1},
		{Ops: 10, InvalidRate: 1.5},
		{Ops: 10, InvalidRate: -0.1},
		{Ops: 10, Workers: -1},
		{DIDs: 3, Shape: corpus.ShapeLongChain},
		{Ops: 10, Shape: "wide"},
	} {
		if _, err := corpus.Generate(context.Background(), &bytes.Buffer{}, cfg); err == nil {
			t.Errorf("Generate(%+v) succeeded", cfg)
		}
	}
}

// errWriter fails after n bytes.
type errWriter struct {
	mu sync.Mutex
	n  int
}

func (w *errWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n < len(p) {
		return 0, errors.New("disk full")
	}
	w.n -= len(p)
	return len(p), nil
}

func TestWriteErrorIsReturned(t *testing.T) {
	_, err := corpus.Generate(context.Background(), &errWriter{n: 1 << 10}, corpus.Config{Ops: 300, Seed: 1})
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("got %v, want the writer's error", err)
	}
}

func TestCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := corpus.Generate(ctx, &bytes.Buffer{}, corpus.Config{Ops: 100, Seed: 1}); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

func BenchmarkGenerate(b *testing.B) {
	const n = 5000
	var lines int
	for b.Loop() {
		var buf bytes.Buffer
		st, err := corpus.Generate(context.Background(), &buf, corpus.Config{Ops: n, Seed: 1})
		if err != nil {
			b.Fatal(err)
		}
		lines += st.Lines
	}
	b.ReportMetric(float64(lines)/b.Elapsed().Seconds(), "ops/s")
}
