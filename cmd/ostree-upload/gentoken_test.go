package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/config"
)

// runGentoken runs gentoken; see runCmd.
func runGentoken(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runCmd(t, append([]string{"gentoken"}, args...)...)
}

// runCmd runs the command line and returns its exit code, standard output
// and standard error. Commands print results on os.Stdout, so it is
// swapped for a file while the command runs.
func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "stdout")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	saved := os.Stdout
	os.Stdout = f
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	os.Stdout = saved
	out, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return code, stdout.String() + string(out), stderr.String()
}

func TestGentoken(t *testing.T) {
	file := filepath.Join(t.TempDir(), "ostree-upload.yaml")
	code, stdout, stderr := runGentoken(t, "-c", file, "--name", "ci", "--ref", "app/*", "--expires", "720h")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	secret := lines[len(lines)-1]
	if len(lines) != 1 || !strings.HasPrefix(secret, "ou_") || !strings.HasSuffix(stdout, "\n") {
		t.Fatalf("stdout %q should be the secret alone", stdout)
	}
	if !strings.Contains(stderr, "added token ci to "+file) || strings.Contains(stderr, secret) ||
		strings.Contains(stderr, auth.Hash(secret)) {
		t.Errorf("stderr %q", stderr)
	}
	content, _ := os.ReadFile(file)
	if strings.Contains(string(content), secret) {
		t.Error("the secret was written to the file")
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode: %v %v", fi, err)
	}

	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	id, err := config.NewKeyring(cfg.Tokens).Authenticate(secret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if id.Name != "ci" || !reflect.DeepEqual(id.Refs, []string{"app/*"}) || id.Hash != auth.Hash(secret) {
		t.Errorf("identity %+v", id)
	}
	if id.Expires == nil || id.Expires.Sub(time.Now()) < 719*time.Hour || id.Expires.Sub(time.Now()) > 721*time.Hour {
		t.Errorf("expires %v", id.Expires)
	}
	if !id.AllowsRef("app/org.x/x86_64/stable") || id.AllowsRef("runtime/org.x/x86_64/stable") {
		t.Error("ref globs not applied")
	}

	// A second, unnamed token without limits goes after the first.
	code, stdout2, stderr := runGentoken(t, "--config", file)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	secret2 := strings.TrimSuffix(stdout2, "\n")
	if now, _ := os.ReadFile(file); !bytes.HasPrefix(now, content) {
		t.Error("the first entry changed")
	}
	cfg, err = config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	k := config.NewKeyring(cfg.Tokens)
	if id, err := k.Authenticate(secret2, time.Now()); err != nil || id.Name != "" || id.Expires != nil || !id.AllowsRef("x") {
		t.Errorf("second token: %+v, %v", id, err)
	}
	if _, err := k.Authenticate(secret, time.Now()); err != nil {
		t.Errorf("first token: %v", err)
	}
}

func TestGentokenErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "ostree-upload.yaml")
	if code, _, stderr := runGentoken(t, "-c", file, "--name", "ci"); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	before, _ := os.ReadFile(file)

	invalid := filepath.Join(dir, "invalid.yaml")
	os.WriteFile(invalid, []byte("repo: r\nlisten: x\n"), 0o600)

	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"-c", file, "--name", "ci"}, exitFail, `already has a token named "ci"`},
		{[]string{"-c", file, "--expires", "soon"}, exitUsage, "--expires"},
		{[]string{"-c", file, "--expires", "-1h"}, exitUsage, "must not be negative"},
		{[]string{"-c", file, "--ref", "app/ x"}, exitUsage, "--ref"},
		{[]string{"-c", file, "--ref", ""}, exitUsage, "--ref"},
		{[]string{"-c", file, "--name", "a\nb"}, exitUsage, "--name"},
		{[]string{"-c", file, "extra"}, exitUsage, `unexpected argument "extra"`},
		{[]string{"-c", invalid}, exitFail, invalid + ":2: listen: unknown key"},
		{[]string{"-c", filepath.Join(dir, "no", "such", "dir.yaml")}, exitFail, "no such file"},
	}
	for _, c := range cases {
		code, stdout, stderr := runGentoken(t, c.args...)
		if code != c.code || !strings.Contains(stderr, c.msg) || stdout != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit %d and %q", c.args, code, stdout, stderr, c.code, c.msg)
		}
	}
	if after, _ := os.ReadFile(file); !bytes.Equal(before, after) {
		t.Error("a failed gentoken changed the file")
	}
	if after, _ := os.ReadFile(invalid); string(after) != "repo: r\nlisten: x\n" {
		t.Error("a failed gentoken changed the invalid file")
	}
}

func TestGentokenHelp(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"gentoken", "--help"}, &out, &out); code != exitOK {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"--config", "--name", "--ref", "--expires", "--verbose", "Examples:", "gentoken -c /etc/ostree-upload.yaml --name ci --ref 'app/*'"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, out.String())
		}
	}
}
