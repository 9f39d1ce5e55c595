package api

import (
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/time/rate"

	"github.com/plcdir/plc/internal/defaults"
)

// Request limits: the body cap and the per-client rate limit (the
// connection limits are in connlimit.go).

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
	defaults.Positive(&burst, max(1, int(math.Ceil(perSecond))))
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
	return clientAddr(addr)
}

// clientAddr is addr as the limits count it: unmapped, without a zone, and
// an IPv6 address reduced to its /64, the block one client usually holds.
func clientAddr(addr netip.Addr) netip.Addr {
	addr = addr.Unmap().WithZone("")
	if addr.Is6() {
		if p, err := addr.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return addr
}
