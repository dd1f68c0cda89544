package daemon_test

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/store/storetest"
)

// flatpakEnv runs flatpak with a user installation of its own.
func flatpakEnv(t *testing.T) []string {
	home := t.TempDir()
	return append(os.Environ(), "HOME="+home, "FLATPAK_USER_DIR="+filepath.Join(home, "flatpak"))
}

func flatpak(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command("flatpak", args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("flatpak %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// flatpakBuild exports an app org.example.App (its binary printing version)
// into a fresh archive build repository under dir, as flatpak-builder does
// without updating the summary; it returns the repository and the app's ref.
func flatpakBuild(t *testing.T, env []string, dir, version string) (build, ref string) {
	t.Helper()
	app := filepath.Join(dir, "appdir")
	os.MkdirAll(filepath.Join(app, "files", "bin"), 0o755)
	os.WriteFile(filepath.Join(app, "metadata"), []byte("[Application]\nname=org.example.App\nruntime=org.example.Platform/x86_64/stable\nsdk=org.example.Sdk/x86_64/stable\n"), 0o644)
	os.WriteFile(filepath.Join(app, "files", "bin", "hello"), []byte("#!/bin/sh\necho hello "+version+"\n"), 0o755)
	flatpak(t, env, "build-finish", app, "--command=hello")
	build = filepath.Join(dir, "build")
	storetest.MustOstree(t, "init", "--mode=archive", "--repo="+build)
	flatpak(t, env, "build-export", "--no-update-summary", build, app, "stable")
	refs := strings.Fields(storetest.MustOstree(t, "refs", "--repo="+build))
	if len(refs) != 1 || !strings.HasPrefix(refs[0], "app/org.example.App/") {
		t.Fatalf("build repo refs: %v", refs)
	}
	return build, refs[0]
}

// waitAppstream waits until the daemon at url has updated the appstream
// branches (and the summary after them) once, which a publish leaves to a
// worker after its answer, and checks that repo has the branches.
func waitAppstream(t *testing.T, url, repo string) {
	t.Helper()
	for i := 0; ; i++ {
		if res, err := http.Get(url + "/metrics"); err == nil {
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			for _, l := range strings.Split(string(b), "\n") {
				if f := strings.Fields(l); len(f) == 2 && strings.HasPrefix(f[0], "ostree_upload_appstream_update_seconds_count") && f[1] != "0" {
					out := storetest.MustOstree(t, "refs", "--repo="+repo)
					if !strings.Contains(out, "appstream/x86_64") || !strings.Contains(out, "appstream2/x86_64") {
						t.Fatalf("appstream updated, yet its branches are missing:\n%s", out)
					}
					return
				}
			}
		}
		if i == 300 {
			t.Fatal("the appstream branches were not updated within 30 s of the publish")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A push of an app/ ref updates the repository as flatpak does (summary.idx,
// then the appstream branches), signed, and `flatpak remote-ls` lists the app.
func TestFlatpakRepoUpdate(t *testing.T) {
	t.Parallel()
	env := flatpakEnv(t)
	build, ref := flatpakBuild(t, env, t.TempDir(), "1")
	refs := []string{ref}

	key := storetest.NewGPGKey(t)
	e := newEnv(t)
	e.Config.GPGSign, e.Config.GPGHomedir = []string{key.ID}, key.Home
	e.Start()
	push := exec.Command(fx.bin, "push", "-q", "-r", build, "-a", e.URL, "-b", refs[0])
	push.Env = append(env, "OSTREE_UPLOAD_TOKEN="+e.Tok.Secret)
	if out, err := push.CombinedOutput(); err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	for _, f := range []string{"summary", "summary.sig", "summary.idx"} {
		if _, err := os.Stat(filepath.Join(e.Repo, f)); err != nil {
			t.Errorf("%s after publishing a Flatpak ref: %v", f, err)
		}
	}
	// The answer came once the summary listed the app.
	if out := flatpak(t, env, "remote-ls", "--app", "file://"+e.Repo); !strings.Contains(out, "org.example.App") {
		t.Fatalf("flatpak remote-ls does not list the app:\n%s", out)
	}
	waitAppstream(t, e.URL, e.Repo)
	// The worker's run left a summary, signed, that lists its branches.
	if out := storetest.MustOstree(t, "summary", "--view", "--repo="+e.Repo); !strings.Contains(out, "appstream2/x86_64") || !strings.Contains(out, ref) {
		t.Errorf("the summary after the appstream update lacks a ref:\n%s", out)
	}
	storetest.PullOverHTTPWith(t, e.Repo, refs[0], "--set=gpg-verify=true", "--set=gpg-verify-summary=true", "--gpg-import="+key.PublicArmor)
}

// flatpak-builder and flatpak build-update-repo leave appstream refs in a
// build repository. A push of the whole repository (no -b), from a fresh
// build repository each time as CI does, publishes the app and leaves those
// refs to the production side, saying so; flatpak then lists the app.
func TestFlatpakBuildRepoPushedWhole(t *testing.T) {
	t.Parallel()
	env := flatpakEnv(t)
	e := newEnv(t)
	e.Start()
	var app string
	for i, version := range []string{"1", "2"} {
		if i == 1 {
			time.Sleep(1100 * time.Millisecond) // a later build, by commit timestamp
		}
		dir := t.TempDir()
		appdir := filepath.Join(dir, "appdir")
		os.MkdirAll(filepath.Join(appdir, "files", "bin"), 0o755)
		os.WriteFile(filepath.Join(appdir, "metadata"), []byte("[Application]\nname=org.example.App\nruntime=org.example.Platform/x86_64/stable\nsdk=org.example.Sdk/x86_64/stable\n"), 0o644)
		os.WriteFile(filepath.Join(appdir, "files", "bin", "hello"), []byte("#!/bin/sh\necho hello "+version+"\n"), 0o755)
		flatpak(t, env, "build-finish", appdir, "--command=hello")
		build := filepath.Join(dir, "build")
		storetest.MustOstree(t, "init", "--mode=archive", "--repo="+build)
		flatpak(t, env, "build-export", build, appdir, "stable")
		flatpak(t, env, "build-update-repo", build)
		refs := storetest.MustOstree(t, "refs", "--repo="+build)
		if !strings.Contains(refs, "appstream") {
			t.Fatalf("build repo without appstream refs:\n%s", refs)
		}
		for _, r := range strings.Fields(refs) {
			if strings.HasPrefix(r, "app/") {
				app = r
			}
		}
		push := exec.Command(fx.bin, "push", "-r", build, "-a", e.URL)
		push.Env = append(env, "OSTREE_UPLOAD_TOKEN="+e.Tok.Secret)
		out, err := push.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "the production side generates itself (appstream") || !strings.Contains(string(out), app+": updated") {
			t.Fatalf("push %d of the whole build repository: %v\n%s", i+1, err, out)
		}
		want := strings.TrimSpace(storetest.MustOstree(t, "rev-parse", "--repo="+build, app))
		if got := e.Refs()[app]; got != want {
			t.Fatalf("push %d: %s is %s, want %s", i+1, app, got, want)
		}
	}
	if out := flatpak(t, env, "remote-ls", "--app", "file://"+e.Repo); !strings.Contains(out, "org.example.App") {
		t.Fatalf("flatpak remote-ls does not list the app:\n%s", out)
	}
	storetest.MustOstree(t, "fsck", "--repo="+e.Repo)
	storetest.PullOverHTTP(t, e.Repo, app)
}

// A publish is answered before the appstream branches are regenerated; a
// daemon killed before that work finishes it at its next start.
func TestAppstreamAfterCrash(t *testing.T) {
	t.Parallel()
	env := flatpakEnv(t)
	build, ref := flatpakBuild(t, env, t.TempDir(), "1")
	e := newEnv(t)
	p := e.StartProcess(fx.bin, "before-appstream")
	push := exec.Command(fx.bin, "push", "-q", "--retry-timeout", "60s", "-r", build, "-a", e.URL, "-b", ref)
	push.Env = append(env, "OSTREE_UPLOAD_TOKEN="+e.Tok.Secret)
	var out strings.Builder
	push.Stdout, push.Stderr = &out, &out
	if err := push.Start(); err != nil {
		t.Fatal(err)
	}
	waitKilled(t, p)
	if refs := e.Refs(); refs[ref] == "" || refs["appstream/x86_64"] != "" {
		t.Fatalf("killed before the appstream update: refs %v", refs)
	}
	if sum := storetest.MustOstree(t, "summary", "--view", "--repo="+e.Repo); !strings.Contains(sum, ref) {
		t.Fatalf("the summary written before the answer lacks %s:\n%s", ref, sum)
	}
	e.StartProcess(fx.bin, "")
	if err := push.Wait(); err != nil { // answered, or its retry answered after the restart
		t.Fatalf("push: %v\n%s", err, out.String())
	}
	waitAppstream(t, e.URL, e.Repo)
	storetest.MustOstree(t, "fsck", "--repo="+e.Repo)
	if out := flatpak(t, env, "remote-ls", "file://"+e.Repo); !strings.Contains(out, "org.example.App") {
		t.Fatalf("flatpak remote-ls does not list the app:\n%s", out)
	}
}
