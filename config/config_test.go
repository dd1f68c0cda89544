package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/auth"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ostree-upload.yaml")
	if err := os.WriteFile(path, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
	return path
}

const liriosSecret = "3q2+7wZ0l1x8mK4pQ9sVbHcN2fRt6uYe1aJdLgWo5zXiEkPvTnMqBrSyUhCjFgDe0aZ1b2c3d4e5f6g7h8i9j0kA=="

const liriosFile = "tokens:\n- token: " + liriosSecret + "\n  created: \"2020-12-30T10:00:00Z\"\n"

func TestDefaults(t *testing.T) {
	for _, content := range []string{"", "# only a comment\n", "---\n", "tokens:\n", "tokens: []\n"} {
		cfg, err := Load(writeFile(t, content))
		if err != nil {
			t.Fatalf("%q: %v", content, err)
		}
		if !reflect.DeepEqual(cfg, Default()) {
			t.Errorf("%q: got %+v, want the defaults", content, cfg)
		}
	}
	d := Default()
	if d.Repo != "repo" || d.Address != ":8080" || d.StateDir != "" || d.SessionTTL.Duration != 24*time.Hour ||
		d.MaxObjectsPerSession != 2000000 || d.MaxObjectSize != 16<<30 || d.Tokens != nil {
		t.Errorf("Default() = %+v", d)
	}
	if err := d.Validate(); err != nil {
		t.Error(err)
	}
}

func TestLoadAll(t *testing.T) {
	cfg, err := Load(writeFile(t, `# daemon settings
repo: /srv/repo
address: 127.0.0.1:9000
state_dir: /srv/state
session_ttl: 90m
max_objects_per_session: 1000
max_object_size: 500MB
max_pack_size: 64MiB
max_sessions_per_token: 8
max_objects_per_token: 5000
max_connections: 100
max_connections_per_client: 10
session_retention: 48h
body_timeout: 30s
drain_timeout: 20s
check_hook: /usr/local/bin/check-build --strict
check_timeout: 3m
sign_type: ed25519
sign_keyfiles: [/etc/ostree/release.key, /etc/ostree/backup.key]
sign_verify: true
sign_trustedkeyfile: /etc/ostree/builders.pub
tokens:
  - sha256: `+strings.Repeat("ab", 32)+`
    name: ci
    refs: ["app/*", runtime/org.x/*/stable]
    expires: 2030-01-02T03:04:05Z
  - token: secret
    expires: 2031-05-06
`))
	if err != nil {
		t.Fatal(err)
	}
	exp1 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	exp2 := time.Date(2031, 5, 6, 0, 0, 0, 0, time.UTC)
	want := &Config{
		Repo: "/srv/repo", Address: "127.0.0.1:9000", StateDir: "/srv/state",
		SessionTTL: Duration{90 * time.Minute}, MaxObjectsPerSession: 1000, MaxObjectSize: 500 * 1000 * 1000,
		MaxPackSize: 64 * MiB, MaxSessionsPerToken: 8, MaxObjectsPerToken: 5000, MaxConnections: 100, MaxClientConnections: 10,
		SessionRetention: Duration{48 * time.Hour}, BodyTimeout: Duration{30 * time.Second}, DrainTimeout: Duration{20 * time.Second}, Update: true,
		CheckHook: Command{"/usr/local/bin/check-build", "--strict"}, CheckTimeout: Duration{3 * time.Minute},
		SignType: "ed25519", SignKeyfiles: []string{"/etc/ostree/release.key", "/etc/ostree/backup.key"},
		SignVerify: true, SignTrustedKeyfile: "/etc/ostree/builders.pub",
		StaticDeltaDepth: DefaultStaticDeltaDepth, StaticDeltaTimeLimit: Duration{DefaultStaticDeltaTimeLimit},
		StaticDeltaMemoryLimit: DefaultStaticDeltaMemoryLimit, StaticDeltaGrace: Duration{DefaultStaticDeltaGrace},
		Tokens: []Token{
			{SHA256: strings.Repeat("ab", 32), Name: "ci", Refs: []string{"app/*", "runtime/org.x/*/stable"}, Expires: &exp1},
			{Token: "secret", Expires: &exp2},
		},
	}
	if !reflect.DeepEqual(cfg.Tokens[0].Refs, want.Tokens[0].Refs) || !cfg.Tokens[0].Expires.Equal(exp1) || !cfg.Tokens[1].Expires.Equal(exp2) {
		t.Errorf("tokens = %+v", cfg.Tokens)
	}
	cfg.Tokens[0].Expires, cfg.Tokens[1].Expires = &exp1, &exp2
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Error(err)
	}
}

