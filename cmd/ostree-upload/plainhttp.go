package main

import (
	"log/slog"
	"net"
)

// plainHTTPWarning is what receive logs when it serves plain HTTP on an
// address other hosts can reach.
const plainHTTPWarning = "serving plain HTTP on an address other hosts can reach: tokens and uploads cross the network unencrypted; listen on 127.0.0.1 behind a TLS proxy (docs/examples/nginx.conf), or serve HTTPS with --tls-cert and --tls-key"

// warnPlainHTTP logs plainHTTPWarning unless addr, where the daemon
// listens without TLS, is a loopback address. An unspecified address
// (":8080", "0.0.0.0:8080") is every interface.
func warnPlainHTTP(log *slog.Logger, addr net.Addr) {
	if tcp, ok := addr.(*net.TCPAddr); ok && tcp.IP.IsLoopback() {
		return
	}
	log.Warn(plainHTTPWarning, "address", addr.String())
}
