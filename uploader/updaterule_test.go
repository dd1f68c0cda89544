package uploader_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/store/storetest"
)

// A CI job builds in a fresh repository every time: its commits have no
// parent. A reproducible rebuild is up to date (exit 0, nothing moves); a
// newer build moves the ref without --force; an older one needs it.
func TestFreshBuildRepositories(t *testing.T) {
	t.Parallel()
	e := daemontest.New(t)
	e.Start()
	tree := filepath.Join(t.TempDir(), "tree")
	os.MkdirAll(tree, 0o755)
	build := func(content string, ts int64) (string, string) {
		os.WriteFile(filepath.Join(tree, "f"), []byte(content), 0o644)
		repo := filepath.Join(t.TempDir(), "build")
		storetest.MustOstree(t, "init", "--mode=archive", "--repo="+repo)
		c := strings.TrimSpace(storetest.MustOstree(t, "commit", "--repo="+repo, "--branch=app", "--tree=dir="+tree,
			fmt.Sprintf("--timestamp=@%d", ts), "-s", "ci"))
		return repo, c
	}
	push := func(repo string, args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{"push", "-r", repo, "-a", e.URL, "-b", "app"}, args...)...)
		cmd.Env = append(os.Environ(), "OSTREE_UPLOAD_TOKEN="+e.Tok.Secret)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	r1, c1 := build("v1", 1700000000)
	if out, err := push(r1); err != nil {
		t.Fatalf("first: %v\n%s", err, out)
	}
	r2, _ := build("v1", 1700000100) // the same sources, rebuilt later
	if out, err := push(r2); err != nil || !strings.Contains(out, "app: up to date (same content)") {
		t.Fatalf("rebuild: %v\n%s", err, out)
	}
	e.CheckPublished(map[string]string{"app": c1})
	r3, c3 := build("v2", 1700000200)
	if out, err := push(r3); err != nil || !strings.Contains(out, "app: updated") {
		t.Fatalf("newer build without a parent: %v\n%s", err, out)
	}
	e.CheckPublished(map[string]string{"app": c3})
	r4, c4 := build("v0", 1600000000)
	if out, err := push(r4); err == nil || !strings.Contains(out, "--force") {
		t.Fatalf("older build: %v\n%s", err, out)
	}
	e.CheckPublished(map[string]string{"app": c3})
	if out, err := push(r4, "--force"); err != nil {
		t.Fatalf("older build with --force: %v\n%s", err, out)
	}
	e.CheckPublished(map[string]string{"app": c4})
}

// A CI job that rebuilds an app and its unchanged .Locale from a fresh
// repository pushes both: the app moves, the .Locale is up to date (same
// content) and stays, and the push succeeds.
func TestRebuiltRefAmongUpdatedOnes(t *testing.T) {
	t.Parallel()
	e := daemontest.New(t)
	e.Start()
	build := func(app string, ts int64) (repo, appCommit, localeCommit string) {
		repo = filepath.Join(t.TempDir(), "build")
		storetest.MustOstree(t, "init", "--mode=archive", "--repo="+repo)
		commit := func(ref, content string) string {
			tree := t.TempDir()
			os.WriteFile(filepath.Join(tree, "f"), []byte(content), 0o644)
			return strings.TrimSpace(storetest.MustOstree(t, "commit", "--repo="+repo, "--branch="+ref, "--tree=dir="+tree,
				fmt.Sprintf("--timestamp=@%d", ts), "-s", "ci"))
		}
		return repo, commit("app", app), commit("app.Locale", "fr")
	}
	push := func(repo string) (string, error) {
		cmd := exec.Command(bin, "push", "-r", repo, "-a", e.URL)
		cmd.Env = append(os.Environ(), "OSTREE_UPLOAD_TOKEN="+e.Tok.Secret)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	r1, _, locale1 := build("v1", 1700000000)
	if out, err := push(r1); err != nil {
		t.Fatalf("first: %v\n%s", err, out)
	}
	r2, app2, _ := build("v2", 1700000100)
	out, err := push(r2)
	if err != nil || !strings.Contains(out, "app: updated") || !strings.Contains(out, "app.Locale: up to date (same content)") {
		t.Fatalf("rebuild with a new app: %v\n%s", err, out)
	}
	e.CheckPublished(map[string]string{"app": app2, "app.Locale": locale1})
}
