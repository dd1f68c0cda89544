package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// asShell runs the program through a link named ostree-upload-shell, as
// sshd runs a login shell (argv[0] "-ostree-upload-shell" for a login).
func asShell(t *testing.T, login bool, args ...string) (string, error) {
	t.Helper()
	link := filepath.Join(t.TempDir(), shellName)
	if err := os.Symlink(builtBinary(t), link); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(link, args...)
	if login {
		cmd.Args[0] = "-" + shellName
	}
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// The restricted shell runs nothing but the remote end of a push: not an
// interactive login, not another command, not scp or sftp, not a command
// that merely starts like ours.
func TestShellRefuses(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		login bool
		args  []string
		want  string
	}{
		{true, nil, "interactive logins are disabled"},
		{false, []string{"-l"}, "interactive logins are disabled"},
		{false, []string{"-c", "ls /"}, `refusing to run "ls /"`},
		{false, []string{"-c", "scp -t /srv/repo"}, "refusing to run"},
		{false, []string{"-c", "/usr/lib/openssh/sftp-server"}, "refusing to run"},
		{false, []string{"-c", "ostree-upload receive -c /etc/x"}, "refusing to run"},
		{false, []string{"-c", "ostree-upload ssh-serve /srv/repo; rm -rf /"}, "refusing to run"},
		{false, []string{"-c", "ostree-upload ssh-serve --config=/tmp/mine.yaml /srv/repo"}, "refusing to run"},
		{false, []string{"-c", "/opt/bin/ostree-upload ssh-serve -- /srv/nothing-here"}, "no OSTree repository at /srv/nothing-here"},
		{false, []string{"-c", "ostree-upload 'unterminated"}, "unterminated single quote"},
		{false, []string{"-x", "ls"}, "unexpected arguments"},
	} {
		out, err := asShell(t, c.login, c.args...)
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitFail || !strings.Contains(out, c.want) {
			t.Errorf("shell %q: %v\n%s\nwant exit 1 and %q", c.args, err, out, c.want)
		}
	}
	// The subcommand refuses an interactive use as the link does.
	out, err := exec.Command(builtBinary(t), "shell").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "interactive logins are disabled") {
		t.Errorf("ostree-upload shell: %v\n%s", err, out)
	}
}

// What the client may send through sshd (AcceptEnv, ~/.ssh/environment)
// does not reach ssh-serve: it could name another configuration.
func TestShellEnvironment(t *testing.T) {
	got := shellEnv([]string{"HOME=/home/o", "OSTREE_UPLOAD_CONF=/tmp/evil.yaml", "OSTREE_RECEIVE_CONF=/tmp/x", "XDG_CONFIG_HOME=/tmp",
		"LD_PRELOAD=/tmp/x.so", "LC_ALL=C", "SSH_CONNECTION=1 2 3 4", "PATH=/bin", "USER=o"}, "/bin:/opt/bin")
	want := []string{"PATH=/bin:/opt/bin", "HOME=/home/o", "LC_ALL=C", "SSH_CONNECTION=1 2 3 4", "USER=o"}
	if !slices.Equal(got, want) {
		t.Errorf("shellEnv = %q, want %q", got, want)
	}
}
