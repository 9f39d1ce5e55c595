package api

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

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
	// TLog, if set, is the directory's transparency log: it serves GET
	// /tlog/… and the inclusion proofs of GET /:did/log/audit?proof=true.
	TLog TLog
	// UI, if set, serves the web pages for people (package web): GET /,
	// GET /ui and GET /ui/…. Nil: / answers 404 as before. No API route
	// ever answers HTML: GET /:did stays the JSON document whatever the
	// Accept header says.
	UI http.Handler
}

// TLog is what the API needs of the transparency log (audit.TLog).
type TLog interface {
	http.Handler
	// InclusionProofs returns the latest checkpoint and the inclusion
	// proofs against it of the ops with seqs (none for ops newer than it).
	InclusionProofs(ctx context.Context, seqs []int64) (oplog.Checkpoint, map[int64][]tlog.Hash, error)
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
}

// New builds the server. It panics if cfg.Log is nil.
func New(cfg Config) *Server {
	if cfg.Log == nil {
		panic("api.New: Config.Log is nil")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	s := &Server{
		log:       cfg.Log,
		store:     cfg.Log.Store(),
		logger:    logger,
		version:   cfg.Version,
		stream:    cfg.Stream,
		opMetrics: cfg.OpMetrics,
		metrics:   newHTTPMetrics(cfg.Registry),
		proxy:     cfg.TrustProxy,
		readOnly:  cfg.ReadOnly,
		forward:   cfg.Forward,
		health2:   cfg.Health,
		tlog:      cfg.TLog,
	}
	if cfg.IPRate > 0 {
		s.limiter = newIPLimiter(cfg.IPRate, cfg.IPBurst, now)
	}

	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	e.HandleMethodNotAllowed = true
	e.RedirectTrailingSlash = false // ServeHTTP strips one trailing slash, as express does
	e.RedirectFixedPath = false
	// Match on the raw path, so that an encoded "/" inside a DID stays in
	// its segment, as in express; parameters are then unescaped.
	e.UseRawPath = true
	e.UnescapePathValues = true
	e.Use(s.observe, cors, s.recover, bodyLimit, s.limit)
	e.NoRoute(func(c *gin.Context) { writeMessage(c, http.StatusNotFound, "Not Found") })
	e.NoMethod(func(c *gin.Context) {
		if staticPaths[c.Request.URL.EscapedPath()] {
			// Not "GET, POST": POST /:did would take the path as a DID,
			// but the concrete path has GET only.
			c.Header("Allow", http.MethodGet)
		}
		writeMessage(c, http.StatusMethodNotAllowed, "Method Not Allowed")
	})

	e.GET("/_health", s.health)
	e.GET("/openapi.yaml", s.openapi)
	e.GET("/export", s.handle(s.export))
	e.GET(routeStream, s.exportStream)
	e.GET("/:did", s.handle(s.document))
	e.GET("/:did/data", s.handle(s.data))
	e.GET("/:did/log", s.handle(s.opLog))
	e.GET("/:did/log/audit", s.handle(s.auditLog))
	e.GET("/:did/log/last", s.handle(s.lastOp))
	e.POST("/:did", s.handle(s.submit))
	extra := cfg.Extra
	e.GET("/_mirror/divergences", func(c *gin.Context) {
		if extra == nil {
			writeMessage(c, http.StatusNotFound, "Not Found: this directory is not a mirror")
			return
		}
		extra.ServeHTTP(c.Writer, c.Request)
	})
	if ui := cfg.UI; ui != nil {
		serveUI := func(c *gin.Context) { ui.ServeHTTP(c.Writer, c.Request) }
		e.GET("/", serveUI)
		e.GET("/ui", serveUI)
		e.GET("/ui/*path", serveUI)
	}
	e.GET("/tlog/*path", func(c *gin.Context) {
		if s.tlog == nil {
			writeMessage(c, http.StatusNotFound, "Not Found: this directory keeps no transparency log")
			return
		}
		s.tlog.ServeHTTP(c.Writer, c.Request)
	})
	s.engine = e
	return s
}

// staticPaths are the routes without a parameter. A concrete path wins
// over /:did (as OpenAPI path matching has it), so only GET is allowed on
// them.
var staticPaths = map[string]bool{"/_health": true, "/openapi.yaml": true, "/export": true, routeStream: true, "/_mirror/divergences": true}

// ServeHTTP answers HEAD as GET (net/http drops the body) and ignores one
// trailing slash, as the reference's express router does.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	head := r.Method == http.MethodHead
	// A literal trailing slash, not an encoded one (%2F is part of a DID).
	esc := r.URL.EscapedPath()
	slash := len(esc) > 1 && strings.HasSuffix(esc, "/")
	if head || slash {
		r = r.WithContext(r.Context())
		if head {
			r.Method = http.MethodGet
		}
		if slash {
			u := *r.URL
			u.Path = strings.TrimSuffix(u.Path, "/")
			u.RawPath = strings.TrimSuffix(u.RawPath, "/")
			r.URL = &u
		}
	}
	s.engine.ServeHTTP(w, r)
}

