package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/plcdir/plc/api"
	"github.com/plcdir/plc/bundle"
	"github.com/plcdir/plc/internal/cli"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/watch"
)

// serveConfig is everything `plc serve` needs. It is filled from flags
// (with environment fallbacks) and validated before anything starts.
type serveConfig struct {
	// DB is a postgres:// URL or the path of an SQLite file.
	DB string
	// Listen is the API's address.
	Listen string
	// MetricsListen is the address of the Prometheus /metrics endpoint;
	// empty turns it off.
	MetricsListen string
	// IPRate and IPBurst configure the optional per-client-IP token bucket
	// (requests per second; 0 turns it off).
	IPRate  float64
	IPBurst int
	// TrustProxy takes the client IP (for the per-IP limit) from the last
	// X-Forwarded-For address: set it only behind a proxy that sets it.
	TrustProxy bool
	// NoDIDRateLimit turns off the per-DID operation rate limit.
	NoDIDRateLimit bool
	// ShutdownTimeout bounds the graceful shutdown.
	ShutdownTimeout time.Duration
	// MaxClockSkew: see oplog.Options.MaxClockSkew.
	MaxClockSkew time.Duration
	// LogFormat is "json", "text" or "auto" (text on a terminal).
	LogFormat string
	// LogLevel is debug, info, warn or error.
	LogLevel string
	// TLog configures the transparency log.
	TLog tlogConfig
	// NoUI turns the web UI (GET / and /ui/…) off.
	NoUI bool
	// MaxConns bounds the API's open connections (0: no bound);
	// MaxConnsPerIP those of one client address (0: no bound, -1: the
	// default, 256, or no bound with TrustProxy, where every connection
	// comes from the proxy).
	MaxConns      int
	MaxConnsPerIP int
	// ReadDB are PostgreSQL streaming replicas of DB that answer the read
	// routes (see oplog.ReadRouter); empty: the primary answers all.
	ReadDB []string
	// ReadDBMaxLag is how many ops a replica may be behind and stay in
	// rotation; ReadDBCheck how often the replicas are measured.
	ReadDBMaxLag int
	ReadDBCheck  time.Duration
	// ReadCacheBytes bounds the cache of rendered answers of the /:did
	// read routes (api.Config.ReadCacheBytes); 0 turns it off.
	ReadCacheBytes int
	// ReadCacheNotify: on PostgreSQL, the cache learns of other processes'
	// commits from their notices (oplog.PostgresStore.ListenForChanges)
	// instead of reading the latest seq for every round of requests.
	ReadCacheNotify bool
	// Bundles is a bundle folder served at /bundles/ (empty: none).
	Bundles string
	// WebhookKey is the file of the Ed25519 key that signs webhook
	// deliveries, created when missing; empty: webhook.key in the data
	// directory.
	WebhookKey string
}

// serverFlags binds the flags plc serve and plc mirror share: the
// database, the listeners, the per-client limit, shutdown and logging.
func serverFlags(f *cli.Flags, c *serveConfig) {
	f.DB(&c.DB)
	f.Str(&c.Listen, "listen", "PLC_LISTEN", ":2582", "API listen address")
	f.Str(&c.MetricsListen, "metrics-listen", "PLC_METRICS_LISTEN", "", "Prometheus /metrics listen address (empty: off)")
	f.Float(&c.IPRate, "ip-rate", "PLC_IP_RATE", 0, "per-client-IP request rate limit, requests/second (0: off)")
	f.Int(&c.IPBurst, "ip-burst", "PLC_IP_BURST", 50, "per-client-IP burst")
	f.Bool(&c.TrustProxy, "trust-proxy", "PLC_TRUST_PROXY", "take client IPs from X-Forwarded-For (behind a proxy)")
	f.Int(&c.MaxConns, "max-conns", "PLC_MAX_CONNS", defaultMaxConns, "most API connections open at once; over it a new one replaces the oldest idle one or is closed (0: no bound)")
	f.Int(&c.MaxConnsPerIP, "max-conns-per-ip", "PLC_MAX_CONNS_PER_IP", -1, fmt.Sprintf("most API connections of one client IP (IPv6: /64); -1: %d, or no bound with --trust-proxy; 0: no bound", defaultMaxConnsPerIP))
	f.Int(&c.ReadCacheBytes, "read-cache-bytes", "PLC_READ_CACHE_BYTES", api.DefaultReadCacheBytes, "memory of the cache of rendered /:did answers, kept exact under appends by any process (0: off)")
	f.Duration(&c.ShutdownTimeout, "shutdown-timeout", "PLC_SHUTDOWN_TIMEOUT", 15*time.Second, "graceful shutdown deadline")
	clockSkewFlag(f, &c.MaxClockSkew)
	tlogFlags(f, &c.TLog)
	f.Bool(&c.NoUI, "no-ui", "PLC_NO_UI", "serve the API only: no web UI at / and /ui/")
	f.Str(&c.Bundles, "bundles", "PLC_BUNDLES", "", "a bundle folder (plc export --bundles) to serve read-only at /bundles/")
	f.Str(&c.WebhookKey, "webhook-key", "PLC_WEBHOOK_KEY", "", "the Ed25519 key file that signs webhook deliveries (GET /_watch/key publishes its public key), created when missing; default: webhook.key in the data directory")
	logFlags(f, &c.LogFormat, &c.LogLevel)
}

