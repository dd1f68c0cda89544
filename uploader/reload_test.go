package uploader_test

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
)

// SIGHUP rereads the tokens: a token added to the file starts working, one
// removed stops, and a file that no longer loads keeps the old tokens.
func TestReloadTokens(t *testing.T) {
	t.Parallel()
	e := daemontest.New(t)
	cfg := e.WriteConfig()
	addr := freeAddr(t)
	cmd := exec.Command(bin, "receive", "-c", cfg, "-r", e.Repo, "--state-dir", e.State, "-a", addr)
	logFile, err := os.Create(filepath.Join(t.TempDir(), "daemon.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile // a file: read while the daemon writes
	log := daemonLog{logFile.Name()}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	status := func(tok daemontest.Token) int {
		req, _ := http.NewRequest("GET", "http://"+addr+"/api/v1/info", nil)
		req.Header.Set("Authorization", "Bearer "+tok.Secret)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		res.Body.Close()
		return res.StatusCode
	}
	waitFor := func(what string, tok daemontest.Token, code int) {
		t.Helper()
		for i := 0; status(tok) != code; i++ {
			if i > 100 {
				t.Fatalf("%s: status %d, want %d\n%s", what, status(tok), code, log.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("start", e.Tok, 200)

	late := daemontest.NewToken(t)
	if err := config.AppendToken(cfg, config.Token{SHA256: late.Hash, Name: "late"}); err != nil {
		t.Fatal(err)
	}
	if got := status(late); got != 401 {
		t.Fatalf("a token added to the file works before SIGHUP: %d", got)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor("added token after SIGHUP", late, 200)

	// Drop ci's entry (the file's first token) by rewriting the file.
	data, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	kept := strings.Replace(string(data), c.Tokens[0].SHA256, late.Hash, 1)
	kept = strings.Replace(kept, `name: "ci"`, `name: "ci-gone"`, 1)
	// The file now names late twice: it does not load, and the daemon
	// keeps what it had.
	if err := os.WriteFile(cfg, []byte(kept), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	time.Sleep(300 * time.Millisecond)
	if status(e.Tok) != 200 || status(late) != 200 || !strings.Contains(log.String(), "keeping the old ones") {
		t.Fatalf("a broken file changed the tokens: ci %d, late %d\n%s", status(e.Tok), status(late), log.String())
	}
	rest := strings.Replace(string(data), c.Tokens[0].SHA256, strings.Repeat("0", 64), 1)
	if err := os.WriteFile(cfg, []byte(rest), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor("removed token after SIGHUP", e.Tok, 401)
	if status(late) != 200 {
		t.Fatal("the other tokens stopped working")
	}
}

type daemonLog struct{ path string }

func (l daemonLog) String() string {
	b, _ := os.ReadFile(l.path)
	return string(b)
}
