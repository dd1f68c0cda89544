package config

import (
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/auth"
)

// noDefaultKeyrings points the keyring and file lookups at empty
// directories for the test; it returns them.
func noDefaultKeyrings(t *testing.T) (home, etc string) {
	t.Helper()
	dir := t.TempDir()
	home, etc = filepath.Join(dir, "home"), filepath.Join(dir, "etc")
	savedEtc, savedHome := sysconfDir, homeDir
	t.Cleanup(func() { sysconfDir, homeDir = savedEtc, savedHome })
	sysconfDir = etc
	homeDir = func() (string, error) { return home, nil }
	t.Setenv("XDG_CONFIG_HOME", "")
	return home, etc
}

// touch creates path and its directories.
func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// ostreeInit makes an archive repository at dir.
func ostreeInit(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ostree", "init", "--repo="+dir, "--mode=archive").CombinedOutput(); err != nil {
		t.Fatalf("ostree init %s: %v\n%s", dir, err, out)
	}
}

func needOstree(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("ostree"); err != nil {
		t.Skip("the ostree command is not installed")
	}
}

func repoNames(repos []Repository) []string {
	var names []string
	for _, r := range repos {
		names = append(names, r.Name)
	}
	return names
}

// A file in the shape of ostree-push's example, every key at its default,
// loads as the defaults: one repository, named "".
func TestOstreeReceiveConf(t *testing.T) {
	noDefaultKeyrings(t)
	cfg, err := Load("testdata/ostree-receive.conf")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Errorf("got  %+v\nwant %+v", cfg, Default())
	}
	if cfg.LogLevel != slog.LevelInfo || cfg.Root != "" || cfg.Repos != nil || cfg.Accounts != nil {
		t.Errorf("log level %v, root %q, repos %v, accounts %v", cfg.LogLevel, cfg.Root, cfg.Repos, cfg.Accounts)
	}
	repos, err := cfg.Repositories()
	if err != nil {
		t.Fatal(err)
	}
	if len(repos) != 1 || repos[0].Name != "" || !reflect.DeepEqual(repos[0].Config, Default()) {
		t.Fatalf("Repositories() = %+v", repos)
	}
	if repos[0].Config == cfg {
		t.Error("the repository's Config is the file's")
	}
	// The same file with a key left out of every repository's reach.
	if _, err := Load(writeFile(t, "repo: /srv/repo\nrepos: {}\nroot: ''\n")); err != nil {
		t.Errorf("repo with an empty repos and root: %v", err)
	}
}

// ostree-push's example of repos: each entry overrides its keys for its
// repository and nothing else.
func TestOstreeReceiveRepos(t *testing.T) {
	noDefaultKeyrings(t)
	root := t.TempDir()
	example, err := os.ReadFile("testdata/ostree-receive-repos.conf")
	if err != nil {
		t.Fatal(err)
	}
	path := writeFile(t, strings.ReplaceAll(string(example), "ROOT", root)+
		"tokens:\n- token: a\n  refs: [\"app/*\"]\n  expires: 2030-01-01\n")
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Root != root || len(cfg.Repos) != 2 {
		t.Fatalf("root %q, repos %v", cfg.Root, cfg.Repos)
	}
	if want := (Overrides{"gpg_sign": []string{"76543210"}}); !reflect.DeepEqual(cfg.Repos["foo"], want) {
		t.Errorf("repos.foo = %#v", cfg.Repos["foo"])
	}
	if want := (Overrides{"update": false}); !reflect.DeepEqual(cfg.Repos[root+"/path/to/bar"], want) {
		t.Errorf("repos bar = %#v", cfg.Repos[root+"/path/to/bar"])
	}
	repos, err := cfg.Repositories()
	if err != nil {
		t.Fatal(err)
	}
	if got := repoNames(repos); !slices.Equal(got, []string{"foo", "path/to/bar"}) {
		t.Fatalf("names %q", got)
	}
	foo, bar := repos[0].Config, repos[1].Config
	base := cfg.clone()
	base.Root, base.Repos = "", nil

	want := base.clone()
	want.Repo, want.GPGSign = filepath.Join(root, "foo"), []string{"76543210"}
	if !reflect.DeepEqual(foo, want) {
		t.Errorf("foo:\n got %+v\nwant %+v", foo, want)
	}
	want = base.clone()
	want.Repo, want.Update = filepath.Join(root, "path/to/bar"), false
	if !reflect.DeepEqual(bar, want) {
		t.Errorf("bar:\n got %+v\nwant %+v", bar, want)
	}

	// Each Config is a copy of its own: changing one changes nothing else.
	again, _ := cfg.Repositories()
	for _, r := range repos {
		r.Config.GPGSign[0] = "changed"
		r.Config.Tokens[0].Refs[0] = "changed"
		*r.Config.Tokens[0].Expires = time.Time{}
	}
	if third, _ := cfg.Repositories(); !reflect.DeepEqual(again, third) {
		t.Error("changing a repository's Config changed another's")
	}
	if cfg.GPGSign[0] != "01234567" || cfg.Tokens[0].Refs[0] != "app/*" || cfg.Repos["foo"]["gpg_sign"].([]string)[0] != "76543210" {
		t.Error("changing a repository's Config changed the file's")
	}
}

