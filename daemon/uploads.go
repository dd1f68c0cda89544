package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/tus/tusd/v2/pkg/filestore"
	"github.com/tus/tusd/v2/pkg/handler"
	"github.com/tus/tusd/v2/pkg/memorylocker"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/journal"
	"github.com/ostree-upload/ostree-upload/store/object"
)

// uploadPath matches the only upload URLs there are: /<session>/<upload>,
// 32 lower-case hex each, with no escaping of any kind.
var uploadPath = regexp.MustCompile(`^/([0-9a-f]{32})/([0-9a-f]{32})$`)

func (s *Server) setupTus() error {
	composer := handler.NewStoreComposer()
	fs := filestore.New(s.tusDir)
	fs.DirModePerm, fs.FileModePerm = 0o700, 0o600
	fs.UseIn(composer)
	memorylocker.New().UseIn(composer)
	h, err := handler.NewHandler(handler.Config{
		BasePath:                   api.PathUploads + "/",
		StoreComposer:              composer,
		MaxSize:                    s.opts.MaxObjectSize,
		DisableDownload:            true,
		RespectForwardedHeaders:    len(s.opts.TrustedProxies) > 0, // only trusted peers' reach tusd
		DisableConcatenation:       true,                           // it takes upload IDs from a header, past the guard
		Cors:                       &handler.CorsConfig{Disable: true},
		PreUploadCreateCallback:    s.preCreate,
		PreFinishResponseCallback:  s.preFinish,
		PreUploadTerminateCallback: s.preTerminate,
		// Above the verify time of the largest allowed object.
		AcquireLockTimeout: 2*time.Minute + time.Duration(s.opts.MaxObjectSize/(100<<20))*time.Second,
		NetworkTimeout:     s.opts.BodyTimeout,
		Logger:             tusLogger(s.log.Handler().WithAttrs([]slog.Attr{slog.String("component", "tus")})),
	})
	if err != nil {
		return fmt.Errorf("tus handler: %w", err)
	}
	s.tus = h
	s.metrics.addTus(h)
	return nil
}

// uploadPath is where tusd's filestore keeps an upload's bytes.
func (s *Server) uploadPath(id string) string {
	return filepath.Join(s.tusDir, filepath.FromSlash(id))
}

func (s *Server) removeUploadFiles(id string) {
	p := s.uploadPath(id)
	os.Remove(p)
	os.Remove(p + ".info")
}

// tusError is a tusd hook error with a JSON body like the rest of the API.
func tusError(status int, body api.Error) handler.Error {
	b, _ := json.Marshal(body)
	return handler.Error{
		ErrorCode: "ERR_OSTREE_UPLOAD",
		Message:   body.Error,
		HTTPResponse: handler.HTTPResponse{
			StatusCode: status,
			Body:       string(b) + "\n",
			Header:     handler.HTTPHeader{"Content-Type": "application/json"},
		},
	}
}

