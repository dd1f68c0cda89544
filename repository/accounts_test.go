package repository

import (
	"path/filepath"
	"testing"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/service"
)

// Unix accounts are isolated from each other and from tokens as tokens
// are: another account cannot read, upload into, commit or abort an
// account's session, and the same ref update by another identity opens a
// session of its own.
func TestAccountsAreIsolated(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Repo, cfg.StateDir = filepath.Join(dir, "repo"), filepath.Join(dir, "state")
	cfg.Tokens = []config.Token{{Token: "ou_ci", Name: "ci"}}
	cfg.Accounts = []config.Account{{User: "alice"}, {User: "bob"}}
	s, err := Open(ctx, cfg, Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k := cfg.Keyring()
	alice, err := k.Account("alice")
	if err != nil {
		t.Fatal(err)
	}
	bob, _ := k.Account("bob")
	ci, _ := k.Lookup(k.Owners()[0])
	update := api.SessionRequest{Refs: []api.RefUpdate{{Name: "main", New: fx.A}}}
	sess, _, err := s.CreateSession(ctx, alice, update)
	if err != nil {
		t.Fatal(err)
	}
	names := namesOf(t, fx.A)
	for _, c := range []struct {
		name string
		call func() error
	}{
		{"bob reads", func() error { _, err := s.Session(ctx, bob, sess.ID); return err }},
		{"bob negotiates", func() error { _, err := s.Negotiate(ctx, bob, sess.ID, api.ObjectsRequest{Objects: names}); return err }},
		{"bob sends a pack", func() error { _, err := s.ReceivePack(ctx, bob, sess.ID, packOf(t, names[:1])); return err }},
		{"bob commits", func() error { _, err := s.Commit(ctx, bob, sess.ID, false); return err }},
		{"bob aborts", func() error { return s.Abort(ctx, bob, sess.ID) }},
		{"the token ci reads", func() error { _, err := s.Session(ctx, ci, sess.ID); return err }},
	} {
		if e, ok := service.AsError(c.call()); !ok || e.Kind != service.NotFound {
			t.Errorf("%s alice's session: %v, want not found", c.name, e)
		}
	}
	mine, _, err := s.CreateSession(ctx, bob, update)
	if err != nil || mine.ID == sess.ID {
		t.Errorf("bob's session for the same update: %s (alice's %s), %v", mine.ID, sess.ID, err)
	}
	if got, err := s.Session(ctx, alice, sess.ID); err != nil || got.ID != sess.ID {
		t.Errorf("alice reads her session: %+v %v", got, err)
	}
}
