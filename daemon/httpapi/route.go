package httpapi

import (
	"context"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/ostree-upload/ostree-upload/service"
)

// apiRoot is where the API of a repository begins in a path.
const apiRoot = "/api/v1"

type repositoryKey struct{}

// splitRepository splits an API path into the repository's name and the
// path within its API: "/beta/api/v1/info" is ("beta", "/api/v1/info"),
// "/api/v1/info" is ("", "/api/v1/info"). The name ends at the first
// "/api/v1" segment, which no repository name contains (the
// configuration refuses such names), so a repository may be called api,
// metrics or a/b. Paths outside any API give ok false.
func splitRepository(path string) (name, rest string, ok bool) {
	for i := 0; ; {
		j := strings.Index(path[i:], apiRoot)
		if j < 0 {
			return "", "", false
		}
		j += i
		end := j + len(apiRoot)
		if end == len(path) || path[end] == '/' {
			if j == 0 {
				return "", path, true
			}
			return path[1:j], path[j:], true
		}
		i = j + 1
	}
}

// routeRepository takes the repository's name off an API path before
// routing, keeping it in the request's context: the routes are those of
// one repository's API.
func routeRepository(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		name, rest, ok := splitRepository(req.URL.Path)
		if !ok || name == "" {
			return next(c)
		}
		if raw := req.URL.RawPath; raw != "" {
			// Names have no escapes: the escaped path must begin with the same name.
			if !strings.HasPrefix(raw, "/"+name+apiRoot) {
				return service.Refuse(service.NotFound, "not found")
			}
			req.URL.RawPath = raw[1+len(name):]
		}
		req.URL.Path = rest
		c.SetRequest(req.WithContext(context.WithValue(req.Context(), repositoryKey{}, name)))
		return next(c)
	}
}

// repositoryOf is the name of the repository a request addresses.
func repositoryOf(c echo.Context) string {
	name, _ := c.Request().Context().Value(repositoryKey{}).(string)
	return name
}

// repository is the service of the repository a request addresses, if
// its token may use it.
func (s *Server) repository(c echo.Context) (service.Repository, error) {
	return s.catalog.For(identity(c), repositoryOf(c))
}
