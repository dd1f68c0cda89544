package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// waitMain is the wait subcommand, run inside a namespace: it polls TARGET
// (an http:// URL that must answer 200, or host:port that must accept a
// connection) until it is ready or --timeout passes.
func waitMain(args []string) error {
	fs := pflag.NewFlagSet("wait", pflag.ContinueOnError)
	timeout := fs.Duration("timeout", time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("wait: want one URL or host:port")
	}
	target := fs.Arg(0)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	var last error
	for {
		if strings.HasPrefix(target, "http://") {
			last = probeHTTP(ctx, client, target)
		} else {
			var d net.Dialer
			var c net.Conn
			if c, last = d.DialContext(ctx, "tcp", target); last == nil {
				c.Close()
			}
		}
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w (last: %v)", target, ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func probeHTTP(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, res.Status)
	}
	return nil
}
