package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/service"
)

// minter makes tokens over the admin API and keeps them in the daemon's
// configuration file, beside the configured ones.
type minter struct {
	mu   sync.Mutex
	file string // "" until SetConfigFile
	d    *Daemon
	log  *slog.Logger
}

// SetConfigFile names the configuration file the daemon was started from:
// tokens minted over the API are appended to it (and the tokens reloaded
// from it). Without one, minting is refused.
func (d *Daemon) SetConfigFile(path string) {
	d.mint.mu.Lock()
	defer d.mint.mu.Unlock()
	d.mint.file = path
}

// Mint makes a token within the scope of the admin token by, as req asks
// (see api.TokenRequest), appends it to the configuration file and
// reloads the tokens. The secret is in the answer only. The new token can
// do no more than by: its scopes are some of by's (never admin), its
// repositories and refs within by's, its expiry no later than by's, and it
// is refused wherever by is revoked (it records by as minted_by).
func (m *minter) Mint(ctx context.Context, by auth.Identity, req api.TokenRequest) (api.MintedToken, error) {
	scopes := req.Scopes
	if len(scopes) == 0 {
		scopes = []string{auth.ScopeUpload, auth.ScopePublish}
	}
	if err := auth.CheckScopes(scopes); err != nil {
		return api.MintedToken{}, service.Refuse(service.Invalid, "scopes: %v", err)
	}
	if slices.Contains(scopes, auth.ScopeAdmin) {
		return api.MintedToken{}, service.Refuse(service.Forbidden,
			"a minted token cannot have the admin scope: admin tokens go in the configuration file (ostree-upload gentoken --scope admin)")
	}
	for _, sc := range scopes {
		if !by.Can(sc) {
			return api.MintedToken{}, service.Refuse(service.Forbidden, "scope %s: the asking token %s does not have it (it has: %s)", sc, by.DisplayName(), strings.Join(by.Scopes, ", "))
		}
	}
	life := req.ExpiresIn
	if life == 0 {
		life = api.DefaultMintedLifetime
	}
	if life < 0 || life > api.MaxMintedLifetime {
		return api.MintedToken{}, service.Refuse(service.Invalid, "expires_in must be between 1 and %d seconds (7 days)", api.MaxMintedLifetime)
	}
	expires := time.Now().Add(time.Duration(life) * time.Second).UTC().Truncate(time.Second)
	if by.Expires != nil && expires.After(*by.Expires) {
		expires = by.Expires.UTC().Truncate(time.Second) // not past its maker
	}
	repos, err := within("repository", req.Repos, by.Repos)
	if err != nil {
		return api.MintedToken{}, err
	}
	reach := 0
	for _, name := range m.d.names {
		if !(auth.Identity{Repos: repos}).AllowsRepo(name) {
			continue
		}
		// The maker must be able to act there now: not revoked, in scope.
		if _, err := m.d.catalog.For(by, name); err != nil {
			return api.MintedToken{}, err
		}
		reach++
	}
	for _, r := range repos {
		if !strings.ContainsAny(r, "*?") && !slices.Contains(m.d.names, r) {
			return api.MintedToken{}, service.Refuse(service.Invalid, "no repository %q; the asking token may use: %s", r, listNames(m.d.catalog.Visible(by)))
		}
	}
	if reach == 0 {
		return api.MintedToken{}, service.Refuse(service.Invalid, "the token would reach no repository of this daemon; the asking token may use: %s", listNames(m.d.catalog.Visible(by)))
	}
	refs, err := within("ref", req.Refs, by.Refs)
	if err != nil {
		return api.MintedToken{}, err
	}
	secret, hash, err := auth.Generate()
	if err != nil {
		return api.MintedToken{}, err
	}
	name := req.Name
	if name == "" {
		name = "ci-" + hash[:12]
	}
	entry := config.Token{SHA256: hash, Name: name, Repos: repos, Refs: refs, Scopes: scopes, Expires: &expires, MintedBy: by.Hash}

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.file == "" {
		return api.MintedToken{}, service.Refuse(service.Unavailable, "this daemon has no configuration file to keep tokens in: start it with -c FILE")
	}
	if err := config.AppendToken(m.file, entry); err != nil {
		if errors.Is(err, config.ErrDuplicateName) {
			return api.MintedToken{}, service.Refuse(service.Conflict, "a token named %q exists: choose another name", name)
		}
		if strings.HasPrefix(err.Error(), "new token") {
			return api.MintedToken{}, service.Refuse(service.Invalid, "%v", err)
		}
		return api.MintedToken{}, fmt.Errorf("keeping the minted token: %w", err)
	}
	cfg, err := config.Load(m.file)
	if err != nil {
		return api.MintedToken{}, fmt.Errorf("reloading the tokens after minting: %w", err)
	}
	k := cfg.Keyring()
	m.d.setKeyring(k)
	id, _ := k.Lookup(hash)
	m.log.Info("token minted", "token", name, "by", by.DisplayName(), "repos", repos, "refs", refs, "scopes", scopes, "expires", expires)
	return api.MintedToken{Token: id.View(), Secret: secret}, nil
}

// ReloadTokens replaces the tokens with those load returns, in turn with
// minting (so that a reload and a mint never undo each other).
func (d *Daemon) ReloadTokens(load func() (*auth.Keyring, error)) error {
	d.mint.mu.Lock()
	defer d.mint.mu.Unlock()
	k, err := load()
	if err != nil {
		return err
	}
	d.setKeyring(k)
	return nil
}

// within checks that the globs asked for stay inside the asking token's
// (none asked: the asking token's own). Inside means: the asking token has
// no limit, or each glob asked is one of its globs, or a plain name one of
// its globs matches.
func within(what string, asked, mine []string) ([]string, error) {
	if len(asked) == 0 {
		return slices.Clone(mine), nil
	}
	for _, g := range asked {
		if err := auth.CheckGlob(g); err != nil {
			return nil, service.Refuse(service.Invalid, "%s %v", what, err)
		}
		if len(mine) == 0 || slices.Contains(mine, g) {
			continue
		}
		plain := !strings.ContainsAny(g, "*?")
		ok := false
		for _, m := range mine {
			if plain && auth.MatchGlob(m, g) {
				ok = true
			}
		}
		if !ok {
			return nil, service.Refuse(service.Forbidden, "%s %q is outside the asking token's (%s)", what, g, strings.Join(mine, ", "))
		}
	}
	return slices.Clone(asked), nil
}

func listNames(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(out, ", ")
}
