package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/api/client"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/internal/sshtest"
	"github.com/ostree-upload/ostree-upload/store/storetest"
)

// sshBuild is a build repository whose refs move through versions: main
// and beta/app, each version a tree of small files and one of size big.
type sshBuild struct {
	repo    string
	commits map[string][]string // ref → commit of each version
}

func newSSHBuild(t *testing.T, versions int, big int) *sshBuild {
	t.Helper()
	dir := t.TempDir()
	b := &sshBuild{repo: filepath.Join(dir, "build"), commits: map[string][]string{}}
	if err := storetest.InitArchive(b.repo); err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(dir, "tree")
	rng := rand.New(rand.NewSource(int64(big)))
	if err := storetest.WriteTree(tree, 400, rng); err != nil {
		t.Fatal(err)
	}
	blob := make([]byte, big)
	for v := range versions {
		if v > 0 {
			if err := storetest.MutateTree(tree, rng); err != nil {
				t.Fatal(err)
			}
		}
		rng.Read(blob)
		if err := os.WriteFile(filepath.Join(tree, "blob"), blob, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, ref := range []string{"main", "beta/app"} {
			c, err := storetest.CommitTree(b.repo, ref, tree, int64(1700000000+100*v))
			if err != nil {
				t.Fatal(err)
			}
			b.commits[ref] = append(b.commits[ref], strings.TrimSpace(c))
		}
	}
	return b
}

// moveRef points the build's ref at its version v.
func (b *sshBuild) moveRef(t *testing.T, ref string, v int) {
	t.Helper()
	storetest.MustOstree(t, "refs", "--repo="+b.repo, "--force", "--create="+ref, b.commits[ref][v])
}

// sshHost is a host that serves pushes over ssh: a real sshd, the
// production repository, and a wrapper named ostree-upload that runs this
// package's binary with the repository's configuration file.
type sshHost struct {
	srv    *sshtest.Server
	e      *daemontest.Env
	remote string // --command
}

// newSSHHost prepares the production side; with daemon, a receive daemon
// serves the repository (and its socket) in the test's process.
func newSSHHost(t *testing.T, daemon bool, configure func(*daemontest.Env)) *sshHost {
	t.Helper()
	h := &sshHost{srv: sshtest.Start(t), e: daemontest.New(t)}
	if configure != nil {
		configure(h.e)
	}
	if err := storetest.InitArchive(h.e.Repo); err != nil {
		t.Fatal(err)
	}
	cfg := h.e.WriteConfig()
	if daemon {
		h.e.Start()
	}
	h.remote = remoteWrapper(t, cfg)
	return h
}

// remoteWrapper is a program named ostree-upload that runs this package's
// binary with the configuration file cfg.
func remoteWrapper(t *testing.T, cfg string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ostree-upload")
	script := fmt.Sprintf("#!/bin/sh\nOSTREE_UPLOAD_CONF=%s exec %s \"$@\"\n", cfg, builtBinary(t))
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// dest is the ssh destination of the production repository for user.
func (h *sshHost) dest(user string) string {
	return fmt.Sprintf("ssh://%s@%s%s", user, sshtest.Host, h.e.Repo)
}

// push runs `ostree-upload push` of refs over ssh as root, with extra
// options; it returns the combined output.
func (h *sshHost) push(t *testing.T, b *sshBuild, extra []string, refs ...string) (string, error) {
	t.Helper()
	out, err := h.pushCommand(t, b, extra, refs...).CombinedOutput()
	return string(out), err
}

// pushCommand is the command of h.push.
func (h *sshHost) pushCommand(t *testing.T, b *sshBuild, extra []string, refs ...string) *exec.Cmd {
	t.Helper()
	args := append([]string{"push", "-r", b.repo, "--ssh-command", h.srv.SSHCommand(), "--command", h.remote, h.dest("root")}, extra...)
	for _, r := range refs {
		args = append(args, "-b", r)
	}
	cmd := exec.Command(builtBinary(t), args...)
	cmd.Env = append(os.Environ(), "OSTREE_UPLOAD_TOKEN=ou_for-http-pushes") // stays unused over ssh
	return cmd
}

// runningPush is a push started in the background; its output can be read
// while it runs.
type runningPush struct {
	mu   sync.Mutex
	out  strings.Builder
	done chan error
}

func (p *runningPush) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// output is what the push printed so far.
func (p *runningPush) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// start starts h.push in the background; the test's end kills it if it
// still runs.
func (h *sshHost) start(t *testing.T, b *sshBuild, refs ...string) *runningPush {
	t.Helper()
	p := &runningPush{done: make(chan error, 1)}
	cmd := h.pushCommand(t, b, nil, refs...)
	cmd.Stdout, cmd.Stderr = p, p
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() { // after a failure, the push may still run
		select {
		case err := <-p.done:
			p.done <- err
		default:
			cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// wait waits for the push to end.
func (p *runningPush) wait(t *testing.T) (string, error) {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		return p.output(), err
	case <-time.After(3 * time.Minute):
		t.Fatalf("the push did not end within 3 minutes:\n%s", p.output())
		return "", nil
	}
}

func (h *sshHost) mustPush(t *testing.T, b *sshBuild, refs ...string) string {
	t.Helper()
	out, err := h.push(t, b, nil, refs...)
	if err != nil {
		t.Fatalf("push %v over ssh: %v\n%s", refs, err, out)
	}
	return out
}

// published checks that production holds want (ref → commit) complete:
// the refs, fsck, and a pull of each ref into a bare-user repository.
func (h *sshHost) published(t *testing.T, want map[string]string) {
	t.Helper()
	h.e.CheckPublished(want)
}

// A push over ssh publishes cold, incremental and no-op updates, with a
// daemon (through its socket, as the unix account) and without one (the
// remote command opens the repository itself).
func TestSSHPush(t *testing.T) {
	t.Parallel()
	b := newSSHBuild(t, 2, 256<<10)
	for _, withDaemon := range []bool{true, false} {
		t.Run(map[bool]string{true: "daemon", false: "no daemon"}[withDaemon], func(t *testing.T) {
			t.Parallel()
			h := newSSHHost(t, withDaemon, nil)
			b.moveRef(t, "main", 0)
			out := h.mustPush(t, b, "main")
			if !strings.Contains(out, "main: updated (new) → "+b.commits["main"][0][:12]) {
				t.Errorf("cold push said:\n%s", out)
			}
			h.published(t, map[string]string{"main": b.commits["main"][0]})

			b2 := *b
			b2.repo = t.TempDir() + "/build"
			storetest.MustOstree(t, "init", "--mode=archive", "--repo="+b2.repo)
			storetest.MustOstree(t, "pull-local", "--repo="+b2.repo, b.repo, b.commits["main"][1])
			storetest.MustOstree(t, "refs", "--repo="+b2.repo, "--create=main", b.commits["main"][1])
			out = h.mustPush(t, &b2, "main")
			if !strings.Contains(out, "main: updated "+b.commits["main"][0][:12]+" → "+b.commits["main"][1][:12]) || !strings.Contains(out, "skipped") {
				t.Errorf("incremental push said:\n%s", out)
			}
			h.published(t, map[string]string{"main": b.commits["main"][1]})

			out = h.mustPush(t, &b2, "main")
			if !strings.Contains(out, "main: up to date") {
				t.Errorf("no-op push said:\n%s", out)
			}
			if withDaemon {
				sessions, err := h.e.Service().Sessions(context.Background(), true)
				if err != nil || len(sessions) != 2 {
					t.Fatalf("the daemon's sessions: %v, %v", sessions, err)
				}
				for _, s := range sessions {
					if s.Token != "unix:root" {
						t.Errorf("session %s by %q, want unix:root", s.ID, s.Token)
					}
				}
			}
		})
	}
}

// pushStats reads a --stats-json file.
func readStats(t *testing.T, path string) pushStats {
	t.Helper()
	var st pushStats
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// bytesUnder is the size of the files under dir.
func bytesUnder(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// When the ssh connection dies in the middle of an upload (its ssh process
// killed), the push resumes where the bytes stopped, over a new ssh
// connection (or, once its retries are spent, a rerun does): all it sends
// is at most 1.1 times the objects' bytes.
func TestSSHPushResumesAfterTheConnectionDies(t *testing.T) {
	t.Parallel()
	b := newSSHBuild(t, 1, 32<<20)
	objects := bytesUnder(filepath.Join(b.repo, "objects"))
	for _, withDaemon := range []bool{true, false} {
		t.Run(map[bool]string{true: "daemon", false: "no daemon"}[withDaemon], func(t *testing.T) {
			t.Parallel()
			h := newSSHHost(t, withDaemon, nil)
			dir := t.TempDir()
			// ssh through a link of 8 MB/s and a counter of what reaches
			// sshd, recording its pids.
			pids := filepath.Join(dir, "pids")
			counted := newTCPCounter(t, fmt.Sprintf("%s:%d", sshtest.Host, h.srv.Port()))
			sshCmd := fmt.Sprintf(`sh -c 'echo $$ >> %s; exec %s "$@"' ssh`, pids, slowSSH(t, h.srv, counted.addr, 8000))
			run := func(stats string) error {
				cmd := exec.Command(builtBinary(t), "push", "-r", b.repo, "--ssh-command", sshCmd, "--command", h.remote,
					"--retry-timeout", "1ms", "--stats-json", stats, h.dest("root"), "-b", "main")
				out, err := cmd.CombinedOutput()
				t.Logf("push: %v\n%s", err, out)
				return err
			}
			uploads := filepath.Join(h.e.State, "uploads")
			done := make(chan error, 1)
			go func() { done <- run(filepath.Join(dir, "1.json")) }()
			deadline := time.Now().Add(60 * time.Second)
			for bytesUnder(uploads) < 4<<20 {
				if time.Now().After(deadline) {
					t.Fatalf("no upload reached 4 MiB within a minute (%d bytes)", bytesUnder(uploads))
				}
				time.Sleep(20 * time.Millisecond)
			}
			killFirst(t, pids)
			first := readStatsAfter(t, <-done, filepath.Join(dir, "1.json"))
			retried := first.Retries > 0
			if first.Error != "" { // its retries spent: a rerun resumes
				second := readStatsAfter(t, run(filepath.Join(dir, "2.json")), filepath.Join(dir, "2.json"))
				if second.Error != "" {
					t.Fatalf("the rerun failed: %s", second.Error)
				}
				retried = true
			}
			if !retried {
				t.Errorf("the push neither retried nor failed when its ssh connection died")
			}
			// What reached sshd: the objects, ssh's and HTTP/2's framing,
			// and what was in flight when the connection died.
			sent := counted.up.Load()
			if float64(sent) > 1.1*float64(objects) {
				t.Errorf("%d bytes reached sshd for %d bytes of objects", sent, objects)
			}
			t.Logf("%d bytes reached sshd for %d bytes of objects (%.3f×)", sent, objects, float64(sent)/float64(objects))
			h.published(t, map[string]string{"main": b.commits["main"][0]})
		})
	}
}

// readStatsAfter reads the --stats-json file of a push that ended with
// err: done, or interrupted (exit 75).
func readStatsAfter(t *testing.T, err error, path string) pushStats {
	t.Helper()
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != exitRetry) {
		t.Fatalf("push ended with %v, want success or exit %d", err, exitRetry)
	}
	return readStats(t, path)
}

// killFirst kills the process whose pid is the first line of path.
func killFirst(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan()
	pid, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := os.FindProcess(pid)
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
}

// tcpCounter forwards connections to upstream and counts the bytes that
// reach it.
type tcpCounter struct {
	addr string
	up   atomic.Int64
}

func newTCPCounter(t *testing.T, upstream string) *tcpCounter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &tcpCounter{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				down.Close()
				continue
			}
			wg.Add(2)
			go func() {
				defer wg.Done()
				n, _ := io.Copy(up, down)
				c.up.Add(n)
				up.(*net.TCPConn).CloseWrite()
			}()
			go func() {
				defer wg.Done()
				io.Copy(down, up)
				down.Close()
				up.Close()
			}()
		}
	}()
	return c
}

// slowSSH is the ssh command of srv reached at upstream (host:port)
// through a toxiproxy link of rate KB/s: srv's options, with the proxy's
// port and the host key known under it.
func slowSSH(t *testing.T, srv *sshtest.Server, upstream string, rate int) string {
	t.Helper()
	px := daemontest.SlowLink(t, upstream, rate)
	_, port, _ := strings.Cut(px.Listen, ":")
	args := srv.SSHArgs()
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == "-p":
			args[i+1] = port
		case strings.HasPrefix(args[i], "UserKnownHostsFile="):
			known, err := os.ReadFile(strings.TrimPrefix(args[i], "UserKnownHostsFile="))
			if err != nil {
				t.Fatal(err)
			}
			_, key, _ := strings.Cut(strings.TrimSpace(string(known)), " ")
			file := filepath.Join(t.TempDir(), "known_hosts")
			os.WriteFile(file, []byte(fmt.Sprintf("[%s]:%s %s\n", sshtest.Host, port, key)), 0o600)
			args[i] = "UserKnownHostsFile=" + file
		}
	}
	quoted := []string{"ssh"}
	for _, a := range args {
		quoted = append(quoted, client.ShellQuote(a))
	}
	return strings.Join(quoted, " ")
}