// No slice, map or pointer of a repository's Config is shared with the
// configuration or another repository; checked over every field so that
// a new field cannot forget it.
func TestRepositoriesDeepCopy(t *testing.T) {
	noDefaultKeyrings(t)
	root := t.TempDir()
	exp := time.Now()
	c := Default()
	c.Root = root
	c.Repos = map[string]Overrides{"a": {"sign_keyfiles": []string{"/k"}}, "b": nil}
	c.GPGSign, c.SignKeyfiles, c.UpdateHook, c.CheckHook = []string{"A"}, []string{"/k0"}, Command{"hook"}, Command{"check"}
	p, _ := ParsePrefix("10.0.0.0/8")
	c.TrustedProxies = []netip.Prefix{p}
	c.Accounts = []Account{{User: "alice", Repos: []string{"a"}, Refs: []string{"r"}, Scopes: []string{auth.ScopeUpload}}}
	c.Tokens = []Token{{SHA256: strings.Repeat("ab", 32), Repos: []string{"a"}, Refs: []string{"r"}, Scopes: []string{auth.ScopeUpload}, Expires: &exp}}
	repos, err := c.Repositories()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uintptr]string{}
	var walk func(v reflect.Value, where string)
	walk = func(v reflect.Value, where string) {
		switch v.Kind() {
		case reflect.Slice, reflect.Map, reflect.Pointer:
			if v.IsNil() || v.Kind() == reflect.Slice && v.Len() == 0 {
				return
			}
			if other, dup := seen[v.Pointer()]; dup {
				t.Errorf("%s shares its memory with %s", where, other)
			}
			seen[v.Pointer()] = where
			if v.Kind() == reflect.Pointer {
				walk(v.Elem(), where+"*")
			}
			if v.Kind() == reflect.Slice {
				for i := range v.Len() {
					walk(v.Index(i), where+"[]")
				}
			}
		case reflect.Struct:
			if v.Type().PkgPath() != reflect.TypeFor[Config]().PkgPath() {
				return // a value of another package (time.Time, netip.Prefix)
			}
			for i := range v.NumField() {
				walk(v.Field(i), where+"."+v.Type().Field(i).Name)
			}
		}
	}
	walk(reflect.ValueOf(c).Elem(), "file")
	for _, r := range repos {
		walk(reflect.ValueOf(r.Config).Elem(), r.Name)
	}
}

