package client

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
)

// Upload URLs the daemon answers are reduced to a path on the configured
// address: the token never follows a scheme or host the daemon made up, and
// a repository's upload URL behind a proxy's path prefix (which the daemon
// does not know) still lands on the configured address.
func TestUploadPath(t *testing.T) {
	id := "/api/v1/uploads/0123456789abcdef0123456789abcdef/fedcba9876543210fedcba9876543210"
	for _, base := range []string{"https://ostree.example.com", "https://ostree.example.com/push", "https://ostree.example.com/ostree/beta"} {
		c, err := New(base, "t", 1, "")
		if err != nil {
			t.Fatal(err)
		}
		prefix, _ := url.Parse(base)
		for _, loc := range []string{id, "http://127.0.0.1:8080" + id, "http://evil.example" + prefix.Path + id, "http://127.0.0.1:8080/beta" + id} {
			p, err := c.UploadPath(loc)
			if err != nil || c.URL(p) != base+id {
				t.Errorf("base %s, Location %s: %q, %v", base, loc, c.URL(p), err)
			}
		}
		for _, bad := range []string{"/etc/passwd", id + "/..", "/api/v1/uploads/../sessions", id[:len(id)-1], ""} {
			if _, err := c.UploadPath(bad); err == nil {
				t.Errorf("accepted %q", bad)
			}
		}
	}
}

// TLS problems are permanent (exit 1), not worth retrying; network failures
// and 5xx are temporary.
func TestTemporary(t *testing.T) {
	tlsErr := &url.Error{Op: "Get", URL: "https://x", Err: x509.UnknownAuthorityError{}}
	netErr := &url.Error{Op: "Get", URL: "https://x", Err: fmt.Errorf("dial tcp: connection refused")}
	for err, want := range map[error]bool{
		tlsErr:                  false,
		netErr:                  true,
		&HTTPError{Status: 503}: true,
		&HTTPError{Status: 409}: false,
		&HTTPError{Status: 400, Body: api.Error{Error: "ERR_UPLOAD_INTERRUPTED: upload has been interrupted by another request for this upload resource"}}: true,
		&HTTPError{Status: 400, Body: api.Error{Error: "bad JSON body"}}:                                                                                   false,
		&HTTPError{Status: 401}: false,
		ErrStalled:              true,
		errors.New("anything"):  false,
		// net/http's HTTP/2 client, when the connection under a pack dies.
		fmt.Errorf("pack of 406 objects: %w", errors.New("http2: client connection force closed via ClientConn.Close")): true,
		fmt.Errorf("pack of 1 objects: %w", errors.New("http2: client connection lost")):                                true,
		errors.New("http2: Transport received Server's graceful shutdown GOAWAY"):                                       true,
	} {
		if got := Retryable(err); got != want {
			t.Errorf("Retryable(%v) = %v, want %v", err, got, want)
		}
	}
}

// A 503 with Retry-After (a daemon draining for a restart) is retried no
// sooner than the daemon said, and the header is capped.
func TestRetryAfterIsHonoured(t *testing.T) {
	var calls []time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls = append(calls, time.Now())
		if len(calls) == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	c, err := New(srv.URL, "t", 1, "")
	if err != nil {
		t.Fatal(err)
	}
	err = c.Retry(context.Background(), time.Minute, func() error { return c.JSON(context.Background(), "GET", api.PathInfo, nil, &struct{}{}) })
	if err != nil || len(calls) != 2 {
		t.Fatalf("%v after %d calls", err, len(calls))
	}
	if d := calls[1].Sub(calls[0]); d < time.Second {
		t.Fatalf("retried after %s, Retry-After said 1 s", d)
	}
	he := &HTTPError{}
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "86400")
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	_, _, err = c.send(context.Background(), "GET", "/", nil, 0, nil)
	if !errors.As(err, &he) || he.RetryAfter != maxRetryAfter {
		t.Fatalf("a day's Retry-After: %v", err)
	}
}

// A commit waits for its answer as long as the daemon's hooks may take
// (SlowAnswerTimeout), far longer than other calls: the answer comes after
// the repository's check_hook, the publish and its update_hook. (Here both
// waits are shortened, in the same ratio as far as the test goes.)
func TestCommitWaitsForTheHooks(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Second) // a check in progress
		w.Write([]byte(`{"id": "s", "state": "published"}`))
	}))
	defer srv.Close()
	c, err := New(srv.URL, "t", 1, "")
	if err != nil {
		t.Fatal(err)
	}
	if d := c.slow.Transport.(*http.Transport).ResponseHeaderTimeout; d != SlowAnswerTimeout || d < 40*time.Minute {
		t.Fatalf("a commit waits %s for its answer", d)
	}
	c.http.Transport.(*http.Transport).ResponseHeaderTimeout = 200 * time.Millisecond
	c.slow.Transport.(*http.Transport).ResponseHeaderTimeout = 10 * time.Second
	if _, err := c.Session(context.Background(), "s"); err == nil {
		t.Fatal("an ordinary call waited past its timeout")
	}
	if s, err := c.Commit(context.Background(), "s", false); err != nil || s.State != api.StatePublished {
		t.Fatalf("commit: %+v, %v", s, err)
	}
	a := &Admin{c: c, budget: time.Second}
	if _, err := a.Commit(context.Background(), "s", false); err != nil {
		t.Fatalf("sessions commit: %v", err)
	}
	if _, err := a.Promote(context.Background(), api.PromoteRequest{Ref: "r"}); err != nil {
		t.Fatalf("promote: %v", err)
	}
}