func logFlags(f *cli.Flags, format, level *string) {
	f.Str(format, "log-format", "PLC_LOG_FORMAT", "auto", "log format: json, text, or auto (text on a terminal)")
	f.Str(level, "log-level", "PLC_LOG_LEVEL", "info", "log level: debug, info, warn, error")
}

func (c *serveConfig) validate() error {
	if c.DB == "" {
		return errors.New("--db must not be empty")
	}
	if oplog.IsPostgres(c.DB) {
		if _, err := url.Parse(c.DB); err != nil {
			return fmt.Errorf("--db: invalid URL: %v", redactErr(err))
		}
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("--listen %q: %v", c.Listen, err)
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			return fmt.Errorf("--metrics-listen %q: %v", c.MetricsListen, err)
		}
	}
	if c.IPRate < 0 || c.IPBurst < 0 {
		return errors.New("--ip-rate and --ip-burst must not be negative")
	}
	if c.IPRate > 0 && c.IPBurst < 1 {
		return errors.New("--ip-burst must be at least 1 when --ip-rate is set")
	}
	if c.MaxConns < 0 || c.MaxConnsPerIP < -1 {
		return errors.New("--max-conns must not be negative, --max-conns-per-ip not below -1")
	}
	if c.ReadCacheBytes < 0 {
		return errors.New("--read-cache-bytes must not be negative")
	}
	if c.ShutdownTimeout <= 0 {
		return errors.New("--shutdown-timeout must be positive")
	}
	if err := validateClockSkew(c.MaxClockSkew); err != nil {
		return err
	}
	if c.Bundles != "" {
		if fi, err := os.Stat(c.Bundles); err != nil || !fi.IsDir() {
			return fmt.Errorf("--bundles %s: not a folder (plc export --bundles DIR writes one)", c.Bundles)
		}
	}
	if _, err := newLogger(c.LogFormat, c.LogLevel, nil); err != nil {
		return err
	}
	return c.TLog.validate()
}

// Connection bounds of the API listener.
const (
	defaultMaxConns      = 8192
	defaultMaxConnsPerIP = 256
	// fdReserve is what the process keeps of its file descriptor limit for
	// everything but API connections: the database, the metrics listener,
	// files.
	fdReserve = 256
)

// fileLimit returns the process's limit on open files (a hook for tests).
var fileLimit = systemFileLimit

// connLimits resolves the connection bounds: the per-IP default, and a
// total that fits in the process's file descriptor limit.
func (c *serveConfig) connLimits(logger *slog.Logger) (total, perIP int) {
	total, perIP = c.MaxConns, c.MaxConnsPerIP
	if perIP < 0 {
		perIP = defaultMaxConnsPerIP
		if c.TrustProxy {
			perIP = 0
		}
	}
	if fds, ok := fileLimit(); ok && fds > 2*fdReserve {
		if room := int(min(fds-fdReserve, 1<<30)); total == 0 || total > room {
			logger.Warn("the API connection bound is lowered to fit the file descriptor limit",
				"max_conns", c.MaxConns, "fd_limit", fds, "bound", room)
			total = room
		}
	}
	return total, perIP
}