// uploadGuard admits a request to tusd only for the creation endpoint or an
// upload ID of exactly the daemon's form that belongs to a session of the
// caller's token; everything else is 404, so no path trick reaches the
// filestore. Verified uploads (whose bytes have moved to the spool) are
// answered from the journal.
func (s *Server) uploadGuard(tus http.Handler) echo.HandlerFunc {
	return func(c echo.Context) error {
		req, w := c.Request(), c.Response()
		// tusd replaces a POST's method with X-HTTP-Method-Override after
		// this guard has run: apply it here, so that the guard judges the
		// method tusd will serve.
		if o := req.Header.Get("X-HTTP-Method-Override"); o != "" {
			if req.Method == http.MethodPost {
				req.Method = o
			}
			req.Header.Del("X-HTTP-Method-Override")
		}
		rest := strings.TrimPrefix(req.URL.EscapedPath(), api.PathUploads)
		if rest == "" || rest == "/" {
			if req.Method != http.MethodPost && req.Method != http.MethodOptions {
				return fail(http.StatusMethodNotAllowed, "only POST creates uploads")
			}
			if req.Method == http.MethodPost && req.ContentLength != 0 {
				s.serveBytes(tus, w, req, "") // creation with upload
				return nil
			}
			tus.ServeHTTP(w, req)
			return nil
		}
		m := uploadPath.FindStringSubmatch(rest)
		if m == nil || req.URL.Path != api.PathUploads+rest {
			return fail(http.StatusNotFound, "upload not found")
		}
		ctx := context.WithoutCancel(req.Context()) // see detach
		up, err := s.journal.GetUpload(ctx, m[1]+"/"+m[2])
		if errors.Is(err, journal.ErrNotFound) {
			return fail(http.StatusNotFound, "upload not found")
		}
		if err != nil {
			return err
		}
		sess, err := s.journal.Get(ctx, up.Session)
		if err != nil || sess.Owner != identity(c).Hash {
			return fail(http.StatusNotFound, "upload not found")
		}
		if e := openOrConflict(sess); e != nil && req.Method == http.MethodPatch {
			return e
		}
		if up.State == journal.UploadReceived && req.Method != http.MethodDelete {
			// Complete but unjudged: judge it now rather than let tusd
			// report a complete upload that may yet be refused.
			if err := s.settle(ctx, up); err != nil {
				return s.verdictError(up, err)
			}
			if up, err = s.journal.GetUpload(ctx, up.ID); err != nil {
				return err
			}
		}
		if up.State == journal.UploadVerified {
			return s.answerVerified(c, up)
		}
		if req.Method == http.MethodPatch {
			s.serveBytes(tus, w, req, up.Object)
			return nil
		}
		tus.ServeHTTP(w, req)
		return nil
	}
}

// answerVerified answers tus requests for an upload whose object is verified.
func (s *Server) answerVerified(c echo.Context, up journal.Upload) error {
	h := c.Response().Header()
	h.Set("Tus-Resumable", "1.0.0")
	h.Set("Cache-Control", "no-store")
	size := strconv.FormatInt(up.Size, 10)
	switch c.Request().Method {
	case http.MethodHead:
		h.Set("Upload-Offset", size)
		h.Set("Upload-Length", size)
		return c.NoContent(http.StatusOK)
	case http.MethodPatch:
		if c.Request().Header.Get("Upload-Offset") != size {
			e := fail(http.StatusConflict, "upload is complete and verified: offset is %s", size)
			e.body.Code = api.CodeVerified
			return e
		}
		h.Set("Upload-Offset", size)
		return c.NoContent(http.StatusNoContent)
	case http.MethodDelete:
		if err := s.journal.DeleteUpload(c.Request().Context(), up.ID); err != nil {
			return err
		}
		return c.NoContent(http.StatusNoContent)
	}
	return fail(http.StatusMethodNotAllowed, "method not allowed")
}

func newUploadID(session string) string {
	var b [16]byte
	rand.Read(b[:])
	return session + "/" + hex.EncodeToString(b[:])
}

