// Package daemontest runs real receive daemons for tests: in-process on
// 127.0.0.1, or as a subprocess that can be killed, over real repositories.
package daemontest

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/daemon"
	"github.com/ostree-upload/ostree-upload/repository"
	"github.com/ostree-upload/ostree-upload/store"
	"github.com/ostree-upload/ostree-upload/store/object"
	"github.com/ostree-upload/ostree-upload/store/storetest"
)

// Token is an API token: its secret and hash.
type Token struct{ Secret, Hash string }

// NewToken makes a fresh token.
func NewToken(t testing.TB) Token {
	s, h, err := auth.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return Token{s, h}
}

// Env is a daemon under test with its repositories and two tokens: Tok may
// push any ref, Narrow only refs matching "other*".
type Env struct {
	T           testing.TB
	Repo, State string
	URL         string // http://127.0.0.1:port once started
	Tok, Narrow Token
	// Config is the daemon's configuration, as a configuration file would
	// give it: the defaults with test-sized limits (a TTL of an hour,
	// 100,000 objects a session, 1 GiB objects). Tests change it before
	// Start; Repo, StateDir and Tokens come from the Env.
	Config      *config.Config
	ExtraTokens []config.Token // configured beside Tok and Narrow
	Logger      *slog.Logger   // nil: discarded unless OSTREE_UPLOAD_TEST_LOG is set

	addr string
	d    *daemon.Daemon
	stop context.CancelFunc
	done chan error
}

// New prepares (but does not start) a daemon with an empty state.
func New(t testing.TB) *Env {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.SessionTTL = config.Duration{Duration: time.Hour}
	cfg.MaxObjectsPerSession = 100000
	cfg.MaxObjectSize = 1 << 30
	cfg.DrainTimeout = config.Duration{Duration: 3 * time.Second} // tests stop daemons often
	return &Env{T: t, Repo: filepath.Join(dir, "repo"), State: filepath.Join(dir, "state"),
		Tok: NewToken(t), Narrow: NewToken(t), Config: cfg}
}

// Effective is the configuration the daemon runs with: Config with the
// Env's directories and tokens.
func (e *Env) Effective() *config.Config {
	c := *e.Config
	c.Repo, c.StateDir, c.Tokens = e.Repo, e.State, e.Tokens()
	return &c
}

// SignWith makes the daemon sign with these ed25519 keys (a key file in
// the test's directory, in sign_keyfiles).
func (e *Env) SignWith(keys ...ed25519.PrivateKey) {
	var lines []string
	for _, k := range keys {
		lines = append(lines, base64.StdEncoding.EncodeToString(k))
	}
	e.Config.SignKeyfiles = append(e.Config.SignKeyfiles, e.keyFile("sign", lines))
}

// Trust makes the daemon trust these ed25519 public keys
// (sign_trustedkeyfile).
func (e *Env) Trust(keys ...ed25519.PublicKey) {
	var lines []string
	for _, k := range keys {
		lines = append(lines, base64.StdEncoding.EncodeToString(k))
	}
	e.Config.SignTrustedKeyfile = e.keyFile("trusted", lines)
}

func (e *Env) keyFile(kind string, lines []string) string {
	f, err := os.CreateTemp(e.T.TempDir(), kind+"-*.key")
	if err == nil {
		_, err = f.WriteString(strings.Join(lines, "\n") + "\n")
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		e.T.Fatal(err)
	}
	return f.Name()
}

// Tokens are the daemon's configured tokens.
func (e *Env) Tokens() []config.Token {
	return append([]config.Token{
		{SHA256: e.Tok.Hash, Name: "ci"},
		{SHA256: e.Narrow.Hash, Name: "narrow", Refs: []string{"other*"}},
	}, e.ExtraTokens...)
}

func (e *Env) listen() net.Listener {
	addr := e.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the port of a daemon just stopped may linger
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		e.T.Fatal(err)
	}
	e.addr = ln.Addr().String()
	e.URL = "http://" + e.addr
	return ln
}

