package config

import (
	"errors"
	"os/user"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/auth"
)

// accounts entries give unix accounts what a token's entry gives a token;
// no token secret authenticates as an account.
func TestAccounts(t *testing.T) {
	cfg, err := Load(writeFile(t, `accounts:
- user: alice
  refs: ["beta/*"]
- user: ci-bot
  repos: [flatpak]
  scopes: [upload]
`))
	if err != nil {
		t.Fatal(err)
	}
	k := cfg.Keyring()
	alice, err := k.Account("alice")
	if err != nil || alice.DisplayName() != "unix:alice" || !slices.Equal(alice.Refs, []string{"beta/*"}) ||
		!slices.Equal(alice.Scopes, auth.DefaultScopes) || alice.AllowsRef("main") || !alice.AllowsRef("beta/x") {
		t.Errorf("alice: %+v, %v", alice, err)
	}
	bot, err := k.Account("ci-bot")
	if err != nil || bot.Can(auth.ScopePublish) || !bot.AllowsRepo("flatpak") || bot.AllowsRepo("os") {
		t.Errorf("ci-bot: %+v, %v", bot, err)
	}
	if _, err := k.Account("mallory"); !errors.Is(err, auth.ErrUnknownAccount) {
		t.Errorf("an account not listed: %v", err)
	}
	if back, ok := k.Lookup(alice.Hash); !ok || back.Account != "alice" {
		t.Errorf("lookup of alice's hash: %+v %v", back, ok)
	}
	if _, err := k.Authenticate(alice.Hash, time.Now()); !errors.Is(err, auth.ErrUnknownToken) {
		t.Errorf("an account's hash as a secret: %v", err)
	}
	// Listed accounts replace the default: the program's own account.
	me, _ := user.Current()
	if _, err := k.Account(me.Username); err == nil && me.Username != "alice" && me.Username != "ci-bot" {
		t.Errorf("%s may push although accounts does not list it", me.Username)
	}
}

// Without accounts, the account the program runs as may push: ostree-push's
// model, where whoever logs in pushes.
func TestAccountsDefault(t *testing.T) {
	cfg, err := Load(writeFile(t, "update: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	me, _ := user.Current()
	id, err := cfg.Keyring().Account(me.Username)
	if err != nil || !slices.Equal(id.Scopes, auth.DefaultScopes) || len(id.Refs) != 0 || len(id.Repos) != 0 {
		t.Errorf("%s: %+v, %v", me.Username, id, err)
	}
}

func TestAccountsRefused(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"accounts: alice\n", "accounts: must be a list"},
		{"accounts:\n- refs: [a]\n", "accounts[0]: needs a user key"},
		{"accounts:\n- user: ../etc\n", "accounts[0].user: \"../etc\" is not a unix account name"},
		{"accounts:\n- user: a\n- user: a\n", "accounts[1].user: \"a\" already has the entry on line 2"},
		{"accounts:\n- user: a\n  scopes: [root]\n", "accounts[0].scopes: unknown scope \"root\""},
		{"accounts:\n- user: a\n  refs: [\"\"]\n", "accounts[0].refs[0]: ref glob must not be empty"},
		{"accounts:\n- user: a\n  token: x\n", "accounts[0].token: unknown key"},
		{"repos:\n  a:\n    accounts: []\n", "accounts"},
	} {
		_, err := Load(writeFile(t, c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.yaml, err, c.want)
		}
	}
}
