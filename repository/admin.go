package repository

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/journal"
	"github.com/ostree-upload/ostree-upload/service"
)

// ByLocal names, in the journal and the log, what a command run on the
// server itself did (as opposed to a token's request).
const ByLocal = "local"

// Sessions lists the open and publishing sessions, oldest first; with all,
// the ended ones the journal still keeps too.
func (s *Service) Sessions(ctx context.Context, all bool) ([]api.AdminSession, error) {
	ss, err := s.journal.List(ctx)
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
func (s *Service) AdminSession(ctx context.Context, id string) (api.AdminSession, error) {
	sess, err := s.adminGet(ctx, id)
	if err != nil {
		return api.AdminSession{}, err
	}
	v, err := s.sessionView(ctx, sess)
	return adminView(v, sess), err
}

// Abort ends an open session of any token, as its owner's abort would:
// its partial uploads are deleted, its verified objects stay for the
// token's next push until the TTL. by says who, for the log and the
// session's result.
func (s *Service) AbortSession(ctx context.Context, id, by string) (api.AdminSession, error) {
	unlock := s.lockSession(id)
	defer unlock()
	sess, err := s.adminGet(ctx, id)
	if err != nil {
		return api.AdminSession{}, err
	}
	if err := s.endSession(ctx, sess, "aborted by "+by); err != nil {
		return api.AdminSession{}, err
	}
	return s.AdminSession(ctx, id)
}

func (s *Service) adminGet(ctx context.Context, id string) (journal.Session, error) {
	if !isSessionID(id) {
		return journal.Session{}, refuse(service.NotFound, "session %q not found", id)
	}
	sess, err := s.journal.Get(ctx, id)
	if errors.Is(err, journal.ErrNotFound) {
		return sess, refuse(service.NotFound, "session %s not found", id)
	}
	return sess, err
}

// Fail ends a session whose publish cannot finish (its intent is retried
// and keeps failing): its intent is dropped and it becomes failed, its
// verified objects kept for the token's next push until the TTL. A publish
// moves the refs in one transaction, so no ref or a every ref of the
// session moved; the result says which. by says who, for the log and the
// session's result.
func (s *Service) FailSession(ctx context.Context, id, by string) (api.AdminSession, error) {
	unlock := s.lockSession(id)
	defer unlock()
	sess, err := s.adminGet(ctx, id)
	if err != nil {
		return api.AdminSession{}, err
	}
	if sess.State != journal.StatePublishing {
		return api.AdminSession{}, refuse(service.Conflict, "session %s is %s, not publishing: only a publish that cannot finish is failed (abort an open session)", id, sess.State)
	}
	result := "publish failed by " + by
	if s.repo != nil {
		var moved []string
		if refs, err := s.repo.ListRefs(ctx); err == nil {
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
	s.log.Warn("publish failed by an operator", "session", id, "by", by, "result", result)
	if err := s.journal.DeleteIntent(ctx, id); err != nil && !errors.Is(err, journal.ErrNotFound) {
		return api.AdminSession{}, err
	}
	if err := s.dropSession(ctx, sess, journal.StateFailed, result, false); err != nil {
		return api.AdminSession{}, err
	}
	return s.AdminSession(ctx, id)
}

// endSession aborts an open session; the caller holds its lock.
func (s *Service) endSession(ctx context.Context, sess journal.Session, result string) error {
	switch sess.State {
	case journal.StateOpen:
	case journal.StatePublishing:
		return refuse(service.Conflict, "session %s is being published: if its publish can never finish, fail it (ostree-upload sessions fail %s)", sess.ID, sess.ID)
	default:
		return refuse(service.Conflict, "session %s is already %s", sess.ID, sess.State)
	}
	return s.dropSession(ctx, sess, journal.StateAborted, result, false)
}

// Tokens lists the configured tokens, then the revoked ones no longer
// configured, with their sessions' activity.
func (s *Service) Tokens(ctx context.Context) ([]api.Token, error) {
	ss, err := s.journal.List(ctx)
	if err != nil {
		return nil, err
	}
	revs, err := s.journal.Revocations(ctx)
	if err != nil {
		return nil, err
	}
	byHash := map[string]*api.Token{}
	var order []string
	for _, id := range s.tokens.Load().Identities() {
		t := id.View()
		t.Configured = true
		byHash[id.Hash], order = &t, append(order, id.Hash)
	}
	for _, r := range revs {
		t := byHash[r.Owner]
		if t == nil {
			nt := auth.Identity{Hash: r.Owner, Name: r.Name}.View()
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
func (s *Service) Revoke(ctx context.Context, which, by string) (api.Token, error) {
	id, err := s.findToken(which)
	if err != nil {
		return api.Token{}, err
	}
	rev, already, err := s.journal.Revoke(ctx, journal.Revocation{Owner: id.Hash, Name: id.DisplayName(), By: by})
	if err != nil {
		return api.Token{}, err
	}
	s.markRevoked(rev)
	if already {
		s.log.Info("token already revoked", "token", id.DisplayName(), "by", by)
	} else {
		s.log.Info("token revoked", "token", id.DisplayName(), "by", by)
	}
	ss, err := s.journal.List(ctx)
	if err != nil {
		return api.Token{}, err
	}
	for _, sess := range ss {
		if sess.Owner != id.Hash || sess.State != journal.StateOpen {
			continue
		}
		if err := s.abortIfOpen(ctx, sess.ID, "token revoked by "+by); err != nil {
			return api.Token{}, fmt.Errorf("aborting session %s of the revoked token: %w", sess.ID, err)
		}
	}
	toks, err := s.Tokens(ctx)
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
func (s *Service) findToken(which string) (auth.Identity, error) {
	which = strings.TrimSpace(which)
	var found []auth.Identity
	for _, id := range s.tokens.Load().Identities() {
		if which != "" && (id.Name == which || id.DisplayName() == which || id.ID() == which || id.Hash == which) {
			found = append(found, id)
		}
	}
	switch len(found) {
	case 0:
		return auth.Identity{}, refuse(service.NotFound, "no configured token is named %q (give a name or an ID as tokens list shows them)", which)
	case 1:
		return found[0], nil
	}
	return auth.Identity{}, refuse(service.Conflict, "%d tokens match %q; give the ID instead", len(found), which)
}

// sessionHead is the API form of a session without its uploads.
func sessionHead(sess journal.Session) api.Session {
	out := api.Session{
		ID: sess.ID, State: string(sess.State), Force: sess.Force, Created: sess.Created, Updated: sess.Updated,
		Objects: sess.Objects, Verified: sess.Verified, Bytes: sess.Bytes, Result: sess.Result,
		Unchanged: sess.Unchanged,
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

func (s *Service) loadRevoked(ctx context.Context) error {
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

func (s *Service) markRevoked(r journal.Revocation) {
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

// Revoked reports whether the token with this hash was revoked.
func (s *Service) Revoked(hash string) bool {
	set := s.revoked.Load()
	if set == nil {
		return false
	}
	_, ok := (*set)[hash]
	return ok
}