// Errors and responses.

// httpError is a response chosen by a handler: its status and the message
// the client is shown.
type httpError struct {
	status  int
	message string
}

func (e *httpError) Error() string { return fmt.Sprintf("%d %s", e.status, e.message) }

func notRegistered(did string) error {
	return &httpError{http.StatusNotFound, "DID not registered: " + did}
}

// nonPLCMessage is the reference's answer to a read of anything that is not
// a did:plc.
const nonPLCMessage = "Resolution of non-PLC DIDs not supported"

// readableDID decides, before any query, whether the read routes look a DID
// up: anything not of the did:plc method (another method, or not a DID at
// all) is a 400, as in the reference; a did:plc that is malformed can never
// be registered, so it is a 404 without a query.
func readableDID(did string) error {
	if !strings.HasPrefix(did, "did:plc:") {
		return &httpError{http.StatusBadRequest, nonPLCMessage}
	}
	if !validate.ValidDID(did) {
		return notRegistered(did)
	}
	return nil
}

// response maps an error to what the client is told: the one place where
// errors become statuses. internal reports a failure of ours, whose details
// are logged and not sent.
func response(err error) (status int, message string, retryAfter time.Duration, internal bool) {
	var (
		he       *httpError
		tooLarge *http.MaxBytesError
		conflict *oplog.ConflictError
		verdict  *validate.Error
		behind   *oplog.ClockBehindError
	)
	switch {
	case errors.As(err, &he):
		return he.status, he.message, 0, false
	case errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge, "request entity too large", 0, false
	case errors.As(err, &conflict):
		// Before *validate.Error: a ConflictError wraps one.
		return http.StatusConflict, conflict.Error(), 0, false
	case errors.As(err, &verdict):
		return http.StatusBadRequest, verdict.Message, 0, false
	case errors.Is(err, oplog.ErrStorage):
		// Logged by the log at a bounded rate, not once per request.
		return http.StatusServiceUnavailable, "Database unavailable, retry later", retryStorage, false
	case errors.As(err, &behind):
		return http.StatusServiceUnavailable, "Server clock is behind the log, retry later", behind.RetryAfter(), false
	case errors.Is(err, oplog.ErrOverloaded):
		return http.StatusServiceUnavailable, "Too many operations queued, retry later", retryOverloaded, false
	case errors.Is(err, oplog.ErrClosed):
		return http.StatusServiceUnavailable, "Service Unavailable", retryClosed, false
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable, "Service Unavailable", retryOverloaded, false
	case oplog.Unavailable(err):
		// A read while the database is down (which /_health reports).
		return http.StatusServiceUnavailable, "Database unavailable, retry later", retryStorage, false
	}
	return http.StatusInternalServerError, "Internal Server Error", 0, true
}

// fail answers c with err's mapping, logging the details of internal
// errors.
func (s *Server) fail(c *gin.Context, err error) {
	status, message, retry, internal := response(err)
	if internal {
		s.logger.LogAttrs(c.Request.Context(), slog.LevelError, "request failed",
			slog.String("method", c.Request.Method), slog.String("path", c.Request.URL.Path),
			slog.String("error", err.Error()))
	}
	if retry > 0 {
		c.Header("Retry-After", strconv.Itoa(int(math.Ceil(retry.Seconds()))))
	}
	writeMessage(c, status, message)
}

// writeMessage answers {"message": msg} with status and stops the chain.
func writeMessage(c *gin.Context, status int, msg string) {
	b := append(make([]byte, 0, len(msg)+16), `{"message":`...)
	b = validate.AppendJSONString(b, strings.ToValidUTF8(msg, "\uFFFD"))
	b = append(b, '}')
	c.Data(status, contentJSON, b)
	c.Abort()
}