// Repositories under root: listed ones, and those found there at start.
func TestDiscovery(t *testing.T) {
	needOstree(t)
	noDefaultKeyrings(t)
	root := t.TempDir()
	for _, r := range []string{"a", "group/b", "group/c/d/e", "api", "metrics", "x/y/z/w/deep", ".hidden/r", "group/.h", "a/inner", "state-a/spools/0f"} {
		ostreeInit(t, filepath.Join(root, r))
	}
	if err := os.MkdirAll(filepath.Join(root, "plain/dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Symbolic links are not followed: they could lead out of root.
	outside := t.TempDir()
	ostreeInit(t, filepath.Join(outside, "secret"))
	os.Symlink(outside, filepath.Join(root, "link"))
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "linked-repo"))
	os.Symlink("/", filepath.Join(root, "slash"))
	cfg, err := Load(writeFile(t, "root: "+root+"\nrepos:\n  a:\n    state_dir: "+filepath.Join(root, "state-a")+"\n  new/one: {update: no}\n"))
	if err != nil {
		t.Fatal(err)
	}
	repos, err := cfg.Repositories()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a", "api", "group/b", "group/c/d/e", "metrics", "new/one"}
	if got := repoNames(repos); !slices.Equal(got, want) {
		t.Errorf("names %q, want %q", got, want)
	}
	for _, r := range repos {
		if r.Config.Repo != filepath.Join(root, r.Name) || r.Config.Root != "" || r.Config.Repos != nil {
			t.Errorf("%s: repo %q, root %q, repos %v", r.Name, r.Config.Repo, r.Config.Root, r.Config.Repos)
		}
		if r.Config.Update != (r.Name != "new/one") {
			t.Errorf("%s: update %v", r.Name, r.Config.Update)
		}
	}

	// root without repositories; root a repository itself; a repository
	// whose name cannot be served.
	empty := t.TempDir()
	ostreeInit(t, filepath.Join(empty, "a/b/c/d/e"))
	cfg, _ = Load(writeFile(t, "root: "+empty+"\n"))
	if _, err := cfg.Repositories(); err == nil || !strings.Contains(err.Error(), "root "+empty+": no OSTree repository found") {
		t.Errorf("empty root: %v", err)
	}
	cfg, _ = Load(writeFile(t, "root: "+filepath.Join(root, "group/b")+"\n"))
	if _, err := cfg.Repositories(); err == nil || !strings.Contains(err.Error(), "is itself an OSTree repository") {
		t.Errorf("root a repository: %v", err)
	}
	cfg, _ = Load(writeFile(t, "root: "+filepath.Join(root, "missing")+"\n"))
	if _, err := cfg.Repositories(); err == nil || !strings.Contains(err.Error(), filepath.Join(root, "missing")) {
		t.Errorf("missing root: %v", err)
	}
	ostreeInit(t, filepath.Join(root, "my repo"))
	cfg, _ = Load(writeFile(t, "root: "+root+"\n"))
	if _, err := cfg.Repositories(); err == nil || !strings.Contains(err.Error(), "my repo") {
		t.Errorf("a repository named with a blank: %v", err)
	}
}