// Start runs the daemon in-process, on the same address as before if it
// ran already.
func (e *Env) Start() {
	t := e.T
	d, err := daemon.New(context.Background(), e.Effective(), daemon.Options{Log: e.logger(), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ln := e.listen()
	ctx, cancel := context.WithCancel(context.Background())
	e.d, e.stop, e.done = d, cancel, make(chan error, 1)
	go func() { e.done <- d.Serve(ctx, ln) }()
	t.Cleanup(e.Stop)
}

func (e *Env) logger() *slog.Logger {
	if e.Logger != nil {
		return e.Logger
	}
	return testLogger()
}

// testLogger discards logs unless OSTREE_UPLOAD_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("OSTREE_UPLOAD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Daemon is the running in-process daemon (nil when stopped).
func (e *Env) Daemon() *daemon.Daemon { return e.d }

// Service is the running in-process daemon's repository service.
func (e *Env) Service() *repository.Service { return e.d.Service() }

// Settle waits for the work the in-process daemon's publishes left for
// after their answers (spool releases, appstream branches, static deltas).
func (e *Env) Settle() {
	e.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.Service().Settle(ctx); err != nil {
		e.T.Fatalf("settle: %v", err)
	}
}

// Stop shuts the in-process daemon down gracefully.
func (e *Env) Stop() {
	if e.d == nil {
		return
	}
	e.stop()
	<-e.done
	e.d.Close()
	e.d = nil
	// The tests' client may still hold connections the daemon closed;
	// a POST sent on one after a restart would fail with EOF.
	http.DefaultClient.CloseIdleConnections()
}

// Restart stops and starts the in-process daemon on the same address.
func (e *Env) Restart() {
	e.Stop()
	e.Start()
}

// Proc is a daemon running as a subprocess.
type Proc struct {
	Cmd  *exec.Cmd
	Log  string // its log file
	done chan error
}

// WriteConfig writes the daemon's configuration file.
func (e *Env) WriteConfig() string {
	path := filepath.Join(filepath.Dir(e.Repo), "ostree-upload.yaml")
	if err := e.Effective().Write(path); err != nil {
		e.T.Fatal(err)
	}
	return path
}

// StartProcess runs the daemon binary bin ("ostree-upload"), armed to kill
// itself at failpoint if it is not empty, and waits until it answers.
func (e *Env) StartProcess(bin, failpoint string) *Proc {
	t := e.T
	ln := e.listen()
	ln.Close()
	logPath := filepath.Join(filepath.Dir(e.Repo), "daemon.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "receive", "-c", e.WriteConfig(), "-a", e.addr)
	cmd.Env = append(os.Environ(), "OSTREE_UPLOAD_FAILPOINT="+failpoint)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &Proc{Cmd: cmd, Log: logPath, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); logf.Close() }()
	t.Cleanup(func() { cmd.Process.Kill(); p.Wait() })
	for i := 0; ; i++ {
		res, err := http.Get(e.URL + "/healthz")
		if err == nil {
			res.Body.Close()
			return p
		}
		select {
		case err := <-p.done:
			p.done <- err
			b, _ := os.ReadFile(logPath)
			t.Fatalf("daemon exited: %v\n%s", err, b)
		case <-time.After(50 * time.Millisecond):
		}
		if i > 300 {
			t.Fatal("daemon did not start")
		}
	}
}

// Wait waits for the subprocess to end and returns how it ended.
func (p *Proc) Wait() error {
	err := <-p.done
	p.done <- err
	return err
}

// Kill ends the subprocess with SIGKILL and waits for it.
func (p *Proc) Kill() {
	p.Cmd.Process.Kill()
	p.Wait()
}

// Refs lists the production repository's refs.
func (e *Env) Refs() map[string]string {
	e.T.Helper()
	r, err := store.Open(context.Background(), e.Repo)
	if err != nil {
		e.T.Fatal(err)
	}
	defer r.Close()
	refs, err := r.ListRefs(context.Background())
	if err != nil {
		e.T.Fatal(err)
	}
	out := map[string]string{}
	for k, v := range refs {
		out[k] = v.String()
	}
	return out
}

// CheckPublished verifies the production repository the way clients see
// it: the refs, `ostree fsck`, and a pull of each ref over HTTP into a
// bare-user repository.
func (e *Env) CheckPublished(want map[string]string) {
	e.T.Helper()
	got := e.Refs()
	for ref, c := range want {
		if got[ref] != c {
			e.T.Fatalf("ref %s = %q, want %s (all: %v)", ref, got[ref], c, got)
		}
	}
	storetest.MustOstree(e.T, "fsck", "--repo="+e.Repo)
	for ref := range want {
		storetest.PullOverHTTP(e.T, e.Repo, ref)
	}
}

// BuildBinary builds the ostree-upload command, with failpoints, into dir
// and returns its path.
func BuildBinary(dir string) (string, error) {
	bin := filepath.Join(dir, "ostree-upload")
	out, err := exec.Command("go", "build", "-tags", "failpoints", "-o", bin, "github.com/ostree-upload/ostree-upload/cmd/ostree-upload").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build: %v: %s", err, out)
	}
	return bin, nil
}

// Objects lists the objects of commit in the archive repository repo: all
// reachable ones, or with base set the pruned diff against base.
func Objects(t testing.TB, repo, commit, base string) []object.Name {
	t.Helper()
	ctx := context.Background()
	r, err := store.OpenArchive(ctx, repo)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c, err := object.ParseChecksum(commit)
	if err != nil {
		t.Fatal(err)
	}
	var out []object.Name
	add := func(n object.Name) error { out = append(out, n); return nil }
	if base == "" {
		err = r.Walk(ctx, c, add)
	} else {
		b, _ := object.ParseChecksum(base)
		err = r.Diff(ctx, c, b, add)
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// SmallDisk mounts a tmpfs of size (e.g. "20m") and returns its path; the
// test is skipped where mounting is not allowed.
func SmallDisk(t *testing.T, size string) string {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small filesystem needs root")
	}
	dir := filepath.Join(t.TempDir(), "disk")
	os.MkdirAll(dir, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// Resize changes the size of a tmpfs mounted by SmallDisk.
func Resize(t *testing.T, dir, size string) {
	if out, err := exec.Command("mount", "-o", "remount,size="+size, dir).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v %s", err, out)
	}
}
