package main

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

// notifySocket plays systemd: a datagram socket named in NOTIFY_SOCKET.
func notifySocket(t *testing.T) *net.UnixConn {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", sock)
	return conn
}

func TestSdNotify(t *testing.T) {
	conn := notifySocket(t)
	if err := sdNotify("READY=1"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("got %q, %v", buf[:n], err)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := sdNotify("READY=1"); err != nil {
		t.Fatalf("without NOTIFY_SOCKET: %v", err)
	}
}

func TestExtendStartup(t *testing.T) {
	conn := notifySocket(t)
	done := extendStartup(20 * time.Millisecond)
	buf := make([]byte, 128)
	var got []string
	for len(got) < 3 {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(buf[:n]))
	}
	done()
	if got[0] != "STATUS=recovering\nEXTEND_TIMEOUT_USEC=40000" || got[2] != "EXTEND_TIMEOUT_USEC=40000" {
		t.Fatalf("messages %q", got)
	}
	conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	for {
		if _, err := conn.Read(buf); err != nil {
			break // nothing more after done, but what was in flight
		}
	}
	conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := conn.Read(buf); err == nil {
		t.Fatalf("still extending after done: %q", buf[:n])
	}
}
