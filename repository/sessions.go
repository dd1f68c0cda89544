package repository

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/journal"
	"github.com/ostree-upload/ostree-upload/service"
	"github.com/ostree-upload/ostree-upload/store"
	"github.com/ostree-upload/ostree-upload/store/object"
)

// maxRefsPerSession bounds the ref updates of one session.
const maxRefsPerSession = 1000

// journalBytesPerName is what the journal may grow by for each object name
// a negotiation registers (measured: about 140 bytes at the file's
// high-water mark, 77 of records), with room to spare.
const journalBytesPerName = 256

// CreateSession opens or resumes a session (see service.Repository). The
// repository's force and dry_run act on every session of a unix account
// (a push over ssh), as ostree-push's receiver applies them.
func (s *Service) CreateSession(ctx context.Context, id auth.Identity, req api.SessionRequest) (api.Session, bool, error) {
	req.Force, req.DryRun = s.accountOptions(id, req.Force, req.DryRun)
	if len(req.Objects) > api.MaxNamesPerRequest {
		return api.Session{}, false, refuse(service.TooLarge, "%d names in one request, at most %d", len(req.Objects), api.MaxNamesPerRequest)
	}
	for _, n := range req.Objects {
		if _, err := object.ParseName(n); err != nil {
			e := refuse(service.Invalid, "%v", err)
			e.Body.Object = n
			return api.Session{}, false, e
		}
	}
	sess, created, err := s.createSession(ctx, id, req)
	if err != nil || req.DryRun {
		return sess, false, err
	}
	if len(req.Objects) > 0 {
		if sess.Needed, err = s.Negotiate(ctx, id, sess.ID, api.ObjectsRequest{Objects: req.Objects}); err != nil {
			return api.Session{}, false, err
		}
		sess.Negotiated = len(req.Objects)
	}
	return sess, created, nil
}

// accountOptions are force and dryRun as a request of id gives them, with
// the repository's force and dry_run added for a unix account's (a push
// over ssh).
func (s *Service) accountOptions(id auth.Identity, force, dryRun bool) (bool, bool) {
	if id.Account == "" {
		return force, dryRun
	}
	return force || s.cfg.Force, dryRun || s.cfg.DryRun
}

func (s *Service) createSession(ctx context.Context, id auth.Identity, req api.SessionRequest) (api.Session, bool, error) {
	var none api.Session
	if err := s.checkRefCount(len(req.Refs)); err != nil {
		return none, false, err
	}
	prod, err := s.repo.ListRefs(ctx)
	if err != nil {
		return none, false, err
	}
	seen := map[string]bool{}
	refs := make([]journal.RefUpdate, 0, len(req.Refs))
	names := make([]string, 0, len(req.Refs))
	for _, r := range req.Refs {
		if e := checkRefUpdate(id, r, prod, seen); e != nil {
			return none, false, e
		}
		refs = append(refs, journal.RefUpdate{Ref: r.Name, Old: r.Old, New: r.New})
		names = append(names, r.Name)
	}
	if e := refConflict(names, prod); e != nil {
		return none, false, e
	}
	if req.DryRun {
		return api.Session{State: api.StateDryRun, Refs: req.Refs, Force: req.Force}, false, nil
	}
	if err := s.roomFor(int64(len(refs)+1) * journalBytesPerName * 4); err != nil {
		return none, false, err
	}
	sess, created, err := s.journal.CreateOrResume(ctx, journal.Session{
		Owner: id.Hash, OwnerName: id.DisplayName(), Refs: refs, Force: req.Force,
	})
	if errors.Is(err, journal.ErrRevoked) { // revoked while this request was on its way
		return none, false, refuse(service.Unauthenticated, "%v", errRevoked)
	}
	if errors.Is(err, journal.ErrTooMany) {
		e := refuse(service.TooMany, "token %s has %d open sessions (max_sessions_per_token): publish or abort one first (ostree-upload sessions list)", id.DisplayName(), s.cfg.MaxSessionsPerToken)
		e.Body.Code = api.CodeLimit
		return none, false, e
	}
	if err != nil {
		return none, false, err
	}
	if created {
		s.metrics.sessions.Inc()
		s.log.Info("session created", "session", sess.ID, "token", id.DisplayName(), "refs", len(refs))
	} else {
		s.log.Info("session resumed", "session", sess.ID, "token", id.DisplayName())
	}
	out, err := s.sessionView(ctx, sess)
	return out, created, err
}

