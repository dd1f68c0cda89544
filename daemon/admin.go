package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/journal"
)

// ByLocal names, in the journal and the log, what a command run on the
// server itself did (as opposed to a token's request).
const ByLocal = "local"

// Admin answers the administration commands: sessions of every token,
// aborting them, the tokens and their revocation. The running daemon
// answers them over its admin API; with the daemon stopped, OpenAdmin
// answers them from its state dir.
type Admin struct {
	s     *Server
	close func() error
}

// Admin returns the daemon's administration interface.
func (s *Server) Admin() *Admin { return &Admin{s: s} }

// OpenAdmin opens the state dir of a stopped daemon. While the daemon runs,
// its journal is locked and the error matches journal.ErrInUse.
func OpenAdmin(ctx context.Context, stateDir string, keyring *auth.Keyring, log *slog.Logger) (*Admin, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	path := filepath.Join(stateDir, journalFile)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("no journal in %s (is it the daemon's state dir?): %w", stateDir, err)
	}
	j, err := journal.Open(path, 200*time.Millisecond)
	if err != nil {
		return nil, err
	}
	s := &Server{log: log, stateDir: stateDir, journal: j, tusDir: filepath.Join(stateDir, "uploads"), life: ctx}
	s.keyring.Store(keyring)
	if err := s.loadRevoked(ctx); err != nil {
		j.Close()
		return nil, err
	}
	return &Admin{s: s, close: j.Close}, nil
}

// Close releases what OpenAdmin opened; on the daemon's own Admin it does
// nothing.
func (a *Admin) Close() error {
	if a.close == nil {
		return nil
	}
	return a.close()
}

// Sessions lists the open and publishing sessions, oldest first; with all,
// the ended ones the journal still keeps too.
func (a *Admin) Sessions(ctx context.Context, all bool) ([]api.AdminSession, error) {
	ss, err := a.s.journal.List(ctx)
	if err != nil {
		return nil, err
	}
	out := []api.AdminSession{}
	for _, sess := range ss {
		if all || sess.State.Live() {
			out = append(out, adminView(sessionHead(sess), sess))
		}
	}
	return out, nil
}

// Session shows one session with its unfinished uploads.
func (a *Admin) Session(ctx context.Context, id string) (api.AdminSession, error) {
	sess, err := a.get(ctx, id)
	if err != nil {
		return api.AdminSession{}, err
	}
	v, err := a.s.sessionView(ctx, sess)
	return adminView(v, sess), err
}

// Abort ends an open session of any token, as its owner's abort would:
// its partial uploads are deleted, its verified objects stay for the
// token's next push until the TTL. by says who, for the log and the
// session's result.
func (a *Admin) Abort(ctx context.Context, id, by string) (api.AdminSession, error) {
	unlock := a.s.lockSession(id)
	defer unlock()
	sess, err := a.get(ctx, id)
	if err != nil {
		return api.AdminSession{}, err
	}
	if err := a.s.endSession(ctx, sess, "aborted by "+by); err != nil {
		return api.AdminSession{}, err
	}
	return a.Session(ctx, id)
}

func (a *Admin) get(ctx context.Context, id string) (journal.Session, error) {
	if !hex32.MatchString(id) {
		return journal.Session{}, fail(http.StatusNotFound, "session %q not found", id)
	}
	sess, err := a.s.journal.Get(ctx, id)
	if errors.Is(err, journal.ErrNotFound) {
		return sess, fail(http.StatusNotFound, "session %s not found", id)
	}
	return sess, err
}

