package api

import (
	"bytes"
	"context"
	"crypto/ed25519"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

//go:embed openapi.yaml
var openapiYAML []byte

const (
	// maxBodyBytes caps a POST body: express.json's "100kb".
	maxBodyBytes = 100 * 1024
	// maxExportCount is the default and the largest page of /export.
	maxExportCount = 1000
	// healthTimeout bounds the database checks of /_health.
	healthTimeout = 5 * time.Second

	contentJSON     = "application/json; charset=utf-8"
	contentDIDDoc   = "application/did+ld+json; charset=utf-8"
	contentJSONL    = "application/jsonlines"
	contentText     = "text/plain; charset=utf-8"
	contentOpenAPI  = "application/yaml"
	routeUnmatched  = "unmatched"
	routeStream     = "/export/stream"
	retryOverloaded = time.Second
	retryClosed     = 5 * time.Second
	retryStorage    = 5 * time.Second
)

// Config configures a Server. Log is required; every other field has a
// usable zero value.
type Config struct {
	// Log is the operation log: POST /:did submits through it, and every
	// read goes to its Store.
	Log *oplog.Log
	// Logger receives the access log (at Debug), internal errors (at Error,
	// with the details clients are not shown) and recovered panics. Nil
	// discards everything.
	Logger *slog.Logger
	// Registry receives the server's Prometheus metrics. Nil: the metrics
	// are kept but not registered anywhere. The global registry is never
	// used.
	Registry prometheus.Registerer
	// OpMetrics, if set, counts the submissions this server turns away
	// before they reach the log (bad JSON, submission limits), beside the
	// log's own counts. Usually the *oplog.Metrics given to the Log.
	OpMetrics *oplog.Metrics
	// Version is reported by GET /_health.
	Version string
	// IPRate is the sustained number of requests per second allowed from one
	// client IP address (an IPv6 client is keyed by its /64). 0 turns
	// per-client limiting off. Over the limit a request gets 429 with
	// Retry-After. GET /_health and CORS preflights are never limited.
	IPRate float64
	// IPBurst is how many requests one client may make at once before
	// IPRate applies. 0 means max(1, ceil(IPRate)).
	IPBurst int
	// TrustProxy makes the per-client limit key on the last address of
	// X-Forwarded-For instead of the connection's remote address. Set it only
	// when every request comes through a reverse proxy that appends the
	// client's address to that header; otherwise clients choose their own
	// key.
	TrustProxy bool
	// Watch serves GET /_watch (a Watcher: the server-sent events of the
	// new ops of chosen DIDs). Nil: the route answers 404.
	Watch http.Handler
	// WatchKey, if set, is the Ed25519 public key that signs webhook
	// deliveries, published at GET /_watch/key (else 404).
	WatchKey ed25519.PublicKey
	// Stream serves GET /export/stream (the WebSocket event stream). Nil: the
	// route answers 501.
	Stream http.Handler
	// Now is the clock of the per-client limiter (default time.Now).
	Now func() time.Time
	// ReadOnly makes POST /:did answer 405 with a JSON message (a mirror
	// that does not forward writes), unless Forward is set.
	ReadOnly bool
	// Forward, if set, handles POST /:did instead of the log (a mirror
	// that forwards writes to its upstream).
	Forward http.Handler
	// Health, if set, adds its fields to GET /_health's object.
	Health func() map[string]any
	// Extra, if set, serves GET /_mirror/divergences (else 404).
	Extra http.Handler
	// Bundles, if set, serves GET /bundles/<file> (package bundle's
	// Handler, given the path after /bundles); else 404.
	Bundles http.Handler
	// TLog, if set, is the directory's transparency log: it serves GET
	// /tlog/… and the inclusion proofs of GET /:did/log/audit?proof=true,
	// and adds its witnesses' state to GET /_health.
	TLog TLog
	// UI, if set, serves the web pages for people (package web): GET /,
	// GET /ui and GET /ui/…. Nil: / answers 404 as before. No API route
	// ever answers HTML: GET /:did stays the JSON document whatever the
	// Accept header says.
	UI http.Handler
	// ReadCacheBytes bounds the memory of the cache of rendered answers of
	// the /:did read routes (DefaultReadCacheBytes is plc serve's default).
	// 0 or less: no cache, every read goes to the store. The cache is exact
	// whoever appends (see readCache): each request that uses it costs one
	// LatestSeq query shared with the requests waiting beside it. Its
	// fills assume the Store's reads, after LatestSeq returned N, see at
	// least N.
	ReadCacheBytes int64
}

// TLog is what the API needs of the transparency log (plc/tlog's *TLog).
type TLog interface {
	http.Handler
	// InclusionProofs returns the latest checkpoint and the inclusion
	// proofs against it of the ops with seqs (none for ops newer than it).
	// With witnesses, it waits (bounded) for a checkpoint that carries the
	// witness quorum's cosignatures.
	InclusionProofs(ctx context.Context, seqs []int64) (oplog.Checkpoint, map[int64][]tlog.Hash, error)
	// SetWitnessHeaders sets the headers that say whether the checkpoint
	// note carries the witness quorum (nothing without witnesses).
	SetWitnessHeaders(h http.Header, note []byte)
	// Health returns fields for GET /_health (the witnesses' state), or
	// nil.
	Health() map[string]any
}

// Server is the directory's HTTP API. It implements http.Handler; the
// caller owns the http.Server (and its timeouts).
type Server struct {
	engine    *gin.Engine
	log       *oplog.Log
	store     oplog.Store
	logger    *slog.Logger
	version   string
	stream    http.Handler
	opMetrics *oplog.Metrics
	metrics   *httpMetrics
	limiter   *ipLimiter // nil: no per-client limit
	proxy     bool
	readOnly  bool
	forward   http.Handler
	health2   func() map[string]any
	tlog      TLog
	cache     *readCache   // nil: no cache
	heads     *headBatcher // nil: heads are read one at a time
	bulk      *bulkMetrics
}

// Handlers, one a route (the routes are in router.go).

// didParam returns the :did path parameter (unescaped: both
// "did:plc:…" and "did%3Aplc%3A…" arrive here the same).
func didParam(c *gin.Context) string { return c.Param("did") }

func (s *Server) health(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), healthTimeout)
	defer cancel()
	b := append([]byte(`{"version":`), validate.AppendJSONString(nil, s.version)...)
	var seq int64
	err := s.store.Ping(ctx)
	if err == nil {
		seq, err = s.store.LatestSeq(ctx)
	}
	if err != nil {
		s.logger.LogAttrs(ctx, slog.LevelError, "health check failed", slog.String("error", err.Error()))
		c.Data(http.StatusServiceUnavailable, contentJSON, append(b, `,"error":"Service Unavailable"}`...))
		return
	}
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, seq, 10)
	var extra map[string]any
	if s.tlog != nil {
		extra = s.tlog.Health()
	}
	if s.health2 != nil {
		more := s.health2()
		if extra == nil {
			extra = more
		} else {
			maps.Copy(extra, more)
		}
	}
	if extra != nil {
		keys := make([]string, 0, len(extra))
		for k := range extra {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			v, err := json.Marshal(extra[k])
			if err != nil {
				continue
			}
			b = append(b, ',')
			b = validate.AppendJSONString(b, k)
			b = append(b, ':')
			b = append(b, v...)
		}
	}
	c.Data(http.StatusOK, contentJSON, append(b, '}'))
}

