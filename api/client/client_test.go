package client

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"testing"

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
	} {
		if got := Retryable(err); got != want {
			t.Errorf("Retryable(%v) = %v, want %v", err, got, want)
		}
	}
}
