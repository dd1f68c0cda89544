package uploader_test

import (
	"crypto/ed25519"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/store/object"
	"github.com/ostree-upload/ostree-upload/store/storetest"
)

// run runs the command with token in OSTREE_UPLOAD_TOKEN and returns its
// exit code and output.
func run(t *testing.T, token string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "OSTREE_UPLOAD_TOKEN="+token)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

// daemonState is what a push leaves on the daemon: its sessions (ended
// ones too) and the files of uploads and spooled objects.
func daemonState(t *testing.T, e *daemontest.Env) (sessions, files int) {
	t.Helper()
	e.Settle()
	ss, err := e.Service().Sessions(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"uploads", "spools"} {
		filepath.WalkDir(filepath.Join(e.State, dir), func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && (dir == "uploads" || strings.Contains(p, "/objects/")) {
				files++
			}
			return nil
		})
	}
	return len(ss), files
}

// dryRun runs push --dry-run with args and checks that it exits with code
// and prints want on stdout, and that it left no session and no uploaded
// byte on the daemon.
func dryRun(t *testing.T, e *daemontest.Env, token string, code int, want string, args ...string) {
	t.Helper()
	s0, f0 := daemonState(t, e)
	got, stdout, stderr := run(t, token, append([]string{"push", "-a", e.URL, "--dry-run"}, args...)...)
	if got != code || !strings.Contains(stdout, want) {
		t.Fatalf("dry run %v: exit %d (want %d), want %q on stdout\nstdout:\n%s\nstderr:\n%s", args, got, code, want, stdout, stderr)
	}
	if s, f := daemonState(t, e); s != s0 || f != f0 {
		t.Fatalf("dry run %v left %d sessions and %d files on the daemon, it had %d and %d", args, s, f, s0, f0)
	}
}

// pushed runs the real push with args and checks its exit code and that
// it prints want (on stdout or stderr).
func pushed(t *testing.T, e *daemontest.Env, token string, code int, want string, args ...string) {
	t.Helper()
	got, stdout, stderr := run(t, token, append([]string{"push", "-a", e.URL}, args...)...)
	if got != code || !strings.Contains(stdout+stderr, want) {
		t.Fatalf("push %v: exit %d (want %d), want %q\nstdout:\n%s\nstderr:\n%s", args, got, code, want, stdout, stderr)
	}
}

// builder commits trees with the ostree CLI: a fresh repository per build
// (as a CI job makes them), or more commits on one.
type builder struct {
	t    *testing.T
	tree string
}

func newBuilder(t *testing.T) *builder {
	tree := filepath.Join(t.TempDir(), "tree")
	os.MkdirAll(tree, 0o755)
	return &builder{t: t, tree: tree}
}

// commit commits a tree holding content on ref app of repo (made if it
// does not exist) at the timestamp ts, and returns the commit.
func (b *builder) commit(repo, content string, ts int64) string {
	if _, err := os.Stat(filepath.Join(repo, "config")); err != nil {
		storetest.MustOstree(b.t, "init", "--mode=archive", "--repo="+repo)
	}
	os.WriteFile(filepath.Join(b.tree, "f"), []byte(content), 0o644)
	return strings.TrimSpace(storetest.MustOstree(b.t, "commit", "--repo="+repo, "--branch=app", "--tree=dir="+b.tree,
		fmt.Sprintf("--timestamp=@%d", ts), "-s", content))
}