// handle adapts a handler that returns an error.
func (s *Server) handle(h func(c *gin.Context) error) gin.HandlerFunc {
	return func(c *gin.Context) {
		if err := h(c); err != nil {
			s.fail(c, err)
		}
	}
}

// Middleware.

// cors allows every origin, as the reference does, and answers preflights.
func cors(c *gin.Context) {
	h := c.Writer.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	if c.Request.Method != http.MethodOptions {
		return
	}
	h.Set("Access-Control-Allow-Methods", "GET,HEAD,POST")
	if req := c.Request.Header.Get("Access-Control-Request-Headers"); req != "" {
		h.Set("Access-Control-Allow-Headers", req)
		h.Add("Vary", "Access-Control-Request-Headers")
	}
	h.Set("Access-Control-Max-Age", "86400")
	h.Del("Allow")
	c.AbortWithStatus(http.StatusNoContent)
}

// recover turns a panic into a logged error and a 500.
func (s *Server) recover(c *gin.Context) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if v == http.ErrAbortHandler {
			panic(v)
		}
		s.logger.LogAttrs(c.Request.Context(), slog.LevelError, "panic in handler",
			slog.String("method", c.Request.Method), slog.String("path", c.Request.URL.Path),
			slog.Any("panic", v), slog.String("stack", string(debug.Stack())))
		if !c.Writer.Written() {
			writeMessage(c, http.StatusInternalServerError, "Internal Server Error")
		}
		c.Abort()
	}()
	c.Next()
}

// observe records the access log (Debug) and the latency histogram.
func (s *Server) observe(c *gin.Context) {
	start := time.Now()
	c.Next()
	route := c.FullPath()
	if route == "" {
		route = routeUnmatched
	}
	elapsed := time.Since(start)
	status := c.Writer.Status()
	if route != routeStream { // a WebSocket's duration is not a latency
		s.metrics.latency.WithLabelValues(route, methodLabel(c.Request.Method), statusClass(status)).Observe(elapsed.Seconds())
	}
	ctx := c.Request.Context()
	if s.logger.Enabled(ctx, slog.LevelDebug) {
		s.logger.LogAttrs(ctx, slog.LevelDebug, "http request",
			slog.String("method", c.Request.Method),
			slog.String("path", c.Request.URL.Path),
			slog.String("route", route),
			slog.Int("status", status),
			slog.Int("bytes", max(c.Writer.Size(), 0)),
			slog.Duration("duration", elapsed),
			slog.String("client", c.Request.RemoteAddr))
	}
}

// bodyLimit caps every request body at maxBodyBytes, on every route and
// before any handler reads it. A body declared larger (Content-Length) is
// refused at once with 413, without reading it, so the client is not asked
// to send it (no 100 Continue) and is not left waiting for a read timeout;
// the connection is closed rather than drained. A body that is not
// declared (chunked) is cut at the cap as it is read: the reader fails
// with *http.MaxBytesError, which answers 413 too.
func bodyLimit(c *gin.Context) {
	r := c.Request
	if r.ContentLength > maxBodyBytes {
		c.Header("Connection", "close")
		writeMessage(c, http.StatusRequestEntityTooLarge, "request entity too large")
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = http.MaxBytesReader(c.Writer, r.Body, maxBodyBytes)
	}
}