// checkRefCount refuses a session of n refs: none, too many, or more than
// one where no summary update publishes them at once.
func (s *Service) checkRefCount(n int) error {
	if n == 0 || n > maxRefsPerSession {
		return refuse(service.Invalid, "a session moves 1 to %d refs, not %d", maxRefsPerSession, n)
	}
	if !s.cfg.Update && n > 1 {
		// Without a summary update there is no single publish point:
		// several refs would become visible one by one.
		return refuse(service.Invalid, "this daemon does not update the summary (update: false), so a session moves one ref, not %d", n)
	}
	return nil
}

// checkRefUpdate refuses a ref update that no session of id may hold: a
// bad ref name or checksum, a ref named twice (seen holds the refs before
// it), a ref outside the token's globs, or a ref of production (prod) that
// is at neither old nor new.
func checkRefUpdate(id auth.Identity, r api.RefUpdate, prod map[string]object.Checksum, seen map[string]bool) *service.Error {
	if err := store.ValidateRef(r.Name); err != nil {
		return refuse(service.Invalid, "%v", err)
	}
	if seen[r.Name] {
		return refuse(service.Invalid, "ref %s named twice", r.Name)
	}
	seen[r.Name] = true
	if _, err := object.ParseChecksum(r.New); err != nil {
		return refuse(service.Invalid, "ref %s: new: %v", r.Name, err)
	}
	if r.Old != "" {
		if _, err := object.ParseChecksum(r.Old); err != nil {
			return refuse(service.Invalid, "ref %s: old: %v", r.Name, err)
		}
	}
	if !id.AllowsRef(r.Name) {
		e := refuse(service.Forbidden, "%s may not push ref %s (its refs: %s): push it with an identity whose refs cover it", id.Subject(), r.Name, strings.Join(id.Refs, ", "))
		e.Body.Ref = r.Name
		return e
	}
	cur, ok := prod[r.Name]
	if curStr := cur.String(); (ok && curStr != r.Old && curStr != r.New) || (!ok && r.Old != "") {
		e := refuse(service.Conflict, "ref %s is at %s, not %s: fetch the current state and retry", r.Name, refState(ok, cur), orNone(r.Old))
		e.Body.Ref = r.Name
		return e
	}
	return nil
}

// refConflict refuses refs (names) of which one would be a directory of
// another or of a ref of production (prod).
func refConflict(names []string, prod map[string]object.Checksum) *service.Error {
	ref, other, found := store.RefConflict(names, prod)
	if !found {
		return nil
	}
	e := refuse(service.Conflict, "ref %s cannot exist beside ref %s (one would be a directory of the other): choose another name", ref, other)
	e.Body.Ref, e.Body.Code = ref, api.CodeRefConflict
	return e
}

func refState(ok bool, c object.Checksum) string {
	if !ok {
		return "absent"
	}
	return c.String()
}

func orNone(s string) string {
	if s == "" {
		return "absent"
	}
	return s
}

// sessionView is the API form of a session, with its unverified uploads.
func (s *Service) sessionView(ctx context.Context, sess journal.Session) (api.Session, error) {
	out := sessionHead(sess)
	ups, err := s.journal.SessionUploads(ctx, sess.ID)
	if err != nil {
		return out, err
	}
	for _, u := range ups {
		if u.State == journal.UploadVerified {
			continue
		}
		v := api.Upload{ID: u.ID, URL: api.PathUploads + "/" + u.ID, Object: u.Object, Size: u.Size, State: "open"}
		if u.State == journal.UploadReceived {
			v.State, v.Offset = "received", u.Size
		} else if fi, err := os.Stat(s.uploadPath(u.ID)); err == nil {
			v.Offset = fi.Size()
		}
		out.Uploads = append(out.Uploads, v)
	}
	return out, nil
}

// Session shows a session of the token, or a staged session it may
// publish (see service.Repository).
func (s *Service) Session(ctx context.Context, id auth.Identity, sid string) (api.Session, error) {
	sess, err := s.ownedSession(ctx, id, sid, true)
	if err != nil {
		return api.Session{}, err
	}
	// Uploads that completed without a verdict are judged before anyone
	// reads the session.
	if err := s.settleSession(ctx, sess.ID); err != nil {
		return api.Session{}, err
	}
	if sess, err = s.journal.Get(ctx, sess.ID); err != nil {
		return api.Session{}, err
	}
	return s.sessionView(ctx, sess)
}