// Two repositories in one state dir cannot work: said at once.
func TestSharedStateDir(t *testing.T) {
	noDefaultKeyrings(t)
	root := t.TempDir()
	cfg, err := Load(writeFile(t, "root: "+root+"\nstate_dir: /srv/state\nrepos:\n  a: {}\n  b: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.Repositories(); err == nil || !strings.Contains(err.Error(), `repositories "a" and "b" have the same state_dir`) {
		t.Errorf("shared state dir: %v", err)
	}
	cfg, _ = Load(writeFile(t, "root: "+root+"\nstate_dir: /srv/state\nrepos:\n  a: {}\n  b: {state_dir: /srv/state-b}\n"))
	if _, err := cfg.Repositories(); err != nil {
		t.Error(err)
	}
}

func TestRepoNames(t *testing.T) {
	for key, want := range map[string]string{
		"a": "a", "a/b": "a/b", "./a//b/": "a/b", "a/../b": "b", "/r/x/y": "x/y", "/r/../r/z": "z",
		"api": "api", "metrics": "metrics", "v1/api": "v1/api", "a/api": "a/api", "a/v1": "a/v1",
		"A-b_c.d+e": "A-b_c.d+e", "1": "1",
	} {
		if got, err := repoName("/r", key); err != nil || got != want {
			t.Errorf("repoName(%q) = %q, %v; want %q", key, got, err, want)
		}
	}
	for key, msg := range map[string]string{
		"": "empty", ".": "root itself", "/r": "root itself", "/r/": "root itself",
		"..": "not under root", "../x": "not under root", "/x": "not under root", "/rx/a": "not under root",
		".a": "starting with '.'", "--prune": "starting with '-'", "a/-x": "starting with '-'", "a/.b": "starting with '.'", "a b": "letters, digits", "é": "letters, digits",
		"api/v1": "api/v1", "a/api/v1": "api/v1", "a/api/v1/b": "api/v1", "a:b": "letters, digits",
	} {
		if got, err := repoName("/r", key); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("repoName(%q) = %q, %v; want an error with %q", key, got, err, msg)
		}
	}
	// A relative root: absolute paths are compared with it made absolute.
	wd, _ := os.Getwd()
	if got, err := repoName("rel", filepath.Join(wd, "rel/x")); err != nil || got != "x" {
		t.Errorf("relative root: %q, %v", got, err)
	}
}

