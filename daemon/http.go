package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/journal"
)

// maxJSONBody bounds API request bodies (an objects batch of
// api.MaxNamesPerRequest names is about 0.8 MB).
const maxJSONBody = 4 << 20

var hex32 = regexp.MustCompile(`^[0-9a-f]{32}$`)

type identityKey struct{}

// identityOf returns the authenticated identity of a request context.
func identityOf(ctx context.Context) (auth.Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(auth.Identity)
	return id, ok
}

// httpError is an API error with its status.
type httpError struct {
	status     int
	body       api.Error
	retryAfter int // seconds; 0 = no Retry-After header
}

func (e *httpError) Error() string { return e.body.Error }

func fail(status int, format string, args ...any) *httpError {
	return &httpError{status: status, body: api.Error{Error: fmt.Sprintf(format, args...)}}
}

func (s *Server) setupRoutes() {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.errorHandler
	s.setupForwarding(e)
	e.Use(s.requestLog)
	e.Use(s.conns.perForwardedClient(s.trustedPeer))
	e.GET("/healthz", func(c echo.Context) error { return c.JSON(http.StatusOK, map[string]string{"status": "ok"}) })
	e.GET("/ping", func(c echo.Context) error { return c.JSON(http.StatusOK, struct{}{}) })
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{})))

	g := e.Group("/api/v1", s.auth)
	sess := g.Group("", detach, s.bodyDeadline)
	upload, publish := needScope(auth.ScopeUpload), needScope(auth.ScopePublish)
	sess.GET("/info", s.handleInfo)
	sess.POST("/sessions", s.handleCreateSession, upload)
	sess.GET("/sessions/:id", s.handleGetSession) // the owner, or a token that may publish it
	sess.DELETE("/sessions/:id", s.handleAbort, upload)
	sess.POST("/sessions/:id/objects", s.handleObjects, upload)
	sess.POST("/sessions/:id/commit", s.handleCommit, publish)
	sess.POST("/sessions/:id/packs", s.handlePack, upload)
	adm := sess.Group(strings.TrimPrefix(api.PathAdmin, "/api/v1"), needScope(auth.ScopeAdmin))
	adm.GET("/sessions", s.handleAdminSessions)
	adm.GET("/sessions/:id", s.handleAdminSession)
	adm.DELETE("/sessions/:id", s.handleAdminAbort)
	adm.POST("/sessions/:id/fail", s.handleAdminFail)
	adm.GET("/tokens", s.handleAdminTokens)
	adm.DELETE("/tokens/:name", s.handleAdminRevoke)
	up := s.uploadGuard(http.StripPrefix(api.PathUploads, s.tus))
	g.Any("/uploads", up, upload)
	g.Any("/uploads/", up, upload)
	g.Any("/uploads/*", up, upload)
	s.echo = e
}