// readDBFlags binds the read replicas' flags (plc serve only).
func readDBFlags(f *cli.Flags, c *serveConfig) {
	f.List(&c.ReadDB, "read-db", "PLC_READ_DB", "a postgres:// URL of a streaming replica of --db that answers reads", func(s string) error {
		if !oplog.IsPostgres(s) {
			return errors.New("not a postgres:// URL: read replicas are PostgreSQL streaming replicas of --db")
		}
		return nil
	})
	f.Int(&c.ReadDBMaxLag, "read-db-max-lag", "PLC_READ_DB_MAX_LAG", oplog.DefaultReplicaMaxLag, "ops a read replica may be behind the primary and stay in rotation")
	f.Duration(&c.ReadDBCheck, "read-db-check", "PLC_READ_DB_CHECK", time.Second, "how often the read replicas' lag is measured (and those caught up put back in rotation)")
	f.Bool(&c.ReadCacheNotify, "read-cache-notify", "PLC_READ_CACHE_NOTIFY", "PostgreSQL: the cache of rendered answers learns of other processes' commits from their notices (LISTEN/NOTIFY) instead of a query per round of requests; their ops then show after the notice arrives, not as soon as they are acknowledged")
}

// validateReadDB checks the replicas' settings: PostgreSQL on both sides.
func (c *serveConfig) validateReadDB() error {
	if c.ReadCacheNotify && !oplog.IsPostgres(c.DB) {
		return errors.New("--read-cache-notify needs a PostgreSQL --db: on SQLite the cache learns of every commit without a query, exactly, from the database's WAL index")
	}
	if c.ReadCacheNotify && c.ReadCacheBytes == 0 {
		return errors.New("--read-cache-notify needs the cache of rendered answers (--read-cache-bytes above 0)")
	}
	if len(c.ReadDB) == 0 {
		return nil
	}
	if !oplog.IsPostgres(c.DB) {
		return errors.New("--read-db needs a PostgreSQL --db: read replicas are streaming replicas of a PostgreSQL primary (SQLite has none)")
	}
	for i, u := range c.ReadDB {
		if !oplog.IsPostgres(u) {
			return fmt.Errorf("--read-db %d: not a postgres:// URL", i+1)
		}
		if _, err := url.Parse(u); err != nil {
			return fmt.Errorf("--read-db %d: invalid URL: %v", i+1, redactErr(err))
		}
	}
	if c.ReadDBMaxLag < 1 {
		return errors.New("--read-db-max-lag must be at least 1")
	}
	if c.ReadDBCheck <= 0 {
		return errors.New("--read-db-check must be positive")
	}
	return nil
}

// redactErr keeps a URL parse error from echoing a password.
func redactErr(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return "unparsable"
}

func runServe(ctx context.Context, e env, args []string) int {
	var c serveConfig
	fs := cli.NewFlagSet("serve", "plc serve [flags]",
		`Runs the directory: validates submitted operations, appends them to the
log, and serves the plc.directory HTTP API. With no flags it uses the
built-in defaults: an SQLite database at `+cli.DefaultDB+` (created on first
start) and the API on :2582.`, e)
	f := cli.NewFlags(fs, e)
	serverFlags(f, &c)
	f.Bool(&c.NoDIDRateLimit, "no-did-rate-limit", "PLC_NO_DID_RATE_LIMIT", "turn off the per-DID operation rate limit")
	readDBFlags(f, &c)
	if code, done := f.Parse("plc serve", args); done {
		return code
	}
	if fs.NArg() > 0 {
		return e.Failf(exitUsage, "plc serve: unexpected argument %q", fs.Arg(0))
	}
	if err := c.validate(); err != nil {
		return e.Failf(exitUsage, "plc serve: %v", err)
	}
	if err := c.validateReadDB(); err != nil {
		return e.Failf(exitUsage, "plc serve: %v", err)
	}
	logger, _ := newLogger(c.LogFormat, c.LogLevel, e.Stderr)
	if err := serve(ctx, c, logger); err != nil {
		logger.Error("plc serve stopped", "err", err)
		return e.Failf(exitFailure, "plc serve: %v", err)
	}
	return exitOK
}

