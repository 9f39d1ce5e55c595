package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// The read routes of one DID (GET /:did, /:did/data, /:did/log,
// /:did/log/audit, /:did/log/last) and their HTTP caching.
//
// Every answer of these routes is a function of the DID's ops, and a DID's
// ops change only when an op of that DID is appended (a nullification is
// the appending of the op that nullifies: the nullified ops are always
// older). So the DID's latest op, its seq and CID, identifies the state
// every route renders: the ETag is the route's name, that seq and that
// CID. A 200 answer carries it and Cache-Control "public, max-age=5"
// ; a request whose If-None-Match matches it is answered 304
// with the same headers and no body. Errors (400, 404, 5xx) carry no ETag
// and "no-cache": a DID not registered now may be a moment later.

const (
	// cacheControlRead lets a shared cache (a CDN) or a client reuse an
	// answer of a /:did read route for 5 seconds without asking again: the
	// staleness an operator accepts for the load taken off the directory.
	cacheControlRead = "public, max-age=5"
	// cacheControlImmutable: a full seq-mode /export page never changes.
	cacheControlImmutable = "public, max-age=31536000, immutable"
	cacheControlNone      = "no-cache"
)

// readRoute is one of the read routes of a DID.
type readRoute uint8

const (
	routeDoc readRoute = iota
	routeData
	routeLog
	routeAudit
	routeLast
	numReadRoutes
)

// readRouteNames name the routes in ETags and metric labels.
var readRouteNames = [numReadRoutes]string{"doc", "data", "log", "audit", "last"}

// answer is a rendered 200 answer of a read route.
type answer struct {
	contentType string
	body        []byte
	// etag is the quoted entity tag.
	etag string
	// seq is the seq of the DID's latest op the answer was rendered from.
	seq int64
}

// found tells an answer from the zero answer (not cached): a rendered
// answer always has a body.
func (a answer) found() bool { return a.body != nil }

// etagOf returns the entity tag of route's answer for a DID whose latest
// op is last.
func etagOf(route readRoute, last *oplog.Entry) string {
	b := make([]byte, 0, 16+len(last.CID)+20)
	b = append(b, '"')
	b = append(b, readRouteNames[route]...)
	b = append(b, '-')
	b = strconv.AppendInt(b, last.Seq, 10)
	b = append(b, '-')
	b = append(b, last.CID...)
	b = append(b, '"')
	return string(b)
}

// serveRead answers a read route: from the cache of rendered answers when
// it holds the DID's current answer, else by render (filling the cache),
// with the ETag and Cache-Control of the route and 304 on a matching
// If-None-Match.
func (s *Server) serveRead(route readRoute) gin.HandlerFunc {
	return s.handle(func(c *gin.Context) error {
		h := c.Writer.Header()
		h.Set("Cache-Control", cacheControlNone)
		did := didParam(c)
		if err := readableDID(did); err != nil {
			return err
		}
		if route == routeAudit {
			switch p := c.Query("proof"); p {
			case "", "false":
			case "true":
				// Proofs follow the checkpoint, not the DID: no validator.
				return s.auditWithProof(c, did)
			default:
				return &httpError{http.StatusBadRequest, "proof must be true or false"}
			}
		}
		a, err := s.cache.get(c.Request.Context(), route, did, func() (*answer, error) {
			return s.render(c, route, did)
		})
		if err != nil {
			return err
		}
		h.Set("ETag", a.etag)
		h.Set("Cache-Control", cacheControlRead)
		if noneMatch(c.Request.Header.Values("If-None-Match"), a.etag) {
			c.Status(http.StatusNotModified)
			c.Writer.WriteHeaderNow()
			return nil
		}
		c.Data(http.StatusOK, a.contentType, a.body)
		return nil
	})
}

