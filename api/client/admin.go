package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
)

// Admin talks to a daemon's admin API (a token with the admin scope) and
// commits sessions by ID (a token with the publish scope). Failures of
// the network and 5xx answers are retried for the retry budget.
type Admin struct {
	c      *Client
	budget time.Duration
}

// NewAdmin returns a client of the daemon at address. caFile, if set, is
// a PEM file of CAs trusted beside the system's.
func NewAdmin(address, token, caFile string, retryTimeout time.Duration) (*Admin, error) {
	if token == "" {
		return nil, Permanent("no token: pass --token, --token-file or set OSTREE_UPLOAD_TOKEN")
	}
	c, err := New(address, token, 1, caFile)
	if err != nil {
		return nil, &PermanentError{Err: err}
	}
	return &Admin{c: c, budget: retryTimeout}, nil
}

func (a *Admin) do(ctx context.Context, method, path string, in, out any) error {
	return classifyAdmin(a.c.Retry(ctx, a.budget, func() error { return a.c.JSON(ctx, method, path, in, out) }))
}

// classifyAdmin turns refusals into messages that say what to do.
func classifyAdmin(err error) error {
	var he *HTTPError
	switch {
	case !errors.As(err, &he) || he.Status >= 500:
		return err
	case he.Status == http.StatusUnauthorized:
		return Permanent("the daemon refused the token (%s)", he.Body.Error)
	case he.Body.Code == api.CodeCheckFailed:
		return Permanent("%s", CheckRefusal(he.Body))
	}
	return Permanent("%s", he.Body.Error)
}

// Sessions lists the open and publishing sessions; with all, the ended
// ones the daemon keeps too.
func (a *Admin) Sessions(ctx context.Context, all bool) ([]api.AdminSession, error) {
	var out []api.AdminSession
	q := ""
	if all {
		q = "?all=true"
	}
	return out, a.do(ctx, http.MethodGet, api.PathAdmin+"/sessions"+q, nil, &out)
}

// Session shows one session.
func (a *Admin) Session(ctx context.Context, id string) (api.AdminSession, error) {
	var out api.AdminSession
	return out, a.do(ctx, http.MethodGet, api.PathAdmin+"/sessions/"+url.PathEscape(id), nil, &out)
}

// Abort aborts an open session.
func (a *Admin) Abort(ctx context.Context, id string) (api.AdminSession, error) {
	var out api.AdminSession
	return out, a.do(ctx, http.MethodDelete, api.PathAdmin+"/sessions/"+url.PathEscape(id), nil, &out)
}

// Fail fails a session whose publish cannot finish.
func (a *Admin) Fail(ctx context.Context, id string) (api.AdminSession, error) {
	var out api.AdminSession
	return out, a.do(ctx, http.MethodPost, api.PathAdmin+"/sessions/"+url.PathEscape(id)+"/fail", nil, &out)
}

// Prune removes the repository's history beyond a depth (see
// api.PruneRequest).
func (a *Admin) Prune(ctx context.Context, req api.PruneRequest) (api.PruneResult, error) {
	var out api.PruneResult
	return out, a.do(ctx, http.MethodPost, api.PathAdmin+"/prune", req, &out)
}

// Tokens lists the tokens.
func (a *Admin) Tokens(ctx context.Context) ([]api.Token, error) {
	var out []api.Token
	return out, a.do(ctx, http.MethodGet, api.PathAdmin+"/tokens", nil, &out)
}

// Revoke revokes a token by name or ID.
func (a *Admin) Revoke(ctx context.Context, which string) (api.Token, error) {
	var out api.Token
	return out, a.do(ctx, http.MethodDelete, api.PathAdmin+"/tokens/"+url.PathEscape(which), nil, &out)
}

// Mint makes a token for a CI job, within this admin token's scope; the
// answer holds its secret, shown this once.
func (a *Admin) Mint(ctx context.Context, req api.TokenRequest) (api.MintedToken, error) {
	var out api.MintedToken
	return out, a.do(ctx, http.MethodPost, api.PathAdmin+"/tokens", req, &out)
}

// Promote publishes in the repository of the address a commit already
// published in the daemon's repository req.From.
func (a *Admin) Promote(ctx context.Context, req api.PromoteRequest) (api.Session, error) {
	var out api.Session
	return out, a.do(slowAnswer(ctx), http.MethodPost, api.PathPromote, req, &out)
}

// Commit publishes a session: the token's own, or one uploaded by an
// upload-only token, if this token has the publish scope and may push
// every ref of it.
// With force, it agrees to a session of another token that was made with
// force (it may move refs backwards).
func (a *Admin) Commit(ctx context.Context, id string, force bool) (api.Session, error) {
	var out api.Session
	err := a.do(slowAnswer(ctx), http.MethodPost, api.PathSessions+"/"+url.PathEscape(id)+"/commit", api.CommitRequest{Force: force}, &out)
	if err != nil {
		return out, fmt.Errorf("commit session %s: %w", id, err)
	}
	return out, nil
}

// Close releases idle connections.
func (a *Admin) Close() error {
	a.c.CloseIdleConnections()
	return nil
}