// Fail ends a session whose publish cannot finish (its intent is retried
// and keeps failing): its intent is dropped and it becomes failed, its
// verified objects kept for the token's next push until the TTL. A publish
// moves the refs in one transaction, so no ref or a every ref of the
// session moved; the result says which. by says who, for the log and the
// session's result.
func (a *Admin) Fail(ctx context.Context, id, by string) (api.AdminSession, error) {
	unlock := a.s.lockSession(id)
	defer unlock()
	sess, err := a.get(ctx, id)
	if err != nil {
		return api.AdminSession{}, err
	}
	if sess.State != journal.StatePublishing {
		return api.AdminSession{}, fail(http.StatusConflict, "session %s is %s, not publishing: only a publish that cannot finish is failed (abort an open session)", id, sess.State)
	}
	result := "publish failed by " + by
	if a.s.repo != nil {
		var moved []string
		if refs, err := a.s.repo.ListRefs(ctx); err == nil {
			for _, r := range sess.Refs {
				if refs[r.Ref].String() == r.New {
					moved = append(moved, r.Ref)
				}
			}
		}
		if len(moved) > 0 {
			result += "; these refs had moved already: " + strings.Join(moved, " ")
		} else {
			result += "; no ref had moved"
		}
	}
	a.s.log.Warn("publish failed by an operator", "session", id, "by", by, "result", result)
	if err := a.s.journal.DeleteIntent(ctx, id); err != nil && !errors.Is(err, journal.ErrNotFound) {
		return api.AdminSession{}, err
	}
	if err := a.s.dropSession(ctx, sess, journal.StateFailed, result, false); err != nil {
		return api.AdminSession{}, err
	}
	return a.Session(ctx, id)
}

// endSession aborts an open session; the caller holds its lock.
func (s *Server) endSession(ctx context.Context, sess journal.Session, result string) error {
	switch sess.State {
	case journal.StateOpen:
	case journal.StatePublishing:
		return fail(http.StatusConflict, "session %s is being published: if its publish can never finish, fail it (ostree-upload sessions fail %s)", sess.ID, sess.ID)
	default:
		return fail(http.StatusConflict, "session %s is already %s", sess.ID, sess.State)
	}
	return s.dropSession(ctx, sess, journal.StateAborted, result, false)
}

// Tokens lists the configured tokens, then the revoked ones no longer
// configured, with their sessions' activity.
func (a *Admin) Tokens(ctx context.Context) ([]api.Token, error) {
	ss, err := a.s.journal.List(ctx)
	if err != nil {
		return nil, err
	}
	revs, err := a.s.journal.Revocations(ctx)
	if err != nil {
		return nil, err
	}
	byHash := map[string]*api.Token{}
	var order []string
	for _, id := range a.s.keyring.Load().Identities() {
		t := tokenView(id)
		t.Configured = true
		byHash[id.Hash], order = &t, append(order, id.Hash)
	}
	for _, r := range revs {
		t := byHash[r.Owner]
		if t == nil {
			nt := tokenView(auth.Identity{Hash: r.Owner, Name: r.Name})
			nt.Scopes = nil
			t, byHash[r.Owner], order = &nt, &nt, append(order, r.Owner)
		}
		at := r.Revoked
		t.Revoked, t.RevokedBy = &at, r.By
	}
	for _, sess := range ss {
		t := byHash[sess.Owner]
		if t == nil {
			continue
		}
		if sess.State.Live() {
			t.OpenSessions++
		}
		if t.LastActivity == nil || sess.Updated.After(*t.LastActivity) {
			u := sess.Updated
			t.LastActivity = &u
		}
	}
	out := make([]api.Token, 0, len(order))
	for _, h := range order {
		out = append(out, *byHash[h])
	}
	return out, nil
}

// Revoke stops a token at once, for good: it is refused from now on, even
// if it stays in the configuration file, and its open sessions are
// aborted. which is its name or ID (see api.Token); by says who revoked it.
func (a *Admin) Revoke(ctx context.Context, which, by string) (api.Token, error) {
	id, err := a.s.findToken(which)
	if err != nil {
		return api.Token{}, err
	}
	rev, already, err := a.s.journal.Revoke(ctx, journal.Revocation{Owner: id.Hash, Name: id.DisplayName(), By: by})
	if err != nil {
		return api.Token{}, err
	}
	a.s.markRevoked(rev)
	if already {
		a.s.log.Info("token already revoked", "token", id.DisplayName(), "by", by)
	} else {
		a.s.log.Info("token revoked", "token", id.DisplayName(), "by", by)
	}
	ss, err := a.s.journal.List(ctx)
	if err != nil {
		return api.Token{}, err
	}
	for _, sess := range ss {
		if sess.Owner != id.Hash || sess.State != journal.StateOpen {
			continue
		}
		if err := a.s.abortIfOpen(ctx, sess.ID, "token revoked by "+by); err != nil {
			return api.Token{}, fmt.Errorf("aborting session %s of the revoked token: %w", sess.ID, err)
		}
	}
	toks, err := a.Tokens(ctx)
	if err != nil {
		return api.Token{}, err
	}
	for _, t := range toks {
		if t.ID == id.ID() {
			return t, nil
		}
	}
	return api.Token{}, fmt.Errorf("revoked token %s not listed", id.DisplayName())
}

