// Package sshtest runs a real OpenSSH server (Debian's /usr/sbin/sshd) on
// 127.0.0.1 for tests, with throwaway keys and throwaway unix accounts, and
// gives the ssh options that reach it without anything of the caller's
// ~/.ssh. It needs root: Start skips the test otherwise.
//
// What sshd (OpenSSH 9.2, UsePAM no) checks, and how the harness meets it:
//
//   - An account whose password field starts with "!" is locked and
//     refused; AddUser sets "*" (no password, not locked).
//   - The login shell must exist and be an executable regular file (sshd
//     checks it as root, then the account's session executes it, so the
//     account must reach it too: Share). sshd does not read /etc/shells, so
//     any absolute path will do (TestLoginShellOutsideEtcShells).
//   - A command runs as SHELL -c COMMAND, and a subsystem as
//     SHELL -c /usr/lib/openssh/sftp-server: a restricted login shell sees
//     every request.
//   - sshd reads AuthorizedKeysFile with the account's uid, so the file and
//     every directory above it must be reachable by the account (Share).
//     StrictModes no lets it sit under a world-writable TMPDIR such as
//     /dev/shm.
//   - The privilege separation directory /run/sshd must exist; Start
//     creates it.
package sshtest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/api/client"
)

const (
	// Host is the address the server listens on.
	Host = "127.0.0.1"
	// SSHD is the server binary.
	SSHD = "/usr/sbin/sshd"
	// SFTPServer is the sftp subsystem's command, as in Debian's sshd_config.
	SFTPServer = "/usr/lib/openssh/sftp-server"
	// privsepDir is sshd's privilege separation directory (Debian's build).
	privsepDir = "/run/sshd"
)

// Server is a running sshd. Its keys, configuration, log and the homes of
// its accounts live in a directory of its own under os.TempDir(), removed
// when the test ends.
type Server struct {
	dir        string
	port       int
	key        string // the client's private key
	pub        []byte // the client's public key, one authorized_keys line
	knownHosts string
	log        string
	cmd        *exec.Cmd
	done       chan error // cmd.Wait's result
}

// Start runs sshd -D -e on 127.0.0.1 at a free port with a throwaway
// ed25519 host key, and makes a throwaway client key pair that may log in as
// root (PermitRootLogin prohibit-password) and as every account of AddUser.
// It returns once sshd accepts connections. Its directory is under
// os.TempDir(), made reachable with Share. When the test ends, sshd and
// every process under it (connections and their sessions) are killed and
// waited for, and sshd's log is printed if the test failed. Should the test
// process die before that, sshd gets SIGKILL from the kernel (sessions and
// accounts then stay behind).
func Start(t testing.TB) *Server {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("sshtest: running sshd with throwaway accounts needs root")
	}
	for _, tool := range []struct{ path, pkg string }{{SSHD, "openssh-server"}, {"/usr/bin/ssh-keygen", "openssh-client"}, {"/usr/bin/ssh", "openssh-client"}} {
		if _, err := os.Stat(tool.path); err != nil {
			t.Fatalf("sshtest: %s is missing: make deps installs it (Debian package %s)", tool.path, tool.pkg)
		}
	}
	dir, err := os.MkdirTemp("", "sshtest-")
	if err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if !safePath.MatchString(dir) {
		// sshd_config splits values on blanks and expands %.
		t.Fatalf("sshtest: %s holds characters sshd_config would misread: set TMPDIR to a path of letters, digits and /._+-", dir)
	}
	// The accounts reach their authorized keys and homes through dir.
	Share(t, dir)
	s := &Server{dir: dir, log: filepath.Join(dir, "sshd.log"), knownHosts: filepath.Join(dir, "known_hosts")}
	keys := filepath.Join(dir, "keys")
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{keys, 0o700}, {s.authorized(), 0o755}, {filepath.Join(dir, "home"), 0o755}} {
		if err := os.Mkdir(d.path, d.mode); err != nil {
			t.Fatalf("sshtest: %v", err)
		}
	}
	hostKey := filepath.Join(keys, "host")
	s.key = filepath.Join(keys, "client")
	keygen(t, hostKey, "sshtest host")
	keygen(t, s.key, "sshtest client")
	if s.pub, err = os.ReadFile(s.key + ".pub"); err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	s.authorize(t, "root")
	if err := ensurePrivsepDir(); err != nil {
		t.Fatalf("sshtest: %v", err)
	}

	const attempts = 5
	for i := 1; ; i++ {
		err := s.start(hostKey)
		if err == nil {
			break
		}
		if !errors.Is(err, errPortTaken) || i == attempts {
			s.printLog(t)
			t.Fatalf("sshtest: starting sshd: %v", err)
		}
	}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("sshtest: stopping sshd: %v", err)
		}
		if t.Failed() {
			s.printLog(t)
		}
	})

	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err == nil {
		err = os.WriteFile(s.knownHosts, fmt.Appendf(nil, "[%s]:%d %s", Host, s.port, hostPub), 0o644)
	}
	if err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	return s
}

