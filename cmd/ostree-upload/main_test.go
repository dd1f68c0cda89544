package main

import (
	"bytes"
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
		{[]string{"upload", "--help"}, exitOK, "Aliases: [upload]"},
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
