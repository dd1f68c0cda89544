package main

import (
	"fmt"
	"net"
	"os"
	"time"
)

// sdNotify tells systemd (Type=notify) about the daemon's state, e.g.
// "READY=1" once it listens, so that `systemctl start` returns only then.
// Without NOTIFY_SOCKET it does nothing.
func sdNotify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' { // an abstract socket
		path = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(state))
	return err
}

// extendStartup keeps systemd's start timeout from running out while the
// daemon recovers (interrupted publishes, uploads to verify), which can
// take longer than TimeoutStartSec: every period it asks for two more
// periods, until the returned function is called.
func extendStartup(period time.Duration) (done func()) {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return func() {}
	}
	stop := make(chan struct{})
	finished := make(chan struct{})
	ask := fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", (2 * period).Microseconds())
	go func() {
		defer close(finished)
		t := time.NewTicker(period)
		defer t.Stop()
		sdNotify("STATUS=recovering\n" + ask)
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				sdNotify(ask)
			}
		}
	}()
	return func() { close(stop); <-finished }
}
