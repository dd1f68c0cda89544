package daemon_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/store/object"
	"github.com/ostree-upload/ostree-upload/store/storetest"
)

// `ostree-upload prune` removes history beyond the depth, as ostree prune
// --refs-only would, but keeps what an open session counts on finding in
// production; a dry run removes nothing; without a depth it says how to
// give one; only an admin token may prune.
func TestPruneCommand(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ops := daemontest.NewToken(t)
	e.ExtraTokens = []config.Token{{SHA256: ops.Hash, Name: "ops", Scopes: []string{auth.ScopeAdmin}}}
	e.Start()
	want(t, e.pushFrom(fx.build, e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false), 200)
	want(t, e.pushFrom(fx.build, e.Tok, []api.RefUpdate{{Name: "main", New: fx.b, Old: fx.a}}, false), 200)

	// A session for a new ref whose commit has A's tree: production holds
	// all of it but the commit, so the client sends the commit alone.
	build := filepath.Join(t.TempDir(), "build")
	storetest.MustOstree(t, "init", "--mode=archive", "--repo="+build)
	storetest.MustOstree(t, "pull-local", "--repo="+build, fx.build, fx.a)
	keep := strings.TrimSpace(storetest.MustOstree(t, "commit", "--repo="+build, "-b", "keep", "--tree=ref="+fx.a, "--timestamp=@1700000500", "-s", "A's tree again"))
	updates := []api.RefUpdate{{Name: "keep", New: keep}}
	s := e.session(e.Tok, updates, false)
	if need := e.need(e.Tok, s.ID, objectsOf(t, fx.a, "")); len(need) != 0 {
		t.Fatalf("production lacks %d objects of A", len(need))
	}
	e.packFrom(build, e.Tok, s.ID, updates)

	onlyA := daemontest.Objects(t, fx.build, fx.a, fx.b) // A's objects that B lacks
	present := func() int {
		n := 0
		for _, o := range onlyA {
			if _, err := os.Stat(filepath.Join(e.Repo, filepath.FromSlash(o.RelPath()))); err == nil {
				n++
			}
		}
		return n
	}
	if present() != len(onlyA) {
		t.Fatalf("%d of A's %d own objects in production before the prune", present(), len(onlyA))
	}
	prune := func(tok token, args ...string) (string, error) {
		cmd := exec.Command(fx.bin, append([]string{"prune", "-a", e.URL}, args...)...)
		cmd.Env = append(os.Environ(), "OSTREE_UPLOAD_TOKEN="+tok.Secret)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := prune(ops); err == nil || !strings.Contains(out, "--depth") || !strings.Contains(out, "prune_depth") {
		t.Fatalf("prune without a depth: %v\n%s", err, out)
	}
	if out, err := prune(e.Tok, "--depth", "0"); err == nil || !strings.Contains(out, "admin") {
		t.Fatalf("prune with a token without the admin scope: %v\n%s", err, out)
	}
	out, err := prune(ops, "--depth", "0", "--dry-run")
	if err != nil || !strings.Contains(out, "would remove") || present() != len(onlyA) {
		t.Fatalf("dry run: %v, %d of %d left\n%s", err, present(), len(onlyA), out)
	}
	if out, err = prune(ops, "--depth", "0"); err != nil || !strings.Contains(out, "removed") {
		t.Fatalf("prune: %v\n%s", err, out)
	}
	// A's commit went (beyond the depth); its tree stays for the session.
	if _, err := os.Stat(filepath.Join(e.Repo, filepath.FromSlash(object.Name{Sum: mustChecksum(t, fx.a), Type: object.Commit}.RelPath()))); err == nil {
		t.Fatalf("A's commit survived a prune at depth 0\n%s", out)
	}
	if n := present(); n != len(onlyA)-1 || !strings.Contains(out, "kept") {
		t.Fatalf("%d of A's %d own objects left, want all but the commit, kept for the open session\n%s", n, len(onlyA), out)
	}
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil), 200)
	e.CheckPublished(map[string]string{"main": fx.b, "keep": keep})

	// Once nothing needs them, a prune at depth -1 keeps the refs' history
	// whole and removes the rest.
	if out, err = prune(ops, "--depth", "-1", "--json"); err != nil || !strings.Contains(out, `"pruned": 0`) {
		t.Fatalf("prune at depth -1 with nothing unreachable: %v\n%s", err, out)
	}
}

func mustChecksum(t testing.TB, s string) object.Checksum {
	t.Helper()
	c, err := object.ParseChecksum(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
