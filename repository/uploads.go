package repository

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/internal/failpoint"
	"github.com/ostree-upload/ostree-upload/journal"
	"github.com/ostree-upload/ostree-upload/service"
	"github.com/ostree-upload/ostree-upload/store/object"
)

// uploadPath is where the tus store keeps an upload's bytes.
func (s *Service) uploadPath(id string) string {
	return filepath.Join(s.tusDir, filepath.FromSlash(id))
}

func (s *Service) removeUploadFiles(id string) {
	p := s.uploadPath(id)
	os.Remove(p)
	os.Remove(p + ".info")
}

// Upload tells how to answer a tus request on an upload of the token (see
// service.Uploads): another token's upload is not found; a request that
// appends to an upload of a session no longer open is a conflict; a
// complete upload without a verdict is judged first; a verified one is
// answered from the journal (a DELETE forgets it).
func (s *Service) Upload(ctx context.Context, id auth.Identity, uploadID, method string) (service.UploadState, error) {
	var none service.UploadState
	up, err := s.journal.GetUpload(ctx, uploadID)
	if errors.Is(err, journal.ErrNotFound) {
		return none, refuse(service.NotFound, "upload not found")
	}
	if err != nil {
		return none, err
	}
	sess, err := s.journal.Get(ctx, up.Session)
	if err != nil || sess.Owner != id.Hash {
		return none, refuse(service.NotFound, "upload not found")
	}
	if e := openOrConflict(sess); e != nil && method == http.MethodPatch {
		return none, e
	}
	if up.State == journal.UploadReceived && method != http.MethodDelete {
		// Complete but unjudged: judge it now rather than let the tus
		// store report a complete upload that may yet be refused.
		if err := s.settle(ctx, up); err != nil {
			return none, s.verdictError(up, err)
		}
		if up, err = s.journal.GetUpload(ctx, up.ID); err != nil {
			return none, err
		}
	}
	st := service.UploadState{Verified: up.State == journal.UploadVerified, Object: up.Object, Size: up.Size}
	if st.Verified && method == http.MethodDelete {
		return st, s.journal.DeleteUpload(ctx, up.ID)
	}
	return st, nil
}

func newUploadID(session string) string {
	var b [16]byte
	rand.Read(b[:])
	return session + "/" + hex.EncodeToString(b[:])
}

// CreateUpload authorizes a new upload of an object negotiated in an open
// session of the token, and gives it the daemon's ID (see service.Uploads).
func (s *Service) CreateUpload(ctx context.Context, id auth.Identity, req service.UploadRequest) (string, error) {
	sid, obj := req.Session, req.Object
	if sid == "" {
		return "", refuse(service.Invalid, "Upload-Metadata needs session (the session ID)")
	}
	if !isSessionID(sid) {
		return "", refuse(service.Invalid, "Upload-Metadata session %.40q is not a session ID (32 lower-case hexadecimal digits)", sid)
	}
	sess, err := s.journal.Get(ctx, sid)
	if err != nil || sess.Owner != id.Hash {
		return "", refuse(service.NotFound, "session not found")
	}
	if e := openOrConflict(sess); e != nil {
		return "", e
	}
	refuseObj := func(kind service.Kind, code, format string, args ...any) error {
		e := refuse(kind, format, args...)
		e.Body.Object, e.Body.Code = obj, code
		return e
	}
	name, err := object.ParseName(obj)
	if err != nil {
		return "", refuseObj(service.Invalid, "", "Upload-Metadata object: %v", err)
	}
	if req.Concatenation {
		return "", refuseObj(service.Invalid, "", "upload concatenation is not supported")
	}
	if req.Deferred {
		return "", refuseObj(service.Invalid, "", "a deferred length (Upload-Defer-Length) is not supported: give the object's size in Upload-Length")
	}
	if req.Size <= 0 {
		return "", refuseObj(service.Invalid, "", "Upload-Length must be given and positive")
	}
	if limit := s.sizeLimit(name.Type); req.Size > limit {
		return "", refuseObj(service.TooLarge, "", "%s objects are at most %d bytes", name.Type.Ext(), limit)
	}
	if e := s.commitMetaAllowed(ctx, sess, name); e != nil {
		return "", e
	}
	st, err := s.journal.ObjectState(ctx, sid, name.String())
	switch {
	case errors.Is(err, journal.ErrNotFound):
		return "", refuseObj(service.Conflict, "", "object was not requested in this session: send its name to %s/%s/objects first", api.PathSessions, sid)
	case err != nil:
		return "", err
	case settled(name, st):
		return "", refuseObj(service.Conflict, api.CodeVerified, "object is already verified")
	}
	if err := s.roomFor(req.Size); err != nil {
		e, _ := service.AsError(err)
		e.Body.Object = obj
		return "", e
	}
	uid := newUploadID(sid)
	err = s.journal.AddUpload(ctx, journal.Upload{ID: uid, Session: sid, Object: name.String(), Size: req.Size, State: journal.UploadOpen})
	var live *journal.LiveUploadError
	var tm *journal.TooManyError
	switch {
	case errors.As(err, &tm):
		return "", refuseObj(service.TooMany, api.CodeLimit, "the session has %d uploads in progress: finish one first", tm.Have)
	case errors.As(err, &live):
		e := refuse(service.Conflict, "object already has an upload in this session")
		e.Body.Object, e.Body.Upload, e.Body.Code = obj, api.PathUploads+"/"+live.UploadID, api.CodeLiveUpload
		return "", e
	case err != nil:
		return "", err
	}
	return uid, nil
}

