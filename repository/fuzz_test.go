package repository

import (
	"archive/tar"
	"bytes"
	"context"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/service"
	"github.com/ostree-upload/ostree-upload/store/object"
)

// FuzzPackPath: a pack entry name is accepted only as a clean relative
// path, so nothing it names can leave the pack's tree.
func FuzzPackPath(f *testing.F) {
	for _, s := range []string{"objects/ab/cd.filez", "./objects/", "/etc/passwd", "../x", "objects/../../x",
		"a//b", "./", ".", "objects/ab/", "..", "a/./b", "a/.."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		p, ok := packPath(name)
		if !ok {
			return
		}
		if p == "." {
			return
		}
		if strings.HasPrefix(p, "/") || p == ".." || strings.HasPrefix(p, "../") || path.Clean(p) != p {
			t.Fatalf("%q accepted as %q", name, p)
		}
		if n, err := object.ParsePath(p); err == nil && n.RelPath() != p {
			t.Fatalf("%q names %s at %q", name, n, n.RelPath())
		}
	})
}

// FuzzPackTar gives the service arbitrary packs: every one is kept or
// refused with a documented kind (never a failure of the service), and
// nothing ever reaches production's objects/.
func FuzzPackTar(f *testing.F) {
	wanted := object.Name{Type: object.File}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "objects/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: wanted.RelPath(), Typeflag: tar.TypeReg, Size: 3, Mode: 0o644})
	tw.Write([]byte("abc"))
	tw.Close()
	f.Add(buf.Bytes())
	f.Add([]byte("not a tar"))

	dir := f.TempDir()
	secret := "ou_fuzz"
	cfg := config.Default()
	cfg.Repo, cfg.StateDir = filepath.Join(dir, "repo"), filepath.Join(dir, "state")
	cfg.Tokens = []config.Token{{Token: secret}}
	svc, err := Open(context.Background(), cfg, Env{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { svc.Close() })
	id, _ := cfg.Keyring().Authenticate(secret, time.Now())
	ctx := context.Background()
	sess, _, err := svc.CreateSession(ctx, id, api.SessionRequest{Refs: []api.RefUpdate{{Name: "main", New: strings.Repeat("ab", 32)}}})
	if err != nil {
		f.Fatal(err)
	}
	if _, err := svc.Negotiate(ctx, id, sess.ID, api.ObjectsRequest{Objects: []string{wanted.String()}}); err != nil {
		f.Fatal(err)
	}
	documented := map[service.Kind]bool{service.Invalid: true, service.TooLarge: true, service.Unprocessable: true, service.NoSpace: true}
	f.Fuzz(func(t *testing.T, body []byte) {
		_, err := svc.ReceivePack(ctx, id, sess.ID, bytes.NewReader(body))
		if e, ok := service.AsError(err); err != nil && (!ok || !documented[e.Kind]) {
			t.Fatalf("pack refused with %v", err)
		}
		objs, _ := filepath.Glob(filepath.Join(dir, "repo", "objects", "*", "*"))
		if len(objs) != 0 {
			t.Fatalf("a pack reached production: %v", objs)
		}
	})
}
