package oplog_test

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/plcdir/plc/internal/testclock"
	"github.com/plcdir/plc/oplog"
)

// partReader is an oplog.PartReader over parts the test hands it one by
// one: Read waits for the next part, Ready says whether one is there.
type partReader struct {
	ctx   context.Context
	parts chan string // closed: the input ends
	buf   string
	ended bool
}

func (r *partReader) Read(p []byte) (int, error) {
	for r.buf == "" {
		if r.ended {
			return 0, io.EOF
		}
		select {
		case s, ok := <-r.parts:
			r.buf, r.ended = s, !ok
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *partReader) Ready() bool {
	if r.buf != "" || r.ended {
		return true
	}
	select {
	case s, ok := <-r.parts:
		r.buf, r.ended = s, !ok
		return true
	default:
		return false
	}
}

// testImportParts checks that Import commits what has arrived of a
// PartReader's input instead of waiting for a full batch.
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
		r := &partReader{ctx: ctx, parts: make(chan string, len(parts))}
		r.parts <- parts[0]
		// The next part is handed over only once the batch of the one
		// before it has committed: an Import that waits for a whole batch
		// (1000 lines) would wait forever (here, until ctx ends).
		var imported []int64
		next := 1
		st, err := oplog.Import(ctx, newLog(t, s), r, oplog.ImportOptions{BatchSize: 1000,
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
			t.Fatalf("Import: %+v, %v; want %d ops in 3 batches", st, err, len(h.ops))
		}
		if want := []int64{2, 5, 7}; len(imported) != 3 || imported[0] != want[0] || imported[1] != want[1] || imported[2] != want[2] {
			t.Fatalf("imported after each batch: %v, want %v", imported, want)
		}
		checkSameLog(t, s, h.want(t, migrated))
	})

	t.Run("ImportDoesNotCutAtPartsThatHaveArrived", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		h := newHistory(t, k)
		lines := strings.SplitAfter(h.export(t), "\n")
		s, _ := migrated(t)
		r := &partReader{ctx: ctx, parts: make(chan string, len(lines))}
		for _, l := range lines {
			r.parts <- l
		}
		close(r.parts)
		st, err := oplog.Import(ctx, newLog(t, s), r, oplog.ImportOptions{BatchSize: 4})
		if err != nil || st.Imported != int64(len(h.ops)) || st.Batches != 2 {
			t.Fatalf("Import: %+v, %v; want %d ops in 2 batches", st, err, len(h.ops))
		}
		checkSameLog(t, s, h.want(t, migrated))
	})
}
