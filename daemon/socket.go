package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"

	"github.com/ostree-upload/ostree-upload/internal/unixsock"
)

// SocketName is the unix socket a daemon listens on in each repository's
// state dir: `ostree-upload ssh-serve`, run by sshd for a push over ssh,
// relays the push to the daemon through it. Its requests authenticate as
// the unix account of the process at the other end (see config's
// accounts).
//
// The socket is made mode 0660 with the state dir's group: the accounts
// that push over ssh need that group, and the state dir must let the
// group through (chgrp GROUP STATE_DIR; chmod 0710 STATE_DIR).
const SocketName = "push.sock"

// SocketOf is the path of the socket of the repository whose state dir is
// stateDir.
func SocketOf(stateDir string) string { return filepath.Join(stateDir, SocketName) }

// listenSocket binds the socket in stateDir, replacing one a killed daemon
// left (the caller holds the state dir's lock).
func listenSocket(stateDir string, log *slog.Logger) (net.Listener, error) {
	path := SocketOf(stateDir)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove the stale socket %s: %w", path, err)
	}
	ln, err := unixsock.Listen(path)
	if err != nil {
		return nil, err
	}
	var st syscall.Stat_t
	if err := syscall.Stat(stateDir, &st); err == nil {
		if err := os.Lchown(path, -1, int(st.Gid)); err != nil {
			log.Warn("cannot give the push socket the state dir's group", "socket", path, "err", err)
		}
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return &accountListener{Listener: ln, path: path, log: log}, nil
}

// accountListener accepts connections as httpapi.AccountConn, named by
// their peer's credentials.
type accountListener struct {
	net.Listener
	path string
	log  *slog.Logger
}

func (l *accountListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		user, err := unixsock.PeerUser(c.(*net.UnixConn))
		if err != nil {
			l.log.Warn("push socket: connection refused", "err", err)
			c.Close()
			continue
		}
		return &accountConn{Conn: c, user: user}, nil
	}
}

// Close stops listening and removes the socket.
func (l *accountListener) Close() error {
	err := l.Listener.Close()
	if rerr := os.Remove(l.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
		err = rerr
	}
	return err
}

// accountConn is a connection whose peer is a unix account.
type accountConn struct {
	net.Conn
	user string
}

func (c *accountConn) Account() string { return c.user }

// NewAccountConn makes c a connection whose requests authenticate as the
// unix account user: for the standard streams of `ostree-upload
// ssh-serve`, which sshd started for that account.
func NewAccountConn(c net.Conn, user string) net.Conn { return &accountConn{Conn: c, user: user} }

// openSockets binds the socket of every repository.
func (d *Daemon) openSockets() ([]net.Listener, error) {
	var lns []net.Listener
	for _, name := range d.names {
		ln, err := listenSocket(d.repos[name].StateDir(), d.log)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, repoError(name, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}
