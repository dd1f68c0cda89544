package httpapi

import (
	"context"
	"net"
)

// AccountConn is a connection whose peer the operating system vouches for:
// the peer credentials of a unix socket, or the standard streams of a
// command sshd started for an account. Its requests authenticate as that
// unix account (see auth.Keyring.Account); their Authorization header is
// not looked at.
type AccountConn interface {
	net.Conn
	// Account is the peer's unix account name.
	Account() string
}

type accountKey struct{}

// connContext puts an AccountConn's account into its requests' context.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if ac, ok := c.(AccountConn); ok {
		return context.WithValue(ctx, accountKey{}, ac.Account())
	}
	return ctx
}
