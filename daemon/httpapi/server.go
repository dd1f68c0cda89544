// Package httpapi serves a repository's service over HTTP: the JSON API
// with echo, the tus uploads with tusd, authentication, and the limits of
// connections and request bodies. It only translates: every decision is
// the service's, and every refusal maps to a status in one table
// (errors.go).
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/service"
)

// Env is what a Server gets besides the services and the configuration.
type Env struct {
	Log      *slog.Logger
	Tokens   *auth.Current        // the keyring in use
	Registry *prometheus.Registry // served at /metrics; its own metrics go there too
	Version  string               // the daemon's, in the info of a daemon of several repositories
	Minter   Minter               // nil: tokens are not minted over the API
}

// Minter makes tokens for CI jobs over the admin API.
type Minter interface {
	// Mint makes a token within the scope of the admin token by; its
	// refusals are *service.Error values.
	Mint(ctx context.Context, by auth.Identity, req api.TokenRequest) (api.MintedToken, error)
}

// Server is the HTTP transport of the repositories' services. The API of
// the repository named NAME is under /NAME/api/v1/; that of the repository
// of a one-repository daemon (named "") under /api/v1/.
type Server struct {
	catalog *service.Catalog
	cfg     *config.Config
	log     *slog.Logger
	tokens  *auth.Current
	version string
	minter  Minter

	draining atomic.Bool // a graceful stop began

	echo  *echo.Echo
	tus   map[string]*repoTus // by repository name
	conns *connLimiter

	authFailures prometheus.Counter
	registry     *prometheus.Registry
}

// maxJSONBody bounds API request bodies (an objects batch of
// api.MaxNamesPerRequest names is about 0.8 MB).
const maxJSONBody = 4 << 20

// New builds the transport of the catalog's repositories.
func New(catalog *service.Catalog, cfg *config.Config, env Env) (*Server, error) {
	if env.Log == nil {
		env.Log = slog.New(slog.DiscardHandler)
	}
	if env.Registry == nil {
		env.Registry = prometheus.NewRegistry()
	}
	s := &Server{catalog: catalog, cfg: cfg, log: env.Log, tokens: env.Tokens, version: env.Version, registry: env.Registry, minter: env.Minter,
		tus: map[string]*repoTus{}}
	s.authFailures = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ostree_upload", Name: "auth_failures_total",
		Help: "Requests with a missing, unknown, expired or revoked token."})
	limited := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ostree_upload", Name: "connections_limited_total",
		Help: "Connection limits that bit, by reason: total and client (a connection or request refused), evicted (an idle connection closed for a new one)."}, []string{"reason"})
	env.Registry.MustRegister(s.authFailures, limited)
	s.conns = newConnLimiter(cfg.MaxConnections, cfg.MaxClientConnections, s.trustedAddr, s.log, limited)
	for _, name := range catalog.Names() {
		svc, _ := catalog.Get(name)
		t, err := s.newTus(name, svc)
		if err != nil {
			return nil, err
		}
		s.tus[name] = t
	}
	s.setupRoutes()
	return s, nil
}

// Handler is the transport's HTTP handler.
func (s *Server) Handler() http.Handler { return s.echo }

// Serve answers requests on ln until ctx is done, then stops gracefully:
// drain (if set) is called and new requests are refused (503 with a
// Retry-After), while requests in flight get drain_timeout to end (packs
// end after their entry in flight, upload bodies stop being read); then
// stop (if set) is called and what is left is cut.
//
// The listeners of local are the daemon's own (its push socket, the
// standard streams of ssh-serve), whose connections are AccountConn: they
// serve HTTP/2 without TLS (prior knowledge) beside HTTP/1.1, so that a
// push over one stream (an ssh channel) runs its requests in parallel. The
// listeners of public serve HTTP/1.1 (and HTTP/2 over TLS where a TLS
// listener negotiates it), where a connection carries one request at a
// time and the connection limits bound a client's requests.
func (s *Server) Serve(ctx context.Context, public, local []net.Listener, drain, stop func()) error {
	var servers []*http.Server
	errc := make(chan error, len(public)+len(local))
	for i, lns := range [][]net.Listener{public, local} {
		if len(lns) == 0 {
			continue
		}
		srv := s.newHTTPServer(i == 1)
		servers = append(servers, srv)
		for _, ln := range lns {
			go func() { errc <- srv.Serve(s.conns.listener(ln)) }()
		}
	}
	closeAll := func() {
		for _, srv := range servers {
			srv.Close()
		}
	}
	select {
	case err := <-errc:
		closeAll()
		return err
	case <-ctx.Done():
	}
	s.log.Info("draining", "timeout", s.cfg.DrainTimeout.Duration)
	s.draining.Store(true)
	if drain != nil {
		drain()
	}
	start := time.Now()
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout.Duration)
	defer cancel()
	var shutErr error
	for _, srv := range servers {
		shutErr = errors.Join(shutErr, srv.Shutdown(sctx))
	}
	if stop != nil {
		stop()
	}
	if shutErr != nil {
		s.log.Warn("drain timed out: cutting the requests left", "after", time.Since(start).Round(time.Millisecond))
		closeAll()
	} else {
		s.log.Info("drained", "after", time.Since(start).Round(time.Millisecond))
	}
	var errs []error
	for range len(public) + len(local) {
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// newHTTPServer is the HTTP server of public or, with local, of local
// listeners (see Serve).
func (s *Server) newHTTPServer(local bool) *http.Server {
	srv := &http.Server{
		Handler:           s.echo,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// Read and write timeouts stay 0: uploads run long; tusd manages
		// per-read deadlines itself, the other routes have theirs.
		ErrorLog:  slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		ConnState: s.conns.state,
	}
	if local {
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
		srv.ConnContext = connContext
		srv.HTTP2 = &http.HTTP2Config{
			// A stream's window as large as a pack entry in flight: one
			// ssh channel carries every upload of a push.
			MaxReceiveBufferPerStream:     4 << 20,
			MaxReceiveBufferPerConnection: 16 << 20,
		}
	}
	return srv
}

// refuseWhileDraining answers a new request during a graceful stop with
// 503 and a Retry-After: the daemon is coming back.
func (s *Server) refuseWhileDraining(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.draining.Load() {
			return service.Restarting("nothing was done")
		}
		return next(c)
	}
}