// Negotiate registers names in a session and returns those it still needs
// (see service.Repository).
func (s *Service) Negotiate(ctx context.Context, id auth.Identity, sid string, req api.ObjectsRequest) ([]string, error) {
	names := req.Objects
	sess, err := s.ownedSession(ctx, id, sid, false)
	if err != nil {
		return nil, err
	}
	if e := openOrConflict(sess); e != nil {
		return nil, e
	}
	if len(names) > api.MaxNamesPerRequest {
		return nil, refuse(service.TooLarge, "%d names in one request, at most %d", len(names), api.MaxNamesPerRequest)
	}
	if !req.NoWait {
		s.packs.settle(ctx, sess.ID, packSettleWait)
	}
	candidates := make([]string, 0, len(names))
	for _, n := range names {
		name, err := object.ParseName(n)
		if err != nil {
			e := refuse(service.Invalid, "%v", err)
			e.Body.Object = n
			return nil, e
		}
		has := false
		if name.Type == object.CommitMeta { // merged at publish, whatever production has
			if e := s.commitMetaAllowed(ctx, sess, name); e != nil {
				if e.Body.Code != api.CodeMetaScope {
					return nil, e
				}
				// Production's stays: not needed from this token.
				s.log.Info("detached metadata not taken: the commit is published under a ref the token may not push", "session", sess.ID, "object", n, "ref", e.Body.Ref)
				continue
			}
		} else if has, err = s.repo.HasObject(ctx, name); err != nil {
			return nil, err
		}
		if !has {
			candidates = append(candidates, name.String())
		}
	}
	// The journal grows by about journalBytesPerName for each new name.
	if err := s.roomFor(int64(len(candidates)) * journalBytesPerName); err != nil {
		return nil, err
	}
	needed, err := s.journal.Need(ctx, sess.ID, candidates, s.cfg.MaxObjectsPerSession)
	var tm *journal.TooManyError
	if errors.As(err, &tm) {
		if tm.What == "objects in the session" {
			return nil, refuse(service.TooLarge, "session would hold more than %d objects (max_objects_per_session)", s.cfg.MaxObjectsPerSession)
		}
		e := refuse(service.TooLarge, "the open sessions of token %s would hold more than %d objects (max_objects_per_token): publish or abort some first", id.DisplayName(), s.cfg.MaxObjectsPerToken)
		e.Body.Code = api.CodeLimit
		return nil, e
	}
	if err != nil {
		return nil, err
	}
	if needed == nil {
		needed = []string{}
	}
	return needed, nil
}

// lockedSession loads the caller's session sid, locked: its state cannot
// change until unlock is called.
func (s *Service) lockedSession(ctx context.Context, id auth.Identity, sid string, publisher bool) (sess journal.Session, unlock func(), err error) {
	if sess, err = s.ownedSession(ctx, id, sid, publisher); err != nil {
		return sess, nil, err
	}
	unlock = s.lockSession(sess.ID)
	if sess, err = s.journal.Get(ctx, sess.ID); err != nil {
		unlock()
		return sess, nil, err
	}
	return sess, unlock, nil
}

// Abort ends an open session of the token (see service.Repository).
func (s *Service) Abort(ctx context.Context, id auth.Identity, sid string) error {
	sess, unlock, err := s.lockedSession(ctx, id, sid, false)
	if err != nil {
		return err
	}
	defer unlock()
	return s.endSession(ctx, sess, "aborted by the client")
}

// dropSession ends a session: its uploads are deleted and its state becomes
// st. With release, spool objects no other session holds are then freed at
// once (a crash in between leaves the release to the due queue, which
// SetState filled); otherwise they stay for the same token's next session
// until the janitor releases them a TTL later, so a refused or aborted push
// loses nothing.
func (s *Service) dropSession(ctx context.Context, sess journal.Session, st journal.State, result string, release bool) error {
	if err := s.deleteUploads(ctx, sess.ID); err != nil {
		return err
	}
	s.log.Info("session ended", "session", sess.ID, "state", st, "result", result)
	if err := s.journal.SetState(ctx, sess.ID, st, result); err != nil {
		return err
	}
	if release && s.spools != nil {
		return s.releaseSpool(ctx, sess)
	}
	return nil
}

// deleteUploads deletes the session's uploads: their files, their journal
// records and the session's upload directory.
func (s *Service) deleteUploads(ctx context.Context, sessionID string) error {
	ups, err := s.journal.SessionUploads(ctx, sessionID)
	if err != nil {
		return err
	}
	for _, u := range ups {
		s.removeUploadFiles(u.ID)
		if err := s.journal.DeleteUpload(ctx, u.ID); err != nil {
			return err
		}
	}
	os.Remove(filepath.Join(s.tusDir, sessionID)) // empty by now
	return nil
}

