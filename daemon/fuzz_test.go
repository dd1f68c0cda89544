package daemon

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/journal"
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

// FuzzUploadPath: the only upload paths admitted are /<32 hex>/<32 hex>.
func FuzzUploadPath(f *testing.F) {
	id := strings.Repeat("0f", 16)
	for _, s := range []string{"/" + id + "/" + id, "/" + id + "/../" + id, "/" + id + "%2F" + id, "/" + strings.ToUpper(id) + "/" + id, "/" + id} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m := uploadPath.FindStringSubmatch(s)
		if m == nil {
			return
		}
		if s != "/"+m[1]+"/"+m[2] || len(m[1]) != 32 || len(m[2]) != 32 || strings.Trim(m[1]+m[2], "0123456789abcdef") != "" {
			t.Fatalf("%q admitted as %q/%q", s, m[1], m[2])
		}
	})
}

// FuzzPackTar sends arbitrary packs to a real daemon: every one gets a
// documented answer (never a 5xx), the daemon keeps answering, and nothing
// ever reaches production's objects/.
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
	srv, err := New(context.Background(), Options{
		RepoPath: filepath.Join(dir, "repo"), StateDir: filepath.Join(dir, "state"),
		Keyring: config.NewKeyring([]config.Token{{Token: secret}}), Version: "fuzz",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Close() })
	sum := sha256.Sum256([]byte(secret))
	sess, _, err := srv.journal.CreateOrResume(context.Background(), journal.Session{
		Owner: hex.EncodeToString(sum[:]), Refs: []journal.RefUpdate{{Ref: "main", New: strings.Repeat("ab", 32)}}})
	if err != nil {
		f.Fatal(err)
	}
	if _, err := srv.journal.Need(context.Background(), sess.ID, []string{wanted.String()}, 0); err != nil {
		f.Fatal(err)
	}
	documented := map[int]bool{200: true, 400: true, 413: true, 422: true, 507: true}
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest("POST", api.PacksPath(sess.ID), bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+secret)
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		if !documented[rec.Code] {
			t.Fatalf("pack answered %d: %s", rec.Code, rec.Body)
		}
		objs, _ := filepath.Glob(filepath.Join(dir, "repo", "objects", "*", "*"))
		if len(objs) != 0 {
			t.Fatalf("a pack reached production: %v", objs)
		}
	})
}

// FuzzDecodeJSON: API request bodies decode strictly or not at all, never
// panic, and what decodes survives a round trip.
func FuzzDecodeJSON(f *testing.F) {
	f.Add([]byte(`{"refs":[{"name":"main","new":"` + strings.Repeat("a", 64) + `"}],"force":true}`))
	f.Add([]byte(`{"objects":["` + strings.Repeat("b", 64) + `.filez"]}`))
	f.Add([]byte(`{"refs":[]}{}`))
	f.Add([]byte(`{"refs":null,"x":1}`))
	e := echo.New()
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, v := range []any{&api.SessionRequest{}, &api.ObjectsRequest{}} {
			c := e.NewContext(httptest.NewRequest("POST", "/", bytes.NewReader(body)), httptest.NewRecorder())
			if err := decodeJSON(c, v); err != nil {
				continue
			}
			again, _ := json.Marshal(v)
			c = e.NewContext(httptest.NewRequest("POST", "/", bytes.NewReader(again)), httptest.NewRecorder())
			if err := decodeJSON(c, v); err != nil {
				t.Fatalf("%s decoded, but its re-encoding %s does not: %v", body, again, err)
			}
		}
	})
}