// findToken finds a configured token by name, by ID, by "token-" + ID or
// by its whole hash.
func (s *Server) findToken(which string) (auth.Identity, error) {
	which = strings.TrimSpace(which)
	var found []auth.Identity
	for _, id := range s.keyring.Load().Identities() {
		if which != "" && (id.Name == which || id.DisplayName() == which || id.ID() == which || id.Hash == which) {
			found = append(found, id)
		}
	}
	switch len(found) {
	case 0:
		return auth.Identity{}, fail(http.StatusNotFound, "no configured token is named %q (give a name or an ID as tokens list shows them)", which)
	case 1:
		return found[0], nil
	}
	return auth.Identity{}, fail(http.StatusConflict, "%d tokens match %q; give the ID instead", len(found), which)
}

func tokenView(id auth.Identity) api.Token {
	return api.Token{Name: id.DisplayName(), ID: id.ID(), Scopes: id.Scopes, Refs: id.Refs, Expires: id.Expires}
}

// sessionHead is the API form of a session without its uploads.
func sessionHead(sess journal.Session) api.Session {
	out := api.Session{
		ID: sess.ID, State: string(sess.State), Force: sess.Force, Created: sess.Created, Updated: sess.Updated,
		Objects: sess.Objects, Verified: sess.Verified, Bytes: sess.Bytes, Result: sess.Result,
	}
	for _, r := range sess.Refs {
		out.Refs = append(out.Refs, api.RefUpdate{Name: r.Ref, Old: r.Old, New: r.New})
	}
	return out
}

func adminView(v api.Session, sess journal.Session) api.AdminSession {
	id := auth.Identity{Hash: sess.Owner, Name: sess.OwnerName}
	return api.AdminSession{Session: v, Token: id.DisplayName(), TokenID: id.ID()}
}

// revokedSet is the set of revoked token hashes.
type revokedSet map[string]journal.Revocation

func (s *Server) loadRevoked(ctx context.Context) error {
	revs, err := s.journal.Revocations(ctx)
	if err != nil {
		return err
	}
	set := revokedSet{}
	for _, r := range revs {
		set[r.Owner] = r
	}
	s.revoked.Store(&set)
	return nil
}

func (s *Server) markRevoked(r journal.Revocation) {
	s.revokedMu.Lock()
	defer s.revokedMu.Unlock()
	set := revokedSet{r.Owner: r}
	if old := s.revoked.Load(); old != nil {
		for k, v := range *old {
			set[k] = v
		}
	}
	s.revoked.Store(&set)
}

func (s *Server) isRevoked(hash string) bool {
	set := s.revoked.Load()
	if set == nil {
		return false
	}
	_, ok := (*set)[hash]
	return ok
}

// The admin API's handlers.

func (s *Server) handleAdminSessions(c echo.Context) error {
	all := c.QueryParam("all")
	if all != "" && all != "true" && all != "false" {
		return fail(http.StatusBadRequest, "all must be true or false")
	}
	out, err := s.Admin().Sessions(c.Request().Context(), all == "true")
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) handleAdminSession(c echo.Context) error {
	out, err := s.Admin().Session(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) handleAdminAbort(c echo.Context) error {
	out, err := s.Admin().Abort(c.Request().Context(), c.Param("id"), identity(c).DisplayName())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) handleAdminFail(c echo.Context) error {
	out, err := s.Admin().Fail(c.Request().Context(), c.Param("id"), identity(c).DisplayName())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) handleAdminTokens(c echo.Context) error {
	out, err := s.Admin().Tokens(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) handleAdminRevoke(c echo.Context) error {
	name, err := url.PathUnescape(c.Param("name")) // echo leaves escapes in when the path has them
	if err != nil {
		return fail(http.StatusBadRequest, "bad token name in the path")
	}
	out, err := s.Admin().Revoke(c.Request().Context(), name, identity(c).DisplayName())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}