// settled reports whether an object of a session takes no more bytes: it is
// verified, and it is not detached metadata, which is named after its
// commit rather than its content and so may be sent again.
func settled(n object.Name, st journal.ObjState) bool {
	return st == journal.ObjVerified && n.Type != object.CommitMeta
}

// sizeLimit is the largest upload accepted for an object type.
func (s *Service) sizeLimit(t object.Type) int64 {
	if t == object.File {
		return int64(s.cfg.MaxObjectSize)
	}
	return object.MaxSize(t)
}

// verifyOptions are the limits and the pacing of one verification by w: a
// file's content may not exceed max_object_size, and CPU work is shared
// fairly between tokens.
func (s *Service) verifyOptions(w *worker) object.VerifyOptions {
	return object.VerifyOptions{MaxContentSize: int64(s.cfg.MaxObjectSize), Work: w.Work}
}

// commitMetaAllowed accepts detached metadata only for a new commit of the
// session (400 otherwise: it is named after its commit, not its content,
// so anything else could replace another push's signatures), and only when
// every ref of production that points at the commit is one the session's
// token may push (403 with code commitmeta-scope otherwise: every client of
// those refs verifies that metadata).
func (s *Service) commitMetaAllowed(ctx context.Context, sess journal.Session, n object.Name) *service.Error {
	if n.Type != object.CommitMeta {
		return nil
	}
	if !slices.ContainsFunc(sess.Refs, func(r journal.RefUpdate) bool { return r.New == n.Sum.String() }) {
		e := refuse(service.Invalid, "detached metadata %s is not for a new commit of this session", n)
		e.Body.Object = n.String()
		return e
	}
	refs, err := s.repo.ListRefs(ctx)
	if err != nil {
		e := refuse(service.Unavailable, "cannot read the repository's refs: retry later")
		e.RetryAfter = time.Second * 5
		return e
	}
	if ref := s.lockedMetaRef(ctx, sess.Owner, n.Sum, refs); ref != "" {
		e := refuse(service.Forbidden, "commit %s is published as ref %s, which token %s may not push: its detached metadata stays as production has it; push without it", n.Sum, ref, sess.OwnerName)
		e.Body.Object, e.Body.Ref, e.Body.Code = n.String(), ref, api.CodeMetaScope
		return e
	}
	return nil
}

// FinishUpload judges an upload whose last byte arrived (see
// service.Uploads): the client learns the verdict in the answer of its
// last request.
func (s *Service) FinishUpload(ctx context.Context, uploadID string) error {
	ctx = context.WithoutCancel(ctx) // a HEAD must not cancel a verdict
	up, err := s.journal.GetUpload(ctx, uploadID)
	if err != nil {
		return err
	}
	if err := s.settle(ctx, up); err != nil {
		return s.verdictError(up, err)
	}
	return nil
}

// verdictError is the refusal a failed verdict gives: 422 for bytes that
// are not the object, not found for an upload gone.
func (s *Service) verdictError(up journal.Upload, err error) error {
	switch {
	case object.IsCorrupt(err):
		e := refuse(service.Unprocessable, "%v", err)
		e.Body.Object = up.Object
		return e
	case errors.Is(err, errUploadLost):
		e := refuse(service.NotFound, "%v", err)
		e.Body.Object = up.Object
		return e
	}
	return fmt.Errorf("cannot verify upload of %s: %w", up.Object, err)
}

// TerminateUpload forgets an upload the client deletes.
func (s *Service) TerminateUpload(ctx context.Context, uploadID string) error {
	return s.journal.DeleteUpload(context.WithoutCancel(ctx), uploadID)
}

var errUploadLost = errors.New("upload data is gone: create the upload again")