// Each bad file fails with its line and the key, inside repos entries too.
func TestReposStrict(t *testing.T) {
	type strictCase struct {
		name, content string
		line          int
		key, msg      string
	}
	cases := []strictCase{
		{"repos without root", "update: no\nrepos:\n  foo: {}\n", 2, "repos", "needs root, the directory the repositories' names are relative to"},
		{"repo and repos", "repo: /srv/repo\nrepos:\n  foo: {}\n", 2, "repos", "and repo (line 1) together"},
		{"repo and root", "repo: /srv/repo\nroot: /srv\n", 2, "root", "and repo (line 1) together"},
		{"root a list", "root: [a]\n", 1, "root", "single value"},
		{"repos a list", "root: /r\nrepos: [a]\n", 2, "repos", "mapping of repository paths"},
		{"entry not a mapping", "root: /r\nrepos:\n  beta: yes\n", 3, "repos.beta", "mapping of keys to values"},
		{"unknown key in an entry", "root: /r\nrepos:\n  beta:\n    update: no\n    gpg_sing: []\n", 5, "repos.beta.gpg_sing", "unknown key"},
		{"bad boolean in an entry", "root: /r\nrepos:\n  beta:\n    update: maybe\n", 4, "repos.beta.update", "must be true or false (or yes/no)"},
		{"bad duration in an entry", "root: /r\nrepos:\n  alpha: {}\n  beta:\n    session_ttl: 0s\n", 5, "repos.beta.session_ttl", "positive"},
		{"bad size in a flow entry", "root: /r\nrepos: {beta: {max_object_size: lots}}\n", 2, "repos.beta.max_object_size", "size"},
		{"sign_type in an entry", "root: /r\nrepos:\n  beta:\n    sign_type: gpg\n", 4, "repos.beta.sign_type", "only ed25519"},
		{"bad update_hook in an entry", "root: /r\nrepos:\n  beta:\n    update_hook: \"'x\"\n", 4, "repos.beta.update_hook", "quote"},
		{"bad check_timeout in an entry", "root: /r\nrepos:\n  beta:\n    check_timeout: soon\n", 4, "repos.beta.check_timeout", "duration"},
		{"duplicate key in an entry", "root: /r\nrepos:\n  beta:\n    update: no\n    update: yes\n", 5, "repos.beta.update", "duplicate key (first on line 4)"},
		{"duplicate path", "root: /r\nrepos:\n  beta: {}\n  beta: {}\n", 4, "repos.beta", "duplicate key (first on line 3)"},
		{"same repository twice", "root: /r\nrepos:\n  beta: {}\n  /r/beta/: {}\n", 4, "repos./r/beta/", `is the repository "beta" again (line 3)`},
		{"absolute path outside root", "root: /r\nrepos:\n  /srv/beta: {}\n", 3, "repos./srv/beta", "not under root /r"},
		{"relative path outside root", "root: /r\n\nrepos:\n  ../beta: {}\n", 4, "repos.../beta", "not under root /r"},
		{"root itself", "root: /r\nrepos:\n  /r: {}\n", 3, "repos./r", "root itself"},
		{"hidden name", "root: /r\nrepos:\n  .beta: {}\n", 3, "repos..beta", "starting with '.'"},
		{"name with a blank", "root: /r\nrepos:\n  my beta: {}\n", 3, "repos.my beta", "letters, digits"},
		{"name with api/v1", "root: /r\nrepos:\n  beta/api/v1: {}\n", 3, "repos.beta/api/v1", "api/v1"},
		{"bad log level", "log_level: LOUD\n", 1, "log_level", "DEBUG, INFO, WARNING, ERROR or CRITICAL"},
		{"force not a boolean", "force: please\n", 1, "force", "true or false"},
		{"dry_run not a boolean in an entry", "root: /r\nrepos:\n  beta:\n    dry_run: 1\n", 4, "repos.beta.dry_run", "true or false"},
		{"quoted yes", "update: 'yes'\n", 1, "update", "true or false"},
	}
	for _, key := range []string{"address", "tokens", "trusted_proxies", "max_connections", "max_connections_per_client", "body_timeout", "log_level", "root", "repos", "repo"} {
		cases = append(cases, strictCase{"daemon-wide " + key, "root: /r\nrepos:\n  beta:\n    update: no\n    " + key + ": x\n", 5, "repos.beta." + key, "is daemon-wide"})
	}
	for _, c := range cases {
		path := writeFile(t, c.content)
		_, err := Load(path)
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("%s: %T %v, want *Error", c.name, err, err)
			continue
		}
		if e.File != path || e.Line != c.line || e.Key != c.key || !strings.Contains(e.Msg, c.msg) {
			t.Errorf("%s: got %q (line %d, key %q), want line %d, key %q, %q", c.name, err, e.Line, e.Key, c.line, c.key, c.msg)
		}
	}
}