// Two pushes over ssh to different refs of one repository at once both
// publish. With a daemon, it serves both at once: their checks run side by
// side. Without, the second waits for the first's lock, saying so, and
// starts its own work only when the first has ended. The check hook holds
// each push until the test lets it go.
func TestSSHConcurrentPushes(t *testing.T) {
	t.Parallel()
	b := newSSHBuild(t, 1, 64<<10)
	for _, withDaemon := range []bool{true, false} {
		t.Run(map[bool]string{true: "daemon", false: "no daemon"}[withDaemon], func(t *testing.T) {
			t.Parallel()
			gate := t.TempDir()
			hook := fmt.Sprintf("touch %[1]s/started.$$; i=0; while [ ! -e %[1]s/release ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done", gate)
			h := newSSHHost(t, withDaemon, func(e *daemontest.Env) { e.Config.CheckHook = config.Command{"sh", "-c", hook} })
			checks := func() int {
				started, _ := filepath.Glob(filepath.Join(gate, "started.*"))
				return len(started)
			}
			t.Cleanup(func() { release(t, gate) })
			first := h.start(t, b, "main")
			waitUntil(t, "the first push's check", func() bool { return checks() == 1 }, first)
			second := h.start(t, b, "beta/app")
			const waiting = "is running; waiting for it"
			if withDaemon {
				waitUntil(t, "both checks at once", func() bool { return checks() == 2 }, first, second)
			} else {
				waitUntil(t, "the second push saying it waits", func() bool { return strings.Contains(second.output(), waiting) }, first, second)
				if n := checks(); n != 1 {
					t.Errorf("%d checks ran while the first push held the repository, want 1", n)
				}
			}
			release(t, gate)
			var outs []string
			for i, p := range []*runningPush{first, second} {
				out, err := p.wait(t)
				if err != nil {
					t.Errorf("push %d: %v\n%s", i, err, out)
				}
				outs = append(outs, out)
			}
			if withDaemon && strings.Contains(strings.Join(outs, ""), waiting) {
				t.Errorf("a push waited for a lock beside the daemon:\n%s", strings.Join(outs, "\n"))
			}
			h.published(t, map[string]string{"main": b.commits["main"][0], "beta/app": b.commits["beta/app"][0]})
		})
	}
}

