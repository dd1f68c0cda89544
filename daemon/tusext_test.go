package daemon_test

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/store/object"
)

// tus discovery (OPTIONS) advertises exactly the extensions a POST
// accepts: creation, creation with upload and termination work; a deferred
// length and concatenation, which the daemon refuses, are not advertised,
// and are still refused with an error that says so. Real curl throughout.
func TestTusDiscoveryListsWhatPostAccepts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Start()
	s := e.session(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false)
	needed := e.need(e.Tok, s.ID, objectsOf(t, fx.a, ""))
	if len(needed) < 2 {
		t.Fatalf("needed: %v", needed)
	}
	md := func(obj string) string { return "Upload-Metadata: " + meta(api.MetaSession, s.ID, api.MetaObject, obj) }
	uploads := e.URL + api.PathUploads + "/"
	// curl runs curl with the token and Tus-Resumable and returns the
	// status, the headers and the body of the answer.
	curl := func(args ...string) (int, http.Header, string) {
		t.Helper()
		out, err := exec.Command("curl", append([]string{"-sS", "-i", "-H", "Tus-Resumable: 1.0.0", "-H", "Authorization: Bearer " + e.Tok.Secret}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %v: %v\n%s", args, err, out)
		}
		head, body, _ := strings.Cut(strings.ReplaceAll(string(out), "\r\n", "\n"), "\n\n")
		lines := strings.Split(head, "\n")
		var status int
		if _, err := fmt.Sscanf(lines[0], "HTTP/1.1 %d", &status); err != nil {
			t.Fatalf("curl %v: status line %q", args, lines[0])
		}
		h := http.Header{}
		for _, l := range lines[1:] {
			if k, v, ok := strings.Cut(l, ":"); ok {
				h.Add(k, strings.TrimSpace(v))
			}
		}
		return status, h, body
	}

	st, h, _ := curl("-X", "OPTIONS", uploads)
	if st != 200 {
		t.Fatalf("OPTIONS: %d", st)
	}
	ext := strings.Split(h.Get("Tus-Extension"), ",")
	slices.Sort(ext)
	if want := []string{"creation", "creation-with-upload", "termination"}; !slices.Equal(ext, want) {
		t.Errorf("OPTIONS advertises %v, want %v", ext, want)
	}

	// What is advertised works: creation, termination, creation with upload.
	name, err := object.ParseName(needed[0])
	if err != nil {
		t.Fatal(err)
	}
	data := objectBytes(t, name)
	st, h, body := curl("-X", "POST", "-H", "Upload-Length: "+strconv.Itoa(len(data)), "-H", md(needed[0]), uploads)
	if st != 201 || h.Get("Location") == "" {
		t.Fatalf("creation: %d %s", st, body)
	}
	if st, _, body := curl("-X", "DELETE", h.Get("Location")); st != 204 {
		t.Fatalf("termination: %d %s", st, body)
	}
	file := filepath.Join(t.TempDir(), "object")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if st, _, body := curl("-X", "POST", "-H", "Upload-Length: "+strconv.Itoa(len(data)), "-H", md(needed[0]),
		"-H", "Content-Type: application/offset+octet-stream", "--data-binary", "@"+file, uploads); st != 201 {
		t.Fatalf("creation with upload: %d %s", st, body)
	}

	// What is not advertised is refused, saying what is not supported.
	refused := map[string][]string{
		"Upload-Defer-Length": {"-H", "Upload-Defer-Length: 1", "-H", md(needed[1])},
		"Upload-Concat":       {"-H", "Upload-Concat: partial", "-H", "Upload-Length: 10", "-H", md(needed[1])},
		"Upload-Concat final": {"-H", "Upload-Concat: final;" + api.PathUploads + "/" + s.ID + "/a " + api.PathUploads + "/" + s.ID + "/b", "-H", md(needed[1])},
	}
	for name, args := range refused {
		header, _, _ := strings.Cut(name, " ")
		st, _, body := curl(append(append([]string{"-X", "POST"}, args...), uploads)...)
		if st != 400 || !strings.Contains(body, header) || !strings.Contains(body, "not supported") {
			t.Errorf("POST with %s: %d %q, want 400 saying %s is not supported", name, st, body, header)
		}
	}
	var sv api.Session
	e.do(e.Tok, "GET", api.PathSessions+"/"+s.ID, nil, nil).json(t, &sv)
	if len(sv.Uploads) != 0 {
		t.Errorf("a refused creation left an upload: %+v", sv.Uploads)
	}
}

// An upload's Upload-Metadata must name its session: a missing session and
// one that is not a session ID (a path, say) get 400 saying which, and
// nothing is created.
func TestUploadMetadataSessionIsNamed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Start()
	obj := objectsOf(t, fx.a, "")[0].String()
	for _, c := range []struct{ meta, says string }{
		{meta(api.MetaObject, obj), "needs session"},
		{meta(api.MetaSession, "../../etc/passwd", api.MetaObject, obj), "is not a session ID"},
		{meta(api.MetaSession, strings.Repeat("A", 32), api.MetaObject, obj), "is not a session ID"},
	} {
		r := e.do(e.Tok, "POST", api.PathUploads+"/", nil, map[string]string{
			"Tus-Resumable": "1.0.0", "Upload-Length": "10", "Upload-Metadata": c.meta})
		if r.status != 400 || !strings.Contains(string(r.body), c.says) {
			t.Errorf("metadata %q: %d %s; want 400 saying %q", c.meta, r.status, r.body, c.says)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(e.State, "uploads")); len(entries) != 0 {
		t.Errorf("refused uploads left %d files", len(entries))
	}
}
