// Package unixsock binds and dials unix sockets by paths of any length and
// tells who is at the other end of one.
//
// A socket's path is limited to 107 bytes; a longer one (a state dir deep
// in a file system) is reached through its directory, opened with O_PATH
// and named as /proc/self/fd/N/NAME.
package unixsock

import (
	"context"
	"fmt"
	"net"
	"os/user"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// maxPath is the longest path a sockaddr_un holds with its NUL.
const maxPath = 107

// via calls fn with a path that names path and fits a sockaddr_un.
func via(path string, fn func(string) error) error {
	if len(path) <= maxPath {
		return fn(path)
	}
	fd, err := unix.Open(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", filepath.Dir(path), err)
	}
	defer unix.Close(fd)
	return fn(fmt.Sprintf("/proc/self/fd/%d/%s", fd, filepath.Base(path)))
}

// Listen binds a unix socket at path. Closing the listener leaves the
// socket's file: its owner removes path.
func Listen(path string) (net.Listener, error) {
	var ln net.Listener
	err := via(path, func(p string) error {
		var err error
		ln, err = net.Listen("unix", p)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	// Not at Close by the name bound: a /proc path no longer resolves then.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	return ln, nil
}

// Dial connects to the unix socket at path.
func Dial(ctx context.Context, path string) (net.Conn, error) {
	var c net.Conn
	err := via(path, func(p string) error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, "unix", p)
		return err
	})
	return c, err
}

// PeerUser is the unix account of the process at the other end of c, from
// the socket's peer credentials (SO_PEERCRED): the kernel's word, which
// the peer cannot forge.
func PeerUser(c *net.UnixConn) (string, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return "", err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return "", err
	}
	if credErr != nil {
		return "", fmt.Errorf("peer credentials: %w", credErr)
	}
	u, err := user.LookupId(strconv.Itoa(int(cred.Uid)))
	if err != nil {
		return "", fmt.Errorf("peer uid %d: %w", cred.Uid, err)
	}
	return u.Username, nil
}
