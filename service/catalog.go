package service

import (
	"slices"
	"sort"
	"strings"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/auth"
)

// Catalog is the repositories a daemon serves, by their names on the wire.
// A one-repository daemon has one, named "". It is fixed once built and
// safe for concurrent use.
type Catalog struct {
	repos map[string]Repository
	names []string
}

// NewCatalog is the catalog of repos, keyed by name.
func NewCatalog(repos map[string]Repository) *Catalog {
	c := &Catalog{repos: repos}
	for name := range repos {
		c.names = append(c.names, name)
	}
	sort.Strings(c.names)
	return c
}

// Names lists every repository's name, sorted.
func (c *Catalog) Names() []string { return slices.Clone(c.names) }

// Get returns the repository named name, whoever asks (for the daemon's
// own wiring, never for a client).
func (c *Catalog) Get(name string) (Repository, bool) {
	r, ok := c.repos[name]
	return r, ok
}

// Single reports whether the catalog is one unnamed repository (a daemon
// configured with repo:, whose API has no repository in its paths).
func (c *Catalog) Single() bool {
	_, ok := c.repos[""]
	return ok && len(c.repos) == 1
}

// For returns the repository named name for a client. A repository that
// does not exist and one the token may not act on are refused alike
// (NotFound), so that a token learns nothing of repositories outside its
// scope; a token revoked in the repository is Unauthenticated.
func (c *Catalog) For(id auth.Identity, name string) (Repository, error) {
	r, ok := c.repos[name]
	if !ok || !id.AllowsRepo(name) {
		return nil, c.notFound(id, name)
	}
	if revokedIn(r, id) {
		return nil, Refuse(Unauthenticated, "token revoked")
	}
	return r, nil
}

// Visible lists the repositories the token may act on and is not revoked
// in, sorted.
func (c *Catalog) Visible(id auth.Identity) []string {
	var out []string
	for _, name := range c.names {
		if id.AllowsRepo(name) && !revokedIn(c.repos[name], id) {
			out = append(out, name)
		}
	}
	return out
}

// RevokedEverywhere reports whether the token is revoked in every
// repository it may act on (and there is at least one).
func (c *Catalog) RevokedEverywhere(id auth.Identity) bool {
	n := 0
	for _, name := range c.names {
		if id.AllowsRepo(name) {
			if !revokedIn(c.repos[name], id) {
				return false
			}
			n++
		}
	}
	return n > 0
}

// revokedIn reports whether the token, or the admin token that minted it,
// is revoked in r.
func revokedIn(r Repository, id auth.Identity) bool {
	return r.Revoked(id.Hash) || id.MintedBy != "" && r.Revoked(id.MintedBy)
}

func (c *Catalog) notFound(id auth.Identity, name string) *Error {
	visible := c.Visible(id)
	var e *Error
	switch {
	case name == "":
		e = Refuse(NotFound, "this daemon serves several repositories: add one's name to the address (-a URL/NAME); this token may use: %s", listOrNone(visible))
	case c.Single():
		e = Refuse(NotFound, "no repository %q: this daemon serves one repository, at its address without a name", name)
	default:
		e = Refuse(NotFound, "no repository %q for this token; it may use: %s", name, listOrNone(visible))
	}
	e.Body.Code = api.CodeNoRepository
	return e
}

func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}
