package daemon_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ostree-upload/ostree-upload/api"
)

// update_hook replaces the built-in summary update and gets the repository
// and the refs; a failing hook is reported and leaves the publish in place.
func TestUpdateHook(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "hook.out")
	e := newEnv(t)
	e.Config.UpdateHook = []string{"sh", "-c", `printf '%s\n%s\n%s\n%s\n' "$OSTREE_RECEIVE_REPO" "$OSTREE_RECEIVE_REFS" "$OSTREE_UPLOAD_SESSION" "$OSTREE_UPLOAD_COMMITS" > "$0"`, out}
	e.Start()
	updates := []api.RefUpdate{{Name: "main", New: fx.a}, {Name: "other", New: fx.c}}
	s := e.session(e.Tok, updates, false)
	want(t, e.push(e.Tok, updates, false), 200)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("the hook did not run: %v", err)
	}
	repo, _ := filepath.Abs(e.Repo)
	wantOut := strings.Join([]string{repo, "main other", s.ID, "main=" + fx.a + " other=" + fx.c}, "\n") + "\n"
	if string(b) != wantOut {
		t.Fatalf("hook saw\n%s\nwant\n%s", b, wantOut)
	}
	if _, err := os.Stat(filepath.Join(e.Repo, "summary")); !os.IsNotExist(err) {
		t.Errorf("the built-in summary update ran beside the hook: %v", err)
	}
	if refs := e.Refs(); refs["main"] != fx.a || refs["other"] != fx.c {
		t.Fatalf("refs: %v", refs)
	}

	// A failing hook: the refs move all the same, and the answer says so.
	e.Stop()
	e.Config.UpdateHook = []string{"sh", "-c", "echo cannot reach the CDN >&2; exit 3"}
	e.Start()
	next := []api.RefUpdate{{Name: "main", Old: fx.a, New: fx.b}}
	r := e.push(e.Tok, next, false)
	want(t, r, 200)
	var sess api.Session
	r.json(t, &sess)
	if sess.State != api.StatePublished || !strings.Contains(sess.Result, "update_hook failed") || !strings.Contains(sess.Result, "exit status 3") {
		t.Fatalf("session after a failing hook: %+v", sess)
	}
	if e.Refs()["main"] != fx.b {
		t.Fatal("a failing hook undid the publish")
	}
}

// With update off there is no single publish point, so a session moves one
// ref, and the summary is left alone.
func TestUpdateOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Config.Update = false
	e.Start()
	r := e.doJSON(e.Tok, "POST", api.PathSessions, api.SessionRequest{Refs: []api.RefUpdate{{Name: "main", New: fx.a}, {Name: "other", New: fx.c}}})
	if r.status != 400 || !strings.Contains(string(r.body), "one ref") {
		t.Fatalf("two refs with update off: %d %s", r.status, r.body)
	}
	want(t, e.push(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false), 200)
	if _, err := os.Stat(filepath.Join(e.Repo, "summary")); !os.IsNotExist(err) {
		t.Errorf("summary written with update off: %v", err)
	}
	if e.Refs()["main"] != fx.a {
		t.Fatal("ref not published")
	}
}

// A daemon killed just before running update_hook runs it when it starts
// again.
func TestKill9BeforeHook(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "hook.out")
	e := newEnv(t)
	e.Config.UpdateHook = []string{"sh", "-c", `echo "$OSTREE_RECEIVE_REFS" >> ` + out}
	p := e.StartProcess(fx.bin, "before-hook")
	updates := []api.RefUpdate{{Name: "main", New: fx.a}}
	if st := e.tryPush(e.Tok, updates); st == 200 {
		t.Fatal("push succeeded through the failpoint")
	}
	waitKilled(t, p)
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("the hook ran before the kill: %v", err)
	}
	e.StartProcess(fx.bin, "")
	b, err := os.ReadFile(out)
	if err != nil || string(b) != "main\n" {
		t.Fatalf("after restart the hook wrote %q, %v; want it run once for main", b, err)
	}
	if e.Refs()["main"] != fx.a {
		t.Fatal("ref not published")
	}
}
