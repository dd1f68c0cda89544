package httpapi

import (
	"net"
	"net/netip"

	"github.com/labstack/echo/v4"
)

// forwardedHeaders are the headers through which a proxy tells the client's
// address, scheme and host.
var forwardedHeaders = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Real-Ip"}

// setupForwarding makes the client address in logs, and the scheme and
// host of tusd's upload URLs, come from forwarded headers only when the
// peer is one of Options.TrustedProxies. From any other peer these headers
// are deleted before anything reads them.
func (s *Server) setupForwarding(e *echo.Echo) {
	if len(s.cfg.TrustedProxies) == 0 {
		e.IPExtractor = echo.ExtractIPDirect()
	} else {
		opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
		for _, p := range s.cfg.TrustedProxies {
			opts = append(opts, echo.TrustIPRange(prefixNet(p)))
		}
		e.IPExtractor = echo.ExtractIPFromXFFHeader(opts...)
	}
	e.Pre(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if !s.trustedPeer(c.Request().RemoteAddr) {
				for _, h := range forwardedHeaders {
					c.Request().Header.Del(h)
				}
			}
			return next(c)
		}
	})
}

// trustedPeer reports whether remoteAddr (host:port) is a trusted proxy.
func (s *Server) trustedPeer(remoteAddr string) bool {
	if len(s.cfg.TrustedProxies) == 0 {
		return false
	}
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return false
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	return s.trustedAddr(a)
}

// trustedAddr reports whether a is a trusted proxy's address.
func (s *Server) trustedAddr(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