type identityKey struct{}

// identityOf returns the authenticated identity of a request context.
func identityOf(ctx context.Context) (auth.Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(auth.Identity)
	return id, ok
}

func identity(c echo.Context) auth.Identity {
	id, _ := identityOf(c.Request().Context())
	return id
}

func (s *Server) setupRoutes() {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.errorHandler
	s.setupForwarding(e)
	e.Pre(routeRepository)
	e.Use(s.requestLog)
	e.Use(s.refuseWhileDraining)
	e.Use(s.conns.perForwardedClient(s.trustedPeer))
	e.GET("/healthz", func(c echo.Context) error { return c.JSON(http.StatusOK, map[string]string{"status": "ok"}) })
	e.GET("/ping", func(c echo.Context) error { return c.JSON(http.StatusOK, struct{}{}) })
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{})))

	g := e.Group("/api/v1", s.auth)
	sess := g.Group("", detach, s.bodyDeadline)
	upload, publish := needScope(auth.ScopeUpload), needScope(auth.ScopePublish)
	sess.GET("/info", s.handleInfo)
	sess.POST("/sessions", s.handleCreateSession, upload)
	sess.POST("/check", s.handleCheck, upload)
	sess.GET("/sessions/:id", s.handleGetSession) // the owner, or a token that may publish it
	sess.DELETE("/sessions/:id", s.handleAbort, upload)
	sess.POST("/sessions/:id/objects", s.handleObjects, upload)
	sess.POST("/sessions/:id/commit", s.handleCommit, publish)
	sess.POST("/sessions/:id/packs", s.handlePack, upload)
	sess.POST("/promote", s.handlePromote, upload, publish)
	adm := sess.Group(strings.TrimPrefix(api.PathAdmin, "/api/v1"), needScope(auth.ScopeAdmin))
	adm.GET("/sessions", s.handleAdminSessions)
	adm.GET("/sessions/:id", s.handleAdminSession)
	adm.DELETE("/sessions/:id", s.handleAdminAbort)
	adm.POST("/sessions/:id/fail", s.handleAdminFail)
	adm.GET("/tokens", s.handleAdminTokens)
	adm.POST("/tokens", s.handleMint)
	adm.DELETE("/tokens/:name", s.handleAdminRevoke)
	adm.POST("/prune", s.handleAdminPrune)
	up := s.uploadGuard
	g.Any("/uploads", up, upload)
	g.Any("/uploads/", up, upload)
	g.Any("/uploads/*", up, upload)
	s.echo = e
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
		if name := repositoryOf(c); name != "" {
			attrs = append(attrs, "repository", name)
		}
		if id, ok := identityOf(req.Context()); ok {
			attrs = append(attrs, "token", id.DisplayName())
		}
		s.log.Info("request", attrs...)
		return nil
	}
}

