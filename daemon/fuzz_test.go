package daemon

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"path"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/ostree-upload/ostree-upload/daemon/api"
	"github.com/ostree-upload/ostree-upload/store"
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
		if n, err := store.ParseObjectPath(p); err == nil && n.RelPath() != p {
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

// FuzzPackTar: whatever bytes a pack holds, reading its headers and names
// the way the pack reader does never panics, and every name it would stage
// is an object path inside objects/.
func FuzzPackTar(f *testing.F) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "objects/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: store.ObjectName{Type: store.File}.RelPath(), Typeflag: tar.TypeReg, Size: 3, Mode: 0o644})
	tw.Write([]byte("abc"))
	tw.Close()
	f.Add(buf.Bytes())
	f.Add([]byte("not a tar"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tr := tar.NewReader(bytes.NewReader(b))
		for i := 0; i < 100; i++ {
			hdr, err := tr.Next()
			if err != nil {
				return
			}
			p, ok := packPath(hdr.Name)
			if !ok || hdr.Typeflag == tar.TypeDir {
				continue
			}
			if n, err := store.ParseObjectPath(p); err == nil && !strings.HasPrefix(n.RelPath(), "objects/") {
				t.Fatalf("entry %q would be staged as %q", hdr.Name, n.RelPath())
			}
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
