package repository

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/service"
	"github.com/ostree-upload/ostree-upload/store"
	"github.com/ostree-upload/ostree-upload/store/object"
	"github.com/ostree-upload/ostree-upload/store/storetest"
)

// The repository's service is exercised here without any transport: the
// operations of a push and their refusals, in the service's own terms.

var fx *storetest.Fixture

func TestMain(m *testing.M) {
	storetest.Main(m, func(dir string) error {
		var err error
		fx, err = storetest.BuildFixture(dir, 400)
		return err
	})
}

var ctx = context.Background()

// newService opens a service on a new repository with two tokens: ci
// (every ref) and narrow (refs other*).
func newService(t *testing.T) (*Service, auth.Identity, auth.Identity) {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Repo, cfg.StateDir = filepath.Join(dir, "repo"), filepath.Join(dir, "state")
	cfg.Tokens = []config.Token{{Token: "ou_ci", Name: "ci"}, {Token: "ou_narrow", Name: "narrow", Refs: []string{"other*"}}}
	s, err := Open(ctx, cfg, Env{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	k := cfg.Keyring()
	ci, _ := k.Authenticate("ou_ci", time.Now())
	narrow, _ := k.Authenticate("ou_narrow", time.Now())
	return s, ci, narrow
}

// packOf is a pack of build-repo objects.
func packOf(t *testing.T, names []string) *bytes.Reader {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		name, err := object.ParseName(n)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(fx.Build, filepath.FromSlash(name.RelPath())))
		if err != nil {
			t.Fatal(err)
		}
		tw.WriteHeader(&tar.Header{Name: name.RelPath(), Size: int64(len(b)), Mode: 0o644, Typeflag: tar.TypeReg})
		tw.Write(b)
	}
	tw.Close()
	return bytes.NewReader(buf.Bytes())
}

// namesOf lists every object of a commit of the build repository.
func namesOf(t *testing.T, commit string) []string {
	t.Helper()
	r, err := store.OpenArchive(ctx, fx.Build)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	sum, _ := object.ParseChecksum(commit)
	var out []string
	if err := r.Walk(ctx, sum, func(n object.Name) error { out = append(out, n.String()); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// A push, as the service sees it: a session, a negotiation, a pack, a
// commit; then the same push again is up to date and needs nothing.
func TestPushThroughTheService(t *testing.T) {
	t.Parallel()
	s, ci, _ := newService(t)
	sess, created, err := s.CreateSession(ctx, ci, api.SessionRequest{Refs: []api.RefUpdate{{Name: "main", New: fx.A}}})
	if err != nil || !created {
		t.Fatalf("session: %v %v", created, err)
	}
	names := namesOf(t, fx.A)
	needed, err := s.Negotiate(ctx, ci, sess.ID, api.ObjectsRequest{Objects: names})
	if err != nil || len(needed) != len(names) {
		t.Fatalf("needed %d of %d: %v", len(needed), len(names), err)
	}
	res, err := s.ReceivePack(ctx, ci, sess.ID, packOf(t, needed))
	if err != nil || res.Stored != len(needed) {
		t.Fatalf("pack: %+v %v", res, err)
	}
	out, err := s.Commit(ctx, ci, sess.ID, false)
	if err != nil || out.State != api.StatePublished {
		t.Fatalf("commit: %+v %v", out, err)
	}
	refs, _ := s.repo.ListRefs(ctx)
	if refs["main"].String() != fx.A {
		t.Fatalf("refs %v", refs)
	}
	storetest.MustOstree(t, "fsck", "--repo="+s.cfg.Repo)
	again, _, err := s.CreateSession(ctx, ci, api.SessionRequest{Refs: []api.RefUpdate{{Name: "main", Old: fx.A, New: fx.A}}})
	if err != nil {
		t.Fatal(err)
	}
	if needed, err := s.Negotiate(ctx, ci, again.ID, api.ObjectsRequest{Objects: names}); err != nil || len(needed) > 1 { // only detached metadata, if any
		t.Fatalf("a second push needs %d objects: %v", len(needed), err)
	}
}

// Refusals come back as kinds, which each transport maps once.
func TestRefusalsAreKinds(t *testing.T) {
	t.Parallel()
	s, ci, narrow := newService(t)
	sess, _, err := s.CreateSession(ctx, ci, api.SessionRequest{Refs: []api.RefUpdate{{Name: "main", New: fx.A}}})
	if err != nil {
		t.Fatal(err)
	}
	for what, c := range map[string]struct {
		err  error
		kind service.Kind
	}{
		"bad ref": {func() error {
			_, _, err := s.CreateSession(ctx, ci, api.SessionRequest{Refs: []api.RefUpdate{{Name: "../x", New: fx.A}}})
			return err
		}(), service.Invalid},
		"ref outside the token's": {func() error {
			_, _, err := s.CreateSession(ctx, narrow, api.SessionRequest{Refs: []api.RefUpdate{{Name: "main", New: fx.A}}})
			return err
		}(), service.Forbidden},
		"another token's session":   {func() error { _, err := s.Session(ctx, narrow, sess.ID); return err }(), service.NotFound},
		"commit before the objects": {func() error { _, err := s.Commit(ctx, ci, sess.ID, false); return err }(), service.Unprocessable},
		"a bad object name": {func() error {
			_, err := s.Negotiate(ctx, ci, sess.ID, api.ObjectsRequest{Objects: []string{"x.filez"}})
			return err
		}(), service.Invalid},
		"a pack that is not a tar": {func() error {
			_, err := s.ReceivePack(ctx, ci, sess.ID, bytes.NewReader([]byte("not a tar archive, not at all, no")))
			return err
		}(), service.Invalid},
		"an upload not negotiated": {func() error {
			_, err := s.CreateUpload(ctx, ci, service.UploadRequest{Session: sess.ID, Object: fx.A + ".commit", Size: 10})
			return err
		}(), service.Conflict},
	} {
		e, ok := service.AsError(c.err)
		if !ok || e.Kind != c.kind {
			t.Errorf("%s: %v, want kind %d", what, c.err, c.kind)
		}
	}
	// A failure of the service itself is not a refusal.
	if _, ok := service.AsError(errors.New("disk on fire")); ok {
		t.Error("a plain error taken for a refusal")
	}
}