func (s *Server) openapi(c *gin.Context) {
	c.Data(http.StatusOK, contentOpenAPI, openapiYAML)
}

func (s *Server) exportStream(c *gin.Context) {
	if s.stream == nil {
		writeMessage(c, http.StatusNotImplemented, "The event stream is not enabled on this server")
		return
	}
	if status, msg := badUpgrade(c.Request); status != 0 {
		if status == http.StatusBadRequest {
			c.Header("Sec-WebSocket-Version", "13")
		}
		writeMessage(c, status, msg)
		return
	}
	s.stream.ServeHTTP(c.Writer, c.Request)
}

// POST /:did
func (s *Server) submit(c *gin.Context) error {
	did := didParam(c)
	if staticPaths[c.Request.URL.EscapedPath()] {
		c.Header("Allow", http.MethodGet)
		return &httpError{http.StatusMethodNotAllowed, "Method Not Allowed"}
	}
	if !validate.ValidDID(did) {
		return &httpError{http.StatusBadRequest, "Invalid DID: " + did}
	}
	if s.readOnly && s.forward == nil {
		c.Header("Allow", http.MethodGet)
		return &httpError{http.StatusMethodNotAllowed, "This directory is a read-only mirror: submit operations to its upstream"}
	}
	// Read whole (bodyLimit caps it) before anything else, forwarding
	// included: the upstream is sent only a body within the limit.
	body, err := io.ReadAll(c.Request.Body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			c.Header("Connection", "close")
			return err
		}
		return &httpError{http.StatusBadRequest, "Could not read the request body"}
	}
	if s.forward != nil {
		r := c.Request
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		r.TransferEncoding = nil
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		r.Header.Del("Expect") // the body is here: nothing to wait for upstream
		s.forward.ServeHTTP(c.Writer, r)
		return nil
	}
	op, err := validate.ParseJSON(body)
	if err == nil {
		err = validate.CheckSubmission(op)
	}
	if err != nil {
		s.opMetrics.Rejected(err)
		return err
	}
	e, err := s.log.Submit(c.Request.Context(), did, op)
	if err != nil {
		return err
	}
	s.logger.LogAttrs(c.Request.Context(), slog.LevelDebug, "op accepted",
		slog.String("did", did), slog.Int64("seq", e.Seq), slog.String("cid", e.CID))
	c.Data(http.StatusOK, contentText, []byte("OK"))
	return nil
}

