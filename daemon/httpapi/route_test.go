package httpapi

import "testing"

// A repository's name is the path before the first /api/v1 segment, so
// that repositories called api, metrics or a/b, nested ones, and names
// that merely contain "api" all reach their own API.
func TestSplitRepository(t *testing.T) {
	for path, want := range map[string][2]string{
		"/api/v1/info":                  {"", "/api/v1/info"},
		"/api/v1":                       {"", "/api/v1"},
		"/beta/api/v1/info":             {"beta", "/api/v1/info"},
		"/api/api/v1/sessions":          {"api", "/api/v1/sessions"},
		"/metrics/api/v1/info":          {"metrics", "/api/v1/info"},
		"/a/b/api/v1/uploads/x/y":       {"a/b", "/api/v1/uploads/x/y"},
		"/a/api/v1x/api/v1/info":        {"a/api/v1x", "/api/v1/info"},
		"/apps/api/v10/api/v1/sessions": {"apps/api/v10", "/api/v1/sessions"},
	} {
		name, rest, ok := splitRepository(path)
		if !ok || name != want[0] || rest != want[1] {
			t.Errorf("%s: (%q, %q, %v), want (%q, %q)", path, name, rest, ok, want[0], want[1])
		}
	}
	for _, path := range []string{"/metrics", "/healthz", "/", "/api/v1x/info", "/beta/api"} {
		if _, _, ok := splitRepository(path); ok {
			t.Errorf("%s taken for an API path", path)
		}
	}
}