// Every YAML 1.1 boolean, as ostree-push's files write them.
func TestYAML11Booleans(t *testing.T) {
	for _, s := range []string{"y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON", "!!bool true"} {
		cfg, err := Load(writeFile(t, "gpg_verify: "+s+"\nupdate: "+s+"\n"))
		if err != nil || !cfg.GPGVerify || !cfg.Update {
			t.Errorf("%s: %v, %v", s, cfg, err)
		}
	}
	for _, s := range []string{"n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"} {
		cfg, err := Load(writeFile(t, "gpg_verify: "+s+"\nupdate: "+s+"\n"))
		if err != nil || cfg.GPGVerify || cfg.Update {
			t.Errorf("%s: %v, %v", s, cfg, err)
		}
	}
	for _, s := range []string{"1", "0", "yEs", "'yes'", `"no"`, "nope", "t", "[yes]", "!!str yes", "|\n  yes"} {
		_, err := Load(writeFile(t, "update: "+s+"\n"))
		if err == nil || !strings.Contains(err.Error(), "must be true or false (or yes/no)") {
			t.Errorf("%s: %v", s, err)
		}
	}
	root := t.TempDir()
	cfg, err := Load(writeFile(t, "root: "+root+"\nrepos:\n  a: {update: No, gpg_verify: ON}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Overrides{"update": false, "gpg_verify": true}); !reflect.DeepEqual(cfg.Repos["a"], want) {
		t.Errorf("repos.a = %#v", cfg.Repos["a"])
	}
}

func TestLogLevel(t *testing.T) {
	for s, want := range map[string]slog.Level{
		"DEBUG": slog.LevelDebug, "debug": slog.LevelDebug, "INFO": slog.LevelInfo, "Info": slog.LevelInfo,
		"WARNING": slog.LevelWarn, "warning": slog.LevelWarn, "warn": slog.LevelWarn, "WARN": slog.LevelWarn,
		"ERROR": slog.LevelError, "error": slog.LevelError, "CRITICAL": slog.LevelError + 4, "critical": slog.LevelError + 4,
		"ERROR+4": slog.LevelError + 4,
	} {
		cfg, err := Load(writeFile(t, "log_level: "+s+"\n"))
		if err != nil || cfg.LogLevel != want {
			t.Errorf("%s: %v, %v; want %v", s, cfg, err, want)
		}
	}
	if cfg, err := Load(writeFile(t, "log_level: null\n")); err != nil || cfg.LogLevel != slog.LevelInfo {
		t.Errorf("null: %v", err)
	}
}

// force and dry_run are ostree-push's YAML booleans, daemon-wide or per
// repository; they act on pushes over ssh.
func TestForceAndDryRun(t *testing.T) {
	root := t.TempDir()
	for _, r := range []string{"alpha", "beta"} {
		ostreeInit(t, filepath.Join(root, r))
	}
	cfg, err := Load(writeFile(t, "force: yes\ndry_run: no\nroot: "+root+"\nrepos:\n  beta:\n    dry_run: On\n    force: false\n"))
	if err != nil {
		t.Fatal(err)
	}
	list, err := cfg.Repositories()
	if err != nil || len(list) != 2 {
		t.Fatalf("repositories %v, %v", list, err)
	}
	alpha, beta := list[0].Config, list[1].Config
	if !alpha.Force || alpha.DryRun || beta.Force || !beta.DryRun {
		t.Errorf("alpha force %v dry_run %v, beta force %v dry_run %v; want true false false true", alpha.Force, alpha.DryRun, beta.Force, beta.DryRun)
	}
}

// ostree-push's default keyrings: ~/.config/ostree first, then /etc/ostree.
func TestDefaultKeyrings(t *testing.T) {
	home, etc := noDefaultKeyrings(t)
	load := func(content string) (*Config, error) {
		t.Helper()
		cfg, err := Load(writeFile(t, content))
		if err != nil {
			t.Fatal(err)
		}
		repos, err := cfg.Repositories()
		if err != nil {
			return nil, err
		}
		return repos[0].Config, nil
	}
	c, err := load("")
	if err != nil || c.GPGTrustedKeys != "" || c.SignTrustedKeyfile != "" {
		t.Errorf("no keyrings: %+v, %v", c, err)
	}
	_, err = load("sign_verify: yes\n")
	if err == nil || !strings.Contains(err.Error(), "sign_verify needs sign_trustedkeyfile") ||
		!strings.Contains(err.Error(), filepath.Join(home, ".config/ostree/ostree-receive-trustedkeyfile.ed25519")) ||
		!strings.Contains(err.Error(), filepath.Join(etc, "ostree/ostree-receive-trustedkeyfile.ed25519")) {
		t.Errorf("sign_verify without keys: %v", err)
	}

	etcGPG, etcSign := filepath.Join(etc, "ostree/ostree-receive-trustedkeys.gpg"), filepath.Join(etc, "ostree/ostree-receive-trustedkeyfile.ed25519")
	touch(t, etcGPG)
	touch(t, etcSign)
	c, err = load("sign_verify: yes\nsign_type: ed25519\n")
	if err != nil || c.GPGTrustedKeys != etcGPG || c.SignTrustedKeyfile != etcSign {
		t.Errorf("/etc: %q %q, %v", c.GPGTrustedKeys, c.SignTrustedKeyfile, err)
	}

	homeGPG, homeSign := filepath.Join(home, ".config/ostree/ostree-receive-trustedkeys.gpg"), filepath.Join(home, ".config/ostree/ostree-receive-trustedkeyfile.ed25519")
	touch(t, homeGPG)
	touch(t, homeSign)
	c, err = load("sign_verify: yes\n")
	if err != nil || c.GPGTrustedKeys != homeGPG || c.SignTrustedKeyfile != homeSign {
		t.Errorf("home: %q %q, %v", c.GPGTrustedKeys, c.SignTrustedKeyfile, err)
	}
	c, err = load("gpg_trustedkeys: /k.gpg\nsign_trustedkeyfile: /k.pub\n")
	if err != nil || c.GPGTrustedKeys != "/k.gpg" || c.SignTrustedKeyfile != "/k.pub" {
		t.Errorf("set in the file: %q %q, %v", c.GPGTrustedKeys, c.SignTrustedKeyfile, err)
	}

	// $XDG_CONFIG_HOME stands for ~/.config, as in ostree-push.
	xdg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", xdg)
	touch(t, filepath.Join(xdg, "ostree/ostree-receive-trustedkeys.gpg"))
	c, err = load("")
	if err != nil || c.GPGTrustedKeys != filepath.Join(xdg, "ostree/ostree-receive-trustedkeys.gpg") || c.SignTrustedKeyfile != etcSign {
		t.Errorf("XDG_CONFIG_HOME: %q %q, %v", c.GPGTrustedKeys, c.SignTrustedKeyfile, err)
	}

	// After the overrides: an entry's keyfile is kept, the others' found.
	root := t.TempDir()
	cfg, err := Load(writeFile(t, "root: "+root+"\nrepos:\n  a: {sign_trustedkeyfile: /a.pub, sign_verify: yes}\n  b: {gpg_trustedkeys: null}\n"))
	if err != nil {
		t.Fatal(err)
	}
	repos, err := cfg.Repositories()
	if err != nil {
		t.Fatal(err)
	}
	if repos[0].Config.SignTrustedKeyfile != "/a.pub" || repos[1].Config.SignTrustedKeyfile != etcSign || repos[1].Config.GPGTrustedKeys == "" {
		t.Errorf("per repository: %+v %+v", repos[0].Config, repos[1].Config)
	}
	if cfg.SignTrustedKeyfile != "" || cfg.GPGTrustedKeys != "" {
		t.Error("Repositories changed the configuration")
	}
}

// Root, repos, log_level and tokens' repos are written and read back.
func TestWriteLoadsBackRepos(t *testing.T) {
	noDefaultKeyrings(t)
	root := t.TempDir()
	c := Default()
	c.Root, c.LogLevel = root, slog.LevelError+4
	c.Repos = map[string]Overrides{
		"a": nil,
		"b/c": {
			"state_dir": "/srv/state-c", "session_ttl": Duration{2 * time.Hour}, "session_retention": nil,
			"max_objects_per_session": 7, "max_object_size": 3 * MiB, "max_pack_size": 5 * MB,
			"max_sessions_per_token": 2, "max_objects_per_token": 9,
			"gpg_sign": []string{"76543210", "ABCD"}, "gpg_homedir": "/gpg", "gpg_verify": true, "gpg_trustedkeys": "/t.gpg",
			"sign_type": "ed25519", "sign_keyfiles": []string{"/k1", "/k 2"}, "sign_verify": true, "sign_trustedkeyfile": "/t.pub",
			"update": false, "update_hook": Command{"sh", "-c", `echo "it's"`},
			"check_hook": Command{"check", "--stable"}, "check_timeout": Duration{time.Minute},
		},
		root + "/d": {"update": nil, "update_hook": nil, "gpg_sign": nil, "check_hook": nil, "check_timeout": nil},
	}
	c.Tokens = []Token{{SHA256: strings.Repeat("cd", 32), Name: "ci", Repos: []string{"b/*", "a"}, Refs: []string{"app/*"}}}
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := c.Write(path); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatalf("%v\n%s", err, readFile(t, path))
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("loaded back\n%#v\nwrote\n%#v\n%s", got, c, readFile(t, path))
	}
	for _, level := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError} {
		c := Default()
		c.LogLevel = level
		b, _ := c.Marshal()
		if got, err := Load(writeFile(t, string(b))); err != nil || got.LogLevel != level {
			t.Errorf("%v: %v, %v", level, got, err)
		}
	}
	// What Repositories makes of it.
	repos, err := got.Repositories()
	if err != nil {
		t.Fatal(err)
	}
	if names := repoNames(repos); !slices.Equal(names, []string{"a", "b/c", "d"}) {
		t.Fatalf("names %q", names)
	}
	bc := repos[1].Config
	if bc.StateDir != "/srv/state-c" || bc.MaxPackSize != 5*MB || !slices.Equal(bc.SignKeyfiles, []string{"/k1", "/k 2"}) || bc.Update ||
		!slices.Equal(bc.UpdateHook, []string{"sh", "-c", `echo "it's"`}) || !bc.GPGVerify || bc.SessionTTL.Duration != 2*time.Hour ||
		!slices.Equal(bc.CheckHook, []string{"check", "--stable"}) || bc.CheckTimeout.Duration != time.Minute {
		t.Errorf("b/c: %+v", bc)
	}
	if d := repos[2].Config; !d.Update || d.UpdateHook != nil || d.GPGSign != nil || d.CheckHook != nil || d.CheckTimeout.Duration != DefaultCheckTimeout {
		t.Errorf("d: %+v", d)
	}
}