// preCreate authorizes an upload and gives it the daemon's ID.
func (s *Server) preCreate(hook handler.HookEvent) (handler.HTTPResponse, handler.FileInfoChanges, error) {
	var none handler.FileInfoChanges
	ctx := hook.Context
	id, ok := identityOf(ctx)
	if !ok {
		return handler.HTTPResponse{}, none, tusError(http.StatusUnauthorized, api.Error{Error: "missing bearer token"})
	}
	meta := hook.Upload.MetaData
	sid, obj := meta[api.MetaSession], meta[api.MetaObject]
	if !hex32.MatchString(sid) {
		return handler.HTTPResponse{}, none, tusError(http.StatusBadRequest, api.Error{Error: "Upload-Metadata needs session (the session ID)"})
	}
	sess, err := s.journal.Get(ctx, sid)
	if err != nil || sess.Owner != id.Hash {
		return handler.HTTPResponse{}, none, tusError(http.StatusNotFound, api.Error{Error: "session not found"})
	}
	if e := openOrConflict(sess); e != nil {
		return handler.HTTPResponse{}, none, tusError(e.status, e.body)
	}
	name, err := object.ParseName(obj)
	if err != nil {
		return handler.HTTPResponse{}, none, tusError(http.StatusBadRequest, api.Error{Error: "Upload-Metadata object: " + err.Error(), Object: obj})
	}
	if hook.Upload.IsPartial || hook.Upload.IsFinal {
		return handler.HTTPResponse{}, none, tusError(http.StatusBadRequest, api.Error{Error: "upload concatenation is not supported", Object: obj})
	}
	if hook.Upload.SizeIsDeferred || hook.Upload.Size <= 0 {
		return handler.HTTPResponse{}, none, tusError(http.StatusBadRequest, api.Error{Error: "Upload-Length must be given and positive", Object: obj})
	}
	if limit := s.sizeLimit(name.Type); hook.Upload.Size > limit {
		return handler.HTTPResponse{}, none, tusError(http.StatusRequestEntityTooLarge, api.Error{
			Error: fmt.Sprintf("%s objects are at most %d bytes", name.Type.Ext(), limit), Object: obj})
	}
	if e := s.commitMetaAllowed(ctx, sess, name); e != nil {
		return handler.HTTPResponse{}, none, tusError(e.status, e.body)
	}
	st, err := s.journal.ObjectState(ctx, sid, name.String())
	switch {
	case errors.Is(err, journal.ErrNotFound):
		return handler.HTTPResponse{}, none, tusError(http.StatusConflict, api.Error{
			Error: "object was not requested in this session: send its name to " + api.PathSessions + "/" + sid + "/objects first", Object: obj})
	case err != nil:
		return handler.HTTPResponse{}, none, err
	case settled(name, st):
		return handler.HTTPResponse{}, none, tusError(http.StatusConflict, api.Error{Error: "object is already verified", Object: obj, Code: api.CodeVerified})
	}
	if err := s.roomFor(hook.Upload.Size); err != nil {
		return handler.HTTPResponse{}, none, tusError(http.StatusInsufficientStorage, api.Error{Error: err.Error(), Object: obj, Code: api.CodeSpace})
	}
	uid := newUploadID(sid)
	err = s.journal.AddUpload(ctx, journal.Upload{ID: uid, Session: sid, Object: name.String(), Size: hook.Upload.Size, State: journal.UploadOpen})
	var live *journal.LiveUploadError
	var tm *journal.TooManyError
	if errors.As(err, &tm) {
		return handler.HTTPResponse{}, none, tusError(http.StatusTooManyRequests, api.Error{
			Error: fmt.Sprintf("the session has %d uploads in progress: finish one first", tm.Have), Object: obj, Code: api.CodeLimit})
	}
	if errors.As(err, &live) {
		return handler.HTTPResponse{}, none, tusError(http.StatusConflict, api.Error{
			Error: "object already has an upload in this session", Object: obj, Upload: api.PathUploads + "/" + live.UploadID, Code: api.CodeLiveUpload})
	}
	if err != nil {
		return handler.HTTPResponse{}, none, err
	}
	return handler.HTTPResponse{}, handler.FileInfoChanges{ID: uid}, nil
}

// settled reports whether an object of a session takes no more bytes: it is
// verified, and it is not detached metadata, which is named after its
// commit rather than its content and so may be sent again.
func settled(n object.Name, st journal.ObjState) bool {
	return st == journal.ObjVerified && n.Type != object.CommitMeta
}

// sizeLimit is the largest upload accepted for an object type.
func (s *Server) sizeLimit(t object.Type) int64 {
	if t == object.File {
		return s.opts.MaxObjectSize
	}
	return object.MaxSize(t)
}

// verifyOptions are the limits and the pacing of one verification by w: a
// file's content may not exceed max_object_size, and CPU work is shared
// fairly between tokens.
func (s *Server) verifyOptions(w *worker) object.VerifyOptions {
	return object.VerifyOptions{MaxContentSize: s.opts.MaxObjectSize, Work: w.Work}
}

