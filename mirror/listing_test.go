package mirror_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/plcdir/plc/mirror"
	"github.com/plcdir/plc/oplog"
)

// storeRecords stores n records of m's source, each with evidence of size
// bytes, and returns their evidence.
func storeRecords(t *testing.T, m *mirror.Mirror, l *oplog.Log, n, size int) [][]byte {
	t.Helper()
	var out [][]byte
	var rs []oplog.Rejection
	for i := range n {
		ev := bytes.Repeat([]byte{'a' + byte(i%26)}, size)
		out = append(out, ev)
		rs = append(rs, oplog.Rejection{Source: m.Source(), Raw: ev, Reason: "bad_response: junk " + strconv.Itoa(i), CreatedAt: hostileNow})
	}
	err := l.Store().Append(context.Background(), m.Source(), nil, func(v oplog.View) (oplog.Batch, error) {
		return oplog.Batch{Cursor: v.Cursor, Rejections: rs}, nil
	})
	if err != nil {
		t.Fatalf("storing records: %v", err)
	}
	return out
}

// TestDivergencesListingIsBoundedByBytes: a mirror holding many large
// records answers GET /_mirror/divergences?limit=1000 with at most its
// byte bound (plus the one record an answer always holds), says there is
// more, and the cursor continues it: every record is listed once, in
// order, whatever the bound cut.
func TestDivergencesListingIsBoundedByBytes(t *testing.T) {
	const (
		bound = 64 << 10
		size  = 20 << 10
		n     = 40
	)
	l := newSQLiteLog(t)
	m := newMirror(t, "http://upstream.invalid", l, mirror.Config{DivergencesResponseBytes: bound})
	want := storeRecords(t, m, l, n, size)
	var (
		got   [][]byte
		after int64
	)
	for answers := 0; ; answers++ {
		if answers > n {
			t.Fatalf("%d answers for %d records", answers, n)
		}
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/_mirror/divergences?limit=1000&after="+strconv.FormatInt(after, 10), nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
		}
		if rec.Body.Len() > bound+size+1024 {
			t.Fatalf("an answer of %d bytes, over the bound of %d and one record", rec.Body.Len(), bound)
		}
		var page struct {
			Divergences []divergence `json:"divergences"`
			Cursor      int64        `json:"cursor"`
			More        bool         `json:"more"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil {
			t.Fatalf("answer %q: %v", clip(rec.Body.Bytes()), err)
		}
		for _, d := range page.Divergences {
			if d.ID <= after {
				t.Fatalf("record %d after %d", d.ID, after)
			}
			after = d.ID
			got = append(got, d.evidence(t))
		}
		if page.Cursor != after {
			t.Fatalf("cursor %d, want %d", page.Cursor, after)
		}
		if !page.More {
			break
		}
		if len(page.Divergences) == 0 {
			t.Fatal("an answer with more and no record")
		}
	}
	if len(got) != n {
		t.Fatalf("listed %d records, want %d", len(got), n)
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("record %d: evidence %q, want %q", i, clip(got[i]), clip(want[i]))
		}
	}
	// One record over the bound is still listed, alone.
	big := storeRecords(t, m, l, 2, 2*bound)
	var page struct {
		Divergences []divergence `json:"divergences"`
		More        bool         `json:"more"`
	}
	if code := getJSON(t, m.Handler(), "/_mirror/divergences?after="+strconv.FormatInt(after, 10), &page); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if len(page.Divergences) != 1 || !page.More || !bytes.Equal(page.Divergences[0].evidence(t), big[0]) {
		t.Fatalf("%d records (more %v), want the one over the bound, alone", len(page.Divergences), page.More)
	}
}

// blockingWriter is a ResponseWriter whose Write blocks until release is
// closed: a client that does not read.
type blockingWriter struct {
	h       http.Header
	writing chan struct{}
	release chan struct{}
}

func (w *blockingWriter) Header() http.Header { return w.h }
func (w *blockingWriter) WriteHeader(int)     {}
func (w *blockingWriter) Write(b []byte) (int, error) {
	w.writing <- struct{}{}
	<-w.release
	return len(b), nil
}

// TestDivergencesListingsAreLimitedAtOnce: clients that ask for listings
// and do not read them hold at most a few answers in memory; the next
// waits for a turn, then gets 503 with Retry-After (the wait runs on the
// test's timer).
func TestDivergencesListingsAreLimitedAtOnce(t *testing.T) {
	ctx := ctxFor(t)
	ts := newTimers()
	l := newSQLiteLog(t)
	m := newMirror(t, "http://upstream.invalid", l, mirror.Config{After: ts.After})
	storeRecords(t, m, l, 3, 100)
	release := make(chan struct{})
	writing := make(chan struct{})
	done := make(chan struct{})
	const held = 4
	for range held {
		go func() {
			w := &blockingWriter{h: http.Header{}, writing: writing, release: release}
			m.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/_mirror/divergences", nil))
			done <- struct{}{}
		}()
	}
	for range held {
		select {
		case <-writing:
		case <-ctx.Done():
			t.Fatal("the listings were not written")
		}
	}
	answered := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/_mirror/divergences", nil))
		answered <- rec
	}()
	ts.fire(ctx, t, 5*time.Second)
	rec := <-answered
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" || !strings.Contains(rec.Body.String(), `"message"`) {
		t.Fatalf("a listing past the limit: %d %v %q, want 503 with Retry-After and a message", rec.Code, rec.Header(), rec.Body.String())
	}
	close(release)
	for range held {
		<-done
	}
	// Turns are free again.
	var page struct {
		Divergences []divergence `json:"divergences"`
	}
	if code := getJSON(t, m.Handler(), "/_mirror/divergences", &page); code != http.StatusOK || len(page.Divergences) != 3 {
		t.Fatalf("after the held listings: %d, %d records", code, len(page.Divergences))
	}
}
