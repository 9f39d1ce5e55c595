package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// Bulk resolution: POST /dids.
//
// The body is {"dids": [...]}: 1 to maxBulkDIDs did:plc identifiers,
// duplicates allowed (each is answered where it stands). The parse is
// strict and streaming: any other field, a second "dids", an element that
// is not a string, a malformed DID, more than maxBulkDIDs DIDs or anything
// after the object is a 400 as soon as it is read, so nothing nested is
// ever descended into; the body cap (maxBodyBytes) bounds the rest.
//
// The answer is application/jsonlines, one line per requested DID in the
// request's order: {"did", "document"} with the document exactly as GET
// /:did renders it, or "document": null with "notFound": true or
// "tombstoned": true. The DIDs are resolved in batches of
// oplog.HeadsPerQuery: the cache of rendered answers first (one round for
// the whole request, so every line reflects at least every op committed
// before the request arrived), then one Store.Heads query for the rest,
// which fills the cache. Each batch is written and flushed before the next
// is read, so the memory a request holds is one batch's. The first batch
// is resolved before the status is sent, so a database that is down is a
// 503 with a message; a failure after that cuts the connection, so that a
// client never takes a short answer for a whole one.

// maxBulkDIDs is the most DIDs one POST /dids may ask for.
const maxBulkDIDs = 1000

// bulkBatch is how many DIDs a batch of POST /dids resolves: one query.
const bulkBatch = oplog.HeadsPerQuery

// Results of a DID in POST /dids (the values of the metric's label).
const (
	bulkDocument   = "document"
	bulkTombstoned = "tombstoned"
	bulkNotFound   = "not_found"
)

type bulkMetrics struct {
	dids *prometheus.CounterVec
}

func newBulkMetrics(reg prometheus.Registerer) *bulkMetrics {
	m := &bulkMetrics{
		dids: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plc_bulk_resolve_dids_total",
			Help: "DIDs answered by POST /dids, by result (document, tombstoned, not_found).",
		}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.dids)
	}
	return m
}

// POST /dids
func (s *Server) resolveMany(c *gin.Context) error {
	c.Header("Cache-Control", cacheControlNone)
	dids, err := parseDIDList(c.Request.Body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			c.Header("Connection", "close")
		}
		return err
	}
	ctx := c.Request.Context()
	view := s.cache.view(ctx)
	var (
		buf     []byte
		results = make([]answer, 0, bulkBatch)
		heads   = make([]oplog.Entry, 0, bulkBatch)
	)
	for start := 0; start < len(dids); start += bulkBatch {
		batch := dids[start:min(start+bulkBatch, len(dids))]
		results, heads, err = s.resolveBatch(c, view, batch, results[:0], heads[:0])
		if err != nil {
			if start == 0 {
				return err
			}
			s.logger.LogAttrs(ctx, slog.LevelWarn, "POST /dids cut off after a failed batch",
				slog.Int("answered", start), slog.Int("asked", len(dids)), slog.String("error", err.Error()))
			panic(http.ErrAbortHandler)
		}
		if start == 0 {
			c.Header("Content-Type", contentJSONL)
			c.Status(http.StatusOK)
		}
		buf = buf[:0]
		for i, did := range batch {
			var a *answer
			if results[i].found() {
				a = &results[i]
			}
			buf = s.appendBulkLine(buf, did, a, &heads[i])
		}
		if _, err := c.Writer.Write(buf); err != nil {
			return nil // the client is gone
		}
		c.Writer.Flush()
	}
	return nil
}

// resolveBatch resolves batch: results[i] is the document answer of
// batch[i], or the zero answer with heads[i] its head (a tombstone) or
// the zero Entry (not registered).
func (s *Server) resolveBatch(c *gin.Context, view cacheView, batch []string, results []answer, heads []oplog.Entry) ([]answer, []oplog.Entry, error) {
	var missing []string
	for _, did := range batch {
		a := view.lookup(routeDoc, did)
		results = append(results, a)
		heads = append(heads, oplog.Entry{})
		if !a.found() {
			missing = append(missing, did)
		}
	}
	if len(missing) == 0 {
		return results, heads, nil
	}
	found, err := s.store.Heads(c.Request.Context(), missing)
	if err != nil {
		return nil, nil, fmt.Errorf("read the heads of %d DIDs: %w", len(missing), err)
	}
	for i, did := range batch {
		if results[i].found() {
			continue
		}
		e, ok := found[did]
		if !ok {
			continue
		}
		op, err := e.ParsedOp()
		if err != nil {
			return nil, nil, err
		}
		if _, live := op.Data(); !live {
			heads[i] = e
			continue
		}
		a, err := headAnswer(routeDoc, did, &e)
		if err != nil {
			return nil, nil, err
		}
		results[i] = *a
		view.put(routeDoc, did, a)
	}
	return results, heads, nil
}