// A dry run is judged by the daemon's update rule: a rebuild is up to
// date (exit 0), an older commit is refused naming --force (exit 1), as
// the real push then is; with --force both say it would update, and the
// push does.
func TestDryRunUpdateRule(t *testing.T) {
	t.Parallel()
	e := daemontest.New(t)
	e.Start()
	b := newBuilder(t)
	dir := t.TempDir()
	r1 := filepath.Join(dir, "r1")
	c1 := b.commit(r1, "v1", 1700000000)
	dryRun(t, e, e.Tok.Secret, 0, "app: would update (new) → "+c1[:12], "-r", r1, "-b", "app")
	pushed(t, e, e.Tok.Secret, 0, "app: updated", "-r", r1, "-b", "app")

	rebuild := filepath.Join(dir, "rebuild")
	b.commit(rebuild, "v1", 1700000100)
	dryRun(t, e, e.Tok.Secret, 0, "app: up to date (same content)", "-r", rebuild, "-b", "app")
	pushed(t, e, e.Tok.Secret, 0, "app: up to date (same content)", "-r", rebuild, "-b", "app")

	older := filepath.Join(dir, "older")
	c0 := b.commit(older, "v0", 1600000000)
	dryRun(t, e, e.Tok.Secret, 1, "app: refused: ref app: commit "+c0+" (2020-09-13T12:26:40Z) is not newer", "-r", older, "-b", "app")
	pushed(t, e, e.Tok.Secret, 1, "is not newer than "+c1, "-r", older, "-b", "app")
	if got := e.Refs()["app"]; got != c1 {
		t.Fatalf("app = %s after a refused push, want %s", got, c1)
	}
	dryRun(t, e, e.Tok.Secret, 0, "app: would update "+c1[:12]+" → "+c0[:12], "-r", older, "-b", "app", "--force")
	pushed(t, e, e.Tok.Secret, 0, "app: updated", "-r", older, "-b", "app", "--force")
	e.CheckPublished(map[string]string{"app": c0})
}

// With require_ancestry, a dry run sends the parents between the daemon's
// commit and the new one, so a fast-forward two commits ahead would
// update; an unrelated newer build is refused naming the setting and
// --force, as the push then is.
func TestDryRunRequireAncestry(t *testing.T) {
	t.Parallel()
	e := daemontest.New(t)
	e.Config.RequireAncestry = true
	e.Start()
	b := newBuilder(t)
	repo := filepath.Join(t.TempDir(), "repo")
	c1 := b.commit(repo, "v1", 1700000000)
	pushed(t, e, e.Tok.Secret, 0, "app: updated", "-r", repo, "-b", "app")
	b.commit(repo, "v2", 1700000100)
	c3 := b.commit(repo, "v3", 1700000200)
	dryRun(t, e, e.Tok.Secret, 0, "app: would update "+c1[:12]+" → "+c3[:12], "-r", repo, "-b", "app")
	pushed(t, e, e.Tok.Secret, 0, "app: updated", "-r", repo, "-b", "app")

	fresh := filepath.Join(t.TempDir(), "fresh")
	b.commit(fresh, "v4", 1700000300)
	dryRun(t, e, e.Tok.Secret, 1, "is not a fast-forward of "+c3+", and this repository requires one (require_ancestry); push with --force", "-r", fresh, "-b", "app")
	pushed(t, e, e.Tok.Secret, 1, "require_ancestry", "-r", fresh, "-b", "app")
	e.CheckPublished(map[string]string{"app": c3})
}

// A dry run refuses what the daemon would refuse whoever pushes: a commit
// bound to another ref (even with --force), a ref outside the token's
// globs, a token that may not publish (unless --no-publish); the real push
// is refused the same way.
func TestDryRunBindingsAndScopes(t *testing.T) {
	t.Parallel()
	e := daemontest.New(t)
	uploadOnly := daemontest.NewToken(t)
	e.ExtraTokens = []config.Token{{SHA256: uploadOnly.Hash, Name: "stager", Scopes: []string{"upload"}}}
	e.Start()
	// D is bound to main; pushed as "bound", every client would refuse it.
	build := filepath.Join(t.TempDir(), "build")
	if out, err := exec.Command("cp", "-al", fx.Build, build).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	storetest.MustOstree(t, "refs", "--repo="+build, "--create=bound", fx.D)
	for _, force := range [][]string{nil, {"--force"}} {
		args := append([]string{"-r", build, "-b", "bound"}, force...)
		dryRun(t, e, e.Tok.Secret, 1, "bound: refused: commit "+fx.D+" is bound to refs [main], not bound", args...)
		pushed(t, e, e.Tok.Secret, 1, "is bound to refs [main], not bound", args...)
	}

	dryRun(t, e, e.Narrow.Secret, 1, "main: refused: token narrow may not push ref main (its refs: other*)", "-r", fx.Build, "-b", "main")
	pushed(t, e, e.Narrow.Secret, 1, "may not push ref main", "-r", fx.Build, "-b", "main")

	dryRun(t, e, uploadOnly.Secret, 1, "other: refused: token stager may upload but not publish (its scopes: upload): push with --no-publish", "-r", fx.Build, "-b", "other")
	pushed(t, e, uploadOnly.Secret, 1, "--no-publish", "-r", fx.Build, "-b", "other")
	dryRun(t, e, uploadOnly.Secret, 0, "other: would upload (new) → "+fx.C[:12], "-r", fx.Build, "-b", "other", "--no-publish")
	pushed(t, e, uploadOnly.Secret, 0, "other: uploaded", "-r", fx.Build, "-b", "other", "--no-publish")
	if refs := e.Refs(); len(refs) != 0 {
		t.Fatalf("refs moved: %v", refs)
	}
}

