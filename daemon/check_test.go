package daemon_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/store/object"
)

func commitBytes(t testing.TB, commit string) []byte {
	t.Helper()
	sum, err := object.ParseChecksum(commit)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(fx.build, object.Name{Sum: sum, Type: object.Commit}.RelPath()))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A check judges each ref from the commits it is sent, verified like
// uploaded ones and within its limits; it keeps nothing: no session, no
// object.
func TestCheck(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Start()
	check := func(req api.CheckRequest) resp { return e.doJSON(e.Tok, "POST", api.PathCheck, req) }
	a := commitBytes(t, fx.a)
	main := []api.RefUpdate{{Name: "main", New: fx.a}}

	var res api.CheckResult
	r := check(api.CheckRequest{Refs: main, Publish: true, Commits: []api.CommitData{{Commit: a}}})
	want(t, r, 200)
	r.json(t, &res)
	if len(res.Refs) != 1 || res.Refs[0].Name != "main" || res.Refs[0].Refusal != nil {
		t.Fatalf("check of a new ref: %s", r.body)
	}
	// Without the commit the daemon cannot judge the publish: it says
	// what it lacks, as a commit would.
	r = check(api.CheckRequest{Refs: main, Publish: true})
	want(t, r, 200)
	r.json(t, &res)
	if e := res.Refs[0].Refusal; e == nil || len(e.Missing) != 1 || e.Missing[0] != fx.a+".commit" {
		t.Fatalf("check without the commit: %s", r.body)
	}

	for name, c := range map[string]struct {
		req    api.CheckRequest
		status int
		msg    string
	}{
		"a commit that is not one":    {api.CheckRequest{Refs: main, Commits: []api.CommitData{{Commit: []byte("not a commit")}}}, 400, "commits[0]"},
		"a bit flipped":               {api.CheckRequest{Refs: main, Commits: []api.CommitData{{Commit: a}, {Commit: append(bytes.Clone(a[:len(a)-1]), a[len(a)-1]^1)}}}, 400, "commits[1]"},
		"malformed detached metadata": {api.CheckRequest{Refs: main, Commits: []api.CommitData{{Commit: a, CommitMeta: commitMeta(t, "ostree.sign.ed25519", "aay", []any{[]byte("short")})}}}, 400, "commits[0]"},
		"too many bytes":              {api.CheckRequest{Refs: main, Commits: []api.CommitData{{Commit: a}, {Commit: make([]byte, api.MaxCheckBytes)}}}, 413, "more than 2097152"},
		"too many commits":            {api.CheckRequest{Refs: main, Commits: make([]api.CommitData, api.MaxCheckCommits+1)}, 413, "at most 10000"},
		"no refs":                     {api.CheckRequest{}, 400, "1 to 1000 refs"},
	} {
		r := check(c.req)
		var ae api.Error
		r.json(t, &ae)
		if r.status != c.status || !strings.Contains(ae.Error, c.msg) {
			t.Errorf("%s: %d %s, want %d with %q", name, r.status, r.body, c.status, c.msg)
		}
	}
	sessions, err := e.Service().Sessions(ctx, true)
	if err != nil || len(sessions) != 0 {
		t.Fatalf("checks left sessions: %v %v", sessions, err)
	}
	if refs := e.Refs(); len(refs) != 0 {
		t.Fatalf("checks moved refs: %v", refs)
	}
}