// appendBulkLine appends the line of did: its document a, else (a nil) a
// tombstone when head is one, else not found.
func (s *Server) appendBulkLine(b []byte, did string, a *answer, head *oplog.Entry) []byte {
	b = append(b, `{"did":`...)
	b = validate.AppendJSONString(b, did)
	b = append(b, `,"document":`...)
	switch {
	case a != nil:
		s.bulk.dids.WithLabelValues(bulkDocument).Inc()
		b = append(b, a.body...)
		b = append(b, '}')
	case head.Seq != 0:
		s.bulk.dids.WithLabelValues(bulkTombstoned).Inc()
		b = append(b, `null,"tombstoned":true}`...)
	default:
		s.bulk.dids.WithLabelValues(bulkNotFound).Inc()
		b = append(b, `null,"notFound":true}`...)
	}
	return append(b, '\n')
}

// bodyShape is the body POST /dids expects, for the messages.
const bodyShape = `{"dids": ["did:plc:…", …]}`

// parseDIDList reads the body of POST /dids (see the top of this file).
// It returns a *http.MaxBytesError when the body is over the cap, and an
// *httpError (400) for anything else wrong.
func parseDIDList(body io.Reader) ([]string, error) {
	bad := func(format string, args ...any) error {
		return &httpError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
	}
	dec := json.NewDecoder(body)
	token := func() (json.Token, error) {
		tok, err := dec.Token()
		if err == nil {
			return tok, nil
		}
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, err
		}
		if errors.Is(err, io.EOF) {
			return nil, bad("The body ends before the JSON object does: expected %s", bodyShape)
		}
		var syntaxErr *json.SyntaxError
		if errors.As(err, &syntaxErr) {
			return nil, bad("The body is not valid JSON (at byte %d): expected %s", syntaxErr.Offset, bodyShape)
		}
		return nil, bad("Could not read the request body")
	}
	tok, err := token()
	if err != nil {
		return nil, err
	}
	if tok != json.Delim('{') {
		return nil, bad("The body must be a JSON object: %s", bodyShape)
	}
	var dids []string
	seen := false
	for dec.More() {
		if tok, err = token(); err != nil {
			return nil, err
		}
		key, _ := tok.(string)
		if key != "dids" {
			return nil, bad("Unknown field %s: the body is %s", clip(key), bodyShape)
		}
		if seen {
			return nil, bad("The field dids is given twice")
		}
		seen = true
		if tok, err = token(); err != nil {
			return nil, err
		}
		if tok != json.Delim('[') {
			return nil, bad("dids must be an array of DIDs: %s", bodyShape)
		}
		dids = []string{}
		for dec.More() {
			if tok, err = token(); err != nil {
				return nil, err
			}
			i := len(dids)
			did, ok := tok.(string)
			if !ok {
				return nil, bad("dids[%d] is not a string", i)
			}
			if i == maxBulkDIDs {
				return nil, bad("Too many DIDs: at most %d per request", maxBulkDIDs)
			}
			if !validate.ValidDID(did) {
				return nil, bad("Invalid DID at dids[%d]: %s (only did:plc identifiers)", i, clip(did))
			}
			dids = append(dids, did)
		}
		if _, err = token(); err != nil { // ]
			return nil, err
		}
	}
	if _, err = token(); err != nil { // }
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, err
		}
		return nil, bad("Unexpected data after the JSON object")
	}
	if !seen {
		return nil, bad("Missing field dids: the body is %s", bodyShape)
	}
	if len(dids) == 0 {
		return nil, bad("dids is empty: list 1 to %d DIDs", maxBulkDIDs)
	}
	return dids, nil
}

// clip shortens a client's string quoted in a message.
func clip(s string) string {
	const max = 64
	if len(s) > max {
		return fmt.Sprintf("%q…", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
