package mirror

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/url"
	"strconv"
	"time"

	"github.com/plcdir/plc/validate"
)

// seqReader is the upstream's seq-mode export after a seq, as one stream
// of lines for oplog.Import: it asks for the next page when the last one
// has been read, and ends (io.EOF) after a short page. A page that cannot
// be used is an error: nothing of it is read, and Import stops after
// committing what came before.
type seqReader struct {
	ctx   context.Context
	m     *Mirror
	after int64
	count int
	buf   []byte
	done  bool
}

func (r *seqReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.done {
			return 0, io.EOF
		}
		page, err := r.m.up.seqPage(r.ctx, r.after, r.count)
		if err != nil {
			return 0, err
		}
		lines := page.lines
		if len(lines) > 0 && page.lastSeq <= r.after {
			return 0, badResponse(joinLines(lines), "GET /export?after=%d: the page ends at seq %d", r.after, page.lastSeq)
		}
		// Lines at or before after were asked not to be sent: the upstream
		// serves them again, so its order is not what it was.
		kept := lines[:0]
		for _, l := range lines {
			var pl pageLine
			if json.Unmarshal(l, &pl) == nil && pl.Seq != nil && *pl.Seq <= r.after {
				r.m.record(r.ctx, Divergence{Kind: KindReordered, Evidence: l,
					Detail: "the upstream served seq " + strconv.FormatInt(*pl.Seq, 10) + " again after seq " + strconv.FormatInt(r.after, 10)})
				continue
			}
			kept = append(kept, l)
		}
		r.m.sawUpstreamSeq(page.lastSeq)
		r.done = len(lines) < r.count
		if len(lines) > 0 {
			r.after = page.lastSeq
		}
		r.buf = joinLines(kept)
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func joinLines(lines [][]byte) []byte {
	var b bytes.Buffer
	for _, l := range lines {
		b.Write(l)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// legacyReader is the upstream's legacy export (paged by createdAt, in
// (createdAt, cid) order) after a time, as one stream of lines. Pages
// overlap by the last millisecond: asking for ops after after-1ms and
// skipping the ones already taken at after (boundary) neither skips nor
// repeats an op when a page ends inside a millisecond.
type legacyReader struct {
	ctx      context.Context
	m        *Mirror
	after    time.Time       // zero: from the start
	boundary map[string]bool // CIDs taken at after
	count    int
	buf      []byte
	done     bool
}

func (r *legacyReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.done {
			return 0, io.EOF
		}
		q := url.Values{"count": {strconv.Itoa(r.count)}}
		if !r.after.IsZero() {
			q.Set("after", string(validate.AppendTimestamp(nil, r.after.Add(-time.Millisecond))))
		}
		body, err := r.m.up.get(r.ctx, "/export", q)
		if err != nil {
			return 0, err
		}
		lines := splitLines(body)
		var (
			kept     [][]byte
			after    = r.after
			boundary = r.boundary
		)
		for i, l := range lines {
			var pl pageLine
			if err := json.Unmarshal(l, &pl); err != nil {
				if i == len(lines)-1 {
					// The last line does not parse: a cut-off body.
					return 0, badResponse(body, "GET /export: the last line is not JSON (cut off?)")
				}
				kept = append(kept, l) // Import rejects it
				continue
			}
			t, err := validate.ParseTimestamp(pl.CreatedAt)
			if err != nil {
				kept = append(kept, l)
				continue
			}
			switch {
			case t.Before(after):
				r.m.record(r.ctx, Divergence{Kind: KindReordered, CID: pl.CID, Evidence: l,
					Detail: "the legacy export went back in time to " + pl.CreatedAt})
				continue
			case t.Equal(after) && boundary[pl.CID]:
				continue // taken with the previous page
			case t.After(after):
				after, boundary = t, map[string]bool{}
			}
			boundary[pl.CID] = true
			kept = append(kept, l)
		}
		switch {
		case len(lines) < r.count:
			r.done = true
		case len(kept) == 0:
			// A whole page inside one millisecond, all taken: the rest of
			// that millisecond cannot be asked for.
			r.m.record(r.ctx, Divergence{Kind: KindBadResponse,
				Detail: "at least " + strconv.Itoa(r.count) + " ops at " + string(validate.AppendTimestamp(nil, after)) + ": the rest of that millisecond is skipped"})
			after, boundary = after.Add(time.Millisecond), map[string]bool{}
		}
		r.after, r.boundary = after, boundary
		r.buf = joinLines(kept)
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}
