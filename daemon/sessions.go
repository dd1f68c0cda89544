package daemon

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"

	"github.com/labstack/echo/v4"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/journal"
	"github.com/ostree-upload/ostree-upload/store"
	"github.com/ostree-upload/ostree-upload/store/object"
)

// maxRefsPerSession bounds the ref updates of one session.
const maxRefsPerSession = 1000

// journalBytesPerName is what the journal may grow by for each object name
// a negotiation registers (measured: 150 to 260 bytes), with room to spare.
const journalBytesPerName = 512

func (s *Server) handleCreateSession(c echo.Context) error {
	ctx := c.Request().Context()
	var req api.SessionRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if len(req.Refs) == 0 || len(req.Refs) > maxRefsPerSession {
		return fail(http.StatusBadRequest, "a session moves 1 to %d refs, not %d", maxRefsPerSession, len(req.Refs))
	}
	if s.opts.NoUpdate && len(req.Refs) > 1 {
		// Without a summary update there is no single publish point:
		// several refs would become visible one by one.
		return fail(http.StatusBadRequest, "this daemon does not update the summary (update: false), so a session moves one ref, not %d", len(req.Refs))
	}
	id := identity(c)
	prod, err := s.repo.ListRefs(ctx)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	refs := make([]journal.RefUpdate, 0, len(req.Refs))
	names := make([]string, 0, len(req.Refs))
	for _, r := range req.Refs {
		if err := store.ValidateRef(r.Name); err != nil {
			return fail(http.StatusBadRequest, "%v", err)
		}
		if seen[r.Name] {
			return fail(http.StatusBadRequest, "ref %s named twice", r.Name)
		}
		seen[r.Name] = true
		if _, err := object.ParseChecksum(r.New); err != nil {
			return fail(http.StatusBadRequest, "ref %s: new: %v", r.Name, err)
		}
		if r.Old != "" {
			if _, err := object.ParseChecksum(r.Old); err != nil {
				return fail(http.StatusBadRequest, "ref %s: old: %v", r.Name, err)
			}
		}
		if !id.AllowsRef(r.Name) {
			e := fail(http.StatusForbidden, "token %s may not push ref %s", id.DisplayName(), r.Name)
			e.body.Ref = r.Name
			return e
		}
		cur, ok := prod[r.Name]
		if curStr := cur.String(); (ok && curStr != r.Old && curStr != r.New) || (!ok && r.Old != "") {
			e := fail(http.StatusConflict, "ref %s is at %s, not %s: fetch the current state and retry", r.Name, refState(ok, cur), orNone(r.Old))
			e.body.Ref = r.Name
			return e
		}
		refs = append(refs, journal.RefUpdate{Ref: r.Name, Old: r.Old, New: r.New})
		names = append(names, r.Name)
	}
	if ref, other, found := store.RefConflict(names, prod); found {
		e := fail(http.StatusConflict, "ref %s cannot exist beside ref %s (one would be a directory of the other): choose another name", ref, other)
		e.body.Ref, e.body.Code = ref, api.CodeRefConflict
		return e
	}
	if req.DryRun {
		return c.JSON(http.StatusOK, api.Session{State: api.StateDryRun, Refs: req.Refs, Force: req.Force})
	}
	if err := s.roomFor(int64(len(refs)+1) * journalBytesPerName * 4); err != nil {
		e := fail(http.StatusInsufficientStorage, "%v", err)
		e.body.Code = api.CodeSpace
		return e
	}
	sess, created, err := s.journal.CreateOrResume(ctx, journal.Session{
		Owner: id.Hash, OwnerName: id.DisplayName(), Refs: refs, Force: req.Force,
	})
	if errors.Is(err, journal.ErrRevoked) { // revoked while this request was on its way
		s.metrics.authFailures.Inc()
		return fail(http.StatusUnauthorized, "%v", errRevoked)
	}
	if errors.Is(err, journal.ErrTooMany) {
		e := fail(http.StatusTooManyRequests, "token %s has %d open sessions (max_sessions_per_token): publish or abort one first (ostree-upload sessions list)", id.DisplayName(), s.opts.MaxSessionsPerToken)
		e.body.Code = api.CodeLimit
		return e
	}
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		s.metrics.sessions.Inc()
		s.log.Info("session created", "session", sess.ID, "token", id.DisplayName(), "refs", len(refs))
	} else {
		s.log.Info("session resumed", "session", sess.ID, "token", id.DisplayName())
	}
	out, err := s.sessionView(ctx, sess)
	if err != nil {
		return err
	}
	return c.JSON(status, out)
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
func (s *Server) sessionView(ctx context.Context, sess journal.Session) (api.Session, error) {
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

func (s *Server) handleGetSession(c echo.Context) error {
	ctx := c.Request().Context()
	sess, err := s.ownedSession(c, true)
	if err != nil {
		return err
	}
	// Uploads that completed without a verdict are judged before anyone
	// reads the session.
	if err := s.settleSession(ctx, sess.ID); err != nil {
		return err
	}
	if sess, err = s.journal.Get(ctx, sess.ID); err != nil {
		return err
	}
	out, err := s.sessionView(ctx, sess)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) handleObjects(c echo.Context) error {
	ctx := c.Request().Context()
	sess, err := s.ownedSession(c, false)
	if err != nil {
		return err
	}
	if e := openOrConflict(sess); e != nil {
		return e
	}
	var req api.ObjectsRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if len(req.Objects) > api.MaxNamesPerRequest {
		return fail(http.StatusRequestEntityTooLarge, "%d names in one request, at most %d", len(req.Objects), api.MaxNamesPerRequest)
	}
	s.packs.settle(ctx, sess.ID, packSettleWait)
	candidates := make([]string, 0, len(req.Objects))
	for _, n := range req.Objects {
		name, err := object.ParseName(n)
		if err != nil {
			e := fail(http.StatusBadRequest, "%v", err)
			e.body.Object = n
			return e
		}
		has := false
		if name.Type == object.CommitMeta { // merged at publish, whatever production has
			if e := s.commitMetaAllowed(ctx, sess, name); e != nil {
				if e.body.Code != api.CodeMetaScope {
					return e
				}
				// Production's stays: not needed from this token.
				s.log.Info("detached metadata not taken: the commit is published under a ref the token may not push", "session", sess.ID, "object", n, "ref", e.body.Ref)
				continue
			}
		} else if has, err = s.repo.HasObject(ctx, name); err != nil {
			return err
		}
		if !has {
			candidates = append(candidates, name.String())
		}
	}
	// The journal grows by about journalBytesPerName for each new name.
	if err := s.roomFor(int64(len(candidates)) * journalBytesPerName); err != nil {
		e := fail(http.StatusInsufficientStorage, "%v", err)
		e.body.Code = api.CodeSpace
		return e
	}
	needed, err := s.journal.Need(ctx, sess.ID, candidates, s.opts.MaxObjectsPerSession)
	var tm *journal.TooManyError
	if errors.As(err, &tm) {
		if tm.What == "objects in the session" {
			return fail(http.StatusRequestEntityTooLarge, "session would hold more than %d objects (max_objects_per_session)", s.opts.MaxObjectsPerSession)
		}
		e := fail(http.StatusRequestEntityTooLarge, "the open sessions of token %s would hold more than %d objects (max_objects_per_token): publish or abort some first", identity(c).DisplayName(), s.opts.MaxObjectsPerToken)
		e.body.Code = api.CodeLimit
		return e
	}
	if err != nil {
		return err
	}
	if needed == nil {
		needed = []string{}
	}
	return c.JSON(http.StatusOK, api.ObjectsResponse{Needed: needed})
}

// lockedSession loads the caller's session named in the path, locked: its
// state cannot change until unlock is called.
func (s *Server) lockedSession(c echo.Context, publisher bool) (sess journal.Session, unlock func(), err error) {
	if sess, err = s.ownedSession(c, publisher); err != nil {
		return sess, nil, err
	}
	unlock = s.lockSession(sess.ID)
	if sess, err = s.journal.Get(c.Request().Context(), sess.ID); err != nil {
		unlock()
		return sess, nil, err
	}
	return sess, unlock, nil
}

func (s *Server) handleAbort(c echo.Context) error {
	ctx := c.Request().Context()
	sess, unlock, err := s.lockedSession(c, false)
	if err != nil {
		return err
	}
	defer unlock()
	if err := s.endSession(ctx, sess, "aborted by the client"); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// dropSession ends a session: its uploads are deleted and its state becomes
// st. With release, spool objects no other session holds are freed at once;
// otherwise they stay for the same token's next session until the janitor
// releases them a TTL later, so a refused or aborted push loses nothing.
func (s *Server) dropSession(ctx context.Context, sess journal.Session, st journal.State, result string, release bool) error {
	if err := s.deleteUploads(ctx, sess.ID); err != nil {
		return err
	}
	if release {
		if err := s.releaseSpool(ctx, sess); err != nil {
			return err
		}
	}
	s.log.Info("session ended", "session", sess.ID, "state", st, "result", result)
	return s.journal.SetState(ctx, sess.ID, st, result)
}

// deleteUploads deletes the session's uploads: their files, their journal
// records and the session's upload directory.
func (s *Server) deleteUploads(ctx context.Context, sessionID string) error {
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
func (s *Server) abortIfOpen(ctx context.Context, id, result string) error {
	unlock := s.lockSession(id)
	defer unlock()
	cur, err := s.journal.Get(ctx, id)
	if err != nil || cur.State != journal.StateOpen {
		return err
	}
	return s.dropSession(ctx, cur, journal.StateAborted, result, false)
}

// releaseSpool frees the spool objects only this session held, under the
// spool's exclusive lock so that no adoption of the same object interleaves
// between the journal's release and the unlink.
func (s *Server) releaseSpool(ctx context.Context, sess journal.Session) error {
	sp, err := s.spoolFor(ctx, sess.Owner)
	if err != nil {
		return err
	}
	sp.mu.Lock()
	freed, err := s.journal.ReleaseSession(ctx, sess.ID, sess.Owner)
	for _, n := range freed {
		name, perr := object.ParseName(n)
		if perr != nil {
			continue
		}
		if rerr := sp.repo.Remove(name); rerr != nil {
			s.log.Warn("cannot free spool object", "object", n, "err", rerr)
		}
	}
	sp.mu.Unlock()
	if err != nil {
		return err
	}
	return s.journal.DeleteSessionObjects(ctx, sess.ID)
}
