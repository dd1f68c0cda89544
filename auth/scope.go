package auth

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/ostree-upload/ostree-upload/api"
)

// Scopes say what a token may do.
const (
	// ScopeUpload: create and resume sessions, negotiate, upload objects
	// and packs, read and abort the token's own sessions.
	ScopeUpload = api.ScopeUpload
	// ScopePublish: commit the token's own sessions, and the sessions of
	// upload-only tokens whose refs all match the token's ref globs.
	ScopePublish = api.ScopePublish
	// ScopeAdmin: the admin API (every session, the tokens, revocation).
	ScopeAdmin = api.ScopeAdmin
)

// AllScopes lists the scopes in the order they are shown.
var AllScopes = []string{ScopeUpload, ScopePublish, ScopeAdmin}

// DefaultScopes are a token's scopes when its entry names none: what
// tokens of lirios/ostree-upload could do.
var DefaultScopes = []string{ScopeUpload, ScopePublish}

// CheckScopes reports whether scopes is a valid scopes list: nil (the
// default) or a non-empty list of known scopes without repeats.
func CheckScopes(scopes []string) error {
	if scopes == nil {
		return nil
	}
	if len(scopes) == 0 {
		return errors.New("must name at least one scope; leave the key out for the default (upload, publish)")
	}
	for i, s := range scopes {
		if !slices.Contains(AllScopes, s) {
			return fmt.Errorf("unknown scope %q; the scopes are %s", s, strings.Join(AllScopes, ", "))
		}
		if slices.Contains(scopes[:i], s) {
			return fmt.Errorf("scope %q named twice", s)
		}
	}
	return nil
}

// effectiveScopes is scopes, or DefaultScopes when nil, in AllScopes order.
func effectiveScopes(scopes []string) []string {
	if scopes == nil {
		scopes = DefaultScopes
	}
	out := make([]string, 0, len(scopes))
	for _, s := range AllScopes {
		if slices.Contains(scopes, s) {
			out = append(out, s)
		}
	}
	return out
}
