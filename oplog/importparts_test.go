package oplog_test

import (
	"context"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/internal/testclock"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/storetest"
)

// partSource is an oplog.LineSource over parts the test hands it one by
// one: Next waits for the next part, Ready says whether one is there.
type partSource struct {
	parts chan string // closed: the input ends
	lines []string    // what is left of the part received
	ended bool
	n     int64
}

func (r *partSource) Next(ctx context.Context) (oplog.Line, error) {
	for len(r.lines) == 0 {
		if r.ended {
			return oplog.Line{}, io.EOF
		}
		select {
		case p, ok := <-r.parts:
			r.take(p, ok)
		case <-ctx.Done():
			return oplog.Line{}, ctx.Err()
		}
	}
	l := r.lines[0]
	r.lines = r.lines[1:]
	r.n++
	return oplog.Line{N: r.n, Raw: []byte(strings.TrimSuffix(l, "\n"))}, nil
}

func (r *partSource) take(p string, ok bool) {
	r.ended = !ok
	r.lines = slices.Collect(strings.Lines(p))
}

func (r *partSource) Ready() bool {
	if len(r.lines) > 0 || r.ended {
		return true
	}
	select {
	case p, ok := <-r.parts:
		r.take(p, ok)
		return true
	default:
		return false
	}
}

// testImportParts checks that Replay commits what has arrived of a
// source's lines instead of waiting for a full batch.
func testImportParts(t *testing.T, migrated func(t *testing.T) (oplog.Store, string)) {
	k := keys(t, 3)
	newLog := func(t *testing.T, s oplog.Store) *oplog.Log {
		l := oplog.NewLog(s, oplog.Options{Now: testclock.New(at(time.Hour)).Now})
		t.Cleanup(l.Close)
		return l
	}
	t.Run("ImportCommitsEachPartBeforeTheNextArrives", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		h := newHistory(t, k)
		lines := strings.SplitAfter(h.export(t), "\n")
		parts := []string{strings.Join(lines[:2], ""), strings.Join(lines[2:5], ""), strings.Join(lines[5:], "")}
		s, _ := migrated(t)
		r := &partSource{parts: make(chan string, len(parts))}
		r.parts <- parts[0]
		// The next part is handed over only once the batch of the one
		// before it has committed: a Replay that waits for a whole batch
		// (1000 lines) would wait forever (here, until ctx ends).
		var imported []int64
		next := 1
		st, err := oplog.Replay(ctx, newLog(t, s), r, oplog.ImportOptions{Source: "parts", BatchSize: 1000,
			Progress: func(st oplog.ImportStats) {
				imported = append(imported, st.Imported)
				if next < len(parts) {
					r.parts <- parts[next]
					next++
					if next == len(parts) {
						close(r.parts)
					}
				}
			}})
		if err != nil || st.Imported != int64(len(h.ops)) || st.Batches != 3 {
			t.Fatalf("Replay: %+v, %v; want %d ops in 3 batches", st, err, len(h.ops))
		}
		if want := []int64{2, 5, 7}; len(imported) != 3 || imported[0] != want[0] || imported[1] != want[1] || imported[2] != want[2] {
			t.Fatalf("imported after each batch: %v, want %v", imported, want)
		}
		checkSameLog(t, s, h.want(t, migrated))
	})

	// A source that is never ready ends in a chunk of its own, with no
	// lines: that is not a batch, and Progress is not called for it (a
	// mirror that fetches the next page from Progress was told twice
	// about its last batch, as the race in the test above could show).
	t.Run("ProgressIsCalledOncePerBatchAndNotForTheEnd", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		h := newHistory(t, k)
		s, _ := migrated(t)
		r := &partSource{parts: make(chan string, 1)}
		r.parts <- h.export(t)
		r.lines = nil
		var calls int64
		st, err := oplog.Replay(ctx, newLog(t, s), neverReady{r}, oplog.ImportOptions{Source: "never-ready", BatchSize: 1000,
			Progress: func(oplog.ImportStats) {
				calls++
				if calls == 1 {
					close(r.parts) // the input ends after what has arrived
				}
			}})
		if err != nil || st.Imported != int64(len(h.ops)) {
			t.Fatalf("Replay: %+v, %v; want %d ops", st, err, len(h.ops))
		}
		if calls != st.Batches {
			t.Fatalf("Progress called %d times for %d batches", calls, st.Batches)
		}
	})

	t.Run("ImportDoesNotCutAtPartsThatHaveArrived", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		h := newHistory(t, k)
		lines := strings.SplitAfter(h.export(t), "\n")
		s, _ := migrated(t)
		r := &partSource{parts: make(chan string, len(lines))}
		for _, l := range lines {
			r.parts <- l
		}
		close(r.parts)
		st, err := oplog.Replay(ctx, newLog(t, s), r, oplog.ImportOptions{Source: "parts", BatchSize: 4})
		if err != nil || st.Imported != int64(len(h.ops)) || st.Batches != 2 {
			t.Fatalf("Replay: %+v, %v; want %d ops in 2 batches", st, err, len(h.ops))
		}
		checkSameLog(t, s, h.want(t, migrated))
	})
}

// neverReady is a source that never says a line is ready without waiting:
// each line is a batch of its own, and the input's end comes apart.
type neverReady struct{ *partSource }

func (neverReady) Ready() bool { return false }

// sliceSource is an oplog.LineSource over lines at hand.
type sliceSource struct{ lines []oplog.Line }

func (s *sliceSource) Ready() bool { return true }

func (s *sliceSource) Next(context.Context) (oplog.Line, error) {
	if len(s.lines) == 0 {
		return oplog.Line{}, io.EOF
	}
	l := s.lines[0]
	s.lines = s.lines[1:]
	return l, nil
}

// TestReplayTakesTheSourcesParse: a line handed over with its parse
// (Line.Parsed) is not read again: what is stored is the parse, even where
// the raw bytes beside it say otherwise.
func TestReplayTakesTheSourcesParse(t *testing.T) {
	ctx := context.Background()
	corpus := storetest.Corpus(t, 5, 20)[:20]
	src := &sliceSource{}
	for i, raw := range corpus {
		x, _, err := plc.ParseExportLine(raw)
		if err != nil {
			t.Fatal(err)
		}
		if i == 3 {
			raw = []byte(`{"not":"the line"}`)
		}
		src.lines = append(src.lines, oplog.Line{Raw: raw, Parsed: &x})
	}
	s, _ := storetest.SQLite(t)
	l := oplog.NewLog(s, oplog.Options{NoRateLimit: true})
	defer l.Close()
	st, err := oplog.ImportLines(ctx, l, src, oplog.ImportOptions{Source: "test"})
	if err != nil || st.Imported != 20 || st.Rejected != 0 {
		t.Fatalf("ImportLines: %+v, %v; want 20 imported", st, err)
	}
	es, err := s.Export(ctx, 0, 100)
	if err != nil || len(es) != 20 {
		t.Fatalf("Export: %d entries, %v", len(es), err)
	}
	want, _, _ := plc.ParseExportLine(corpus[3])
	if es[3].CID != want.CID || es[3].DID != want.DID {
		t.Fatalf("seq 4 is %s %s, want the parse handed over (%s %s)", es[3].DID, es[3].CID, want.DID, want.CID)
	}
}