// With sign_verify, a dry run of an unsigned commit is refused as not
// signed, as its push is; once the build repository holds a trusted
// signature (detached metadata, which the dry run sends), it would update,
// and the push does.
func TestDryRunSignaturePolicy(t *testing.T) {
	t.Parallel()
	builderPub, builderKey, _ := ed25519.GenerateKey(nil)
	e := daemontest.New(t)
	e.Trust(builderPub)
	e.Config.SignVerify = true
	e.Start()
	build := filepath.Join(t.TempDir(), "build")
	storetest.MustOstree(t, "init", "--mode=archive", "--repo="+build)
	storetest.MustOstree(t, "pull-local", "--repo="+build, fx.Build, "other")
	dryRun(t, e, e.Tok.Secret, 1, "other: refused: commit "+fx.C+" of ref other:", "-r", build, "-b", "other")
	pushed(t, e, e.Tok.Secret, 1, "the daemon refused to publish: commit "+fx.C, "-r", build, "-b", "other")

	sum, _ := object.ParseChecksum(fx.C)
	commit, err := os.ReadFile(filepath.Join(build, object.Name{Sum: sum, Type: object.Commit}.RelPath()))
	if err != nil {
		t.Fatal(err)
	}
	meta, err := object.SignEd25519(nil, commit, []ed25519.PrivateKey{builderKey})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(build, object.Name{Sum: sum, Type: object.CommitMeta}.RelPath()), meta, 0o644); err != nil {
		t.Fatal(err)
	}
	dryRun(t, e, e.Tok.Secret, 0, "other: would update (new) → "+fx.C[:12], "-r", build, "-b", "other")
	pushed(t, e, e.Tok.Secret, 0, "other: updated", "-r", build, "-b", "other")
	e.CheckPublished(map[string]string{"other": fx.C})
}

// The previous release's daemon cannot judge a publish: a dry run against
// it judges what that daemon can (the session) and says the publish was
// not judged.
func TestDryRunAgainstPreviousDaemon(t *testing.T) {
	prev := previousClient(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "ostree-upload.yaml")
	out, err := exec.Command(prev, "gentoken", "-c", cfg, "--name", "ci").Output()
	if err != nil {
		t.Fatalf("gentoken: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	token := lines[len(lines)-1]
	addr := freeAddr(t)
	d := exec.Command(prev, "receive", "-c", cfg, "-r", filepath.Join(dir, "repo"), "-a", addr)
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Process.Kill(); d.Wait() })
	for i := 0; ; i++ {
		if res, err := http.Get("http://" + addr + "/healthz"); err == nil {
			res.Body.Close()
			break
		}
		if i > 200 {
			t.Fatal("the previous release's daemon did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	code, stdout, stderr := run(t, token, "push", "-a", "http://"+addr, "-r", fx.Build, "-b", "main", "--dry-run")
	if want := "main: would update (new) → " + fx.B[:12] + " (not judged: the daemon is too old to judge a publish)"; code != 0 || !strings.Contains(stdout, want) {
		t.Fatalf("dry run: exit %d, want %q\n%s\n%s", code, want, stdout, stderr)
	}
}
