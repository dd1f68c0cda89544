package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tus/tusd/v2/pkg/filestore"
	"github.com/tus/tusd/v2/pkg/handler"
	"github.com/tus/tusd/v2/pkg/memorylocker"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/service"
)

var jsonMarshal = json.Marshal

// uploadPath matches the only upload URLs there are: /<session>/<upload>,
// 32 lower-case hex each, with no escaping of any kind.
var uploadPath = regexp.MustCompile(`^/([0-9a-f]{32})/([0-9a-f]{32})$`)

// repoTus is the tus endpoint of one repository.
type repoTus struct {
	s       *Server
	name    string
	svc     service.Repository
	handler http.Handler // tusd, under its base path
}

// newTus mounts tusd over a repository's upload directory: filestore,
// in-memory locks (one daemon), no concatenation, no downloads, and the
// service's hooks. Its upload URLs name the repository.
func (s *Server) newTus(name string, svc service.Repository) (*repoTus, error) {
	t := &repoTus{s: s, name: name, svc: svc}
	composer := handler.NewStoreComposer()
	fs := filestore.New(svc.UploadDir())
	fs.DirModePerm, fs.FileModePerm = 0o700, 0o600
	fs.UseIn(composer)
	memorylocker.New().UseIn(composer)
	maxObject := svc.MaxUploadSize() // the repository's own max_object_size
	h, err := handler.NewHandler(handler.Config{
		BasePath:                   api.RepoPath(name, api.PathUploads) + "/",
		StoreComposer:              composer,
		MaxSize:                    maxObject,
		DisableDownload:            true,
		RespectForwardedHeaders:    len(s.cfg.TrustedProxies) > 0, // only trusted peers' reach tusd
		DisableConcatenation:       true,                          // it takes upload IDs from a header, past the guard
		Cors:                       &handler.CorsConfig{Disable: true},
		PreUploadCreateCallback:    t.preCreate,
		PreFinishResponseCallback:  t.preFinish,
		PreUploadTerminateCallback: t.preTerminate,
		// Above the verify time of the largest allowed object.
		AcquireLockTimeout: 2*time.Minute + time.Duration(maxObject/(100<<20))*time.Second,
		NetworkTimeout:     s.cfg.BodyTimeout.Duration,
		Logger:             tusLogger(s.log.Handler().WithAttrs([]slog.Attr{slog.String("component", "tus")})),
	})
	if err != nil {
		return nil, fmt.Errorf("tus handler: %w", err)
	}
	t.handler = advertiseAccepted(http.StripPrefix(api.PathUploads, h))
	var reg prometheus.Registerer = s.registry
	if name != "" {
		reg = prometheus.WrapRegistererWith(prometheus.Labels{"repo": name}, reg)
	}
	reg.MustRegister(tusCollector{h.Metrics})
	return t, nil
}

// refusedExtensions are the tus extensions that tusd's stores provide but
// the daemon refuses: the service wants every upload's length at its
// creation (Upload-Defer-Length), and tusd refuses Upload-Concat
// (DisableConcatenation). Removing the length deferrer or the concater
// from the composer instead would make tusd ignore those headers rather
// than refuse them.
var refusedExtensions = []string{"creation-defer-length", "concatenation", "concatenation-unfinished"}

// advertiseAccepted strips refusedExtensions from the Tus-Extension header
// of tusd's OPTIONS answers, so that discovery lists only what a POST
// accepts.
func advertiseAccepted(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions {
			w = &extensionWriter{ResponseWriter: w}
		}
		h.ServeHTTP(w, r)
	})
}

// extensionWriter rewrites Tus-Extension before the header goes out.
type extensionWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *extensionWriter) WriteHeader(status int) {
	if !w.wrote {
		w.wrote = true
		h := w.Header()
		if ext := h.Get("Tus-Extension"); ext != "" {
			var keep []string
			for _, e := range strings.Split(ext, ",") {
				if !slices.Contains(refusedExtensions, strings.TrimSpace(e)) {
					keep = append(keep, strings.TrimSpace(e))
				}
			}
			h.Set("Tus-Extension", strings.Join(keep, ","))
		}
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *extensionWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *extensionWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// uploadGuard admits a request to tusd only for the creation endpoint or an
// upload ID of exactly the daemon's form that belongs to a session of the
// caller's token; everything else is 404, so no path trick reaches the
// filestore. Verified uploads (whose bytes have moved to a spool) are
// answered from the service.
func (s *Server) uploadGuard(c echo.Context) error {
	svc, err := s.repository(c)
	if err != nil {
		return err
	}
	t := s.tus[repositoryOf(c)]
	tus := t.handler
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
			return service.Refuse(service.NotAllowed, "only POST creates uploads")
		}
		if req.Method == http.MethodPost && req.ContentLength != 0 {
			t.serveBytes(w, req, "") // creation with upload
			return nil
		}
		tus.ServeHTTP(w, req)
		return nil
	}
	m := uploadPath.FindStringSubmatch(rest)
	if m == nil || req.URL.Path != api.PathUploads+rest {
		return service.Refuse(service.NotFound, "upload not found")
	}
	ctx := context.WithoutCancel(req.Context()) // see detach
	st, err := svc.Upload(ctx, identity(c), m[1]+"/"+m[2], req.Method)
	if err != nil {
		return err
	}
	if st.Verified {
		return answerVerified(c, st)
	}
	if req.Method == http.MethodPatch {
		t.serveBytes(w, req, st.Object)
		return nil
	}
	tus.ServeHTTP(w, req)
	return nil
}