// safePath is what a path in sshd_config may hold here.
var safePath = regexp.MustCompile(`^[A-Za-z0-9/._+-]+$`)

// errPortTaken: another process took the port between its choice and sshd's
// bind.
var errPortTaken = errors.New("port taken")

// start runs sshd once at a port that was free a moment ago and waits until
// it listens.
func (s *Server) start(hostKey string) error {
	l, err := net.Listen("tcp", Host+":0")
	if err != nil {
		return fmt.Errorf("finding a free port: %w", err)
	}
	s.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	config := filepath.Join(s.dir, "sshd_config")
	if err := os.WriteFile(config, []byte(s.config(hostKey)), 0o644); err != nil {
		return err
	}
	logf, err := os.OpenFile(s.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	before, _ := logf.Seek(0, 2)
	cmd := exec.Command(SSHD, "-D", "-e", "-f", config)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	// Its own process group, killed with the test process if that dies
	// before its cleanup could run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	listening := fmt.Sprintf("Server listening on %s port %d.", Host, s.port)
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case err := <-done:
			if bytes.Contains(s.readLog(before), []byte("Address already in use")) {
				return errPortTaken
			}
			return fmt.Errorf("sshd exited at start (%v); its log says why", err)
		case <-time.After(5 * time.Millisecond):
		}
		if bytes.Contains(s.readLog(before), []byte(listening)) {
			break
		}
		if time.Now().After(deadline) {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
			return fmt.Errorf("sshd did not listen on port %d within 15s", s.port)
		}
	}
	s.cmd, s.done = cmd, done
	// sshd logs this probe as a connection closed before key exchange.
	c, err := net.DialTimeout("tcp", net.JoinHostPort(Host, strconv.Itoa(s.port)), 10*time.Second)
	if err != nil {
		return fmt.Errorf("sshd said it listens but refuses connections: %w", err)
	}
	return c.Close()
}

func (s *Server) config(hostKey string) string {
	return fmt.Sprintf(`ListenAddress %s:%d
HostKey %s
PidFile none
AuthorizedKeysFile %s/%%u
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
Subsystem sftp %s
LogLevel VERBOSE
# Tests may open many connections at once; the default (10:30:100) drops
# some of them at random.
MaxStartups 100
`, Host, s.port, hostKey, s.authorized(), SFTPServer)
}

// stop kills every process under sshd, children before their parents (the
// connections' processes leave sshd's process group: each calls setsid),
// then sshd's process group, and waits for sshd.
func (s *Server) stop() error {
	pid := s.cmd.Process.Pid
	err := killBottomUp(func(tbl map[int]proc) map[int]bool { return descendants(tbl, pid) }, 10*time.Second)
	syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-pid, syscall.SIGKILL)
		<-s.done
	}
	return err
}

func (s *Server) readLog(from int64) []byte {
	b, _ := os.ReadFile(s.log)
	if from <= int64(len(b)) {
		b = b[from:]
	}
	return b
}

func (s *Server) printLog(t testing.TB) {
	t.Helper()
	t.Logf("sshd log (%s):\n%s", s.log, s.readLog(0))
}

func (s *Server) authorized() string { return filepath.Join(s.dir, "authorized") }

// authorize lets the client key log in as name.
func (s *Server) authorize(t testing.TB, name string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(s.authorized(), name), s.pub, 0o644); err != nil {
		t.Fatalf("sshtest: authorizing the client key for %s: %v", name, err)
	}
}

func keygen(t testing.TB, path, comment string) {
	t.Helper()
	out, err := exec.Command("/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path).CombinedOutput()
	if err != nil {
		t.Fatalf("sshtest: ssh-keygen %s: %v\n%s", path, err, out)
	}
}

// ensurePrivsepDir creates /run/sshd (root's, mode 0755) unless it exists.
func ensurePrivsepDir() error {
	if err := os.Mkdir(privsepDir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("creating sshd's privilege separation directory: %w", err)
	}
	return nil
}

// accounts serializes useradd and userdel within this process; between
// processes, their own lock on /etc/passwd does.
var accounts sync.Mutex

// AddUser creates a throwaway unix account (named outest and 6 random hex
// digits, with a group of its name) whose login shell is shell (an absolute
// path; it need not be listed in /etc/shells), whose home is a fresh
// directory of its own (mode 0700) and whose password field is "*": no
// password, but not locked. The client key may log in as it. When the test
// ends, every process of the account is killed and the account deleted
// (userdel); a failure there fails the test. It returns the account's name.
func (s *Server) AddUser(t testing.TB, shell string) string {
	t.Helper()
	if !filepath.IsAbs(shell) {
		t.Fatalf("sshtest: the login shell %q is not an absolute path", shell)
	}
	var b [3]byte
	rand.Read(b[:])
	name := "outest" + hex.EncodeToString(b[:])
	home := filepath.Join(s.dir, "home", name)

	accounts.Lock()
	out, err := exec.Command("useradd", "--no-create-home", "--home-dir", home, "--shell", shell,
		"--password", "*", "--user-group", "--no-log-init", "--comment", "sshtest account", name).CombinedOutput()
	accounts.Unlock()
	if err != nil {
		t.Fatalf("sshtest: useradd %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		if err := deleteUser(name); err != nil {
			t.Errorf("sshtest: %v", err)
		}
	})

	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	if err := os.Chown(home, uid, gid); err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	s.authorize(t, name)
	return name
}

