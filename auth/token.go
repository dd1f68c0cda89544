// Package auth authenticates API tokens: secrets and their hashes, the
// keyring of configured tokens, identities with their scopes and ref globs.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ostree-upload/ostree-upload/api"
)

// Authentication errors.
var (
	ErrUnknownToken = errors.New("unknown token")
	ErrExpiredToken = errors.New("token expired")
)

// SecretPrefix starts every secret made by Generate.
const SecretPrefix = "ou_"

// Identity is who a request authenticated as. Hash identifies the token in
// logs and the journal (hex SHA-256 of the secret; never the secret).
type Identity struct {
	Hash    string
	Name    string
	Repos   []string // repository globs (names on the wire); empty = every repository
	Refs    []string // ref globs, within those repositories; empty = all refs
	Scopes  []string // what it may do (ScopeUpload, …), in AllScopes order
	Expires *time.Time
	// MintedBy is the hash of the admin token that minted this one over
	// the API ("" for a configured token): where that token is revoked,
	// this one is refused too.
	MintedBy string
	// Account is the unix account of an identity learnt from the
	// operating system (a push over ssh); "" for a token.
	Account string
}

// Can reports whether the token has scope.
func (i Identity) Can(scope string) bool { return slices.Contains(i.Scopes, scope) }

// View is the token as the API shows it: never its secret, nor the whole
// hash.
func (i Identity) View() api.Token {
	return api.Token{Name: i.DisplayName(), ID: i.ID(), Scopes: i.Scopes, Repos: i.Repos, Refs: i.Refs, Expires: i.Expires}
}

// ID is the short form of Hash shown to operators (its first 12 digits).
func (i Identity) ID() string {
	if len(i.Hash) > 12 {
		return i.Hash[:12]
	}
	return i.Hash
}

// DisplayName is Name, or "token-" + Hash[:12] when unnamed.
func (i Identity) DisplayName() string {
	if i.Name != "" {
		return i.Name
	}
	return "token-" + i.ID()
}

// Subject names the identity in a sentence: "token NAME", or "unix
// account USER" for an account.
func (i Identity) Subject() string {
	if i.Account != "" {
		return "unix account " + i.Account
	}
	return "token " + i.DisplayName()
}

// AllowsRef reports whether the token may move ref (no globs = any ref).
func (i Identity) AllowsRef(ref string) bool {
	if len(i.Refs) == 0 {
		return true
	}
	for _, g := range i.Refs {
		if MatchGlob(g, ref) {
			return true
		}
	}
	return false
}

// AllowsRepo reports whether the token may act on the repository named
// repo; no globs means every repository. The repository of a
// one-repository daemon is named "", which only "*" matches.
func (i Identity) AllowsRepo(repo string) bool {
	if len(i.Repos) == 0 {
		return true
	}
	for _, g := range i.Repos {
		if MatchGlob(g, repo) {
			return true
		}
	}
	return false
}

// MatchGlob reports whether ref matches glob, where '*' matches any run of
// characters including '/', '?' exactly one character, and everything else
// itself.
func MatchGlob(glob, ref string) bool {
	g, r := []rune(glob), []rune(ref)
	gi, ri := 0, 0
	star, mark := -1, 0 // last '*' in g, and where in r it started matching
	for ri < len(r) {
		switch {
		case gi < len(g) && g[gi] == '*':
			star, mark = gi, ri
			gi++
		case gi < len(g) && (g[gi] == '?' || g[gi] == r[ri]):
			gi++
			ri++
		case star >= 0:
			mark++
			gi, ri = star+1, mark
		default:
			return false
		}
	}
	for gi < len(g) && g[gi] == '*' {
		gi++
	}
	return gi == len(g)
}

// Hash returns the hex SHA-256 of a secret, as stored in sha256 entries.
func Hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Generate returns a new secret, SecretPrefix followed by 32 random bytes in
// unpadded URL-safe base64, and its hex SHA-256.
func Generate() (secret, hash string, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", err
	}
	secret = SecretPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return secret, Hash(secret), nil
}

type keyEntry struct {
	sum [sha256.Size]byte
	id  Identity
}

// Keyring checks presented secrets against the configured tokens. It is
// immutable after construction and safe for concurrent use.
type Keyring struct {
	entries  []keyEntry // tokens
	accounts []keyEntry // unix accounts: never matched by Authenticate
}

