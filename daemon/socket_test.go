package daemon_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/daemon"
	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/internal/unixsock"
)

// socketClient is an HTTP client of the daemon's push socket in state.
func socketClient(t *testing.T, state string) *http.Client {
	t.Helper()
	sock := daemon.SocketOf(state)
	for i := 0; i < 100; i++ { // bound as the daemon starts serving
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return unixsock.Dial(ctx, sock)
	}}}
}

// The push socket authenticates its peer by the kernel's word: a request
// on it is the unix account at the other end, whatever token it carries,
// and an account the configuration does not list is refused.
func TestSocketAuthenticatesThePeer(t *testing.T) {
	t.Parallel()
	me, err := config.CurrentUser()
	if err != nil {
		t.Fatal(err)
	}
	info := func(c *http.Client, token string) (int, api.Info, string) {
		req, _ := http.NewRequest("GET", "http://socket"+api.PathInfo, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var body struct {
			api.Info
			Error string `json:"error"`
		}
		json.NewDecoder(res.Body).Decode(&body)
		return res.StatusCode, body.Info, body.Error
	}

	e := daemontest.New(t)
	e.Start()
	c := socketClient(t, e.State)
	if code, got, msg := info(c, e.Narrow.Secret); code != http.StatusOK || got.Token == nil || got.Token.Name != "unix:"+me {
		t.Errorf("info with narrow's token over the socket: %d %+v %s; want the account unix:%s", code, got.Token, msg, me)
	}
	if fi, err := os.Stat(filepath.Join(e.State, daemon.SocketName)); err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket: %v, %v; want mode 0660", fi, err)
	}

	other := daemontest.New(t)
	other.Config.Accounts = []config.Account{{User: "nobody"}}
	other.Start()
	code, _, msg := info(socketClient(t, other.State), other.Tok.Secret)
	if code != http.StatusForbidden || !strings.Contains(msg, "unix account "+me+" may not push here") {
		t.Errorf("an account not listed: %d %s", code, msg)
	}
	// HTTP/2 without TLS on the socket, which carries a push over ssh;
	// not on the TCP listener, where one connection would carry many
	// requests past the connection limits.
	h2c := func(dial func(ctx context.Context, network, addr string) (net.Conn, error), url string) error {
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		res, err := (&http.Client{Transport: &http.Transport{Protocols: p, DialContext: dial}}).Get(url + "/healthz")
		if err == nil {
			res.Body.Close()
		}
		return err
	}
	sockDial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		return unixsock.Dial(ctx, daemon.SocketOf(e.State))
	}
	if err := h2c(sockDial, "http://socket"); err != nil {
		t.Errorf("HTTP/2 on the socket: %v", err)
	}
	if err := h2c((&net.Dialer{}).DialContext, e.URL); err == nil {
		t.Error("HTTP/2 without TLS on the TCP listener was answered")
	}
	// The token still works over TCP.
	req, _ := http.NewRequest("GET", other.URL+api.PathInfo, nil)
	req.Header.Set("Authorization", "Bearer "+other.Tok.Secret)
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != http.StatusOK {
		t.Errorf("the token over TCP: %v %v", res, err)
	}
	// The socket goes with the daemon.
	other.Stop()
	if _, err := os.Stat(daemon.SocketOf(other.State)); !os.IsNotExist(err) {
		t.Errorf("the socket after the daemon stopped: %v", err)
	}
}
