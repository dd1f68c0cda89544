// Package service is what the transports (HTTP and tus, and whatever comes
// later) ask of a repository: the operations of a push and of an operator,
// in the protocol's own terms, and the refusals they end with. It holds no
// state and imports neither the journal nor the store: the repository
// package implements it, and the daemon wires the two together.
package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/auth"
)

// Repository is one repository's service: sessions, negotiation, intake of
// objects (tus uploads and packs), publishing, and administration.
// Methods that act for a client take its authenticated identity; their
// refusals are *Error values, any other error is the service's own failure.
type Repository interface {
	// Revoked reports whether the token with this hash was revoked.
	Revoked(hash string) bool
	// Info describes the repository as the token sees it.
	Info(ctx context.Context, id auth.Identity) (api.Info, error)

	// CreateSession opens a session for the ref updates of req, or resumes
	// the token's open one with the same updates (created false); a dry
	// run checks and creates nothing.
	CreateSession(ctx context.Context, id auth.Identity, req api.SessionRequest) (s api.Session, created bool, err error)
	// Check judges a push of req's ref updates, each ref on its own,
	// without creating, uploading or changing anything.
	Check(ctx context.Context, id auth.Identity, req api.CheckRequest) (api.CheckResult, error)
	// Session shows a session of the token (or one it may publish), with
	// its unverified uploads.
	Session(ctx context.Context, id auth.Identity, sid string) (api.Session, error)
	// Negotiate registers the request's object names in a session and
	// returns those the session still needs.
	Negotiate(ctx context.Context, id auth.Identity, sid string, req api.ObjectsRequest) ([]string, error)
	// Abort ends an open session of the token.
	Abort(ctx context.Context, id auth.Identity, sid string) error
	// Commit publishes a session; force agrees to another token's forced
	// session.
	Commit(ctx context.Context, id auth.Identity, sid string, force bool) (api.Session, error)
	// ReceivePack reads a pack (a tar of objects) from body and keeps
	// every entry it verifies. A refusal carries how many were kept.
	ReceivePack(ctx context.Context, id auth.Identity, sid string, body io.Reader) (api.PackResult, error)
	// Promote publishes here a commit that the repository from publishes
	// (from may be this one), without its objects crossing the network.
	Promote(ctx context.Context, id auth.Identity, from Repository, req api.PromoteRequest) (api.Session, error)

	Uploads
	Admin
}

// Uploads is the intake of tus uploads: the transport serves the tus
// protocol over files in UploadDir, and asks the service before and after.
type Uploads interface {
	// UploadDir is where the tus store keeps the uploads' files.
	UploadDir() string
	// MaxUploadSize is the largest upload the repository accepts (its
	// max_object_size).
	MaxUploadSize() int64
	// CreateUpload authorizes a new upload and returns its ID.
	CreateUpload(ctx context.Context, id auth.Identity, req UploadRequest) (string, error)
	// Upload tells how to answer a tus request (method) on an existing
	// upload of the token: judged complete uploads are answered from the
	// service, the others by the tus store.
	Upload(ctx context.Context, id auth.Identity, uploadID, method string) (UploadState, error)
	// FinishUpload judges an upload whose last byte arrived.
	FinishUpload(ctx context.Context, uploadID string) error
	// TerminateUpload forgets an upload the client deletes.
	TerminateUpload(ctx context.Context, uploadID string) error
	// Receiving counts a request that brings upload bytes, until done is
	// called; RoomForBytes is then asked before each SpaceWindow bytes.
	Receiving() (done func())
	// Draining reports that the service is stopping gracefully: bodies
	// bringing upload bytes should stop being read (what arrived stays).
	Draining() bool
	// RoomForBytes refuses (Kind NoSpace) when the next SpaceWindow bytes
	// of every upload receiving bytes would take the filesystem below its
	// free-space floor.
	RoomForBytes() error
}

// SpaceWindow is how many upload bytes may arrive between two asks of
// RoomForBytes.
const SpaceWindow = 8 << 20

// UploadRequest is a tus creation.
type UploadRequest struct {
	Session, Object string // from Upload-Metadata
	Size            int64  // Upload-Length
	Deferred        bool   // Upload-Defer-Length
	Concatenation   bool   // Upload-Concat
}

// UploadState is how a tus request on an upload is answered.
type UploadState struct {
	Verified bool   // complete and verified: answered from here, not by tus
	Object   string // the object the upload brings
	Size     int64  // its length
}

// Admin is what an operator may do: see and end any session, list and
// revoke tokens. by names who asks, for the log and the session's result.
type Admin interface {
	Sessions(ctx context.Context, all bool) ([]api.AdminSession, error)
	AdminSession(ctx context.Context, sid string) (api.AdminSession, error)
	AbortSession(ctx context.Context, sid, by string) (api.AdminSession, error)
	FailSession(ctx context.Context, sid, by string) (api.AdminSession, error)
	Tokens(ctx context.Context) ([]api.Token, error)
	Revoke(ctx context.Context, which, by string) (api.Token, error)
	Prune(ctx context.Context, req api.PruneRequest, by string) (api.PruneResult, error)
}

// Kind classifies a refusal. Each transport maps kinds to its own answers
// in one place (HTTP: a status per kind).
type Kind int

// Kinds of refusal.
const (
	Invalid         Kind = iota + 1 // the request is malformed
	Unauthenticated                 // no valid token
	Forbidden                       // the token may not do this
	NotFound                        // no such session or upload (of this token)
	Conflict                        // the state does not allow it now
	TooLarge                        // over a size or count limit
	Unprocessable                   // the objects are not what they claim, or the commit is not complete
	TooMany                         // a limit of the token is reached
	NoSpace                         // the filesystem is at its free-space floor
	Unavailable                     // try again later
	NotAllowed                      // the method makes no sense here
)

// Error is a refusal: what the client did wrong or must wait for, with the
// details of api.Error for it.
type Error struct {
	Kind       Kind
	Body       api.Error
	RetryAfter time.Duration // 0: no advice
}

func (e *Error) Error() string { return e.Body.Error }

// Refuse makes a refusal of kind with a message.
func Refuse(kind Kind, format string, args ...any) *Error {
	return &Error{Kind: kind, Body: api.Error{Error: fmt.Sprintf(format, args...)}}
}

// RestartRetryAfter is when a client cut short by a graceful stop is told
// to come back: about the time a supervised daemon takes to start again.
const RestartRetryAfter = 2 * time.Second

// Restarting is the refusal of work cut short, or not begun, because the
// daemon is stopping gracefully; what describes what was kept.
func Restarting(what string) *Error {
	e := Refuse(Unavailable, "the daemon is restarting: %s; resume in a moment", what)
	e.RetryAfter = RestartRetryAfter
	return e
}

// AsError returns err's *Error, if it is (or wraps) one.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