// answerVerified answers tus requests for an upload whose object is
// verified (and, for DELETE, already forgotten by the service).
func answerVerified(c echo.Context, st service.UploadState) error {
	h := c.Response().Header()
	h.Set("Tus-Resumable", "1.0.0")
	h.Set("Cache-Control", "no-store")
	size := strconv.FormatInt(st.Size, 10)
	switch c.Request().Method {
	case http.MethodHead:
		h.Set("Upload-Offset", size)
		h.Set("Upload-Length", size)
		return c.NoContent(http.StatusOK)
	case http.MethodPatch:
		if c.Request().Header.Get("Upload-Offset") != size {
			e := service.Refuse(service.Conflict, "upload is complete and verified: offset is %s", size)
			e.Body.Code = api.CodeVerified
			return e
		}
		h.Set("Upload-Offset", size)
		return c.NoContent(http.StatusNoContent)
	case http.MethodDelete:
		return c.NoContent(http.StatusNoContent)
	}
	return service.Refuse(service.NotAllowed, "method not allowed")
}

// serveBytes runs tus on a request that carries upload bytes, counted
// among the uploads receiving bytes and checked against the free-space
// floor as they arrive.
func (t *repoTus) serveBytes(w http.ResponseWriter, req *http.Request, object string) {
	done := t.svc.Receiving()
	defer done()
	req.Body = &spaceReader{ReadCloser: req.Body, t: t, object: object}
	t.handler.ServeHTTP(w, req)
}

// spaceReader is the body of a request that brings upload bytes: before
// each service.SpaceWindow bytes it lets through, the service checks the
// free-space floor. A refusal ends the request with its answer (507); the
// bytes written so far stay.
type spaceReader struct {
	io.ReadCloser
	t      *repoTus
	object string
	left   int64
}

func (r *spaceReader) Read(b []byte) (int, error) {
	if r.t.svc.Draining() {
		// A graceful stop: the bytes so far stay in the upload, and the
		// client resumes from its offset after the restart.
		e := service.Restarting("the upload keeps what arrived")
		// Closed, so that the server answers now instead of reading (and
		// the client sending) more of the body first.
		r.ReadCloser.Close()
		return 0, r.t.s.tusError(e)
	}
	if r.left <= 0 {
		if err := r.t.svc.RoomForBytes(); err != nil {
			if e, ok := service.AsError(err); ok && r.object != "" {
				e.Body.Object = r.object
			}
			r.ReadCloser.Close() // answer now (see above)
			return 0, r.t.s.tusError(err)
		}
		r.left = service.SpaceWindow
	}
	if int64(len(b)) > r.left {
		b = b[:r.left]
	}
	n, err := r.ReadCloser.Read(b)
	r.left -= int64(n)
	return n, err
}

// preCreate asks the service to authorize an upload and give it its ID.
func (t *repoTus) preCreate(hook handler.HookEvent) (handler.HTTPResponse, handler.FileInfoChanges, error) {
	var none handler.FileInfoChanges
	id, ok := identityOf(hook.Context)
	if !ok {
		return handler.HTTPResponse{}, none, t.s.tusError(service.Refuse(service.Unauthenticated, "missing bearer token"))
	}
	up := hook.Upload
	uid, err := t.svc.CreateUpload(hook.Context, id, service.UploadRequest{
		Session: up.MetaData[api.MetaSession], Object: up.MetaData[api.MetaObject], Size: up.Size,
		Deferred: up.SizeIsDeferred, Concatenation: up.IsPartial || up.IsFinal,
	})
	if err != nil {
		return handler.HTTPResponse{}, none, t.s.tusError(err)
	}
	return handler.HTTPResponse{}, handler.FileInfoChanges{ID: uid}, nil
}

// preFinish runs after the last byte arrived and before the answer: the
// client learns the verdict in the answer of its last PATCH (or POST).
func (t *repoTus) preFinish(hook handler.HookEvent) (handler.HTTPResponse, error) {
	if err := t.svc.FinishUpload(hook.Context, hook.Upload.ID); err != nil {
		return handler.HTTPResponse{}, t.s.tusError(err)
	}
	return handler.HTTPResponse{}, nil
}

func (t *repoTus) preTerminate(hook handler.HookEvent) (handler.HTTPResponse, error) {
	if err := t.svc.TerminateUpload(hook.Context, hook.Upload.ID); err != nil {
		return handler.HTTPResponse{}, t.s.tusError(err)
	}
	return handler.HTTPResponse{}, nil
}