// commitMetaAllowed accepts detached metadata only for a new commit of the
// session (400 otherwise: it is named after its commit, not its content,
// so anything else could replace another push's signatures), and only when
// every ref of production that points at the commit is one the session's
// token may push (403 with code commitmeta-scope otherwise: every client of
// those refs verifies that metadata).
func (s *Server) commitMetaAllowed(ctx context.Context, sess journal.Session, n object.Name) *httpError {
	if n.Type != object.CommitMeta {
		return nil
	}
	if !slices.ContainsFunc(sess.Refs, func(r journal.RefUpdate) bool { return r.New == n.Sum.String() }) {
		e := fail(http.StatusBadRequest, "detached metadata %s is not for a new commit of this session", n)
		e.body.Object = n.String()
		return e
	}
	refs, err := s.repo.ListRefs(ctx)
	if err != nil {
		e := fail(http.StatusServiceUnavailable, "cannot read the repository's refs: retry later")
		e.retryAfter = 5
		return e
	}
	if ref := s.lockedMetaRef(ctx, sess.Owner, n.Sum, refs); ref != "" {
		e := fail(http.StatusForbidden, "commit %s is published as ref %s, which token %s may not push: its detached metadata stays as production has it; push without it", n.Sum, ref, sess.OwnerName)
		e.body.Object, e.body.Ref, e.body.Code = n.String(), ref, api.CodeMetaScope
		return e
	}
	return nil
}

// preFinish runs after the last byte arrived and before the response: the
// client learns the verdict in the response of its last PATCH (or POST).
func (s *Server) preFinish(hook handler.HookEvent) (handler.HTTPResponse, error) {
	ctx := context.WithoutCancel(hook.Context) // a HEAD must not cancel a verdict
	up, err := s.journal.GetUpload(ctx, hook.Upload.ID)
	if err != nil {
		return handler.HTTPResponse{}, err
	}
	if err := s.settle(ctx, up); err != nil {
		return handler.HTTPResponse{}, s.verdictError(up, err)
	}
	return handler.HTTPResponse{}, nil
}

func (s *Server) verdictError(up journal.Upload, err error) error {
	if object.IsCorrupt(err) {
		return tusError(http.StatusUnprocessableEntity, api.Error{Error: err.Error(), Object: up.Object})
	}
	if errors.Is(err, errUploadLost) {
		return tusError(http.StatusNotFound, api.Error{Error: err.Error(), Object: up.Object})
	}
	return tusError(http.StatusInternalServerError, api.Error{Error: "cannot verify upload: " + err.Error(), Object: up.Object})
}

func (s *Server) preTerminate(hook handler.HookEvent) (handler.HTTPResponse, error) {
	if err := s.journal.DeleteUpload(context.WithoutCancel(hook.Context), hook.Upload.ID); err != nil {
		return handler.HTTPResponse{}, err
	}
	return handler.HTTPResponse{}, nil
}

var errUploadLost = errors.New("upload data is gone: create the upload again")

// settle judges a complete upload: it is journaled as received, verified
// strictly, then either moved into the spool and journaled as verified, or
// deleted and journaled as rejected. A verdict is never reached twice.
func (s *Server) settle(ctx context.Context, up journal.Upload) error {
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
		path = sp.repo.ObjectPath(name)
		if _, err := os.Stat(path); err != nil {
			s.journal.DeleteUpload(ctx, up.ID)
			return errUploadLost
		}
		fromSpool = true
	} else if err != nil {
		return err
	}
	failpoint("before-verdict")
	start := time.Now()
	w := s.verifying.worker(s.life, sess.Owner)
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
			sp.mu.Lock()
			sp.repo.Remove(name)
			sp.mu.Unlock()
		}
		s.removeUploadFiles(up.ID)
		return errors.Join(err, s.journal.MarkRejected(ctx, up.Session, up.Object, err.Error()), s.journal.DeleteUpload(ctx, up.ID))
	}
	if err != nil {
		return s.markReceived(ctx, up, err)
	}
	sp.mu.RLock()
	if !fromSpool {
		if err := sp.repo.Adopt(ctx, name, path); err != nil {
			sp.mu.RUnlock()
			return s.markReceived(ctx, up, err)
		}
		os.Remove(path + ".info")
	}
	failpoint("after-adopt")
	err = s.journal.MarkUploadVerified(ctx, up.ID, sess.Owner, up.Size)
	sp.mu.RUnlock()
	if err != nil {
		return s.markReceived(ctx, up, err)
	}
	s.metrics.verified.Inc()
	s.metrics.verifiedBytes.Add(float64(up.Size))
	return nil
}