func TestSizes(t *testing.T) {
	for in, want := range map[string]Size{
		`"16GiB"`: 16 << 30, `16GiB`: 16 << 30, `500MB`: 500e6, `1024`: 1024, `1048576`: 1 << 20,
		`"512 KiB"`: 512 << 10, `2TiB`: 2 << 40, `3TB`: 3e12, `7B`: 7, `1kB`: 1000, `"10"`: 10,
	} {
		cfg, err := Load(writeFile(t, "max_object_size: "+in+"\n"))
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if cfg.MaxObjectSize != want {
			t.Errorf("%s: got %d, want %d", in, cfg.MaxObjectSize, want)
		}
	}
	for _, in := range []string{"16gb", "GiB", "1.5GiB", "-1", "16 GiBs", "99999999999TiB", "", "0x10KiB"} {
		if s, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, s)
		}
	}
	if s := (16 * GiB).String(); s != "16GiB" {
		t.Errorf("String() = %q", s)
	}
	if s := (500 * MB).String(); s != "500000000B" {
		t.Errorf("String() = %q", s)
	}
}

// Each bad file must fail with an error naming the file, the line and the key.
func TestStrict(t *testing.T) {
	hash := strings.Repeat("0f", 32)
	cases := []struct {
		name, content string
		line          int
		key, msg      string
	}{
		{"unknown top-level key", "repo: r\nlisten: :80\n", 2, "listen", "unknown key"},
		{"unknown token key", "tokens:\n- sha256: " + hash + "\n  nmae: ci\n", 3, "tokens[0].nmae", "unknown key"},
		{"bad duration", "session_ttl: 1 day\n", 1, "session_ttl", "duration"},
		{"zero duration", "session_ttl: 0s\n", 1, "session_ttl", "positive"},
		{"negative duration", "session_ttl: -5m\n", 1, "session_ttl", "positive"},
		{"zero check_timeout", "check_hook: /bin/true\ncheck_timeout: 0s\n", 2, "check_timeout", "positive"},
		{"bad check_hook", "check_hook: \"sh -c 'unterminated\"\n", 1, "check_hook", "quote"},
		{"bad size", "\nmax_object_size: 16 gigs\n", 2, "max_object_size", "size"},
		{"zero size", "max_object_size: 0\n", 1, "max_object_size", "positive"},
		{"negative size", "max_object_size: -1\n", 1, "max_object_size", "negative"},
		{"bad count", "max_objects_per_session: many\n", 1, "max_objects_per_session", "whole number"},
		{"gpg sign type", "sign_type: gpg\n", 1, "sign_type", "only ed25519"},
		{"key files not a list", "sign_keyfiles: /k\n", 1, "sign_keyfiles", "list"},
		{"verify not a bool", "sign_verify: sure\n", 1, "sign_verify", "true or false"},
		{"gpg key ids not a list", "gpg_sign: {a: b}\n", 1, "gpg_sign", "list of key ids"},
		{"gpg key id with a blank", "gpg_sign: ['AB CD']\n", 1, "gpg_sign", "bad key id"},
		{"gpg_verify not a bool", "gpg_verify: 1\n", 1, "gpg_verify", "true or false"},
		{"zero count", "max_objects_per_session: 0\n", 1, "max_objects_per_session", "positive"},
		{"bad sha256", "tokens:\n- name: a\n  sha256: " + strings.ToUpper(hash) + "\n", 3, "tokens[0].sha256", "64 lower-case"},
		{"short sha256", "tokens:\n- sha256: abc\n", 2, "tokens[0].sha256", "64 lower-case"},
		{"token and sha256", "tokens:\n- token: x\n  sha256: " + hash + "\n", 2, "tokens[0]", "both token and sha256"},
		{"neither", "tokens:\n- name: x\n", 2, "tokens[0]", "needs a token or a sha256"},
		{"empty token", "tokens:\n- token: \"\"\n", 2, "tokens[0].token", "must not be empty"},
		{"duplicate names", "tokens:\n- token: a\n  name: ci\n- token: b\n  name: ci\n", 5, "tokens[1].name", `"ci" is already used by the token on line 3`},
		{"empty glob", "tokens:\n- token: a\n  refs:\n  - \"\"\n", 4, "tokens[0].refs[0]", "must not be empty"},
		{"glob with space", "tokens:\n- token: a\n  refs:\n  - app/*\n  - \"app/ x\"\n", 5, "tokens[0].refs[1]", "printable ASCII"},
		{"glob not ASCII", "tokens:\n- token: a\n  refs: [\"app/é\"]\n", 3, "tokens[0].refs[0]", "printable ASCII"},
		{"refs not a list", "tokens:\n- token: a\n  refs: app/*\n", 3, "tokens[0].refs", "list"},
		{"bad expires", "tokens:\n- token: a\n  expires: soon\n", 3, "tokens[0].expires", "not a time"},
		{"tokens not a list", "tokens: yes\n", 1, "tokens", "list"},
		{"token not a mapping", "tokens:\n- abc\n", 2, "tokens[0]", "mapping"},
		{"duplicate key", "repo: a\nrepo: b\n", 2, "repo", "duplicate key (first on line 1)"},
		{"empty repo", "repo: \"\"\n", 1, "repo", "must not be empty"},
		{"repo a list", "repo: [a]\n", 1, "repo", "single value"},
		{"top level a list", "- a\n", 1, "", "mapping"},
		{"same secret twice", "tokens:\n- sha256: " + hash + "\n  name: a\n- sha256: " + hash + "\n  name: b\n", 4, "tokens[1]", "same secret as the token on line 2"},
		{"same clear secret twice", "tokens:\n- token: s3\n- sha256: " + auth.Hash("s3") + "\n", 3, "tokens[1]", "same secret as the token on line 2"},
		{"unknown scope", "tokens:\n- token: a\n  scopes: [upload, push]\n", 3, "tokens[0].scopes", `unknown scope "push"`},
		{"no scopes", "tokens:\n- token: a\n  scopes: []\n", 3, "tokens[0].scopes", "at least one scope"},
		{"scope twice", "tokens:\n- token: a\n  scopes: [admin, admin]\n", 3, "tokens[0].scopes", "named twice"},
		{"scopes not a list", "tokens:\n- token: a\n  scopes: admin\n", 3, "tokens[0].scopes", "list of scopes"},
		{"proxy not an address", "trusted_proxies: [10.0.0.1, nginx]\n", 1, "trusted_proxies", `"nginx" is not an IP address`},
		{"proxies not a list", "trusted_proxies: 10.0.0.1\n", 1, "trusted_proxies", "list"},
		{"token repos not a list", "tokens:\n- token: a\n  repos: beta\n", 3, "tokens[0].repos", "list of repository globs"},
		{"token repo glob with a blank", "tokens:\n- token: a\n  repos:\n  - beta\n  - \"be ta\"\n", 5, "tokens[0].repos[1]", "repository glob"},
		{"empty token repo glob", "tokens:\n- token: a\n  repos: [\"\"]\n", 3, "tokens[0].repos[0]", "must not be empty"},
	}
	for _, c := range cases {
		path := writeFile(t, c.content)
		_, err := Load(path)
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("%s: %T %v, want *Error", c.name, err, err)
			continue
		}
		if e.File != path || e.Line != c.line || e.Key != c.key || !strings.Contains(e.Msg, c.msg) {
			t.Errorf("%s: got %q (line %d, key %q), want line %d, key %q, %q", c.name, err, e.Line, e.Key, c.line, c.key, c.msg)
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, path+":") || !strings.Contains(msg, c.key) {
			t.Errorf("%s: %q should name the file and the key", c.name, msg)
		}
	}
}