func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var he *httpError
	var ee *echo.HTTPError
	switch {
	case errors.As(err, &he):
	case errors.As(err, &ee):
		he = fail(ee.Code, "%v", ee.Message)
	default:
		s.log.Error("request failed", "method", c.Request().Method, "path", c.Request().URL.Path, "err", err)
		he = fail(http.StatusInternalServerError, "internal error (the daemon's log has the details); retry later")
	}
	if he.status == http.StatusUnauthorized {
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="ostree-upload"`)
	}
	if he.retryAfter > 0 {
		c.Response().Header().Set("Retry-After", strconv.Itoa(he.retryAfter))
	}
	if c.Request().Method == http.MethodHead {
		c.NoContent(he.status)
		return
	}
	c.JSON(he.status, he.body)
}

// requestLog logs one line per request. It never logs headers, so tokens
// stay out of the logs.
func (s *Server) requestLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		req := c.Request()
		attrs := []any{"method", req.Method, "path", req.URL.Path, "status", c.Response().Status,
			"bytes_out", c.Response().Size, "duration", time.Since(start).Round(time.Microsecond), "remote", c.RealIP()}
		if id, ok := identityOf(req.Context()); ok {
			attrs = append(attrs, "token", id.DisplayName())
		}
		s.log.Info("request", attrs...)
		return nil
	}
}

// auth authenticates "Authorization: Bearer <token>" and puts the identity
// into the request context (where tusd's hooks find it too).
func (s *Server) auth(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		scheme, secret, _ := strings.Cut(req.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(secret) == "" {
			s.metrics.authFailures.Inc()
			return fail(http.StatusUnauthorized, "missing bearer token")
		}
		id, err := s.keyring.Load().Authenticate(strings.TrimSpace(secret), time.Now())
		if err == nil && s.isRevoked(id.Hash) {
			err = errRevoked
		}
		if err != nil {
			s.metrics.authFailures.Inc()
			return fail(http.StatusUnauthorized, "%v", err)
		}
		c.SetRequest(req.WithContext(context.WithValue(req.Context(), identityKey{}, id)))
		return next(c)
	}
}

var errRevoked = errors.New("token revoked")

// needScope refuses, with 403 and code scope, a token without scope.
func needScope(scope string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			id := identity(c)
			if !id.Can(scope) {
				e := fail(http.StatusForbidden, "token %s lacks the %s scope (it has: %s)", id.DisplayName(), scope, strings.Join(id.Scopes, ", "))
				e.body.Code = api.CodeScope
				return e
			}
			return next(c)
		}
	}
}

// bodyDeadline gives a request of the API (not tus, whose uploads have
// their own deadlines) BodyTimeout to send its body: a client that announces
// a body and sends nothing is dropped then. Packs move it on as they read.
func (s *Server) bodyDeadline(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		http.NewResponseController(c.Response().Writer).SetReadDeadline(time.Now().Add(s.opts.BodyTimeout))
		return next(c)
	}
}

// detach runs a session API handler on a context that the connection's
// fate does not cancel. These handlers are short journal operations (or a
// publish, which must finish anyway). After tusd has served a request with
// a body, later requests on the same kept-alive connection were seen to
// arrive with their context already cancelled; tusd's own hooks tolerate
// that (they run on a delayed copy), these handlers must too.
func detach(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		c.SetRequest(req.WithContext(context.WithoutCancel(req.Context())))
		return next(c)
	}
}

func identity(c echo.Context) auth.Identity {
	id, _ := identityOf(c.Request().Context())
	return id
}

// decodeJSON reads a bounded JSON body strictly.
func decodeJSON(c echo.Context, v any) error {
	body := http.MaxBytesReader(c.Response(), c.Request().Body, maxJSONBody)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fail(http.StatusRequestEntityTooLarge, "request body over %d bytes", maxJSONBody)
		}
		return fail(http.StatusBadRequest, "bad JSON body: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fail(http.StatusBadRequest, "bad JSON body: data after the object")
	}
	return nil
}

// decodeOptionalJSON is decodeJSON for a body that may be empty.
func decodeOptionalJSON(c echo.Context, v any) error {
	req := c.Request()
	body, err := io.ReadAll(io.LimitReader(req.Body, maxJSONBody+1))
	if err != nil {
		return fail(http.StatusBadRequest, "reading the body: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	return decodeJSON(c, v)
}

func (s *Server) handleInfo(c echo.Context) error {
	ctx := c.Request().Context()
	refs, err := s.repo.ListRefs(ctx)
	if err != nil {
		return err
	}
	out := api.Info{
		Protocol: api.ProtocolVersion,
		Version:  s.opts.Version,
		Mode:     "archive",
		Refs:     make(map[string]string, len(refs)),
		Limits: api.Limits{
			MaxObjectsPerSession: s.opts.MaxObjectsPerSession,
			MaxObjectSize:        s.opts.MaxObjectSize,
			MaxNamesPerRequest:   api.MaxNamesPerRequest,
			MaxPackSize:          s.opts.MaxPackSize,
		},
	}
	id := identity(c)
	for name, sum := range refs {
		if id.AllowsRef(name) {
			out.Refs[name] = sum.String()
		}
	}
	t := tokenView(id)
	out.Token = &t
	return c.JSON(http.StatusOK, out)
}

// ownedSession loads the caller's session named in the path. With
// publisher, a staged session (see mayPublish) is also given to a caller
// that may publish it. Any other token's session is reported as not found.
func (s *Server) ownedSession(c echo.Context, publisher bool) (journal.Session, error) {
	id := c.Param("id")
	if !hex32.MatchString(id) {
		return journal.Session{}, fail(http.StatusNotFound, "session not found")
	}
	sess, err := s.journal.Get(c.Request().Context(), id)
	if errors.Is(err, journal.ErrNotFound) {
		return journal.Session{}, fail(http.StatusNotFound, "session not found")
	}
	if err == nil && sess.Owner != identity(c).Hash && !(publisher && s.mayPublish(identity(c), sess)) {
		return journal.Session{}, fail(http.StatusNotFound, "session not found")
	}
	return sess, err
}

// mayPublish reports whether id may read and commit another token's
// session: the session is staged (its owner may upload but not publish),
// id has the publish scope, and id may push every ref of the session.
// Sessions of tokens that can publish stay private to them.
func (s *Server) mayPublish(id auth.Identity, sess journal.Session) bool {
	owner, ok := s.keyring.Load().Lookup(sess.Owner)
	if !ok || owner.Can(auth.ScopePublish) || !id.Can(auth.ScopePublish) || s.isRevoked(sess.Owner) ||
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

// openOrConflict is nil for an open session, else the 409 with code
// session-not-open that uploads, packs and negotiation answer.
func openOrConflict(sess journal.Session) *httpError {
	if sess.State == journal.StateOpen {
		return nil
	}
	e := fail(http.StatusConflict, "session is %s", sess.State)
	e.body.Code = api.CodeSessionNotOpen
	return e
}
