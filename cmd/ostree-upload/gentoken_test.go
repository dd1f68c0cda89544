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
	id, err := config.NewKeyring(cfg.Tokens, nil).Authenticate(secret, time.Now())
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
	k := config.NewKeyring(cfg.Tokens, nil)
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

func TestGentokenRepos(t *testing.T) {
	file := filepath.Join(t.TempDir(), "ostree-upload.yaml")
	code, stdout, stderr := runGentoken(t, "-c", file, "--name", "team", "--repo", "beta", "--repo", "team/*", "--ref", "app/*")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "repositories beta team/*; refs app/*") {
		t.Errorf("stderr %q", stderr)
	}
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	id, err := cfg.Keyring().Authenticate(strings.TrimSuffix(stdout, "\n"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(id.Repos, []string{"beta", "team/*"}) || !id.AllowsRepo("team/x") || id.AllowsRepo("stable") || id.AllowsRepo("") {
		t.Errorf("identity %+v", id)
	}
	before, _ := os.ReadFile(file)
	for _, bad := range []string{"", "be ta"} {
		if code, _, stderr := runGentoken(t, "-c", file, "--repo", bad); code != exitUsage || !strings.Contains(stderr, "--repo") {
			t.Errorf("--repo %q: exit %d, %s", bad, code, stderr)
		}
	}
	if after, _ := os.ReadFile(file); !bytes.Equal(before, after) {
		t.Error("a refused gentoken changed the file")
	}
}

// Without -c, receive and gentoken use the file config.Find finds: here
// ostree-push's, through $OSTREE_RECEIVE_CONF; -c still wins.
func TestConfigSearch(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv("HOME", filepath.Join(dir, "home"))
	t.Setenv("XDG_CONFIG_HOME", "")
	t.Setenv("OSTREE_UPLOAD_CONF", "")
	receiveConf := filepath.Join(dir, "ostree-receive.conf")
	os.WriteFile(receiveConf, []byte("# ostree-push's file\nroot: null\ngpg_verify: no\nupdate: yes\nrepos: {}\nlog_level: INFO\n"), 0o600)
	t.Setenv("OSTREE_RECEIVE_CONF", receiveConf)

	if code, _, stderr := runCmd(t, "receive"); code != exitFail || !strings.Contains(stderr, receiveConf+" has no tokens: add one with: ostree-upload gentoken -c "+receiveConf) {
		t.Errorf("receive: exit %d, %s", code, stderr)
	}
	code, stdout, stderr := runGentoken(t, "--name", "ci")
	if code != exitOK || !strings.Contains(stderr, "added token ci to "+receiveConf) {
		t.Fatalf("gentoken: exit %d, %s", code, stderr)
	}
	cfg, err := config.Load(receiveConf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.Keyring().Authenticate(strings.TrimSuffix(stdout, "\n"), time.Now()); err != nil {
		t.Error(err)
	}
	if content, _ := os.ReadFile(receiveConf); !strings.HasPrefix(string(content), "# ostree-push's file\nroot: null\n") {
		t.Errorf("the file's own lines changed:\n%s", content)
	}

	other := filepath.Join(dir, "other.yaml")
	if code, _, stderr := runGentoken(t, "-c", other); code != exitOK || !strings.Contains(stderr, "to "+other+" (new file)") {
		t.Errorf("gentoken -c: exit %d, %s", code, stderr)
	}

	t.Setenv("OSTREE_UPLOAD_CONF", filepath.Join(dir, "missing.yaml"))
	for _, cmd := range []string{"receive", "gentoken"} {
		if code, _, stderr := runCmd(t, cmd); code != exitFail || !strings.Contains(stderr, "$OSTREE_UPLOAD_CONF names "+filepath.Join(dir, "missing.yaml")) {
			t.Errorf("%s with a missing $OSTREE_UPLOAD_CONF: exit %d, %s", cmd, code, stderr)
		}
	}
}

// receive logs at log_level, or debug with -v.
func TestReceiveLogger(t *testing.T) {
	file := filepath.Join(t.TempDir(), "ostree-upload.yaml")
	os.WriteFile(file, []byte("log_level: WARNING\n"), 0o600)
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	log := receiveLogger(cfg, false, &out)
	log.Info("hidden")
	log.Warn("shown")
	got := out.String()
	if strings.Contains(got, "hidden") || !strings.Contains(got, "msg=shown") {
		t.Errorf("log:\n%s", got)
	}
	out.Reset()
	receiveLogger(cfg, true, &out).Debug("debug")
	if !strings.Contains(out.String(), "msg=debug") {
		t.Errorf("-v: %s", out.String())
	}
}