// limit applies the per-client rate limit.
func (s *Server) limit(c *gin.Context) {
	if s.limiter == nil || c.FullPath() == "/_health" {
		return
	}
	ok, wait := s.limiter.allow(clientKey(c.Request, s.proxy))
	if ok {
		return
	}
	s.metrics.limited.Inc()
	c.Header("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	writeMessage(c, http.StatusTooManyRequests, "Too many requests, retry later")
}

// Handlers.

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
	if s.health2 != nil {
		extra := s.health2()
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

// head returns the latest non-nullified op of a DID for the read routes:
// 404 for a DID that is not registered, 400 for one that is not a did:plc.
func (s *Server) head(c *gin.Context, did string) (*validate.Op, error) {
	if err := readableDID(did); err != nil {
		return nil, err
	}
	e, err := s.store.Head(c.Request.Context(), did)
	if errors.Is(err, oplog.ErrNotFound) {
		return nil, notRegistered(did)
	}
	if err != nil {
		return nil, fmt.Errorf("read head of %s: %w", did, err)
	}
	return e.Decoded, nil
}

// current returns the rendered document or data of an active DID.
func (s *Server) current(c *gin.Context, doc bool) ([]byte, error) {
	did := didParam(c)
	head, err := s.head(c, did)
	if err != nil {
		return nil, err
	}
	data, ok := head.Data()
	if !ok {
		return nil, &httpError{http.StatusNotFound, "DID not available: " + did}
	}
	if doc {
		return validate.AppendDocumentJSON(nil, did, data), nil
	}
	return validate.AppendDataJSON(nil, did, data), nil
}

// GET /:did
func (s *Server) document(c *gin.Context) error {
	b, err := s.current(c, true)
	if err != nil {
		return err
	}
	c.Data(http.StatusOK, contentDIDDoc, b)
	return nil
}

// GET /:did/data
func (s *Server) data(c *gin.Context) error {
	b, err := s.current(c, false)
	if err != nil {
		return err
	}
	c.Data(http.StatusOK, contentJSON, b)
	return nil
}

// ops returns every op of the DID in the path, nullified ones included.
func (s *Server) ops(c *gin.Context) ([]oplog.Entry, error) {
	did := didParam(c)
	if err := readableDID(did); err != nil {
		return nil, err
	}
	ops, err := s.store.Ops(c.Request.Context(), did)
	if err != nil {
		return nil, fmt.Errorf("read ops of %s: %w", did, err)
	}
	if len(ops) == 0 {
		return nil, notRegistered(did)
	}
	return ops, nil
}

// GET /:did/log
func (s *Server) opLog(c *gin.Context) error {
	ops, err := s.ops(c)
	if err != nil {
		return err
	}
	b := []byte{'['}
	n := 0
	for i := range ops {
		if ops[i].Nullified {
			continue
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		if b, err = appendOpJSON(b, &ops[i]); err != nil {
			return err
		}
	}
	c.Data(http.StatusOK, contentJSON, append(b, ']'))
	return nil
}

// GET /:did/log/audit[?proof=true]
func (s *Server) auditLog(c *gin.Context) error {
	withProof := false
	switch p := c.Query("proof"); p {
	case "", "false":
	case "true":
		if s.tlog == nil {
			return &httpError{http.StatusBadRequest, "this directory keeps no transparency log: proof=true is not available"}
		}
		withProof = true
	default:
		return &httpError{http.StatusBadRequest, "proof must be true or false"}
	}
	ops, err := s.ops(c)
	if err != nil {
		return err
	}
	var (
		cp     oplog.Checkpoint
		proofs map[int64][]tlog.Hash
	)
	if withProof {
		seqs := make([]int64, len(ops))
		for i := range ops {
			seqs[i] = ops[i].Seq
		}
		if cp, proofs, err = s.tlog.InclusionProofs(c.Request.Context(), seqs); err != nil {
			return fmt.Errorf("inclusion proofs: %w", err)
		}
	}
	b := []byte{'['}
	for i := range ops {
		if i > 0 {
			b = append(b, ',')
		}
		if b, err = appendAuditEntry(b, &ops[i]); err != nil {
			return err
		}
		if withProof {
			b = appendProof(b[:len(b)-1], ops[i].Seq, &cp, proofs[ops[i].Seq])
		}
	}
	c.Data(http.StatusOK, contentJSON, append(b, ']'))
	return nil
}

// GET /:did/log/last
func (s *Server) lastOp(c *gin.Context) error {
	head, err := s.head(c, didParam(c))
	if err != nil {
		return err
	}
	c.Data(http.StatusOK, contentJSON, head.AppendJSON(nil))
	return nil
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
	if after != "" && allDigits(after) {
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
	c.Data(http.StatusOK, contentJSONL, b)
	return nil
}

// Query parameters, parsed as the reference's express app does.

// exportBeginning is before every createdAt the log can hold (their years
// have four digits), and within every backend's time range.
var exportBeginning = time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC).Add(-time.Millisecond)

// queryParam returns a query parameter given exactly once. Express's query
// parser makes a repeated parameter an array, which the reference treats as
// absent.
func queryParam(c *gin.Context, name string) string {
	v := c.Request.URL.Query()[name]
	if len(v) != 1 {
		return ""
	}
	return v[0]
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// isJSSpace reports whether r is white space or a line terminator to
// JavaScript's parseInt and Date parsing.
func isJSSpace(r rune) bool {
	switch r {
	case '\t', '\n', '\v', '\f', '\r', ' ', 0xa0, 0x1680, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000, 0xfeff:
		return true
	}
	return r >= 0x2000 && r <= 0x200a
}

// jsParseInt is JavaScript's parseInt(s, 10): leading white space, an
// optional sign, then as many decimal digits as there are; anything after
// them is ignored. ok is false where parseInt gives NaN. Values saturate at
// ±MaxInt64.
func jsParseInt(s string) (n int64, ok bool) {
	s = strings.TrimLeftFunc(s, isJSSpace)
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	i := 0
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		d := int64(s[i] - '0')
		if n > (math.MaxInt64-d)/10 {
			n = math.MaxInt64
		} else {
			n = n*10 + d
		}
	}
	if i == 0 {
		return 0, false
	}
	if neg {
		n = -n
	}
	return n, true
}

// The range of a JavaScript Date: ±8.64e15 ms around the epoch.
var (
	minJSDate = time.UnixMilli(-8.64e15).UTC()
	maxJSDate = time.UnixMilli(8.64e15).UTC()
)

// parseJSDate parses what new Date(s) accepts of the ISO 8601 forms:
// YYYY, YYYY-MM, YYYY-MM-DD (or an expanded ±YYYYYY year), optionally
// followed by T (or a space) and HH:mm, HH:mm:ss or HH:mm:ss.fraction, then
// an optional Z or ±HH:mm offset. A time without an offset is taken as UTC
// (the reference's servers run in UTC). Fractions are truncated to
// milliseconds; a day beyond the month's end rolls over, as in V8.
func parseJSDate(s string) (time.Time, bool) {
	p := dateParser{s: strings.TrimFunc(s, isJSSpace)}
	var year int
	switch {
	case p.peek('+') || p.peek('-'):
		neg := p.s[0] == '-'
		p.s = p.s[1:]
		y, ok := p.digits(6)
		if !ok || (neg && y == 0) {
			return time.Time{}, false
		}
		if year = y; neg {
			year = -y
		}
	default:
		y, ok := p.digits(4)
		if !ok {
			return time.Time{}, false
		}
		year = y
	}
	month, day := 1, 1
	if p.take('-') {
		m, ok := p.digits(2)
		if !ok || m < 1 || m > 12 {
			return time.Time{}, false
		}
		month = m
		if p.take('-') {
			d, ok := p.digits(2)
			if !ok || d < 1 || d > 31 {
				return time.Time{}, false
			}
			day = d
		}
	}
	var hour, minute, sec, nsec int
	if p.take('T') || p.take('t') || (len(p.s) > 1 && p.take(' ')) {
		var ok bool
		if hour, ok = p.digits(2); !ok || !p.take(':') {
			return time.Time{}, false
		}
		if minute, ok = p.digits(2); !ok || minute > 59 {
			return time.Time{}, false
		}
		if p.take(':') {
			if sec, ok = p.digits(2); !ok || sec > 59 {
				return time.Time{}, false
			}
			if p.take('.') || p.take(',') {
				n := 0
				for len(p.s) > 0 && p.s[0] >= '0' && p.s[0] <= '9' {
					if n < 3 {
						nsec = nsec*10 + int(p.s[0]-'0')
					}
					n++
					p.s = p.s[1:]
				}
				if n == 0 {
					return time.Time{}, false
				}
				for ; n < 3; n++ {
					nsec *= 10
				}
				nsec *= int(time.Millisecond)
			}
		}
		if hour > 24 || (hour == 24 && (minute != 0 || sec != 0 || nsec != 0)) {
			return time.Time{}, false
		}
		offset := 0
		switch {
		case p.take('Z') || p.take('z'):
		case p.peek('+') || p.peek('-'):
			sign := 1
			if p.s[0] == '-' {
				sign = -1
			}
			p.s = p.s[1:]
			oh, ok := p.digits(2)
			if !ok {
				return time.Time{}, false
			}
			p.take(':')
			om, ok := p.digits(2)
			if !ok || oh > 23 || om > 59 {
				return time.Time{}, false
			}
			offset = sign * (oh*3600 + om*60)
		}
		t := time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC).Add(-time.Duration(offset) * time.Second)
		return checkJSRange(t, p.s == "")
	}
	return checkJSRange(time.Date(year, time.Month(month), day, 0, 0, 0, 0, time.UTC), p.s == "")
}

func checkJSRange(t time.Time, ok bool) (time.Time, bool) {
	if !ok || t.Before(minJSDate) || t.After(maxJSDate) {
		return time.Time{}, false
	}
	return t, true
}

type dateParser struct{ s string }

func (p *dateParser) peek(c byte) bool { return len(p.s) > 0 && p.s[0] == c }

func (p *dateParser) take(c byte) bool {
	if p.peek(c) {
		p.s = p.s[1:]
		return true
	}
	return false
}

// digits reads exactly n decimal digits.
func (p *dateParser) digits(n int) (int, bool) {
	if len(p.s) < n {
		return 0, false
	}
	v := 0
	for i := 0; i < n; i++ {
		c := p.s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	p.s = p.s[n:]
	return v, true
}

// Metrics.

type httpMetrics struct {
	latency *prometheus.HistogramVec
	limited prometheus.Counter
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "plc_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route template, method and status class.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method", "code"}),
		limited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "plc_http_client_rate_limited_total",
			Help: "Requests refused with 429 by the per-client rate limit.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.latency, m.limited)
	}
	return m
}

