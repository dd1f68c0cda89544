package client

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Destinations are ostree-push's: ssh:// URLs and scp's user@host:path.
func TestParseSSH(t *testing.T) {
	for _, c := range []struct {
		in   string
		want SSHDestination
	}{
		{"ssh://ostree@prod.example.com/srv/repo", SSHDestination{User: "ostree", Host: "prod.example.com", Path: "/srv/repo"}},
		{"ssh://prod.example.com:2222/srv/repo", SSHDestination{Host: "prod.example.com", Port: 2222, Path: "/srv/repo"}},
		{"ssh://[::1]:22/repo", SSHDestination{Host: "::1", Port: 22, Path: "/repo"}},
		{"ostree@prod:/srv/repo", SSHDestination{User: "ostree", Host: "prod", Path: "/srv/repo"}},
		{"prod:repo", SSHDestination{Host: "prod", Path: "repo"}},
		{"[::1]:srv/repo", SSHDestination{Host: "::1", Path: "srv/repo"}},
	} {
		got, ok, err := ParseSSH(c.in)
		if err != nil || !ok || got != c.want {
			t.Errorf("ParseSSH(%q) = %+v, %v, %v; want %+v", c.in, got, ok, err, c.want)
		}
	}
	for _, in := range []string{"http://localhost:8080", "https://ostree.example.com/beta", "repo", "./a/b:c"} {
		if _, ok, err := ParseSSH(in); ok || err != nil {
			t.Errorf("ParseSSH(%q) = %v, %v; want not ssh", in, ok, err)
		}
	}
	for in, want := range map[string]string{
		"ssh://host":                "names no repository path",
		"ssh://host/":               "names no repository path",
		"host:":                     "names no repository path",
		"ssh://u:pw@host/repo":      "no password",
		"ssh://host:99999/repo":     "bad port",
		"-oProxyCommand=evil:/repo": "may not start with '-'",
		"localhost:8080":            "looks like HOST:PORT: a daemon's address is http://localhost:8080",
		"ssh://-oProxyCommand=x/r":  "may not start with '-'",
	} {
		if _, ok, err := ParseSSH(in); !ok || err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseSSH(%q) = %v, %v; want an error with %q", in, ok, err, want)
		}
	}
}

// The remote command survives the remote shell whatever the path holds.
func TestRemoteCommandQuoting(t *testing.T) {
	for _, path := range []string{"/srv/repo", "/srv/it's a repo", "/srv/$(touch /tmp/x)`id`;rm", "rel/dir"} {
		cmd := RemoteCommand("/opt/ostree-upload", path)
		out, err := exec.Command("sh", "-c", "printf '%s\\n' "+strings.TrimPrefix(cmd, "/opt/ostree-upload ")).Output()
		if err != nil || string(out) != "ssh-serve\n"+path+"\n" {
			t.Errorf("%q through sh: %q, %v", cmd, out, err)
		}
	}
}

// A remote that is not ssh-serve is named as such after at most one line
// of 4 KiB, however much it prints.
func TestSSHGreeting(t *testing.T) {
	dir := t.TempDir()
	for name, script := range map[string]string{
		"endless": "head -c 10000000 /dev/zero | tr '\\0' x; sleep 5",
		"banner":  "echo 'Welcome to prod'; sleep 5",
		"missing": "echo 'sh: 1: ostree-upload: not found' >&2; exit 127",
	} {
		path := dir + "/" + name
		if err := os.WriteFile(path, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		c := NewSSH(SSHDestination{Host: "h", Path: "/r"}, SSHOptions{Command: path, Stderr: io.Discard})
		_, err := c.Info(context.Background())
		c.Close()
		var pe *PermanentError
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), "ssh h:/r: the remote command") {
			t.Errorf("%s: %v, want a permanent error naming the remote command", name, err)
		}
	}
}

// ssh's own failure (exit status 255: no route, no login) may pass: it is
// retried as a connection refused is.
func TestSSHFailureIsRetried(t *testing.T) {
	path := t.TempDir() + "/ssh"
	if err := os.WriteFile(path, []byte("#!/bin/sh\necho 'ssh: connect to host h port 22: Connection refused' >&2\nexit 255\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := NewSSH(SSHDestination{Host: "h", Path: "/r"}, SSHOptions{Command: path, Stderr: io.Discard})
	defer c.Close()
	_, err := c.Info(context.Background())
	if err == nil || !Retryable(err) || !strings.Contains(err.Error(), "ssh h:/r failed (exit status 255") {
		t.Errorf("%v (retryable %v), want a retryable ssh failure", err, Retryable(err))
	}
}