// abortIfOpen aborts the session with result if it is still open once its
// lock is held; sessions in any other state are left alone.
func (s *Service) abortIfOpen(ctx context.Context, id, result string) error {
	unlock := s.lockSession(id)
	defer unlock()
	cur, err := s.journal.Get(ctx, id)
	if err != nil || cur.State != journal.StateOpen {
		return err
	}
	return s.dropSession(ctx, cur, journal.StateAborted, result, false)
}

// releaseSpool frees the spool objects only this session held. The session
// must have left the live states, so that nothing marks its objects
// verified once its release has begun (journal.ReleaseSession).
func (s *Service) releaseSpool(ctx context.Context, sess journal.Session) error {
	sp, err := s.spoolFor(ctx, sess.Owner)
	if err != nil {
		return err
	}
	return sp.Release(ctx, sess.ID)
}

// Info describes the repository as the token sees it: its refs the token
// may push, the limits, and the token itself.
func (s *Service) Info(ctx context.Context, id auth.Identity) (api.Info, error) {
	refs, err := s.repo.ListRefs(ctx)
	if err != nil {
		return api.Info{}, err
	}
	out := api.Info{
		Repository: s.name,
		Protocol:   api.ProtocolVersion,
		Version:    s.version,
		Mode:       "archive",
		Refs:       make(map[string]string, len(refs)),
		Limits: api.Limits{
			MaxObjectsPerSession: s.cfg.MaxObjectsPerSession,
			MaxObjectSize:        int64(s.cfg.MaxObjectSize),
			MaxNamesPerRequest:   api.MaxNamesPerRequest,
			MaxPackSize:          int64(s.cfg.MaxPackSize),
		},
	}
	for name, sum := range refs {
		if id.AllowsRef(name) {
			out.Refs[name] = sum.String()
		}
	}
	if id.Account != "" {
		out.DryRun, out.Force = s.cfg.DryRun, s.cfg.Force
	}
	t := id.View()
	t.Configured = true // it authenticated: it is in the configuration file
	out.Token = &t
	return out, nil
}

// ownedSession loads the caller's session sid. With publisher, a staged
// session (see mayPublish) is also given to a caller that may publish it.
// Any other token's session is reported as not found.
func (s *Service) ownedSession(ctx context.Context, id auth.Identity, sid string, publisher bool) (journal.Session, error) {
	if !isSessionID(sid) {
		return journal.Session{}, refuse(service.NotFound, "session not found")
	}
	sess, err := s.journal.Get(ctx, sid)
	if errors.Is(err, journal.ErrNotFound) {
		return journal.Session{}, refuse(service.NotFound, "session not found")
	}
	if err == nil && sess.Owner != id.Hash && !(publisher && s.mayPublish(id, sess)) {
		return journal.Session{}, refuse(service.NotFound, "session not found")
	}
	return sess, err
}

// isSessionID reports whether sid has the form of a session ID: 32
// lower-case hex digits.
func isSessionID(sid string) bool {
	if len(sid) != 32 {
		return false
	}
	for i := 0; i < len(sid); i++ {
		if c := sid[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// mayPublish reports whether id may read and commit another token's
// session: the session is staged (its owner may upload but not publish),
// id has the publish scope, and id may push every ref of the session.
// Sessions of tokens that can publish stay private to them.
func (s *Service) mayPublish(id auth.Identity, sess journal.Session) bool {
	owner, ok := s.tokens.Load().Lookup(sess.Owner)
	if !ok || owner.Can(auth.ScopePublish) || !id.Can(auth.ScopePublish) || s.Revoked(sess.Owner) ||
		(owner.Expires != nil && owner.Expires.Before(time.Now())) {
		return false
	}
	for _, r := range sess.Refs {
		if !id.AllowsRef(r.Ref) {
			return false
		}
	}
	return true
}

// openOrConflict is nil for an open session, else the refusal with code
// session-not-open that uploads, packs and negotiation answer.
func openOrConflict(sess journal.Session) *service.Error {
	if sess.State == journal.StateOpen {
		return nil
	}
	e := refuse(service.Conflict, "session is %s", sess.State)
	e.Body.Code = api.CodeSessionNotOpen
	return e
}

var errRevoked = errors.New("token revoked")
