package api

import (
	"cmp"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/plcdir/plc/oplog"
)

// The router: the routes, the order of the middleware every request goes
// through, and the access log and metrics they record.

// New builds the server. It panics if cfg.Log is nil.
func New(cfg Config) *Server {
	if cfg.Log == nil {
		panic("api.New: Config.Log is nil")
	}
	logger := cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
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
	s.cache = newReadCache(s.store, cfg.ReadCacheBytes, cfg.Registry)
	if _, ok := s.store.(oplog.BatchedHeads); ok {
		s.heads = newHeadBatcher(s.store.Heads, cfg.Registry)
	}
	s.bulk = newBulkMetrics(cfg.Registry)
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
	e.GET("/:did", s.serveRead(routeDoc))
	e.GET("/:did/data", s.serveRead(routeData))
	e.GET("/:did/log", s.serveRead(routeLog))
	e.GET("/:did/log/audit", s.serveRead(routeAudit))
	e.GET("/:did/log/last", s.serveRead(routeLast))
	e.POST("/:did", s.handle(s.submit))
	e.POST("/dids", s.handle(s.resolveMany))
	e.GET("/_lookup/handle/:handle", s.handle(s.lookupHandle))
	extra := cfg.Extra
	e.GET("/_mirror/divergences", func(c *gin.Context) {
		if extra == nil {
			writeMessage(c, http.StatusNotFound, "Not Found: this directory is not a mirror")
			return
		}
		extra.ServeHTTP(c.Writer, c.Request)
	})
	bundles := cfg.Bundles
	e.GET("/bundles/*file", func(c *gin.Context) {
		if bundles == nil {
			writeMessage(c, http.StatusNotFound, "Not Found: this directory serves no bundles")
			return
		}
		http.StripPrefix("/bundles", bundles).ServeHTTP(c.Writer, c.Request)
	})
	if ui := cfg.UI; ui != nil {
		serveUI := func(c *gin.Context) { ui.ServeHTTP(c.Writer, c.Request) }
		e.GET("/", serveUI)
		e.GET("/ui", serveUI)
		e.GET("/ui/*path", serveUI)
	}
	e.GET("/_watch", func(c *gin.Context) {
		if cfg.Watch == nil {
			writeMessage(c, http.StatusNotFound, "Not Found: this directory serves no watch streams")
			return
		}
		cfg.Watch.ServeHTTP(c.Writer, c.Request)
	})
	e.GET("/_watch/key", func(c *gin.Context) { serveWatchKey(c, cfg.WatchKey) })
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
var staticPaths = map[string]bool{"/_health": true, "/openapi.yaml": true, "/export": true, routeStream: true, "/_mirror/divergences": true, "/_watch": true, "/_watch/key": true}

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
	route = cmp.Or(route, routeUnmatched)
	elapsed := time.Since(start)
	status := c.Writer.Status()
	if route != routeStream && route != "/_watch" { // a stream's duration is not a latency
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
