package daemon_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/store/storetest"
)

// tryPush runs a push without failing on transport errors (the daemon may
// die under it); it returns the commit's status or 0.
func (e *env) tryPush(tok token, updates []api.RefUpdate) int {
	defer func() { recover() }()
	r := e.doJSONQuiet(tok, "POST", api.PathSessions, api.SessionRequest{Refs: updates})
	if r == nil {
		e.t.Logf("push stopped: session request failed")
		return 0
	}
	var s api.Session
	r.json(e.t, &s)
	var names []string
	for _, u := range updates {
		for _, n := range objectsOf(e.t, u.New, "") {
			names = append(names, n.String())
		}
	}
	r = e.doJSONQuiet(tok, "POST", api.PathSessions+"/"+s.ID+"/objects", api.ObjectsRequest{Objects: names})
	if r == nil {
		return 0
	}
	var or api.ObjectsResponse
	r.json(e.t, &or)
	if err := e.uploadAll(tok, s.ID, or.Needed); err != nil {
		e.t.Logf("push stopped: %v", err)
		return 0
	}
	r = e.doJSONQuiet(tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil)
	if r == nil {
		return 0
	}
	return r.status
}

// waitKilled waits for a daemon armed with a failpoint to die by SIGKILL.
func waitKilled(t testing.TB, p *daemontest.Proc) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- p.Wait() }()
	select {
	case err := <-errc:
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != -1 {
			t.Fatalf("daemon ended with %v, want SIGKILL", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("failpoint never reached")
	}
}

func TestKill9AtEveryStep(t *testing.T) {
	t.Parallel()
	updates := []api.RefUpdate{{Name: "main", New: fx.a}, {Name: "other", New: fx.c}}
	for _, fp := range []string{"before-verdict", "after-adopt", "after-intent", "after-refs", "after-summary", "before-intent-done"} {
		t.Run(fp, func(t *testing.T) {
			e := newEnv(t)
			p := e.StartProcess(fx.bin, fp)
			if st := e.tryPush(e.Tok, updates); st == 200 {
				t.Fatalf("push succeeded through failpoint %s", fp)
			}
			waitKilled(t, p)
			// Never half: both refs old (absent) or both new.
			if _, err := os.Stat(filepath.Join(e.Repo, "config")); err == nil {
				refs := e.Refs()
				if !(len(refs) == 0 || refs["main"] == fx.a && refs["other"] == fx.c) {
					t.Fatalf("after kill at %s refs are %v", fp, refs)
				}
			}
			e.StartProcess(fx.bin, "")
			if fp != "before-verdict" && fp != "after-adopt" {
				// The commit was acknowledged by nobody, yet the daemon
				// finishes the publish by itself when it starts.
				if refs := e.Refs(); refs["main"] != fx.a || refs["other"] != fx.c {
					t.Fatalf("restart after %s did not finish the publish: %v", fp, refs)
				}
				sum := storetest.MustOstree(t, "summary", "--view", "--repo="+e.Repo)
				if !strings.Contains(sum, fx.a) || !strings.Contains(sum, fx.c) {
					t.Fatalf("restart after %s left a summary without the new refs:\n%s", fp, sum)
				}
			}
			if st := e.tryPush(e.Tok, updates); st != 200 {
				log, _ := os.ReadFile(filepath.Join(filepath.Dir(e.Repo), "daemon.log"))
				t.Fatalf("push after restart: %d\n%s", st, log)
			}
			e.CheckPublished(map[string]string{"main": fx.a, "other": fx.c})
		})
	}
}
