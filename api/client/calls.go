package client

import (
	"context"
	"io"
	"net/http"
	"net/url"

	"github.com/ostree-upload/ostree-upload/api"
)

// The calls of a push, one request each; Retry wraps them.

// Info asks what the daemon holds and allows the token.
func (c *Client) Info(ctx context.Context) (api.Info, error) {
	var out api.Info
	return out, c.JSON(ctx, http.MethodGet, api.PathInfo, nil, &out)
}

// CreateSession opens a session, or resumes the token's open one with the
// same ref updates.
func (c *Client) CreateSession(ctx context.Context, req api.SessionRequest) (api.Session, error) {
	var out api.Session
	return out, c.JSON(ctx, http.MethodPost, api.PathSessions, req, &out)
}

// Check asks how the daemon would answer a push of req.Refs, each ref on
// its own; nothing is created or changed.
func (c *Client) Check(ctx context.Context, req api.CheckRequest) (api.CheckResult, error) {
	var out api.CheckResult
	return out, c.JSON(ctx, http.MethodPost, api.PathCheck, req, &out)
}

// Session reads a session.
func (c *Client) Session(ctx context.Context, id string) (api.Session, error) {
	var out api.Session
	return out, c.JSON(ctx, http.MethodGet, api.PathSessions+"/"+url.PathEscape(id), nil, &out)
}

// Negotiate sends object names (at most api.MaxNamesPerRequest) and
// returns those the daemon still needs.
func (c *Client) Negotiate(ctx context.Context, id string, req api.ObjectsRequest) ([]string, error) {
	var out api.ObjectsResponse
	err := c.JSON(ctx, http.MethodPost, api.PathSessions+"/"+url.PathEscape(id)+"/objects", req, &out)
	return out.Needed, err
}

// Commit publishes a session.
func (c *Client) Commit(ctx context.Context, id string, force bool) (api.Session, error) {
	var out api.Session
	var body any
	if force {
		body = api.CommitRequest{Force: true}
	}
	return out, c.JSON(slowAnswer(ctx), http.MethodPost, api.PathSessions+"/"+url.PathEscape(id)+"/commit", body, &out)
}

// Abort ends an open session of the token.
func (c *Client) Abort(ctx context.Context, id string) error {
	return c.JSON(ctx, http.MethodDelete, api.PathSessions+"/"+url.PathEscape(id), nil, nil)
}

// SendPack posts a pack of size bytes read from body.
func (c *Client) SendPack(ctx context.Context, id string, body io.Reader, size int64) (api.PackResult, error) {
	var out api.PackResult
	return out, c.Call(ctx, http.MethodPost, api.PacksPath(id), body, size, "application/x-tar", &out)
}