// render reads and renders route's answer for did.
func (s *Server) render(c *gin.Context, route readRoute, did string) (*answer, error) {
	switch route {
	case routeDoc, routeData, routeLast:
		e, err := s.head(c.Request.Context(), did)
		if errors.Is(err, oplog.ErrNotFound) {
			return nil, notRegistered(did)
		}
		if err != nil {
			return nil, fmt.Errorf("read head of %s: %w", did, err)
		}
		return headAnswer(route, did, &e)
	}
	ops, err := s.ops(c, did)
	if err != nil {
		return nil, err
	}
	last := &ops[len(ops)-1]
	a := &answer{contentType: contentJSON, etag: etagOf(route, last), seq: last.Seq}
	b := []byte{'['}
	n := 0
	for i := range ops {
		if route == routeLog && ops[i].Nullified {
			continue
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		if route == routeLog {
			b, err = appendOpJSON(b, &ops[i])
		} else {
			b, err = appendAuditEntry(b, &ops[i])
		}
		if err != nil {
			return nil, err
		}
	}
	a.body = append(b, ']')
	return a, nil
}

// head returns the head of did (Store.Head), gathered with other
// requests' when the store reads faster in batches (oplog.BatchedHeads).
func (s *Server) head(ctx context.Context, did string) (oplog.Entry, error) {
	if s.heads != nil {
		return s.heads.head(ctx, did)
	}
	return s.store.Head(ctx, did)
}

// headAnswer renders the answer of route (routeDoc, routeData or
// routeLast) for did from e, its head (Store.Head). The document and the
// data of a tombstoned DID are a 404.
func headAnswer(route readRoute, did string, e *oplog.Entry) (*answer, error) {
	head, err := e.ParsedOp()
	if err != nil {
		return nil, err
	}
	a := &answer{contentType: contentJSON, etag: etagOf(route, e), seq: e.Seq}
	if route == routeLast {
		a.body = head.AppendJSON(nil)
		return a, nil
	}
	data, ok := head.Data()
	if !ok {
		return nil, &httpError{http.StatusNotFound, "DID not available: " + did}
	}
	if route == routeDoc {
		a.contentType, a.body = contentDIDDoc, validate.AppendDocumentJSON(nil, did, data)
	} else {
		a.body = validate.AppendDataJSON(nil, did, data)
	}
	return a, nil
}

// ops returns every op of did, nullified ones included, in log order.
func (s *Server) ops(c *gin.Context, did string) ([]oplog.Entry, error) {
	ops, err := s.store.Ops(c.Request.Context(), did)
	if err != nil {
		return nil, fmt.Errorf("read ops of %s: %w", did, err)
	}
	if len(ops) == 0 {
		return nil, notRegistered(did)
	}
	return ops, nil
}

// auditWithProof answers GET /:did/log/audit?proof=true.
func (s *Server) auditWithProof(c *gin.Context, did string) error {
	if s.tlog == nil {
		return &httpError{http.StatusBadRequest, "this directory keeps no transparency log: proof=true is not available"}
	}
	ops, err := s.ops(c, did)
	if err != nil {
		return err
	}
	seqs := make([]int64, len(ops))
	for i := range ops {
		seqs[i] = ops[i].Seq
	}
	var (
		cp     oplog.Checkpoint
		proofs map[int64][]tlog.Hash
	)
	if cp, proofs, err = s.tlog.InclusionProofs(c.Request.Context(), seqs); err != nil {
		return fmt.Errorf("inclusion proofs: %w", err)
	}
	s.tlog.SetWitnessHeaders(c.Writer.Header(), cp.Note)
	b := []byte{'['}
	for i := range ops {
		if i > 0 {
			b = append(b, ',')
		}
		if b, err = appendAuditEntry(b, &ops[i]); err != nil {
			return err
		}
		b = appendProof(b[:len(b)-1], ops[i].Seq, &cp, proofs[ops[i].Seq])
	}
	c.Data(http.StatusOK, contentJSON, append(b, ']'))
	return nil
}

// noneMatch evaluates If-None-Match (RFC 9110, section 13.1.2) against
// etag, the current representation's strong entity tag: true when the
// field is "*" or lists a tag that weakly matches etag (the comparison
// If-None-Match uses: W/"x" matches "x"). A malformed list matches only as
// far as it could be read.
func noneMatch(fields []string, etag string) bool {
	for _, f := range fields {
		f = strings.TrimSpace(f)
		if f == "*" {
			return true
		}
		for len(f) > 0 {
			f = strings.TrimLeft(f, " \t,")
			if f == "" {
				break
			}
			f = strings.TrimPrefix(f, "W/")
			if len(f) < 2 || f[0] != '"' {
				break
			}
			end := strings.IndexByte(f[1:], '"')
			if end < 0 {
				break
			}
			if f[:end+2] == etag {
				return true
			}
			f = f[end+2:]
		}
	}
	return false
}
