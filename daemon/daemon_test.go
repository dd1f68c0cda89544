package daemon_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/store/object"
	"github.com/ostree-upload/ostree-upload/store/storetest"
)

var ctx = context.Background()

// fx: a build repo with main: A -> B (B's parent A), other: C, a commit
// D on main whose parent is not A (a non-fast-forward of A), and big: E
// (30 incompressible files of 0.3 to 1.5 MiB).
var fx struct {
	dir, build, bin string
	a, b, c, d, e   string
}

func TestMain(m *testing.M) {
	storetest.Main(m, func(dir string) error {
		fx.dir = dir
		f, err := storetest.BuildFixture(dir, 500)
		if err != nil {
			return err
		}
		fx.build, fx.a, fx.b, fx.c, fx.d, fx.e = f.Build, f.A, f.B, f.C, f.D, f.E
		// The daemon binary, for tests that kill it.
		fx.bin, err = daemontest.BuildBinary(dir)
		return err
	})
}

type token = daemontest.Token

// env is a daemon under test plus the HTTP helpers of these tests.
type env struct {
	*daemontest.Env
	t *testing.T
}

func newEnv(t *testing.T) *env { return &env{Env: daemontest.New(t), t: t} }

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("bad JSON %q: %v", r.body, err)
	}
}

func (e *env) do(tok token, method, path string, body io.Reader, hdr map[string]string) resp {
	e.t.Helper()
	r, err := e.send(tok, method, path, body, hdr)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// send makes one request; a transport error is returned, not fatal.
func (e *env) send(tok token, method, path string, body io.Reader, hdr map[string]string) (resp, error) {
	req, err := http.NewRequest(method, e.URL+path, body)
	if err != nil {
		return resp{}, err
	}
	if tok.Secret != "" {
		req.Header.Set("Authorization", "Bearer "+tok.Secret)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return resp{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return resp{res.StatusCode, res.Header, b}, err
}

// doJSONQuiet is doJSON returning nil on a transport error.
func (e *env) doJSONQuiet(tok token, method, path string, in any) *resp {
	b, _ := json.Marshal(in)
	r, err := e.send(tok, method, path, bytes.NewReader(b), map[string]string{"Content-Type": "application/json"})
	if err != nil {
		return nil
	}
	return &r
}

func (e *env) doJSON(tok token, method, path string, in any) resp {
	e.t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	return e.do(tok, method, path, body, map[string]string{"Content-Type": "application/json"})
}

func want(t testing.TB, r resp, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
}

func (e *env) session(tok token, refs []api.RefUpdate, force bool) api.Session {
	e.t.Helper()
	r := e.doJSON(tok, "POST", api.PathSessions, api.SessionRequest{Refs: refs, Force: force})
	if r.status != 201 && r.status != 200 {
		e.t.Fatalf("create session: %d %s", r.status, r.body)
	}
	var s api.Session
	r.json(e.t, &s)
	return s
}

// objectsOf lists what the build repo holds for commit (against base, if set).
func objectsOf(t testing.TB, commit, base string) []object.Name {
	t.Helper()
	return daemontest.Objects(t, fx.build, commit, base)
}

func objectBytes(t testing.TB, n object.Name) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fx.build, filepath.FromSlash(n.RelPath())))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (e *env) need(tok token, sid string, names []object.Name) []string {
	e.t.Helper()
	var strs []string
	for _, n := range names {
		strs = append(strs, n.String())
	}
	var out []string
	for len(strs) > 0 {
		batch := strs[:min(len(strs), api.MaxNamesPerRequest)]
		strs = strs[len(batch):]
		r := e.doJSON(tok, "POST", api.PathSessions+"/"+sid+"/objects", api.ObjectsRequest{Objects: batch})
		want(e.t, r, 200)
		var or api.ObjectsResponse
		r.json(e.t, &or)
		out = append(out, or.Needed...)
	}
	return out
}

func meta(kv ...string) string {
	var parts []string
	for i := 0; i < len(kv); i += 2 {
		parts = append(parts, kv[i]+" "+base64.StdEncoding.EncodeToString([]byte(kv[i+1])))
	}
	return strings.Join(parts, ",")
}

// upload sends one object in a single creation-with-upload request.
func (e *env) upload(tok token, sid, obj string, data []byte) resp {
	e.t.Helper()
	return e.do(tok, "POST", api.PathUploads+"/", bytes.NewReader(data), map[string]string{
		"Tus-Resumable":   "1.0.0",
		"Upload-Length":   strconv.Itoa(len(data)),
		"Upload-Metadata": meta(api.MetaSession, sid, api.MetaObject, obj),
		"Content-Type":    "application/offset+octet-stream",
	})
}

// push publishes updates with tok: session, negotiation, uploads, commit.
func (e *env) push(tok token, updates []api.RefUpdate, force bool) resp {
	e.t.Helper()
	s := e.session(tok, updates, force)
	var names []object.Name
	for _, u := range updates {
		names = append(names, objectsOf(e.t, u.New, "")...)
	}
	if err := e.uploadAll(tok, s.ID, e.need(tok, s.ID, names)); err != nil {
		e.t.Fatal(err)
	}
	return e.doJSON(tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil)
}

// resumeUpload continues the live upload a 409 names: HEAD for the offset,
// then PATCH the rest.
func (e *env) resumeUpload(tok token, conflict resp, data []byte) (resp, error) {
	var ae api.Error
	if json.Unmarshal(conflict.body, &ae) != nil || ae.Upload == "" {
		return conflict, nil
	}
	tus := map[string]string{"Tus-Resumable": "1.0.0"}
	h, err := e.send(tok, "HEAD", ae.Upload, nil, tus)
	if err != nil || h.status != 200 {
		return h, err
	}
	off, err := strconv.Atoi(h.header.Get("Upload-Offset"))
	if err != nil || off == len(data) {
		return resp{status: 204}, err
	}
	return e.send(tok, "PATCH", ae.Upload, bytes.NewReader(data[off:]), map[string]string{
		"Tus-Resumable": "1.0.0", "Upload-Offset": strconv.Itoa(off), "Content-Type": "application/offset+octet-stream"})
}

// uploadAll uploads objects of the build repo with four parallel workers;
// it stops at the first transport error or unexpected status.
func (e *env) uploadAll(tok token, sid string, names []string) error {
	work := make(chan string)
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range work {
				name, _ := object.ParseName(n)
				data := objectBytes(e.t, name)
				r, err := e.send(tok, "POST", api.PathUploads+"/", bytes.NewReader(data), map[string]string{
					"Tus-Resumable":   "1.0.0",
					"Upload-Length":   strconv.Itoa(len(data)),
					"Upload-Metadata": meta(api.MetaSession, sid, api.MetaObject, n),
					"Content-Type":    "application/offset+octet-stream",
				})
				if err == nil && r.status == 409 {
					r, err = e.resumeUpload(tok, r, data)
				}
				if err == nil && r.status != 201 && r.status != 204 {
					err = fmt.Errorf("upload %s: %d %s", n, r.status, r.body)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var err error
loop:
	for _, n := range names {
		select {
		case work <- n:
		case err = <-errs:
			break loop
		}
	}
	close(work)
	wg.Wait()
	close(errs)
	if err == nil {
		err = <-errs
	}
	return err
}

func objectFiles(t testing.TB, repo string) int {
	n := 0
	filepath.Walk(filepath.Join(repo, "objects"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n++
		}
		return nil
	})
	return n
}