// release lets the check hooks waiting in gate end.
func release(t *testing.T, gate string) {
	if err := os.WriteFile(filepath.Join(gate, "release"), nil, 0o644); err != nil {
		t.Error(err)
	}
}

// waitUntil waits up to 2 minutes for cond, polling; it fails the test
// naming what, with the output of pushes, when cond never holds.
func waitUntil(t *testing.T, what string, cond func() bool, pushes ...*runningPush) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			var outs []string
			for _, p := range pushes {
				outs = append(outs, p.output())
			}
			t.Fatalf("waited 2 minutes for %s:\n%s", what, strings.Join(outs, "\n"))
		}
	}
}

// sshAs runs ssh-family program (ssh, scp, sftp) against srv as user, with
// srv's options; for scp and sftp, ssh runs through -S.
func sshAs(t *testing.T, srv *sshtest.Server, program string, args ...string) (string, error) {
	t.Helper()
	var argv []string
	if program == "ssh" {
		argv = append(srv.SSHArgs(), args...)
	} else {
		wrapper := filepath.Join(t.TempDir(), "ssh")
		if err := os.WriteFile(wrapper, []byte("#!/bin/sh\nexec "+srv.SSHCommand()+" \"$@\"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		argv = append([]string{"-S", wrapper}, args...)
	}
	cmd := exec.Command(program, argv...)
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// An account whose login shell is ostree-upload-shell runs pushes and
// nothing else: not a command, not an interactive login, not scp or sftp.
// Mapped by accounts to beta/*, it pushes beta/app and not main, and an
// account accounts does not list may not push at all. It reaches the
// daemon as the set-up documents: the state dir in the account's group.
func TestSSHRestrictedShell(t *testing.T) {
	t.Parallel()
	b := newSSHBuild(t, 1, 64<<10)
	srv := sshtest.Start(t)
	shellDir := t.TempDir()
	shell := filepath.Join(shellDir, shellName)
	if err := os.Symlink(builtBinary(t), shell); err != nil {
		t.Fatal(err)
	}
	sshtest.Share(t, shellDir)
	sshtest.Share(t, filepath.Dir(builtBinary(t)))
	name := srv.AddUser(t, shell)
	account, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	h := &sshHost{srv: srv, e: daemontest.New(t)}
	h.e.Config.Accounts = []config.Account{{User: name, Refs: []string{"beta/*"}}}
	if err := storetest.InitArchive(h.e.Repo); err != nil {
		t.Fatal(err)
	}
	// The operator's steps: the state dir in the pushing accounts' group,
	// which may pass through it; the configuration readable by them.
	if err := os.MkdirAll(h.e.State, 0o700); err != nil {
		t.Fatal(err)
	}
	gid, _ := strconv.Atoi(account.Gid)
	if err := os.Chown(h.e.State, -1, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(h.e.State, 0o710); err != nil {
		t.Fatal(err)
	}
	sshtest.Share(t, filepath.Dir(h.e.State))
	confDir := filepath.Join(account.HomeDir, ".config", "ostree-upload")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := h.e.Effective().Write(filepath.Join(confDir, "ostree-upload.yaml")); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(confDir, "ostree-upload.yaml"), 0o644)
	h.e.Start()
	sock := filepath.Join(h.e.State, "push.sock")
	for i := 0; i < 100; i++ { // the daemon binds it as it starts serving
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(sock, &st); err != nil || st.Mode&0o777 != 0o660 || int(st.Gid) != gid {
		t.Fatalf("the daemon's socket: %v, mode %o, group %d; want 0660 and group %d", err, st.Mode&0o777, st.Gid, gid)
	}

	at := name + "@" + sshtest.Host
	for _, c := range []struct {
		what    string
		program string
		args    []string
		want    string
	}{
		{"a command", "ssh", []string{at, "ls /"}, `refusing to run "ls /"`},
		{"an interactive login", "ssh", []string{"-T", at}, "interactive logins are disabled"},
		{"a login with a terminal", "ssh", []string{"-tt", at}, "interactive logins are disabled"},
		{"scp", "scp", []string{"-O", "/etc/hostname", at + ":/tmp/" + name}, ""},
		{"scp over sftp", "scp", []string{"/etc/hostname", at + ":/tmp/" + name}, ""},
		{"sftp", "sftp", []string{"-b", "/dev/null", at}, ""},
		{"a command disguised", "ssh", []string{at, "ostree-upload ssh-serve /srv; id"}, "refusing to run"},
	} {
		out, err := sshAs(t, srv, c.program, c.args...)
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("%s: %v\n%s\nwant a failure saying %q", c.what, err, out, c.want)
		}
	}
	if _, err := os.Stat("/tmp/" + name); err == nil {
		t.Errorf("scp wrote /tmp/%s", name)
	}

	// Root's login shell runs the remote program it is named; the
	// account's runs its own binary.
	rootRemote := remoteWrapper(t, filepath.Join(confDir, "ostree-upload.yaml"))
	pushAs := func(user, ref string) (string, error) {
		cmd := exec.Command(builtBinary(t), "push", "-r", b.repo, "--ssh-command", srv.SSHCommand(), "--command", rootRemote, h.dest(user), "-b", ref)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := pushAs(name, "beta/app"); err != nil {
		t.Fatalf("push of beta/app by %s: %v\n%s", name, err, out)
	}
	if out, err := pushAs(name, "main"); err == nil || !strings.Contains(out, "unix account "+name+" may not push ref main") {
		t.Errorf("push of main by %s: %v\n%s", name, err, out)
	}
	if out, err := pushAs("root", "main"); err == nil || !strings.Contains(out, "unix account root may not push here") {
		t.Errorf("push of main by root, whom accounts does not list: %v\n%s", err, out)
	}
	h.published(t, map[string]string{"beta/app": b.commits["beta/app"][0]})
	sessions, err := h.e.Service().Sessions(context.Background(), true)
	if err != nil || len(sessions) != 1 || sessions[0].Token != "unix:"+name {
		t.Errorf("sessions %+v, %v; want one of unix:%s", sessions, err, name)
	}
}

// ostree-push's dry_run and force act on pushes over ssh: with dry_run the
// push is judged and nothing changes; with force a ref moves back to an
// older commit, which is otherwise refused.
func TestSSHDryRunAndForceFromTheConfiguration(t *testing.T) {
	t.Parallel()
	b := newSSHBuild(t, 2, 4<<10)
	t.Run("dry_run", func(t *testing.T) {
		t.Parallel()
		h := newSSHHost(t, false, func(e *daemontest.Env) { e.Config.DryRun = true })
		out, err := h.push(t, b, nil, "beta/app")
		if err != nil || !strings.Contains(out, "dry runs (dry_run in its configuration): nothing is sent or changed") ||
			!strings.Contains(out, "beta/app: would update") {
			t.Errorf("push: %v\n%s", err, out)
		}
		if refs := h.e.Refs(); len(refs) != 0 {
			t.Errorf("a dry run published %v", refs)
		}
	})
	for _, force := range []bool{true, false} {
		t.Run(fmt.Sprintf("force=%v", force), func(t *testing.T) {
			t.Parallel()
			h := newSSHHost(t, false, func(e *daemontest.Env) { e.Config.Force = force })
			// beta/app at its newer version, then main at the older one
			// on top of it: a move back in time.
			h.mustPush(t, b, "beta/app")
			back := newSSHBuild(t, 0, 0)
			storetest.MustOstree(t, "pull-local", "--repo="+back.repo, b.repo, b.commits["beta/app"][0])
			storetest.MustOstree(t, "refs", "--repo="+back.repo, "--create=beta/app", b.commits["beta/app"][0])
			out, err := h.push(t, back, nil, "beta/app")
			if force {
				if err != nil {
					t.Fatalf("push back with force: %v\n%s", err, out)
				}
				h.published(t, map[string]string{"beta/app": b.commits["beta/app"][0]})
			} else if err == nil || !strings.Contains(out, "not newer") {
				t.Errorf("push back without force: %v\n%s", err, out)
			}
		})
	}
}

// Without a daemon, the push goes on with what its publish left before the
// remote command exits: the static delta from the previous head is there
// when push returns. The repository's accounts hold without a daemon too.
func TestSSHWithoutDaemon(t *testing.T) {
	t.Parallel()
	b := newSSHBuild(t, 2, 64<<10)
	t.Run("static deltas", func(t *testing.T) {
		t.Parallel()
		h := newSSHHost(t, false, func(e *daemontest.Env) { e.Config.StaticDeltas, e.Config.StaticDeltaDepth = true, 1 })
		b.moveRef(t, "main", 0)
		h.mustPush(t, b, "main")
		b1 := newSSHBuild(t, 0, 0)
		storetest.MustOstree(t, "pull-local", "--repo="+b1.repo, b.repo, b.commits["main"][1])
		storetest.MustOstree(t, "refs", "--repo="+b1.repo, "--create=main", b.commits["main"][1])
		h.mustPush(t, b1, "main")
		deltas := storetest.MustOstree(t, "static-delta", "list", "--repo="+h.e.Repo)
		if !strings.Contains(deltas, b.commits["main"][0]+"-"+b.commits["main"][1]) {
			t.Errorf("deltas when push returned: %s", deltas)
		}
		h.published(t, map[string]string{"main": b.commits["main"][1]})
	})
	t.Run("accounts", func(t *testing.T) {
		t.Parallel()
		h := newSSHHost(t, false, func(e *daemontest.Env) { e.Config.Accounts = []config.Account{{User: "nobody"}} })
		out, err := h.push(t, b, nil, "main")
		if err == nil || !strings.Contains(out, "unix account root may not push here") {
			t.Errorf("push by root, whom accounts does not list: %v\n%s", err, out)
		}
		if refs := h.e.Refs(); len(refs) != 0 {
			t.Errorf("published %v", refs)
		}
	})
}