// settle judges a complete upload: it is journaled as received, verified
// strictly, then either moved into the spool and journaled as verified, or
// deleted and journaled as rejected. A verdict is never reached twice.
func (s *Service) settle(ctx context.Context, up journal.Upload) error {
	ctx = context.WithoutCancel(ctx) // a verdict, once started, is reached
	defer s.lockUpload(up.ID)()
	cur, err := s.journal.GetUpload(ctx, up.ID)
	if err != nil {
		if errors.Is(err, journal.ErrNotFound) {
			return errUploadLost
		}
		return err
	}
	if cur.State == journal.UploadVerified {
		return nil
	}
	sess, err := s.journal.Get(ctx, up.Session)
	if err != nil {
		return err
	}
	name, err := object.ParseName(up.Object)
	if err != nil {
		return err
	}
	sp, err := s.spoolFor(ctx, sess.Owner)
	if err != nil {
		return err
	}
	path := s.uploadPath(up.ID)
	fromSpool := false
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		// A crash between the move into the spool and the journal entry.
		path = sp.ObjectPath(name)
		if _, err := os.Stat(path); err != nil {
			s.journal.DeleteUpload(ctx, up.ID)
			return errUploadLost
		}
		fromSpool = true
	} else if err != nil {
		return err
	}
	failpoint.Hit("before-verdict")
	start := time.Now()
	w := s.verifying.worker(s.drained, sess.Owner)
	info, err := object.VerifyFile(name, path, s.verifyOptions(w))
	w.Release()
	s.metrics.verifySeconds.Observe(time.Since(start).Seconds())
	if err == nil && info.Size != up.Size {
		err = &object.CorruptError{Name: name, Reason: fmt.Sprintf("%d bytes, Upload-Length said %d", info.Size, up.Size)}
	}
	if object.IsCorrupt(err) {
		s.metrics.rejected.Inc()
		s.log.Warn("object rejected", "session", up.Session, "object", up.Object, "reason", err)
		if fromSpool {
			sp.Reject(name)
		}
		s.removeUploadFiles(up.ID)
		return errors.Join(err, s.journal.MarkRejected(ctx, up.Session, up.Object, err.Error()), s.journal.DeleteUpload(ctx, up.ID))
	}
	if err != nil {
		return s.markReceived(ctx, up, err)
	}
	if err := sp.AdmitFile(ctx, up.ID, name, path, up.Size); err != nil {
		return s.markReceived(ctx, up, err)
	}
	os.Remove(s.uploadPath(up.ID) + ".info")
	s.metrics.verified.Inc()
	s.metrics.verifiedBytes.Add(float64(up.Size))
	return nil
}

// markReceived records that an upload is complete but has no verdict yet
// (verification failed for a reason other than the bytes), so that it is
// judged again on the next read of its session or at start-up. Complete
// uploads judged at once skip this write: recovery finds them by size.
func (s *Service) markReceived(ctx context.Context, up journal.Upload, cause error) error {
	return errors.Join(cause,
		s.journal.SetUploadState(ctx, up.ID, journal.UploadReceived),
		s.journal.MarkReceived(ctx, up.Session, up.Object))
}

// settleSession judges every complete upload of a session that has no
// verdict yet.
func (s *Service) settleSession(ctx context.Context, sid string) error {
	ctx = context.WithoutCancel(ctx)
	ups, err := s.journal.SessionUploads(ctx, sid)
	if err != nil {
		return err
	}
	for _, u := range ups {
		if !s.complete(ctx, u) {
			continue
		}
		if err := s.settle(ctx, u); err != nil && !object.IsCorrupt(err) && !errors.Is(err, errUploadLost) {
			return err
		}
	}
	return nil
}

// complete reports whether all bytes of an unjudged upload have arrived:
// in tusd's file, or already moved into the spool by a verdict that was cut
// short before it was journaled.
func (s *Service) complete(ctx context.Context, u journal.Upload) bool {
	switch u.State {
	case journal.UploadReceived:
		return true
	case journal.UploadOpen:
		fi, err := os.Stat(s.uploadPath(u.ID))
		if err == nil {
			return fi.Size() == u.Size
		}
		sess, err := s.journal.Get(ctx, u.Session)
		if err != nil {
			return false
		}
		sp, err := s.spoolFor(ctx, sess.Owner)
		if err != nil {
			return false
		}
		name, err := object.ParseName(u.Object)
		if err != nil {
			return false
		}
		fi, err = os.Stat(sp.Repo().ObjectPath(name))
		return err == nil && fi.Size() == u.Size
	}
	return false
}

// roomFor refuses (with a NoSpace refusal) to take n more bytes when that
// would leave the production filesystem below its free-space floor
// (libostree's min-free-space-size or -percent, read at start-up as
// libostree reads it), keeping service.SpaceWindow free for every upload
// receiving bytes at this moment: the spools and the journal share that
// filesystem, and libostree does not check the objects it imports from
// there by hard link.
func (s *Service) roomFor(n int64) error {
	floor := s.spaceFloor
	free, err := s.repo.FreeSpace()
	if err != nil {
		s.metrics.noSpace.Inc()
		return err
	}
	windows := s.writers.Load() * service.SpaceWindow
	if n < 0 || free < floor+uint64(windows)+uint64(n) {
		s.metrics.noSpace.Inc()
		e := refuse(service.NoSpace, "the repository's filesystem has %d MiB free and keeps at least %d MiB (min-free-space): free some space and retry", free>>20, floor>>20)
		e.Body.Code = api.CodeSpace
		return e
	}
	return nil
}

// Receiving counts a request that brings upload bytes (see
// service.Uploads).
func (s *Service) Receiving() (done func()) {
	s.writers.Add(1)
	return func() { s.writers.Add(-1) }
}

// RoomForBytes refuses when the next window of every upload receiving
// bytes would take the filesystem below its floor (see service.Uploads).
func (s *Service) RoomForBytes() error { return s.roomFor(0) }