// auth authenticates "Authorization: Bearer <token>", or on an
// AccountConn its account, and puts the identity into the request context
// (where tusd's hooks find it too).
func (s *Server) auth(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		if user, ok := req.Context().Value(accountKey{}).(string); ok {
			id, err := s.tokens.Load().Account(user)
			if err != nil {
				e := service.Refuse(service.Forbidden, "unix account %s may not push here: list it under accounts in the configuration", user)
				e.Body.Code = api.CodeScope
				return e
			}
			c.SetRequest(req.WithContext(context.WithValue(req.Context(), identityKey{}, id)))
			return next(c)
		}
		scheme, secret, _ := strings.Cut(req.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(secret) == "" {
			return service.Refuse(service.Unauthenticated, "missing bearer token")
		}
		id, err := s.tokens.Load().Authenticate(strings.TrimSpace(secret), time.Now())
		if err != nil {
			return service.Refuse(service.Unauthenticated, "%v", err)
		}
		c.SetRequest(req.WithContext(context.WithValue(req.Context(), identityKey{}, id)))
		return next(c)
	}
}

// needScope refuses, with code scope, a token without scope.
func needScope(scope string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			id := identity(c)
			if !id.Can(scope) {
				e := service.Refuse(service.Forbidden, "%s lacks the %s scope (it has: %s)", id.Subject(), scope, strings.Join(id.Scopes, ", "))
				e.Body.Code = api.CodeScope
				return e
			}
			return next(c)
		}
	}
}

// bodyDeadline gives a request of the API (not tus, whose uploads have
// their own deadlines) body_timeout to send its body: a client that
// announces a body and sends nothing is dropped then. Packs move it on as
// they read.
func (s *Server) bodyDeadline(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		http.NewResponseController(c.Response().Writer).SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout.Duration))
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

// decodeJSON reads a bounded JSON body strictly.
func decodeJSON(c echo.Context, v any) error {
	body := http.MaxBytesReader(c.Response(), c.Request().Body, maxJSONBody)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return service.Refuse(service.TooLarge, "request body over %d bytes", maxJSONBody)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return service.Refuse(service.Invalid, "the request body stopped arriving: nothing came for the daemon's body_timeout; send the request again")
		}
		return service.Refuse(service.Invalid, "bad JSON body: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return service.Refuse(service.Invalid, "bad JSON body: data after the object")
	}
	return nil
}

