package unixsock

import (
	"context"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
)

// A socket deeper than a sockaddr_un holds is bound and reached through
// its directory, and its peer is the account at the other end.
func TestLongPathAndPeer(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "push.sock")
	if len(path) <= maxPath {
		t.Fatalf("path of %d bytes: not long enough to test", len(path))
	}
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the socket is not at its path: %v", err)
	}
	accepted := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- err.Error()
			return
		}
		defer c.Close()
		u, err := PeerUser(c.(*net.UnixConn))
		if err != nil {
			u = err.Error()
		}
		accepted <- u
	}()
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	me, _ := user.Current()
	if got := <-accepted; got != me.Username {
		t.Errorf("peer %q, want %q", got, me.Username)
	}
	if _, err := Dial(context.Background(), path+"-none"); err == nil {
		t.Error("dialled a socket that does not exist")
	}
}