// serve runs the directory until ctx is cancelled, then shuts down in
// order: stop intake and drain requests, close streams, drain the
// sequencer, close the database.
func serve(ctx context.Context, c serveConfig, logger *slog.Logger) error {
	return serveWith(ctx, c, logger, nil)
}

// directoryHook adds a role to the directory serveWith runs (the mirror):
// it may change the API's configuration, and returns the role.
type directoryHook func(log *oplog.Log, reg *prometheus.Registry, cfg *api.Config) (directoryRole, error)

// directoryRole is what a hook adds to a directory.
type directoryRole struct {
	// Run runs beside the server until ctx ends (before the log closes).
	Run func(ctx context.Context)
	// Bulk (if set) says when the role is writing history in bulk (a
	// mirror's backfill or bootstrap): the handle index waits meanwhile.
	Bulk func() bool
}

// serveWith is serve, with hook's role added when it is set.
func serveWith(ctx context.Context, c serveConfig, logger *slog.Logger, hook directoryHook) error {
	store, schema, err := oplog.Open(ctx, c.DB)
	if err != nil {
		return err
	}
	defer store.Close()
	logger.Info("database ready", "db", oplog.RedactDB(c.DB), "schema_version", schema.Version)
	reg := prometheus.NewRegistry()
	var router *oplog.ReadRouter
	readStore := store
	if len(c.ReadDB) > 0 {
		pg, ok := store.(*oplog.PostgresStore)
		if !ok {
			return errors.New("--read-db needs a PostgreSQL --db")
		}
		router, err = oplog.OpenReadRouter(ctx, pg, c.ReadDB, oplog.ReplicaOptions{MaxLag: int64(c.ReadDBMaxLag), Registry: reg})
		if err != nil {
			return err
		}
		defer router.Close()
		for _, h := range router.Health() {
			logger.Info("read replica", "db", h.DB, "state", h.State, "lag_ops", h.LagOps)
		}
		readStore = router
	}
	if c.ReadCacheNotify {
		pg, ok := store.(*oplog.PostgresStore)
		if !ok {
			return errors.New("--read-cache-notify needs a PostgreSQL --db")
		}
		if err := pg.ListenForChanges(ctx); err != nil {
			return err
		}
		logger.Info("cache of rendered answers: notified of commits (LISTEN/NOTIFY)")
	}
	tl, err := openTLog(ctx, &c, readStore, logger)
	if err != nil {
		if ctx.Err() != nil {
			logger.Info("stopped before serving")
			return nil
		}
		return err
	}

	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opMetrics := oplog.NewMetrics(reg)
	if err := tl.RegisterMetrics(reg); err != nil {
		return err
	}
	log := oplog.NewLog(readStore, oplog.Options{NoRateLimit: c.NoDIDRateLimit, Metrics: opMetrics, MaxClockSkew: c.MaxClockSkew, Logger: logger})
	streamer := api.NewStreamer(log, api.StreamOptions{Logger: logger})
	webhookKey, err := watch.OpenKey(webhookKeyPath(&c), true)
	if err != nil {
		streamer.Close()
		log.Close()
		return err
	}
	hub := watch.NewHub(log, watch.HubOptions{Logger: logger})
	defer hub.Close()
	watcher := api.NewWatcher(hub, api.WatchOptions{Logger: logger, Registry: reg})
	apiCfg := api.Config{
		Log:        log,
		OpMetrics:  opMetrics,
		TrustProxy: c.TrustProxy,
		Logger:     logger,
		Registry:   reg,
		Version:    version,
		IPRate:     c.IPRate,
		IPBurst:    c.IPBurst,
		Stream:     streamer,
		TLog:       tl,
		Watch:      watcher,
		WatchKey:   webhookKey.Public().(ed25519.PublicKey),

		ReadCacheBytes: int64(c.ReadCacheBytes),
	}
	if c.Bundles != "" {
		apiCfg.Bundles = bundle.Handler(c.Bundles)
	}
	var role directoryRole
	if hook != nil {
		if role, err = hook(log, reg, &apiCfg); err != nil {
			streamer.Close()
			log.Close()
			return err
		}
	}
	if router != nil {
		health := apiCfg.Health
		apiCfg.Health = func() map[string]any {
			m := map[string]any{}
			if health != nil {
				m = health()
			}
			m["replicas"] = router.Health()
			return m
		}
	}
	if apiCfg.UI == nil {
		apiCfg.UI = webUI(c, log, &apiCfg, logger, nil)
	}
	handler := api.New(apiCfg)

	srv := &http.Server{
		Addr:              c.Listen,
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	srv.RegisterOnShutdown(watcher.Close)
	maxConns, maxPerIP := c.connLimits(logger)
	conns := api.NewConnLimiter(api.ConnLimits{MaxConns: maxConns, MaxPerIP: maxPerIP, Registry: reg, Logger: logger})
	srv.ConnState = conns.ConnState
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		log.Close()
		return fmt.Errorf("listen %s: %w", c.Listen, err)
	}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(conns.Listener(api.TransportErrorsAsJSON(ln))) }()
	logger.Info("plc serve listening", "addr", ln.Addr().String(), "version", version)

	var msrv *http.Server
	if c.MetricsListen != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		// Profiles for operators, on the private metrics listener only.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		msrv = &http.Server{Addr: c.MetricsListen, Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 90 * time.Second}
		mln, err := net.Listen("tcp", c.MetricsListen)
		if err != nil {
			srv.Close()
			log.Close()
			return fmt.Errorf("listen %s: %w", c.MetricsListen, err)
		}
		go func() { errc <- msrv.Serve(mln) }()
		logger.Info("metrics listening", "addr", mln.Addr().String())
	}

	roleCtx, stopRole := context.WithCancel(context.Background())
	roleDone := make(chan struct{})
	go func() {
		defer close(roleDone)
		tlDone := make(chan struct{})
		go func() {
			defer close(tlDone)
			tl.Run(roleCtx, log.Changed)
		}()
		hDone := make(chan struct{})
		go func() {
			defer close(hDone)
			if idx, ok := store.(oplog.HandleIndex); ok {
				oplog.IndexHandles(roleCtx, idx, oplog.HandleIndexInterval, logger, role.Bulk)
			}
		}()
		rDone := make(chan struct{})
		go func() {
			defer close(rDone)
			if router != nil {
				router.Run(roleCtx, c.ReadDBCheck)
			}
		}()
		wDone := make(chan struct{})
		go func() {
			defer close(wDone)
			if ws, ok := oplog.WebhooksOf(store); ok {
				watch.NewWorker(hub, ws, webhookKey, watch.WorkerOptions{Logger: logger, Registry: reg}).Run(roleCtx)
			}
		}()
		if role.Run != nil {
			role.Run(roleCtx)
		}
		<-wDone
		<-rDone
		<-tlDone
		<-hDone
	}()

	var runErr error
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case runErr = <-errc:
		logger.Error("server failed", "err", runErr)
	}
	sctx, cancel := context.WithTimeout(context.Background(), c.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("HTTP shutdown incomplete", "err", err)
	}
	stopRole()
	<-roleDone
	streamer.Close()
	log.Close()
	if msrv != nil {
		msrv.Shutdown(sctx)
	}
	logger.Info("stopped")
	if runErr != nil && !errors.Is(runErr, http.ErrServerClosed) {
		return runErr
	}
	return nil
}

// newLogger builds the process logger; w nil only validates the settings.
func newLogger(format, level string, w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	switch format {
	case "json", "text", "auto":
	default:
		return nil, fmt.Errorf("--log-format %q: want json, text or auto", format)
	}
	if w == nil {
		return nil, nil
	}
	if format == "auto" {
		format = "json"
		if isTerminal(w) {
			format = "text"
		}
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return slog.New(slog.NewJSONHandler(w, opts)), nil
}