// A configuration built in code is checked as a file is.
func TestRepositoriesInCode(t *testing.T) {
	noDefaultKeyrings(t)
	root := t.TempDir()
	for _, c := range []struct {
		change func(*Config)
		msg    string
	}{
		{func(c *Config) { c.Repos = map[string]Overrides{"a": nil} }, "repos needs root"},
		{func(c *Config) { c.Root, c.Repos = root, map[string]Overrides{"a": {"address": ":80"}} }, "repos.a.address: is daemon-wide"},
		{func(c *Config) { c.Root, c.Repos = root, map[string]Overrides{"a": {"nope": 1}} }, "repos.a.nope: not a key"},
		{func(c *Config) { c.Root, c.Repos = root, map[string]Overrides{"a": {"update": "no"}} }, "repos.a.update: must be a bool, not a string"},
		{func(c *Config) { c.Root, c.Repos = root, map[string]Overrides{"a": nil, "./a": nil} }, `is the repository "a" again`},
		{func(c *Config) { c.Root, c.Repos = root, map[string]Overrides{"../a": nil} }, "not under root"},
		{func(c *Config) { c.Root, c.Repo, c.Repos = root, "/srv/repo", map[string]Overrides{"a": nil} }, "use one or the other"},
		{func(c *Config) { c.SignVerify = true }, "sign_verify needs sign_trustedkeyfile"},
	} {
		cfg := Default()
		c.change(cfg)
		if _, err := cfg.Repositories(); err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v", c.msg, err)
		}
	}
	cfg := Default()
	cfg.Root, cfg.Repos = root, map[string]Overrides{"a": {"update": false, "gpg_sign": []string{"K"}}}
	repos, err := cfg.Repositories()
	if err != nil || len(repos) != 1 || repos[0].Config.Update || repos[0].Config.GPGSign[0] != "K" {
		t.Fatalf("%+v, %v", repos, err)
	}
	repos[0].Config.GPGSign[0] = "changed"
	if cfg.Repos["a"]["gpg_sign"].([]string)[0] != "K" {
		t.Error("the repository's Config shares the entry's list")
	}
}