// Errors never show secrets or their hashes.
func TestErrorsHideSecrets(t *testing.T) {
	hash := strings.Repeat("0f", 32)
	for _, content := range []string{
		"tokens:\n- token: s3cr3t-value\n  sha256: " + hash + "\n",
		"tokens:\n- s3cr3t-value+/==: x\n",
		"tokens:\n- s3cr3t-value\n",
		"tokens:\n- token: [s3cr3t-value]\n",
		"tokens:\n- sha256: " + hash + "\n  name: n\n- sha256: " + hash + "\n  name: n\n",
	} {
		_, err := Load(writeFile(t, content))
		if err == nil {
			t.Errorf("%q: no error", content)
			continue
		}
		if strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), hash) {
			t.Errorf("error shows a secret: %v", err)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "missing.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}
	path := writeFile(t, "repo: [\n")
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("syntax error: %v", err)
	}
	if _, err := Load(writeFile(t, "repo: a\n---\nrepo: b\n")); err == nil || !strings.Contains(err.Error(), "one YAML document") {
		t.Errorf("two documents: %v", err)
	}
}

func TestLiriosFile(t *testing.T) {
	cfg, err := Load(writeFile(t, liriosFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Tokens) != 1 || cfg.Tokens[0].Token != liriosSecret || cfg.Tokens[0].Created != "2020-12-30T10:00:00Z" {
		t.Fatalf("tokens = %+v", cfg.Tokens)
	}
	k := NewKeyring(cfg.Tokens, nil)
	if k.Len() != 1 {
		t.Fatalf("Len = %d", k.Len())
	}
	id, err := k.Authenticate(liriosSecret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if id.Hash != auth.Hash(liriosSecret) || id.Name != "" || !id.AllowsRef("anything/at/all") {
		t.Errorf("identity = %+v", id)
	}
	if want := "token-" + auth.Hash(liriosSecret)[:12]; id.DisplayName() != want {
		t.Errorf("DisplayName = %q, want %q", id.DisplayName(), want)
	}
}

func TestAuthenticate(t *testing.T) {
	secret, hash, err := auth.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, "ou_") || len(secret) != 3+43 || hash != auth.Hash(secret) || len(hash) != 64 {
		t.Fatalf("Generate() = %q, %q", secret, hash)
	}
	if s2, _, _ := auth.Generate(); s2 == secret {
		t.Fatal("Generate repeats itself")
	}
	now := time.Now()
	past, future := now.Add(-time.Hour), now.Add(time.Hour)
	cfg, err := Load(writeFile(t, "tokens:\n"+
		"- sha256: "+hash+"\n  name: ci\n  refs: [\"app/*\"]\n  expires: "+future.Format(time.RFC3339Nano)+"\n"+
		"- token: old-one\n  name: old\n  expires: "+past.Format(time.RFC3339Nano)+"\n"+
		"- token: plain\n"))
	if err != nil {
		t.Fatal(err)
	}
	k := NewKeyring(cfg.Tokens, nil)
	if k.Len() != 3 {
		t.Fatalf("Len = %d", k.Len())
	}
	id, err := k.Authenticate(secret, now)
	if err != nil {
		t.Fatal(err)
	}
	if id.Hash != hash || id.Name != "ci" || id.DisplayName() != "ci" || !reflect.DeepEqual(id.Refs, []string{"app/*"}) ||
		id.Expires == nil || !id.Expires.Equal(future.Round(0)) {
		t.Errorf("identity = %+v", id)
	}
	if !id.AllowsRef("app/org.x/x86_64/stable") || id.AllowsRef("runtime/org.x/x86_64/stable") {
		t.Error("AllowsRef ignores the globs")
	}
	id.Refs[0] = "changed" // must not change the keyring
	if id, _ := k.Authenticate(secret, now); id.Refs[0] != "app/*" {
		t.Error("keyring changed through a returned identity")
	}
	if id, err := k.Authenticate("plain", now); err != nil || id.Hash != auth.Hash("plain") {
		t.Errorf("plain: %+v, %v", id, err)
	}
	if id, err := k.Authenticate("old-one", now); !errors.Is(err, auth.ErrExpiredToken) || id.Name != "old" {
		t.Errorf("expired: %+v, %v", id, err)
	}
	if _, err := k.Authenticate(secret, future.Add(time.Second)); !errors.Is(err, auth.ErrExpiredToken) {
		t.Errorf("after expiry: %v", err)
	}
	for _, bad := range []string{"", "wrong", secret + "x", secret[:len(secret)-1], hash, "old"} {
		if id, err := k.Authenticate(bad, now); !errors.Is(err, auth.ErrUnknownToken) || id.Hash != "" {
			t.Errorf("%q: %+v, %v", bad, id, err)
		}
	}
	empty := NewKeyring(nil, nil)
	if _, err := empty.Authenticate(secret, now); !errors.Is(err, auth.ErrUnknownToken) || empty.Len() != 0 {
		t.Errorf("empty keyring: %v", err)
	}
}

func TestKeyringConcurrent(t *testing.T) {
	k := NewKeyring([]Token{{Token: "a", Name: "a", Refs: []string{"x/*"}}, {SHA256: auth.Hash("b")}}, nil)
	done := make(chan bool)
	for i := 0; i < 8; i++ {
		go func() {
			for j := 0; j < 200; j++ {
				id, err := k.Authenticate("a", time.Now())
				if err != nil || id.Name != "a" {
					t.Error(err)
				}
				id.Refs[0] = "y"
				if _, err := k.Authenticate("b", time.Now()); err != nil {
					t.Error(err)
				}
			}
			done <- true
		}()
	}
	for i := 0; i < 8; i++ {
		<-done
	}
}

func TestScopesAndProxies(t *testing.T) {
	hash := strings.Repeat("0f", 32)
	cfg, err := Load(writeFile(t, "trusted_proxies: [127.0.0.1, \"10.1.2.3/8\", \"::1\"]\ntokens:\n"+
		"- sha256: "+hash+"\n  name: old\n"+
		"- token: up\n  name: ci\n  scopes: [upload]\n"+
		"- token: adm\n  name: ops\n  scopes: [admin, publish]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(cfg.TrustedProxies); got != "[127.0.0.1/32 10.0.0.0/8 ::1/128]" {
		t.Errorf("trusted_proxies = %s", got)
	}
	if p, _ := ParsePrefix("10.1.2.3/8"); p.String() != "10.0.0.0/8" {
		t.Errorf("ParsePrefix masks to %v", p)
	}
	if p, _ := ParsePrefix("::ffff:127.0.0.1"); p.String() != "127.0.0.1/32" {
		t.Errorf("ParsePrefix of a mapped address = %v", p)
	}
	if p, _ := ParsePrefix("::ffff:10.0.0.0/104"); p.String() != "10.0.0.0/8" {
		t.Errorf("ParsePrefix of a mapped range = %v", p)
	}
	if cfg.Tokens[0].Scopes != nil {
		t.Errorf("absent scopes read as %q", cfg.Tokens[0].Scopes)
	}
	ids := NewKeyring(cfg.Tokens, nil).Identities()
	want := [][]string{{auth.ScopeUpload, auth.ScopePublish}, {auth.ScopeUpload}, {auth.ScopePublish, auth.ScopeAdmin}}
	if len(ids) != len(want) {
		t.Fatalf("%d identities, want %d", len(ids), len(want))
	}
	for i, id := range ids {
		if !reflect.DeepEqual(id.Scopes, want[i]) {
			t.Errorf("%s: scopes %q, want %q", id.Name, id.Scopes, want[i])
		}
	}
	ci, err := NewKeyring(cfg.Tokens, nil).Authenticate("up", time.Now())
	if err != nil || !ci.Can(auth.ScopeUpload) || ci.Can(auth.ScopePublish) || ci.Can(auth.ScopeAdmin) {
		t.Errorf("upload-only token: %+v, %v", ci, err)
	}
	if ci.ID() != auth.Hash("up")[:12] || ci.DisplayName() != "ci" {
		t.Errorf("ID %q, name %q", ci.ID(), ci.DisplayName())
	}
}

// A configuration written out loads back to the same values.
func TestWriteLoadsBack(t *testing.T) {
	c := Default()
	c.StateDir, c.SessionRetention, c.BodyTimeout = "/srv/state", Duration{72 * time.Hour}, Duration{5 * time.Second}
	c.MaxSessionsPerToken, c.MaxObjectSize = 3, 5*MiB
	c.GPGSign, c.GPGHomedir, c.GPGVerify = []string{"ABCD"}, "/gpg", true
	c.SignKeyfiles, c.Update = []string{"/k"}, false
	c.UpdateHook = []string{"sh", "-c", `echo "it's" $X`, "arg with space"}
	c.CheckHook, c.CheckTimeout = Command{"/usr/local/bin/check", "--repo", "my repo"}, Duration{90 * time.Second}
	p1, _ := ParsePrefix("10.0.0.0/8")
	c.TrustedProxies = []netip.Prefix{p1}
	c.Tokens = []Token{{SHA256: strings.Repeat("ab", 32), Name: "ci", Refs: []string{"app/*"}, Scopes: []string{auth.ScopeUpload}}}
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := c.Write(path); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("loaded back\n%+v\nwrote\n%+v", got, c)
	}
}

// Tokens may be limited to repositories.
func TestTokenRepos(t *testing.T) {
	cfg, err := Load(writeFile(t, "tokens:\n- token: a\n  name: team\n  repos: [\"team/*\", extra]\n- token: b\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Tokens[0].Repos, []string{"team/*", "extra"}) || cfg.Tokens[1].Repos != nil {
		t.Fatalf("tokens %+v", cfg.Tokens)
	}
	k := NewKeyring(cfg.Tokens, nil)
	id, err := k.Authenticate("a", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for repo, want := range map[string]bool{"team/x": true, "team/x/y": true, "extra": true, "other": false, "": false, "extras": false} {
		if id.AllowsRepo(repo) != want {
			t.Errorf("AllowsRepo(%q) = %v", repo, !want)
		}
	}
	if id, _ := k.Authenticate("b", time.Now()); !id.AllowsRepo("anything") || !id.AllowsRepo("") {
		t.Error("a token without repos is limited")
	}
}

// prune_depth is a whole number from -1 to MaxPruneDepth, absent unless
// given, and may differ per repository.
func TestPruneDepth(t *testing.T) {
	cfg, err := Load(writeFile(t, "repo: r\n"))
	if err != nil || cfg.PruneDepth != nil {
		t.Fatalf("default: %v, %v", cfg.PruneDepth, err)
	}
	for _, v := range []string{"-1", "0", "100000"} {
		cfg, err := Load(writeFile(t, "repo: r\nprune_depth: "+v+"\n"))
		if err != nil || cfg.PruneDepth == nil || fmt.Sprint(*cfg.PruneDepth) != v {
			t.Errorf("prune_depth %s: %v, %v", v, cfg.PruneDepth, err)
		}
	}
	for _, v := range []string{"-2", "100001", "three", "1.5"} {
		if _, err := Load(writeFile(t, "repo: r\nprune_depth: "+v+"\n")); err == nil || !strings.Contains(err.Error(), "prune_depth") {
			t.Errorf("prune_depth %s: %v", v, err)
		}
	}
	root := t.TempDir()
	for _, r := range []string{"a", "b"} {
		os.MkdirAll(filepath.Join(root, r), 0o755)
	}
	cfg, err = Load(writeFile(t, "root: "+root+"\nprune_depth: 3\nrepos:\n  a: {}\n  b:\n    prune_depth: 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	repos, err := cfg.Repositories()
	if err != nil || len(repos) != 2 {
		t.Fatalf("repositories %v, %v", repos, err)
	}
	for _, r := range repos {
		if want := map[string]int{"a": 3, "b": 0}[r.Name]; r.Config.PruneDepth == nil || *r.Config.PruneDepth != want {
			t.Errorf("repository %s: prune_depth %v, want %d", r.Name, r.Config.PruneDepth, want)
		}
	}
}