// deleteUser kills every process of the account, then deletes it.
func deleteUser(name string) error {
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("deleting account %s: %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	err = killBottomUp(func(tbl map[int]proc) map[int]bool {
		sel := map[int]bool{}
		for pid, p := range tbl {
			for _, id := range p.uids {
				if id == uid {
					sel[pid] = true
				}
			}
		}
		return sel
	}, 10*time.Second)
	if err != nil {
		return fmt.Errorf("killing the processes of account %s: %w", name, err)
	}
	accounts.Lock()
	out, err := exec.Command("userdel", name).CombinedOutput()
	accounts.Unlock()
	if err != nil {
		return fmt.Errorf("userdel %s: %w\n%s", name, err, out)
	}
	return nil
}

// Port is the port the server listens on (at Host).
func (s *Server) Port() int { return s.port }

// SSHArgs are the options of ssh(1) that reach this server
// non-interactively and with nothing of the caller's own configuration:
// no ssh_config (-F /dev/null), only the harness's client key, no agent's
// keys, no prompt (BatchMode), the server's host key as the only known one
// (strict checking), a 10 s connection timeout and the server's port. A
// destination follows them: root@127.0.0.1 or NAME@127.0.0.1. Each call
// returns a new slice.
func (s *Server) SSHArgs() []string {
	return []string{
		"-F", "/dev/null",
		"-i", s.key,
		"-o", "IdentitiesOnly=yes",
		"-o", "BatchMode=yes",
		"-o", "UserKnownHostsFile=" + s.knownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "ConnectTimeout=10",
		"-p", strconv.Itoa(s.port),
	}
}

// SSHCommand is "ssh" followed by SSHArgs, quoted for sh: what a variable
// like GIT_SSH_COMMAND holds, to which a shell appends the destination and
// the command.
func (s *Server) SSHCommand() string {
	words := []string{"ssh"}
	for _, a := range s.SSHArgs() {
		words = append(words, client.ShellQuote(a))
	}
	return strings.Join(words, " ")
}

// Share makes dir reachable by every account, so that a throwaway account
// can read the test's files: Go creates t.TempDir() and its parent with mode
// 0700. It adds o+x (search, not listing) to os.TempDir() and to each
// directory from there down to dir's parent, and o+rx to dir itself; files
// and directories inside dir keep their modes (0644 and 0755 under the usual
// umask). dir must be os.TempDir() or below it. Directories above
// os.TempDir() are not changed: the test fails if one of them is not o+x,
// with a note to choose another TMPDIR. The modes stay as they are after the
// test.
func Share(t testing.TB, dir string) {
	t.Helper()
	tmp, err := filepath.EvalSymlinks(os.TempDir())
	if err == nil {
		dir, err = filepath.EvalSymlinks(dir)
	}
	if err != nil {
		t.Fatalf("sshtest.Share: %v", err)
	}
	rel, err := filepath.Rel(tmp, dir)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		t.Fatalf("sshtest.Share: %s is not below os.TempDir() (%s)", dir, tmp)
	}
	for p := filepath.Dir(tmp); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("sshtest.Share: %v", err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			t.Fatalf("sshtest.Share: %s (above TMPDIR %s) is not searchable by other accounts (mode %v): set TMPDIR to a directory whose parents are, such as /tmp or /dev/shm", p, tmp, fi.Mode().Perm())
		}
		if p == "/" {
			break
		}
	}
	p := tmp
	steps := []string{}
	if rel != "." {
		steps = strings.Split(rel, "/")
	}
	for i := 0; ; i++ {
		add := os.FileMode(0o001)
		if i == len(steps) {
			add = 0o005
		}
		fi, err := os.Stat(p)
		if err == nil && fi.Mode().Perm()&add != add {
			err = os.Chmod(p, fi.Mode()|add)
		}
		if err != nil {
			t.Fatalf("sshtest.Share: %v", err)
		}
		if i == len(steps) {
			return
		}
		p = filepath.Join(p, steps[i])
	}
}