// markReceived records that an upload is complete but has no verdict yet
// (verification failed for a reason other than the bytes), so that it is
// judged again on the next read of its session or at start-up. Complete
// uploads judged at once skip this write: recovery finds them by size.
func (s *Server) markReceived(ctx context.Context, up journal.Upload, cause error) error {
	return errors.Join(cause,
		s.journal.SetUploadState(ctx, up.ID, journal.UploadReceived),
		s.journal.MarkReceived(ctx, up.Session, up.Object))
}

// settleSession judges every complete upload of a session that has no
// verdict yet.
func (s *Server) settleSession(ctx context.Context, sid string) error {
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
func (s *Server) complete(ctx context.Context, u journal.Upload) bool {
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
		fi, err = os.Stat(sp.repo.ObjectPath(name))
		return err == nil && fi.Size() == u.Size
	}
	return false
}

// roomFor refuses to take n more bytes when that would leave the production
// filesystem below its free-space floor (libostree's min-free-space-size or
// -percent, read at start-up as libostree reads it), keeping a window free
// for every upload receiving bytes at this moment: the spool and the
// journal share that filesystem, and libostree does not check the objects
// it imports from there by hard link.
func (s *Server) roomFor(n int64) error {
	floor := s.spaceFloor
	free, err := s.repo.FreeSpace()
	if err != nil {
		s.metrics.noSpace.Inc()
		return err
	}
	windows := s.writers.Load() * spaceWindow
	if n < 0 || free < floor+uint64(windows)+uint64(n) {
		s.metrics.noSpace.Inc()
		return fmt.Errorf("the repository's filesystem has %d MiB free and keeps at least %d MiB (min-free-space): free some space and retry", free>>20, floor>>20)
	}
	return nil
}

// spaceWindow is what an upload may write between two checks of the
// free-space floor.
const spaceWindow = 8 << 20

// spaceReader is the body of a request that appends to an upload: before
// each window of bytes it lets through, it checks that the filesystem
// keeps its floor with a window free for every upload receiving bytes, so
// that uploads together never cross it, whatever they declared. A refusal
// ends the request with 507; the bytes written so far stay.
type spaceReader struct {
	io.ReadCloser
	s      *Server
	object string
	left   int64
}

func (r *spaceReader) Read(b []byte) (int, error) {
	if r.left <= 0 {
		if err := r.s.roomFor(0); err != nil {
			return 0, tusError(http.StatusInsufficientStorage, api.Error{Error: err.Error(), Object: r.object, Code: api.CodeSpace})
		}
		r.left = spaceWindow
	}
	if int64(len(b)) > r.left {
		b = b[:r.left]
	}
	n, err := r.ReadCloser.Read(b)
	r.left -= int64(n)
	return n, err
}

// serveBytes runs tus on a request that carries upload bytes, counted
// among the uploads receiving bytes and checked against the floor.
func (s *Server) serveBytes(tus http.Handler, w http.ResponseWriter, req *http.Request, object string) {
	s.writers.Add(1)
	defer s.writers.Add(-1)
	req.Body = &spaceReader{ReadCloser: req.Body, s: s, object: object}
	tus.ServeHTTP(w, req)
}
