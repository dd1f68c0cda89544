package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/ostree-upload/ostree-upload/config"
)

var shellCmd = &command{
	name:    "shell",
	summary: "Login shell of an account that only receives pushes over ssh",
	usage:   "-c COMMAND",
	example: `  Make it the login shell of the accounts that push (as git-shell is for
  git), through a link named ostree-upload-shell:
    ln -s /usr/local/bin/ostree-upload /usr/local/bin/ostree-upload-shell
    usermod -s /usr/local/bin/ostree-upload-shell ostree
  sshd then runs it as 'ostree-upload-shell -c COMMAND', which is
    ostree-upload shell -c 'ostree-upload ssh-serve /srv/repo'
  It runs that command (what push sends) and refuses anything else:
  interactive logins, other commands, scp and sftp.`,
	flags: func(fs *pflag.FlagSet) func([]string) error {
		command := fs.StringP("command", "c", "", "the command line sshd passes")
		return func(args []string) error {
			if len(args) > 0 || !fs.Changed("command") {
				return errInteractive
			}
			return shell(*command)
		}
	},
}

// shellName is the name under which the program is a login shell.
const shellName = "ostree-upload-shell"

var errInteractive = errors.New("interactive logins are disabled for this account: it only receives pushes (ostree-upload push … ssh://HOST/PATH)")

// runAsShell runs the program as the login shell ostree-upload-shell
// (argv[0] is its name, with a leading '-' for a login): the arguments are
// a shell's, "-c COMMAND" or none.
func runAsShell(args []string) int {
	var err error
	switch {
	case len(args) == 2 && args[0] == "-c":
		err = shell(args[1])
	case len(args) == 0, len(args) == 1 && (args[0] == "-l" || args[0] == "-i"):
		err = errInteractive
	default:
		err = fmt.Errorf("unexpected arguments %q: sshd runs a login shell with -c COMMAND", args)
	}
	fmt.Fprintf(os.Stderr, "%s: %v\n", shellName, err)
	return exitFail
}

// shell runs command if it is this program's remote end of a push
// (ostree-upload ssh-serve …), replacing the process; it refuses anything
// else. Like ostree-receive-shell, it appends its own directory to PATH.
func shell(command string) error {
	words, err := config.SplitCommand(command)
	if err != nil {
		return fmt.Errorf("refusing %q: %v", command, err)
	}
	if len(words) == 4 && words[2] == "--" {
		words = append(words[:2], words[3])
	}
	if len(words) != 3 || filepath.Base(words[0]) != "ostree-upload" || words[1] != sshServeCmd.name || strings.HasPrefix(words[2], "-") {
		return fmt.Errorf("refusing to run %q: this account only receives pushes (ostree-upload push … ssh://HOST/PATH)", command)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, path := filepath.Dir(self), os.Getenv("PATH")
	if !strings.Contains(":"+path+":", ":"+dir+":") {
		path = strings.TrimPrefix(path+":"+dir, ":")
	}
	return syscall.Exec(self, []string{"ostree-upload", sshServeCmd.name, "--", words[2]}, shellEnv(os.Environ(), path))
}

// shellEnv is the environment the shell gives ssh-serve: only what sshd
// sets for a login (and the locale), so that nothing the client may send
// through sshd's AcceptEnv or ~/.ssh/environment (OSTREE_UPLOAD_CONF,
// XDG_CONFIG_HOME, LD_PRELOAD, …) chooses the configuration or the code
// that runs; PATH is path.
func shellEnv(env []string, path string) []string {
	out := []string{"PATH=" + path}
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case name == "HOME", name == "USER", name == "LOGNAME", name == "SHELL", name == "TZ", name == "LANG",
			strings.HasPrefix(name, "LC_"), strings.HasPrefix(name, "SSH_"):
			out = append(out, kv)
		}
	}
	return out
}
