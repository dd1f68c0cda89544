package daemon_test

import (
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/store/storetest"
)

// productionListing is what clients can see of the production repository:
// every file but those of tmp/, with its size and time of change.
func productionListing(t testing.TB, repo string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(repo, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(repo, p)
		if d.IsDir() {
			if rel == "tmp" {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out[rel] = fmt.Sprintf("%d %s", fi.Size(), fi.ModTime().Format(time.RFC3339Nano))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// metric is the value of one series of the in-process daemon's /metrics.
func (e *env) metric(series string) float64 {
	e.t.Helper()
	res, err := http.Get(e.URL + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	text, _ := io.ReadAll(res.Body)
	v, ok := sample(text, series)
	if !ok {
		e.t.Fatalf("no series %s in /metrics:\n%s", series, grepLines(text, "check_hook"))
	}
	return v
}

// pushBinary runs the real client against the daemon; it returns the
// client's output and exit code.
func (e *env) pushBinary(ref string) (string, int) {
	e.t.Helper()
	cmd := exec.Command(fx.bin, "push", "-a", e.URL, "-r", fx.build, "-b", ref, "--retry-timeout", "20s")
	cmd.Env = append(os.Environ(), "OSTREE_UPLOAD_TOKEN="+e.Tok.Secret)
	out, err := cmd.CombinedOutput()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		e.t.Fatal(err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

// A check_hook that fails refuses the publish: production stays as it was
// (refs, summary, objects), push prints the end of the hook's output and
// exits 1, and the session stays open; once the operator fixes the check,
// the same push publishes.
func TestCheckHookRefuses(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Start()
	want(t, e.push(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false), 200)
	e.Stop()
	// 32 lines of output: the client gets the last 20.
	e.Config.CheckHook = []string{"sh", "-c", `echo "checking $OSTREE_RECEIVE_REFS"; i=0; while [ $i -lt 30 ]; do echo "line $i"; i=$((i+1)); done; echo "ERROR: no license in $OSTREE_UPLOAD_COMMITS" >&2; exit 3`}
	e.Start()
	before := productionListing(t, e.Repo)
	summary, err := os.ReadFile(filepath.Join(e.Repo, "summary"))
	if err != nil {
		t.Fatal(err)
	}

	out, code := e.pushBinary("main")
	if code != 1 {
		t.Fatalf("push exited with %d, want 1:\n%s", code, out)
	}
	wantLines := []string{"the daemon's check refused the publish: check_hook exited with status 3: nothing was published; the session stays open: push a fixed build, or commit again once the check passes\n"}
	for i := 11; i < 30; i++ {
		wantLines = append(wantLines, fmt.Sprintf("\n  | line %d\n", i))
	}
	wantLines = append(wantLines, "\n  | ERROR: no license in main="+fx.b+"\n")
	for _, l := range wantLines {
		if !strings.Contains(out, l) {
			t.Errorf("push's output lacks %q:\n%s", l, out)
		}
	}
	for _, l := range []string{"checking main", "line 10\n", "retrying"} {
		if strings.Contains(out, l) {
			t.Errorf("push's output has %q:\n%s", l, out)
		}
	}
	if after := productionListing(t, e.Repo); !reflect.DeepEqual(after, before) {
		t.Errorf("a refused check changed production:\nbefore %v\nafter  %v", before, after)
	}
	if now, _ := os.ReadFile(filepath.Join(e.Repo, "summary")); string(now) != string(summary) {
		t.Error("a refused check changed the summary")
	}
	if refs := e.Refs(); refs["main"] != fx.a {
		t.Errorf("refs after a refused check: %v", refs)
	}
	if left, _ := os.ReadDir(filepath.Join(e.State, "checks")); len(left) != 0 {
		t.Errorf("check repositories left: %v", left)
	}
	// The same ref updates resume the session: it is still open, its
	// objects verified.
	r := e.doJSON(e.Tok, "POST", api.PathSessions, api.SessionRequest{Refs: []api.RefUpdate{{Name: "main", Old: fx.a, New: fx.b}}})
	want(t, r, 200)
	var sess api.Session
	r.json(t, &sess)
	if sess.State != api.StateOpen || sess.Verified == 0 {
		t.Fatalf("the session after a refused check: %+v", sess)
	}
	if n := e.metric(`ostree_upload_check_hook_runs_total{outcome="failed"}`); n != 1 {
		t.Errorf("failed checks: %v", n)
	}

	// The operator fixes the check; the same push publishes, resuming
	// the session.
	e.Stop()
	e.Config.CheckHook = []string{"true"}
	e.Start()
	if out, code := e.pushBinary("main"); code != 0 || !strings.Contains(out, "sent 0 objects") {
		t.Fatalf("push after the check was fixed, resuming the session: exit %d\n%s", code, out)
	}
	e.CheckPublished(map[string]string{"main": fx.b})
	r = e.doJSON(e.Tok, "GET", api.PathSessions+"/"+sess.ID, nil)
	want(t, r, 200)
	r.json(t, &sess)
	if sess.State != api.StatePublished {
		t.Errorf("the refused session, after the rerun: %s", sess.State)
	}
	if n := e.metric(`ostree_upload_check_hook_runs_total{outcome="passed"}`); n != 1 {
		t.Errorf("passed checks: %v", n)
	}
}

// A check_hook that passes lets the publish through; inside it, the check
// repository holds the new commits complete (fsck passes, they check out
// as the build's, a file only the new commit has reads as in the build)
// while production has not changed yet, and the environment says what is
// published, by whom and from where.
func TestCheckHookSeesTheNewCommits(t *testing.T) {
	t.Parallel()
	seen := t.TempDir()
	// A file whose content only the new commit B has (storetest.MutateTree
	// edits it).
	const changed = "/d04/e4/f00004"
	wantChanged := storetest.MustOstree(t, "cat", "--repo="+fx.build, fx.b, changed)
	if old := storetest.MustOstree(t, "cat", "--repo="+fx.build, fx.a, changed); old == wantChanged {
		t.Fatalf("%s is the same in A and B", changed)
	}
	e := newEnv(t)
	e.Start()
	want(t, e.push(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false), 200)
	e.Stop()
	e.Config.CheckHook = []string{"sh", "-ec", `
env | grep '^OSTREE_' | sort > "$0/env"
ostree fsck --repo="$OSTREE_UPLOAD_CHECK_REPO" > "$0/fsck"
ostree refs --repo="$OSTREE_RECEIVE_REPO" > "$0/production-refs"
for pair in $OSTREE_UPLOAD_COMMITS; do
	ostree checkout -U --repo="$OSTREE_UPLOAD_CHECK_REPO" "${pair#*=}" "$0/checkout-${pair%%=*}"
done
ostree cat --repo="$OSTREE_UPLOAD_CHECK_REPO" main "$1" > "$0/changed"
`, seen, changed}
	e.Start()
	updates := []api.RefUpdate{{Name: "main", Old: fx.a, New: fx.b}, {Name: "other", New: fx.c}}
	s := e.session(e.Tok, updates, false)
	want(t, e.push(e.Tok, updates, false), 200)
	e.CheckPublished(map[string]string{"main": fx.b, "other": fx.c})

	repo, _ := filepath.Abs(e.Repo)
	checkRepo, _ := filepath.Abs(filepath.Join(e.State, "checks", s.ID))
	wantEnv := strings.Join([]string{
		"OSTREE_RECEIVE_REFS=main other",
		"OSTREE_RECEIVE_REPO=" + repo,
		"OSTREE_UPLOAD_CHECK_REPO=" + checkRepo,
		"OSTREE_UPLOAD_COMMITS=main=" + fx.b + " other=" + fx.c,
		"OSTREE_UPLOAD_OLD_COMMITS=main=" + fx.a + " other=",
		"OSTREE_UPLOAD_SESSION=" + s.ID,
		"OSTREE_UPLOAD_TOKEN_NAME=ci",
	}, "\n") + "\n"
	if got := mustRead(t, filepath.Join(seen, "env")); got != wantEnv {
		t.Errorf("the hook's environment:\n%s\nwant\n%s", got, wantEnv)
	}
	if strings.Contains(mustRead(t, filepath.Join(seen, "env")), e.Tok.Secret) {
		t.Error("the token's secret reached the hook")
	}
	if got := mustRead(t, filepath.Join(seen, "production-refs")); got != "main\n" {
		t.Errorf("production's refs while the check ran: %q, want main alone (at A)", got)
	}
	if got := mustRead(t, filepath.Join(seen, "changed")); strings.TrimSpace(got) != wantChanged {
		t.Errorf("%s read from the check repo differs from the build's", changed)
	}
	for ref, c := range map[string]string{"main": fx.b, "other": fx.c} {
		build := filepath.Join(t.TempDir(), ref)
		storetest.MustOstree(t, "checkout", "-U", "--repo="+fx.build, c, build)
		if out, err := exec.Command("diff", "-r", "--no-dereference", filepath.Join(seen, "checkout-"+ref), build).CombinedOutput(); err != nil {
			t.Errorf("%s checked out of the check repo differs from the build's: %v\n%s", ref, err, out)
		}
	}
	if _, err := os.Stat(checkRepo); !os.IsNotExist(err) {
		t.Errorf("the check repo is still there: %v", err)
	}
	if n := e.metric(`ostree_upload_check_hook_seconds_count`); n != 1 {
		t.Errorf("check_hook_seconds_count = %v", n)
	}
}

// pidAlive reports whether a process runs with that PID (a zombie does
// not count: it waits for its parent to reap it).
func pidAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

// waitFile waits until path holds at least n lines, and returns them.
func waitFile(t testing.TB, path string, n int) []string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		b, _ := os.ReadFile(path)
		if lines := strings.Fields(string(b)); len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has fewer than %d lines after 30s: %q", path, n, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A daemon killed while check_hook runs has moved nothing: no ref, no
// commit in production. The hook dies with it, and the check repository
// it left is removed at the next start; a rerun of the push runs the
// check again and publishes.
func TestKill9DuringCheckHook(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	runs, block := filepath.Join(dir, "runs"), filepath.Join(dir, "block")
	if err := os.WriteFile(block, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	// Each run records its PID, then waits while the block file exists.
	e.Config.CheckHook = []string{"sh", "-c", `echo $$ >> "$0"; while [ -e "$1" ]; do sleep 0.05; done`, runs, block}
	p := e.StartProcess(fx.bin, "")
	updates := []api.RefUpdate{{Name: "main", New: fx.a}, {Name: "other", New: fx.c}}
	status := make(chan int, 1)
	go func() { status <- e.tryPush(e.Tok, updates) }()
	hook := waitFile(t, runs, 1)[0]
	checks, _ := filepath.Glob(filepath.Join(e.State, "checks", "*"))
	if len(checks) != 1 {
		t.Fatalf("check repositories while the hook runs: %v", checks)
	}
	p.Kill()
	if st := <-status; st == 200 {
		t.Fatal("the push was published while its check never ended")
	}
	if refs := e.Refs(); len(refs) != 0 {
		t.Fatalf("refs moved before the check passed: %v", refs)
	}
	if commits, _ := filepath.Glob(filepath.Join(e.Repo, "objects", "*", "*.commit")); len(commits) != 0 {
		t.Fatalf("commits in production before the check passed: %v", commits)
	}
	var pid int
	fmt.Sscan(hook, &pid)
	for deadline := time.Now().Add(5 * time.Second); pidAlive(pid); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the hook (PID %d) outlived the daemon", pid)
		}
	}
	if _, err := os.Stat(checks[0]); err != nil {
		t.Fatalf("the check repository the kill left: %v", err)
	}

	os.Remove(block)
	e.StartProcess(fx.bin, "")
	if _, err := os.Stat(checks[0]); !os.IsNotExist(err) {
		t.Errorf("the check repository a kill left is still there after the start: %v", err)
	}
	if st := e.tryPush(e.Tok, updates); st != 200 {
		log, _ := os.ReadFile(filepath.Join(filepath.Dir(e.Repo), "daemon.log"))
		t.Fatalf("push after the restart: %d\n%s", st, log)
	}
	if n := len(waitFile(t, runs, 2)); n != 2 {
		t.Errorf("the hook ran %d times, want 2", n)
	}
	e.CheckPublished(map[string]string{"main": fx.a, "other": fx.c})
}

// A check_hook that outlives check_timeout is killed, with what it started,
// and the publish is refused as a timeout, well before the hook would
// have ended.
func TestCheckHookTimeout(t *testing.T) {
	t.Parallel()
	pids := filepath.Join(t.TempDir(), "pids")
	e := newEnv(t)
	e.Config.CheckHook = []string{"sh", "-c", `sleep 30 & echo $$ $! > "$0"; echo "waiting for the signing service"; wait`, pids}
	e.Config.CheckTimeout = config.Duration{Duration: time.Second}
	e.Start()
	updates := []api.RefUpdate{{Name: "main", New: fx.a}}
	s := e.session(e.Tok, updates, false)
	e.packFrom(fx.build, e.Tok, s.ID, updates)
	start := time.Now()
	r := e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil)
	took := time.Since(start)
	want(t, r, 422)
	var ae api.Error
	r.json(t, &ae)
	if ae.Code != api.CodeCheckFailed || !strings.HasPrefix(ae.Error, "check_hook did not end within check_timeout (1s) and was killed with its processes: nothing was published; the session stays open") ||
		!reflect.DeepEqual(ae.Output, []string{"waiting for the signing service"}) {
		t.Errorf("answer: %+v", ae)
	}
	if took > 10*time.Second {
		t.Errorf("the refusal took %s", took)
	}
	for _, pid := range waitFile(t, pids, 2) {
		var n int
		fmt.Sscan(pid, &n)
		if pidAlive(n) {
			syscall.Kill(n, syscall.SIGKILL)
			t.Errorf("process %d of the hook outlived its timeout", n)
		}
	}
	if len(e.Refs()) != 0 {
		t.Error("a ref moved")
	}
	if n := e.metric(`ostree_upload_check_hook_runs_total{outcome="timeout"}`); n != 1 {
		t.Errorf("timed out checks: %v", n)
	}
}

// promote publishes through the destination's check: each repository
// judges what enters it, whatever passed the source's check. A refused
// promote leaves the destination as it was and no session open there.
func TestPromoteRunsTheDestinationsCheck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	log, hook := filepath.Join(dir, "checked"), filepath.Join(dir, "check.sh")
	script := `#!/bin/sh
echo "$OSTREE_UPLOAD_REPO_NAME $OSTREE_RECEIVE_REFS" >> ` + log + `
if [ "$OSTREE_UPLOAD_REPO_NAME" = stable ]; then
	echo "stable takes reviewed builds only"
	exit 1
fi
`
	if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	r := startTwoReposWith(t, "check_hook: "+hook, "")
	build, c := newBuild(t, "app/main", 20, 1700000000, "app/main")
	if out, err := r.push(t, r.all, "beta", build, "app/main"); err != nil {
		t.Fatalf("push to beta: %v\n%s", err, out)
	}
	r.published(t, "beta", "app/main", c)
	cmd := exec.Command(fx.bin, "promote", "app/main", "--from", "beta", "-a", r.url+"/stable")
	cmd.Env = append(os.Environ(), "OSTREE_UPLOAD_TOKEN="+r.all.Secret)
	out, err := cmd.CombinedOutput()
	if err == nil || cmd.ProcessState.ExitCode() != 1 ||
		!strings.Contains(string(out), "the daemon's check refused the publish: check_hook exited with status 1: nothing was published; promote again once the check passes\n") ||
		!strings.Contains(string(out), "\n  | stable takes reviewed builds only") {
		t.Fatalf("promote into stable: %v\n%s", err, out)
	}
	if got := mustRead(t, log); got != "beta app/main\nstable app/main\n" {
		t.Errorf("the checks that ran: %q", got)
	}
	if _, err := exec.Command("ostree", "rev-parse", "--repo="+filepath.Join(r.root, "stable"), "app/main").Output(); err == nil {
		t.Fatal("stable got app/main")
	}
	var sessions []api.AdminSession
	if st := r.get(t, r.all, "/stable"+api.PathAdmin+"/sessions", &sessions); st != 200 || len(sessions) != 0 {
		t.Fatalf("open sessions in stable after the refused promote: %d %+v", st, sessions)
	}
}