// methodLabel bounds the method label to the methods the API knows.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodHead, http.MethodOptions:
		return m
	}
	return "other"
}

func statusClass(code int) string {
	if code < 100 || code > 599 {
		return "other"
	}
	return strconv.Itoa(code/100) + "xx"
}

// The per-client rate limit.

const (
	// ipLimiterMaxClients bounds the limiter's memory (about 150 bytes a
	// client). Past it, arbitrary clients are forgotten (which gives them a
	// full bucket again): lenient, never unbounded.
	ipLimiterMaxClients = 100_000
	ipLimiterMinIdle    = time.Minute
)

// ipLimiter is a token bucket per client key. A client idle for long
// enough to have refilled its bucket is forgotten: it would get a full
// bucket anyway.
type ipLimiter struct {
	limit rate.Limit
	burst int
	idle  time.Duration
	now   func() time.Time

	// maxClients bounds the table (ipLimiterMaxClients; smaller in tests).
	maxClients int

	mu        sync.Mutex
	clients   map[netip.Addr]*ipClient
	lastSweep time.Time
}

type ipClient struct {
	lim  *rate.Limiter
	seen time.Time
}

func newIPLimiter(perSecond float64, burst int, now func() time.Time) *ipLimiter {
	if burst <= 0 {
		burst = max(1, int(math.Ceil(perSecond)))
	}
	idle := time.Duration(float64(burst) / perSecond * float64(time.Second))
	if idle < ipLimiterMinIdle || idle > 24*time.Hour {
		idle = max(ipLimiterMinIdle, min(idle, 24*time.Hour))
	}
	return &ipLimiter{
		limit:      rate.Limit(perSecond),
		burst:      burst,
		idle:       idle,
		now:        now,
		maxClients: ipLimiterMaxClients,
		clients:    make(map[netip.Addr]*ipClient),
	}
}

