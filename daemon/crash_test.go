package daemon_test

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/daemon/api"
	"github.com/ostree-upload/ostree-upload/daemon/config"
)

// proc runs the daemon binary, optionally armed to kill itself (SIGKILL) at
// a failpoint.
type proc struct {
	cmd  *exec.Cmd
	done chan error
}

func (e *env) writeConfig() string {
	path := filepath.Join(filepath.Dir(e.repo), "ostree-upload.yaml")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	for _, tk := range e.tokens() {
		if err := config.AppendToken(path, tk); err != nil {
			e.t.Fatal(err)
		}
	}
	return path
}

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (e *env) startProc(failpoint string) *proc {
	t := e.t
	addr := freeAddr(t)
	cmd := exec.Command(fx.bin, "receive", "-c", e.writeConfig(), "-r", e.repo, "--state-dir", e.state, "-a", addr)
	cmd.Env = append(os.Environ(), "OSTREE_UPLOAD_FAILPOINT="+failpoint)
	logf, _ := os.Create(filepath.Join(filepath.Dir(e.repo), "daemon.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); logf.Close() }()
	t.Cleanup(func() { cmd.Process.Kill(); <-p.done })
	e.url = "http://" + addr
	for i := 0; ; i++ {
		res, err := http.Get(e.url + "/healthz")
		if err == nil {
			res.Body.Close()
			return p
		}
		select {
		case err := <-p.done:
			b, _ := os.ReadFile(filepath.Join(filepath.Dir(e.repo), "daemon.log"))
			t.Fatalf("daemon exited: %v\n%s", err, b)
		case <-time.After(50 * time.Millisecond):
		}
		if i > 200 {
			t.Fatal("daemon did not start")
		}
	}
}

// waitKilled waits for a daemon armed with a failpoint to die by SIGKILL.
func (p *proc) waitKilled(t testing.TB) {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != -1 {
			t.Fatalf("daemon ended with %v, want SIGKILL", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("failpoint never reached")
	}
}

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

func TestKill9AtEveryStep(t *testing.T) {
	updates := []api.RefUpdate{{Name: "main", New: fx.a}, {Name: "other", New: fx.c}}
	for _, fp := range []string{"before-verdict", "after-adopt", "after-intent", "after-refs", "after-summary"} {
		t.Run(fp, func(t *testing.T) {
			e := newEnv(t)
			p := e.startProc(fp)
			if st := e.tryPush(e.tok, updates); st == 200 {
				t.Fatalf("push succeeded through failpoint %s", fp)
			}
			p.waitKilled(t)
			// Never half: both refs old (absent) or both new.
			if _, err := os.Stat(filepath.Join(e.repo, "config")); err == nil {
				refs := e.refs()
				if !(len(refs) == 0 || refs["main"] == fx.a && refs["other"] == fx.c) {
					t.Fatalf("after kill at %s refs are %v", fp, refs)
				}
			}
			e.startProc("")
			if st := e.tryPush(e.tok, updates); st != 200 {
				log, _ := os.ReadFile(filepath.Join(filepath.Dir(e.repo), "daemon.log"))
				t.Fatalf("push after restart: %d\n%s", st, log)
			}
			e.checkPublished(map[string]string{"main": fx.a, "other": fx.c})
		})
	}
}
