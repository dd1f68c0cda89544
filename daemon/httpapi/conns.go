package httpapi

import (
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/ostree-upload/ostree-upload/service"
	"github.com/prometheus/client_golang/prometheus"
)

// connLimiter bounds the daemon's connections: in total, and per client
// address (a trusted proxy's connections count in total only; its clients
// are bounded per forwarded address, by request, in perClient). At a limit,
// a new connection takes the place of the oldest connection that is idle or
// has not sent a request yet; only when every connection is busy with a
// request is the new one closed. A flood of connections that send nothing
// thus cannot keep a real client out, even from the same address.
type connLimiter struct {
	max, perClient int
	trusted        func(netip.Addr) bool
	log            *slog.Logger
	refused        *prometheus.CounterVec

	mu    sync.Mutex
	conns map[net.Conn]*connInfo
	byIP  map[netip.Addr]int
	// lastLog rate-limits the log line of each reason.
	lastLog map[string]time.Time

	reqMu    sync.Mutex
	requests map[string]int // in-flight requests per forwarded client
}

type connInfo struct {
	ip      netip.Addr
	proxy   bool
	state   http.ConnState
	since   time.Time // of the state
	counted bool      // in byIP
}

func newConnLimiter(max, perClient int, trusted func(netip.Addr) bool, log *slog.Logger, refused *prometheus.CounterVec) *connLimiter {
	return &connLimiter{max: max, perClient: perClient, trusted: trusted, log: log, refused: refused,
		conns: map[net.Conn]*connInfo{}, byIP: map[netip.Addr]int{}, lastLog: map[string]time.Time{}, requests: map[string]int{}}
}

// listener wraps ln so that every accepted connection is admitted first.
func (l *connLimiter) listener(ln net.Listener) net.Listener {
	return &limitedListener{Listener: ln, l: l}
}

type limitedListener struct {
	net.Listener
	l *connLimiter
}

func (ll *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if ll.l.admit(c) {
			return c, nil
		}
		c.Close()
	}
}

func addrOf(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// admit records a new connection, making room for it at a limit by
// closing the oldest connection not serving a request; it reports whether
// the connection may stay.
func (l *connLimiter) admit(c net.Conn) bool {
	ip := addrOf(c)
	// A proxy's connections, and those of unix accounts on the daemon's
	// socket (which have no address; sshd bounds an account's sessions),
	// count toward the total only.
	_, local := c.(AccountConn)
	proxy := local || l.trusted(ip)
	l.mu.Lock()
	var victims []net.Conn
	ok := true
	if !proxy && l.byIP[ip] >= l.perClient {
		if v := l.oldestIdle(func(_ net.Conn, i *connInfo) bool { return i.ip == ip && !i.proxy }); v != nil {
			victims = append(victims, v)
		} else {
			ok = false
			l.note("client", ip)
		}
	}
	if ok && len(l.conns)-len(victims) >= l.max {
		if v := l.oldestIdle(func(vc net.Conn, _ *connInfo) bool { return !containsConn(victims, vc) }); v != nil {
			victims = append(victims, v)
		} else {
			ok = false
			l.note("total", ip)
		}
	}
	for _, v := range victims {
		l.forget(v)
		l.note("evicted", ip)
	}
	if ok {
		l.conns[c] = &connInfo{ip: ip, proxy: proxy, state: http.StateNew, since: time.Now(), counted: !proxy}
		if !proxy {
			l.byIP[ip]++
		}
	}
	l.mu.Unlock()
	for _, v := range victims {
		v.Close()
	}
	return ok
}

func containsConn(cs []net.Conn, c net.Conn) bool {
	for _, x := range cs {
		if x == c {
			return true
		}
	}
	return false
}

// oldestIdle is the connection matching ok that has waited longest without
// a request in progress (new or idle), or nil. Called with l.mu held.
func (l *connLimiter) oldestIdle(ok func(net.Conn, *connInfo) bool) net.Conn {
	var best net.Conn
	var since time.Time
	for c, i := range l.conns {
		if (i.state == http.StateNew || i.state == http.StateIdle) && ok(c, i) && (best == nil || i.since.Before(since)) {
			best, since = c, i.since
		}
	}
	return best
}

// forget drops a connection's record. Called with l.mu held.
func (l *connLimiter) forget(c net.Conn) {
	i, ok := l.conns[c]
	if !ok {
		return
	}
	delete(l.conns, c)
	if i.counted {
		if l.byIP[i.ip]--; l.byIP[i.ip] <= 0 {
			delete(l.byIP, i.ip)
		}
	}
}

// note counts a limit that bit and logs it, at most every ten seconds per
// reason. Called with l.mu held.
func (l *connLimiter) note(reason string, ip netip.Addr) {
	l.refused.WithLabelValues(reason).Inc()
	if time.Since(l.lastLog[reason]) < 10*time.Second {
		return
	}
	l.lastLog[reason] = time.Now()
	msg := map[string]string{
		"client":  "connection refused: the client has max_connections_per_client connections, all busy",
		"total":   "connection refused: the daemon has max_connections connections, all busy",
		"evicted": "connection limit reached: closed the oldest idle connection for a new one",
	}[reason]
	l.log.Warn(msg, "client", ip.String(), "connections", len(l.conns), "max_connections", l.max, "max_connections_per_client", l.perClient)
}

// state is http.Server.ConnState.
func (l *connLimiter) state(c net.Conn, st http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch st {
	case http.StateClosed, http.StateHijacked:
		l.forget(c)
	default:
		if i, ok := l.conns[c]; ok {
			i.state, i.since = st, time.Now()
		}
	}
}

// perForwardedClient bounds the requests in flight of each client behind a
// trusted proxy (whose connections are not bounded per address): over
// max_connections_per_client, 429.
func (l *connLimiter) perForwardedClient(peerTrusted func(string) bool) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if !peerTrusted(c.Request().RemoteAddr) {
				return next(c)
			}
			client := c.RealIP()
			l.reqMu.Lock()
			if l.requests[client] >= l.perClient {
				l.reqMu.Unlock()
				l.mu.Lock()
				l.note("client", netip.Addr{})
				l.mu.Unlock()
				e := service.Refuse(service.TooMany, "client %s has %d requests in progress (max_connections_per_client): retry later", client, l.perClient)
				e.RetryAfter = time.Second
				return e
			}
			l.requests[client]++
			l.reqMu.Unlock()
			defer func() {
				l.reqMu.Lock()
				if l.requests[client]--; l.requests[client] <= 0 {
					delete(l.requests, client)
				}
				l.reqMu.Unlock()
			}()
			return next(c)
		}
	}
}
