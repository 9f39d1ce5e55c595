package api

import (
	"cmp"
	"container/list"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ConnLimits configures a ConnLimiter.
type ConnLimits struct {
	// MaxConns bounds the connections open at once, whoever holds them
	// (0: no bound). Keep it below the process's file descriptor limit.
	MaxConns int
	// MaxPerIP bounds the connections one client address holds at once
	// (an IPv6 client is keyed by its /64; 0: no bound). It keys on the
	// TCP peer: behind a reverse proxy every connection is the proxy's.
	MaxPerIP int
	// Registry receives the limiter's metrics (nil: not registered).
	Registry prometheus.Registerer
	// Logger receives a warning, at most once a minute, while connections
	// are refused (nil: discarded).
	Logger *slog.Logger
	// Now is the clock of the warnings (default time.Now).
	Now func() time.Time
}

// ConnLimiter bounds the connections an HTTP server holds, in total and
// per client address, so that a flood of connections (idle keep-alive
// ones, or ones that never send a request) cannot exhaust the process's
// file descriptors.
//
// Wrap the server's listener with Listener and set the server's ConnState
// to the limiter's. A new connection over a bound first takes the place of
// an idle one: the oldest connection of the same client (for the per-client
// bound) or of anyone (for the total) that is waiting for a request — a
// keep-alive connection between requests, or one that has not sent its
// first request yet. If none is idle, the new connection is closed at once,
// before anything is read from it: an over-limit moment is a flood, and
// answering it would spend what the bound protects. Connections handed
// over to a WebSocket stay counted until they close.
type ConnLimiter struct {
	maxConns int
	maxPerIP int
	logger   *slog.Logger
	now      func() time.Time

	refusedTotal prometheus.Counter
	refusedPerIP prometheus.Counter
	reclaimed    prometheus.Counter

	mu      sync.Mutex
	open    int
	clients map[netip.Addr]*clientConns
	idle    list.List // of *limitedConn, oldest first
	// refusals since the last warning, and when it was logged.
	unlogged int
	lastLog  time.Time
	// released, if set, is called (under mu) when a connection gives its
	// place back: a test hook.
	released func()
}

// clientConns are the open connections of one client address.
type clientConns struct {
	open int
	idle list.List // of *limitedConn, oldest first
}

// NewConnLimiter returns a limiter with the given bounds.
func NewConnLimiter(cfg ConnLimits) *ConnLimiter {
	l := &ConnLimiter{
		maxConns: cfg.MaxConns,
		maxPerIP: cfg.MaxPerIP,
		logger:   cfg.Logger,
		now:      cfg.Now,
		clients:  make(map[netip.Addr]*clientConns),
	}
	l.logger = cmp.Or(l.logger, slog.New(slog.DiscardHandler))
	if l.now == nil {
		l.now = time.Now
	}
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "plc_http_connections_refused_total",
		Help: "New connections closed at once because a connection bound was reached and no idle connection could make room, by bound (total, per_ip).",
	}, []string{"bound"})
	l.refusedTotal = refused.WithLabelValues("total")
	l.refusedPerIP = refused.WithLabelValues("per_ip")
	l.reclaimed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "plc_http_connections_reclaimed_total",
		Help: "Idle connections closed to make room for a new one under a connection bound.",
	})
	open := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "plc_http_connections_open",
		Help: "Connections the API server holds open.",
	}, func() float64 {
		l.mu.Lock()
		defer l.mu.Unlock()
		return float64(l.open)
	})
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(refused, l.reclaimed, open)
	}
	return l
}

// Listener wraps ln: the connections it accepts are counted, and refused
// over the bounds.
func (l *ConnLimiter) Listener(ln net.Listener) net.Listener {
	return &limitListener{Listener: ln, l: l}
}

type limitListener struct {
	net.Listener
	l *ConnLimiter
}

func (ln *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if lc := ln.l.admit(c); lc != nil {
			return lc, nil
		}
	}
}

// limitedConn is an admitted connection. Its fields but Conn, l and key
// are guarded by l.mu.
// NetConn returns the connection c wraps.
func (c *limitedConn) NetConn() net.Conn { return c.Conn }

type limitedConn struct {
	net.Conn
	l   *ConnLimiter
	key netip.Addr

	released bool
	idleAll  *list.Element // in l.idle while idle
	idleIP   *list.Element // in its client's idle list while idle
}

// Close closes the connection and gives its place back (once).
func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.l.mu.Lock()
	c.l.releaseLocked(c)
	c.l.mu.Unlock()
	return err
}

