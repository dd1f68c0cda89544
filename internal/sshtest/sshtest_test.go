package sshtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// run runs ssh against s with opts, login@127.0.0.1 and args, and returns
// its standard output; the test fails if ssh does.
func run(t *testing.T, s *Server, opts []string, login string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	argv := append(append(append(s.SSHArgs(), opts...), login+"@"+Host), args...)
	cmd := exec.CommandContext(ctx, "ssh", argv...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ssh %s %q: %v\n%s", login, args, err, stderr.Bytes())
	}
	return string(out)
}

// identity tells a live process apart from a later one with its pid: its
// pid, name and start time. ok is false once it has ended (a zombie has).
func identity(pid int) (id string, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", false
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if f[0] == "Z" || f[0] == "X" {
		return "", false
	}
	return string(b[:i+1]) + " started " + f[19], true // field 22: starttime
}

// sshd answers at Port. Root and a throwaway account log in with the client
// key and run commands, through SSHArgs and through SSHCommand. When the test ends, sshd, every
// process under it (including sessions still open) and the account are
// gone, and the clients of those sessions see the connection end.
func TestSSHD(t *testing.T) {
	t.Parallel()
	var (
		dir, name string
		tree      = map[int]string{} // sshd and every process under it
		clients   []chan error
	)
	t.Run("server", func(t *testing.T) {
		s := Start(t)
		dir = s.dir
		c, err := net.Dial("tcp", net.JoinHostPort(Host, strconv.Itoa(s.Port())))
		if err != nil {
			t.Fatal(err)
		}
		banner, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if !strings.HasPrefix(banner, "SSH-2.0-OpenSSH_") {
			t.Errorf("at Port %d: got %q, %v, want an OpenSSH banner", s.Port(), banner, err)
		}
		if got := run(t, s, nil, "root", "echo hello"); got != "hello\n" {
			t.Errorf("root ran echo hello: got %q", got)
		}
		out, err := exec.Command("sh", "-c", s.SSHCommand()+` "$@"`, "sh", "root@"+Host, "echo $((6 * 7))").CombinedOutput()
		if err != nil || string(out) != "42\n" {
			t.Errorf("through SSHCommand (%s): %v, %q", s.SSHCommand(), err, out)
		}

		name = s.AddUser(t, "/bin/sh")
		if got := run(t, s, nil, name, "id -un"); got != name+"\n" {
			t.Errorf("%s ran id -un: got %q", name, got)
		}

		// A session of each account is still running when the test ends.
		for _, login := range []string{"root", name} {
			cmd := exec.Command("ssh", append(s.SSHArgs(), login+"@"+Host, "sleep 300")...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			clients = append(clients, done)
		}
		pid := s.cmd.Process.Pid
		for deadline := time.Now().Add(15 * time.Second); ; {
			tbl, err := procs()
			if err != nil {
				t.Fatal(err)
			}
			below := descendants(tbl, pid)
			sleeps := 0
			for p := range below {
				if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p)); string(comm) == "sleep\n" {
					sleeps++
				}
			}
			if sleeps == 2 {
				below[pid] = true
				for p := range below {
					if id, ok := identity(p); ok {
						tree[p] = id
					}
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the two sessions' sleep never ran under sshd (found %d)", sleeps)
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("sshd and %d processes under it", len(tree)-1)
	})
	if name == "" || len(tree) == 0 {
		t.Fatal("the server's subtest did not get far enough to check its cleanup")
	}

	for pid, id := range tree {
		if now, ok := identity(pid); ok && now == id {
			t.Errorf("process %d is still there after the test: %s", pid, id)
		}
	}
	for i, done := range clients {
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("client %d: ssh succeeded, though its session was killed", i)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("client %d: ssh still runs 10s after its server was stopped", i)
		}
	}
	if out, err := exec.Command("id", name).CombinedOutput(); err == nil {
		t.Errorf("account %s still exists: %s", name, out)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the server's directory %s: %v, want it removed", dir, err)
	}
}

// sshd does not read /etc/shells without PAM: an executable outside it is a
// login shell. It runs every request as SHELL -c COMMAND: a command as the
// client typed it, a subsystem as the configured sftp-server. The shell
// lives in t.TempDir(), which the account reaches through Share.
func TestLoginShellOutsideEtcShells(t *testing.T) {
	t.Parallel()
	s := Start(t)
	dir := t.TempDir()
	shell := filepath.Join(dir, "argv-shell")
	if err := os.WriteFile(shell, []byte("#!/bin/sh\nprintf '[%s]\\n' \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if shells, err := os.ReadFile("/etc/shells"); err == nil && bytes.Contains(shells, []byte(shell)) {
		t.Fatalf("%s is in /etc/shells", shell)
	}
	Share(t, dir)
	name := s.AddUser(t, shell)

	if got, want := run(t, s, nil, name, "ostree-upload ssh-serve '/srv/repo'"), "[-c]\n[ostree-upload ssh-serve '/srv/repo']\n"; got != want {
		t.Errorf("a command: the shell got %q, want %q", got, want)
	}
	if got, want := run(t, s, []string{"-s"}, name, "sftp"), "[-c]\n["+SFTPServer+"]\n"; got != want {
		t.Errorf("the sftp subsystem: the shell got %q, want %q", got, want)
	}
}