// GET /export
func (s *Server) export(c *gin.Context) error {
	c.Header("Cache-Control", cacheControlNone)
	count := maxExportCount
	if p := queryParam(c, "count"); p != "" {
		n, ok := jsParseInt(p)
		if !ok || n < 1 {
			return &httpError{http.StatusBadRequest, "Invalid count parameter"}
		}
		count = int(min(n, maxExportCount))
	}
	ctx := c.Request.Context()
	after := queryParam(c, "after")
	var (
		entries []oplog.Entry
		line    func([]byte, *oplog.Entry) ([]byte, error)
		err     error
	)
	seqMode := after != "" && allDigits(after)
	if seqMode {
		seq, perr := strconv.ParseInt(after, 10, 64)
		if perr != nil {
			seq = math.MaxInt64 // out of range: past every seq
		}
		entries, err = s.store.Export(ctx, seq, count)
		line = appendSequencedEntry
	} else {
		t := exportBeginning
		if after != "" {
			var ok bool
			if t, ok = parseJSDate(after); !ok {
				return &httpError{http.StatusBadRequest, "Invalid after parameter"}
			}
			if t.Before(exportBeginning) {
				t = exportBeginning
			}
		}
		entries, err = s.store.ExportByTime(ctx, t, count)
		line = appendAuditEntry
	}
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	var b []byte
	for i := range entries {
		if i > 0 {
			b = append(b, '\n')
		}
		if b, err = line(b, &entries[i]); err != nil {
			return err
		}
	}
	if seqMode && len(entries) == count {
		// Seqs are dense and a seq-mode line states no nullification: a
		// full page of them never changes.
		c.Header("Cache-Control", cacheControlImmutable)
	}
	c.Data(http.StatusOK, contentJSONL, b)
	return nil
}
