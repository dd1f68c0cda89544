package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

func TestExitCodes(t *testing.T) {
	cases := []struct {
		args []string
		code int
		out  string // expected in stdout+stderr
	}{
		{nil, exitUsage, "Commands:"},
		{[]string{"--help"}, exitOK, "gentoken"},
		{[]string{"nope"}, exitUsage, `unknown command "nope"`},
		{[]string{"version"}, exitOK, "ostree-upload "},
		{[]string{"--version"}, exitOK, "ostree-upload "},
		{[]string{"push", "--help"}, exitOK, "--branch"},
		{[]string{"push", "--help"}, exitOK, "Aliases: upload\n"},
		{[]string{"upload", "--help"}, exitOK, "upload is an alias of push."},
		{[]string{"push", "--bogus"}, exitUsage, "unknown flag: --bogus"},
		{[]string{"version", "extra"}, exitUsage, `unexpected argument "extra"`},
	}
	for _, c := range cases {
		var out bytes.Buffer
		if got := run(c.args, &out, &out); got != c.code {
			t.Errorf("%v: exit %d, want %d (%s)", c.args, got, c.code, out.String())
		}
		if !strings.Contains(out.String(), c.out) && c.args != nil && c.args[0] != "version" && c.args[0] != "--version" {
			t.Errorf("%v: output %q lacks %q", c.args, out.String(), c.out)
		}
	}
}

// Every command explains itself with examples.
func TestHelpHasExamples(t *testing.T) {
	for _, c := range commands {
		var out bytes.Buffer
		if code := run([]string{c.name, "--help"}, &out, &out); code != exitOK {
			t.Errorf("%s --help: exit %d", c.name, code)
		}
		help := out.String()
		_, examples, _ := strings.Cut(help, "\nExamples:\n")
		for _, want := range []string{c.summary, "Usage:\n  ostree-upload " + c.name} {
			if !strings.Contains(help, want) {
				t.Errorf("%s --help lacks %q:\n%s", c.name, want, help)
			}
		}
		if !strings.Contains(examples, "  ostree-upload "+c.name) {
			t.Errorf("%s --help has no example of it:\n%s", c.name, help)
		}
	}
}

func TestVersion(t *testing.T) {
	savedV, savedC := version, commit
	defer func() { version, commit = savedV, savedC }()
	version, commit = "1.2.3", "0123456789ab"
	code, stdout, _ := runCmd(t, "version")
	if code != exitOK || !strings.HasPrefix(stdout, "ostree-upload 1.2.3 (commit 0123456789ab, go1.") {
		t.Errorf("version: exit %d, %q", code, stdout)
	}
}

// upload, the command name of lirios/ostree-upload, is push under another
// name: its help and its errors say the name the user typed, and that it
// is push.
func TestAliasSaysItsName(t *testing.T) {
	t.Parallel()
	bin := builtBinary(t)
	out, err := exec.Command(bin, "upload", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("upload --help: %v\n%s", err, out)
	}
	help := string(out)
	for _, want := range []string{pushCmd.summary + "\n", "Usage:\n  ostree-upload upload [OPTIONS] [DESTINATION]\n", "\nupload is an alias of push.\n", "--branch"} {
		if !strings.Contains(help, want) {
			t.Errorf("upload --help lacks %q:\n%s", want, help)
		}
	}
	if strings.Contains(help, "ostree-upload push [OPTIONS] [DESTINATION]") {
		t.Errorf("upload --help shows push's usage line:\n%s", help)
	}
	out, err = exec.Command(bin, "upload", "--bogus").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitUsage {
		t.Fatalf("upload --bogus: %v, want exit %d", err, exitUsage)
	}
	if want := "ostree-upload upload: unknown flag: --bogus\nRun 'ostree-upload upload --help' for usage.\n"; string(out) != want {
		t.Errorf("upload --bogus says %q, want %q", out, want)
	}
}