// CloseWrite half-closes the connection when the one it wraps can (net/http
// sends a FIN this way before closing a connection it answered with
// Connection: close).
func (c *limitedConn) CloseWrite() error { return closeWrite(c.Conn) }

// SetLinger passes through to a TCP connection.
func (c *limitedConn) SetLinger(sec int) error { return setLinger(c.Conn, sec) }

func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func setLinger(c net.Conn, sec int) error {
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		return l.SetLinger(sec)
	}
	return nil
}

// connKey is the client address a connection counts against: the peer's
// IP, an IPv6 one reduced to its /64.
func connKey(a net.Addr) netip.Addr {
	var addr netip.Addr
	if ta, ok := a.(*net.TCPAddr); ok {
		addr, _ = netip.AddrFromSlice(ta.IP)
	} else if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		addr = ap.Addr()
	}
	return clientAddr(addr)
}

// admit counts c in, making room by closing an idle connection if a bound
// is reached; it closes c and returns nil if there is no room.
func (l *ConnLimiter) admit(c net.Conn) *limitedConn {
	key := connKey(c.RemoteAddr())
	l.mu.Lock()
	cl := l.clients[key]
	var (
		victim  *limitedConn
		idle    *list.List // where room is made, if a bound is reached
		refused prometheus.Counter
	)
	switch {
	case l.maxPerIP > 0 && cl != nil && cl.open >= l.maxPerIP:
		// Room is made among the client's own connections: freeing one of
		// them also frees one of the total.
		idle, refused = &cl.idle, l.refusedPerIP
	case l.maxConns > 0 && l.open >= l.maxConns:
		idle, refused = &l.idle, l.refusedTotal
	}
	if idle != nil {
		e := idle.Front()
		if e == nil {
			l.refuseLocked(refused, key)
			l.mu.Unlock()
			refuse(c)
			return nil
		}
		victim = e.Value.(*limitedConn)
	}
	if victim != nil {
		l.releaseLocked(victim)
		cl = l.clients[key]
	}
	if cl == nil {
		cl = &clientConns{}
		l.clients[key] = cl
	}
	cl.open++
	l.open++
	lc := &limitedConn{Conn: c, l: l, key: key}
	l.mu.Unlock()
	if victim != nil {
		l.reclaimed.Inc()
		victim.Conn.Close()
	}
	return lc
}

// refuse closes a connection that was not admitted, with a reset rather
// than a FIN, so that no TIME_WAIT state is left behind for it.
func refuse(c net.Conn) {
	setLinger(c, 0)
	c.Close()
}

func (l *ConnLimiter) refuseLocked(counter prometheus.Counter, key netip.Addr) {
	counter.Inc()
	l.unlogged++
	now := l.now()
	if now.Sub(l.lastLog) < time.Minute {
		return
	}
	l.logger.Warn("refusing connections: connection bound reached",
		"refused", l.unlogged, "open", l.open, "max_conns", l.maxConns,
		"max_conns_per_ip", l.maxPerIP, "last_client", key.String())
	l.unlogged = 0
	l.lastLog = now
}

// releaseLocked gives c's place back; it does nothing the second time.
func (l *ConnLimiter) releaseLocked(c *limitedConn) {
	if c.released {
		return
	}
	c.released = true
	l.unidleLocked(c)
	l.open--
	if l.released != nil {
		l.released()
	}
	if cl := l.clients[c.key]; cl != nil {
		if cl.open--; cl.open <= 0 {
			delete(l.clients, c.key)
		}
	}
}

func (l *ConnLimiter) unidleLocked(c *limitedConn) {
	if c.idleAll != nil {
		l.idle.Remove(c.idleAll)
		c.idleAll = nil
	}
	if c.idleIP != nil {
		if cl := l.clients[c.key]; cl != nil {
			cl.idle.Remove(c.idleIP)
		}
		c.idleIP = nil
	}
}

// ConnState is the http.Server ConnState hook that tells the limiter which
// connections are idle (waiting for a request, so that they may be closed
// to make room) and which are gone.
func (l *ConnLimiter) ConnState(nc net.Conn, state http.ConnState) {
	c, ok := nc.(*limitedConn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch state {
	case http.StateNew, http.StateIdle:
		if c.released || c.idleAll != nil {
			return
		}
		cl := l.clients[c.key]
		if cl == nil {
			return
		}
		c.idleAll = l.idle.PushBack(c)
		c.idleIP = cl.idle.PushBack(c)
	case http.StateActive, http.StateHijacked:
		l.unidleLocked(c)
	case http.StateClosed:
		l.releaseLocked(c)
	}
}

// counts returns the open and the idle connections.
func (l *ConnLimiter) counts() (open, idle int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open, l.idle.Len()
}