// allow takes a token for key, or reports how long until one is available.
func (l *ipLimiter) allow(key netip.Addr) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= l.idle || len(l.clients) >= l.maxClients {
		l.sweep(now)
	}
	cl := l.clients[key]
	if cl == nil {
		cl = &ipClient{lim: rate.NewLimiter(l.limit, l.burst)}
		l.clients[key] = cl
	}
	cl.seen = now
	r := cl.lim.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Second
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// sweep forgets idle clients, then arbitrary ones while the table is full.
func (l *ipLimiter) sweep(now time.Time) {
	l.lastSweep = now
	for k, cl := range l.clients {
		if now.Sub(cl.seen) >= l.idle {
			delete(l.clients, k)
		}
	}
	for k := range l.clients {
		if len(l.clients) < l.maxClients {
			break
		}
		delete(l.clients, k)
	}
}

// clientKey is the limiter's key for r: the remote address (or, behind a
// trusted proxy, the last X-Forwarded-For address), with IPv6 addresses
// reduced to their /64, the block one client usually holds.
func clientKey(r *http.Request, trustProxy bool) netip.Addr {
	var addr netip.Addr
	if trustProxy {
		if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
			last := xff[len(xff)-1]
			if i := strings.LastIndexByte(last, ','); i >= 0 {
				last = last[i+1:]
			}
			addr, _ = netip.ParseAddr(strings.TrimSpace(last))
		}
	}
	if !addr.IsValid() {
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			addr = ap.Addr()
		} else {
			addr, _ = netip.ParseAddr(r.RemoteAddr)
		}
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is6() {
		if p, err := addr.Prefix(64); err == nil {
			addr = p.Addr()
		}
	}
	return addr
}
