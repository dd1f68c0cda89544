package httpapi

import (
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"
	"github.com/tus/tusd/v2/pkg/handler"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/service"
)

// statusOf is the HTTP status of each kind of refusal: the only place
// where the service's answers become statuses.
var statusOf = map[service.Kind]int{
	service.Invalid:         http.StatusBadRequest,
	service.Unauthenticated: http.StatusUnauthorized,
	service.Forbidden:       http.StatusForbidden,
	service.NotFound:        http.StatusNotFound,
	service.NotAllowed:      http.StatusMethodNotAllowed,
	service.Conflict:        http.StatusConflict,
	service.TooLarge:        http.StatusRequestEntityTooLarge,
	service.Unprocessable:   http.StatusUnprocessableEntity,
	service.TooMany:         http.StatusTooManyRequests,
	service.NoSpace:         http.StatusInsufficientStorage,
	service.Unavailable:     http.StatusServiceUnavailable,
}

// answer is the status and body of an error: a refusal's, or 500 for the
// service's own failures (which are logged, not shown).
func (s *Server) answer(err error, method, path string) (int, *service.Error) {
	if e, ok := service.AsError(err); ok {
		st, known := statusOf[e.Kind]
		if !known {
			st = http.StatusInternalServerError
		}
		if e.Kind == service.Unauthenticated {
			s.authFailures.Inc()
		}
		return st, e
	}
	s.log.Error("request failed", "method", method, "path", path, "err", err)
	return http.StatusInternalServerError, service.Refuse(0, "internal error (the daemon's log has the details); retry later")
}

func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var st int
	var e *service.Error
	if ee, ok := err.(*echo.HTTPError); ok {
		st, e = ee.Code, service.Refuse(0, "%v", ee.Message)
	} else {
		st, e = s.answer(err, c.Request().Method, c.Request().URL.Path)
	}
	h := c.Response().Header()
	if st == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="ostree-upload"`)
	}
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int(e.RetryAfter.Seconds())))
	}
	if c.Request().Method == http.MethodHead {
		c.NoContent(st)
		return
	}
	c.JSON(st, e.Body)
}

// tusError is what a tusd hook returns for err: the same status and JSON
// body as the rest of the API.
func (s *Server) tusError(err error) error {
	st, e := s.answer(err, "tus", "")
	he := tusAnswer(st, e.Body)
	if e.RetryAfter > 0 {
		he.HTTPResponse.Header["Retry-After"] = strconv.Itoa(int(e.RetryAfter.Seconds()))
	}
	return he
}

func tusAnswer(status int, body api.Error) handler.Error {
	b, _ := jsonMarshal(body)
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