// decodeOptionalJSON is decodeJSON for a body that may be empty.
func decodeOptionalJSON(c echo.Context, v any) error {
	req := c.Request()
	body, err := io.ReadAll(io.LimitReader(req.Body, maxJSONBody+1))
	if err != nil {
		return service.Refuse(service.Invalid, "reading the body: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	return decodeJSON(c, v)
}

func ctxOf(c echo.Context) context.Context { return c.Request().Context() }

// handleInfo describes the repository; the unprefixed info of a daemon of
// several repositories lists those the token may use.
func (s *Server) handleInfo(c echo.Context) error {
	id := identity(c)
	if repositoryOf(c) == "" && !s.catalog.Single() {
		if s.catalog.RevokedEverywhere(id) {
			return service.Refuse(service.Unauthenticated, "token revoked")
		}
		t := id.View()
		return c.JSON(http.StatusOK, api.Info{Protocol: api.ProtocolVersion, Version: s.version, Mode: "archive",
			Refs: map[string]string{}, Token: &t, Repositories: s.catalog.Visible(id)})
	}
	svc, err := s.repository(c)
	if err != nil {
		return err
	}
	out, err := svc.Info(ctxOf(c), id)
	if err != nil {
		return err
	}
	if !s.catalog.Single() {
		out.Repositories = s.catalog.Visible(id)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) handleCreateSession(c echo.Context) error {
	svc, err := s.repository(c)
	if err != nil {
		return err
	}
	var req api.SessionRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	out, created, err := svc.CreateSession(ctxOf(c), identity(c), req)
	if err != nil {
		return err
	}
	if created {
		return c.JSON(http.StatusCreated, out)
	}
	return c.JSON(http.StatusOK, out)
}

// handleCheck judges a push without making it (push --dry-run).
func (s *Server) handleCheck(c echo.Context) error {
	svc, err := s.repository(c)
	if err != nil {
		return err
	}
	var req api.CheckRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	out, err := svc.Check(ctxOf(c), identity(c), req)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) handleGetSession(c echo.Context) error {
	svc, err := s.repository(c)
	if err != nil {
		return err
	}
	out, err := svc.Session(ctxOf(c), identity(c), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) handleObjects(c echo.Context) error {
	svc, err := s.repository(c)
	if err != nil {
		return err
	}
	var req api.ObjectsRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	needed, err := svc.Negotiate(ctxOf(c), identity(c), c.Param("id"), req)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, api.ObjectsResponse{Needed: needed})
}

func (s *Server) handleAbort(c echo.Context) error {
	svc, err := s.repository(c)
	if err != nil {
		return err
	}
	if err := svc.Abort(ctxOf(c), identity(c), c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) handleCommit(c echo.Context) error {
	svc, err := s.repository(c)
	if err != nil {
		return err
	}
	var req api.CommitRequest
	if err := decodeOptionalJSON(c, &req); err != nil {
		return err
	}
	out, err := svc.Commit(ctxOf(c), identity(c), c.Param("id"), req.Force)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

// handlePack passes a pack's body to the service, moving the connection's
// read deadline forward before each read so that a stalled client is
// dropped while a slow one is not.
func (s *Server) handlePack(c echo.Context) error {
	svc, err := s.repository(c)
	if err != nil {
		return err
	}
	body := &deadlineReader{r: c.Request().Body, rc: http.NewResponseController(c.Response().Writer), timeout: s.cfg.BodyTimeout.Duration}
	out, err := svc.ReceivePack(ctxOf(c), identity(c), c.Param("id"), body)
	if e, ok := service.AsError(err); ok && e.Kind == service.Unavailable {
		// Cut short by a drain: close the body first, so that the server
		// does not read (and the client not send) more of it before the
		// answer.
		c.Request().Body.Close()
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

// deadlineReader reads a request body, moving the connection's read
// deadline forward before each read.
type deadlineReader struct {
	r       io.Reader
	rc      *http.ResponseController
	timeout time.Duration
}

func (d *deadlineReader) Read(b []byte) (int, error) {
	d.rc.SetReadDeadline(time.Now().Add(d.timeout))
	return d.r.Read(b)
}

// The admin API.

func (s *Server) handleAdminSessions(c echo.Context) error {
	svc, err := s.repository(c)
	if err != nil {
		return err
	}
	all := c.QueryParam("all")
	if all != "" && all != "true" && all != "false" {
		return service.Refuse(service.Invalid, "all must be true or false")
	}
	out, err := svc.Sessions(ctxOf(c), all == "true")
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) handleAdminSession(c echo.Context) error {
	svc, err := s.repository(c)
	if err != nil {
		return err
	}
	out, err := svc.AdminSession(ctxOf(c), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) handleAdminAbort(c echo.Context) error {
	svc, err := s.repository(c)
	if err != nil {
		return err
	}
	out, err := svc.AbortSession(ctxOf(c), c.Param("id"), identity(c).DisplayName())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) handleAdminFail(c echo.Context) error {
	svc, err := s.repository(c)
	if err != nil {
		return err
	}
	out, err := svc.FailSession(ctxOf(c), c.Param("id"), identity(c).DisplayName())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) handleAdminPrune(c echo.Context) error {
	svc, err := s.repository(c)
	if err != nil {
		return err
	}
	var req api.PruneRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	out, err := svc.Prune(ctxOf(c), req, identity(c).DisplayName())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) handleAdminTokens(c echo.Context) error {
	svc, err := s.repository(c)
	if err != nil {
		return err
	}
	out, err := svc.Tokens(ctxOf(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

// handleAdminRevoke revokes a token in the addressed repository; the
// unprefixed path of a daemon of several revokes it in every repository
// the admin token may use.
func (s *Server) handleAdminRevoke(c echo.Context) error {
	name, err := url.PathUnescape(c.Param("name")) // echo leaves escapes in when the path has them
	if err != nil {
		return service.Refuse(service.Invalid, "bad token name in the path")
	}
	id := identity(c)
	repos := []string{repositoryOf(c)}
	if repos[0] == "" && !s.catalog.Single() {
		if repos = s.catalog.Visible(id); len(repos) == 0 {
			return service.Refuse(service.Unauthenticated, "token revoked")
		}
	}
	var out api.Token
	for _, r := range repos {
		svc, err := s.catalog.For(id, r)
		if err != nil {
			return err
		}
		if out, err = svc.Revoke(ctxOf(c), name, id.DisplayName()); err != nil {
			return err
		}
	}
	return c.JSON(http.StatusOK, out)
}

// handleMint makes a token for a CI job. Asked under a repository's path
// without repositories named, the token is for that repository.
func (s *Server) handleMint(c echo.Context) error {
	if s.minter == nil {
		return service.Refuse(service.NotFound, "this daemon does not mint tokens")
	}
	var req api.TokenRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if name := repositoryOf(c); name != "" {
		if _, err := s.repository(c); err != nil {
			return err
		}
		if len(req.Repos) == 0 {
			req.Repos = []string{name}
		}
	}
	out, err := s.minter.Mint(ctxOf(c), identity(c), req)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, out)
}

// handlePromote publishes in the addressed repository a commit of another
// (or the same) repository the token may use.
func (s *Server) handlePromote(c echo.Context) error {
	svc, err := s.repository(c)
	if err != nil {
		return err
	}
	var req api.PromoteRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	from := svc
	if req.From != repositoryOf(c) {
		if from, err = s.catalog.For(identity(c), req.From); err != nil {
			return err
		}
	}
	out, err := svc.Promote(ctxOf(c), identity(c), from, req)
	if err != nil {
		return err
	}
	if req.DryRun {
		return c.JSON(http.StatusOK, out)
	}
	return c.JSON(http.StatusCreated, out)
}