// Token is what authentication knows of a configured token.
type Token struct {
	SHA256   string   // hex SHA-256 of the secret
	Name     string   // "" when unnamed
	Repos    []string // repository globs; empty = every repository
	Refs     []string // ref globs; empty = all refs
	Scopes   []string // nil = DefaultScopes
	Expires  *time.Time
	MintedBy string // hex SHA-256 of the minting token, or ""
}

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// NewKeyring builds a keyring from tokens and the unix accounts that may
// push over ssh (already validated, normally by the configuration's
// loading). Token entries without a valid sha256 can never match and are
// left out.
func NewKeyring(tokens []Token, accounts ...Account) *Keyring {
	k := &Keyring{}
	for _, a := range accounts {
		k.accounts = append(k.accounts, accountEntry(a))
	}
	for _, t := range tokens {
		var e keyEntry
		if !sha256Hex.MatchString(t.SHA256) {
			continue
		}
		hex.Decode(e.sum[:], []byte(t.SHA256))
		e.id = Identity{
			Hash:     hex.EncodeToString(e.sum[:]),
			Name:     t.Name,
			Repos:    slices.Clone(t.Repos),
			Refs:     slices.Clone(t.Refs),
			Scopes:   effectiveScopes(t.Scopes),
			MintedBy: t.MintedBy,
		}
		if t.Expires != nil {
			exp := *t.Expires
			e.id.Expires = &exp
		}
		k.entries = append(k.entries, e)
	}
	return k
}

// Owners lists the identity hashes of the usable tokens and accounts.
func (k *Keyring) Owners() []string {
	out := make([]string, 0, len(k.entries)+len(k.accounts))
	for _, e := range k.entries {
		out = append(out, e.id.Hash)
	}
	for _, e := range k.accounts {
		out = append(out, e.id.Hash)
	}
	return out
}

// Len is the number of usable tokens.
func (k *Keyring) Len() int { return len(k.entries) }

// Authenticate returns the identity of the token whose secret is secret.
// The secret's SHA-256 is compared with every entry in constant time. An
// unknown or empty secret gives ErrUnknownToken; a token whose expiry is
// before now gives its identity (for logging) with ErrExpiredToken.
func (k *Keyring) Authenticate(secret string, now time.Time) (Identity, error) {
	if secret == "" {
		return Identity{}, ErrUnknownToken
	}
	sum := sha256.Sum256([]byte(secret))
	match := -1
	for i := range k.entries {
		eq := subtle.ConstantTimeCompare(sum[:], k.entries[i].sum[:])
		// First match wins; keep comparing the rest regardless.
		if eq == 1 && match < 0 {
			match = i
		}
	}
	if match < 0 {
		return Identity{}, ErrUnknownToken
	}
	id := k.entries[match].id.clone()
	if id.Expires != nil && id.Expires.Before(now) {
		return id, ErrExpiredToken
	}
	return id, nil
}

// Lookup returns the identity of the usable token or account whose hash
// is hash.
func (k *Keyring) Lookup(hash string) (Identity, bool) {
	for _, list := range [][]keyEntry{k.entries, k.accounts} {
		for _, e := range list {
			if e.id.Hash == hash {
				return e.id.clone(), true
			}
		}
	}
	return Identity{}, false
}

// Identities lists the identities of the usable tokens, in file order.
func (k *Keyring) Identities() []Identity {
	out := make([]Identity, len(k.entries))
	for i, e := range k.entries {
		out[i] = e.id.clone()
	}
	return out
}

func (i Identity) clone() Identity {
	i.Repos = slices.Clone(i.Repos)
	i.Refs = slices.Clone(i.Refs)
	i.Scopes = slices.Clone(i.Scopes)
	if i.Expires != nil {
		exp := *i.Expires
		i.Expires = &exp
	}
	return i
}

// Current holds the keyring in use, replaced whole when the tokens are
// reloaded. Its zero value holds an empty keyring.
type Current struct{ p atomic.Pointer[Keyring] }

// Load returns the keyring in use.
func (c *Current) Load() *Keyring {
	if k := c.p.Load(); k != nil {
		return k
	}
	return &Keyring{}
}

// Store replaces the keyring.
func (c *Current) Store(k *Keyring) { c.p.Store(k) }

// CheckGlob reports whether glob is a valid ref glob: non-empty, printable
// ASCII without whitespace.
func CheckGlob(glob string) error {
	if glob == "" {
		return errors.New("ref glob must not be empty")
	}
	for i := 0; i < len(glob); i++ {
		if c := glob[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("ref glob %q may only hold printable ASCII characters without spaces", glob)
		}
	}
	return nil
}

// CheckName reports whether name is acceptable as a token name: valid
// UTF-8 without control characters. The empty name means unnamed.
func CheckName(name string) error {
	if !utf8.ValidString(name) {
		return errors.New("token name must be valid UTF-8")
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return errors.New("token name must not contain control characters")
		}
	}
	return nil
}
