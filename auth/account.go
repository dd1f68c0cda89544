package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
)

// Account is what authentication knows of a unix account that may push
// over ssh: the daemon learns the account from its unix socket's peer
// credentials, never from anything the client says.
type Account struct {
	User   string   // the account's login name
	Repos  []string // repository globs; empty = every repository
	Refs   []string // ref globs; empty = all refs
	Scopes []string // nil = DefaultScopes
}

// AccountPrefix starts the name under which an account appears in logs
// and sessions ("unix:alice"), beside tokens' names.
const AccountPrefix = "unix:"

var userRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$`)

// CheckUser reports whether user is a valid unix login name: a letter or
// '_', then letters, digits, '_', '.' or '-', 32 characters at most (an
// optional trailing '$').
func CheckUser(user string) error {
	if !userRE.MatchString(user) {
		return fmt.Errorf("%q is not a unix account name (a letter or _, then letters, digits, _, . or -; 32 characters at most)", user)
	}
	return nil
}

// ErrUnknownAccount is Keyring.Account's answer for an account the
// configuration does not let push.
var ErrUnknownAccount = errors.New("unknown account")

// accountHash is the identity hash of an account: it names the account's
// sessions and spool like a token's hash, and no secret authenticates to
// it (accounts never take part in Authenticate).
func accountHash(user string) string {
	sum := sha256.Sum256([]byte("ostree-upload unix account\x00" + user))
	return hex.EncodeToString(sum[:])
}

func accountEntry(a Account) keyEntry {
	var e keyEntry
	e.id = Identity{
		Hash:    accountHash(a.User),
		Name:    AccountPrefix + a.User,
		Account: a.User,
		Repos:   slices.Clone(a.Repos),
		Refs:    slices.Clone(a.Refs),
		Scopes:  effectiveScopes(a.Scopes),
	}
	return e
}

// Account returns the identity of the unix account user, which the caller
// learnt from the operating system (a unix socket's peer credentials, or
// the process's own account), or ErrUnknownAccount.
func (k *Keyring) Account(user string) (Identity, error) {
	for _, e := range k.accounts {
		if e.id.Account == user {
			return e.id.clone(), nil
		}
	}
	return Identity{}, fmt.Errorf("%w %q", ErrUnknownAccount, user)
}
