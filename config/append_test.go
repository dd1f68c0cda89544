package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/auth"
)

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// appendNew appends a fresh token and checks that the file loads, that the
// new secret authenticates with the right identity and that nothing else
// is in the directory.
func appendNew(t *testing.T, path string, tok Token) (secret string) {
	t.Helper()
	secret, hash, err := auth.Generate()
	if err != nil {
		t.Fatal(err)
	}
	tok.SHA256 = hash
	if err := AppendToken(path, tok); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatalf("%v\n%s", err, readFile(t, path))
	}
	last := cfg.Tokens[len(cfg.Tokens)-1]
	if last.SHA256 != hash || last.Token != "" || last.Name != tok.Name || strings.Join(last.Refs, ",") != strings.Join(tok.Refs, ",") {
		t.Errorf("last token = %+v", last)
	}
	if created, err := time.Parse(time.RFC3339, last.Created); err != nil || time.Since(created) > time.Minute {
		t.Errorf("created = %q", last.Created)
	}
	id, err := NewKeyring(cfg.Tokens, nil).Authenticate(secret, time.Now())
	if err != nil || id.Hash != hash || id.Name != tok.Name {
		t.Errorf("Authenticate: %+v, %v", id, err)
	}
	if strings.Contains(readFile(t, path), secret) {
		t.Error("the secret was written")
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries", len(entries))
	}
	return secret
}

// splitAt returns content's lines [0,n) and [n,∞) joined back.
func splitAt(content string, n int) (string, string) {
	lines := strings.SplitAfter(content, "\n")
	return strings.Join(lines[:n], ""), strings.Join(lines[n:], "")
}

func checkInserted(t *testing.T, got, before, after string) string {
	t.Helper()
	if !strings.HasPrefix(got, before) || !strings.HasSuffix(got, after) || len(got) <= len(before)+len(after) {
		t.Fatalf("original bytes not kept:\n%s", got)
	}
	return got[len(before) : len(got)-len(after)]
}

func TestAppendMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ostree-upload.yaml")
	exp := time.Now().Add(48 * time.Hour)
	appendNew(t, path, Token{Name: "ci", Refs: []string{"app/*", "runtime/*"}, Expires: &exp})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode())
	}
	got := readFile(t, path)
	if !strings.HasPrefix(got, "tokens:\n- sha256: \"") || !strings.Contains(got, "\n  name: \"ci\"\n  refs:\n    - \"app/*\"\n    - \"runtime/*\"\n  expires: \"") {
		t.Errorf("content:\n%s", got)
	}
	cfg, _ := Load(path)
	if e := cfg.Tokens[0].Expires; e == nil || !e.Equal(exp.Truncate(time.Second)) {
		t.Errorf("expires = %v, want %v", e, exp)
	}
	// A second one goes after the first.
	appendNew(t, path, Token{Name: "other"})
	if !strings.HasPrefix(readFile(t, path), got) {
		t.Error("second append changed the first entry")
	}
}

func TestAppendLirios(t *testing.T) {
	orig := "# Tokens for ostree-upload\n" + liriosFile + "# end of tokens\n"
	path := writeFile(t, orig)
	secret := appendNew(t, path, Token{Name: "ci"})
	got := readFile(t, path)
	entry := checkInserted(t, got, "# Tokens for ostree-upload\n"+liriosFile, "# end of tokens\n")
	if !strings.HasPrefix(entry, "- sha256: \""+auth.Hash(secret)+"\"\n  name: \"ci\"\n  created: \"") {
		t.Errorf("entry %q", entry)
	}
	// The lirios token still works.
	cfg, _ := Load(path)
	if _, err := NewKeyring(cfg.Tokens, nil).Authenticate(liriosSecret, time.Now()); err != nil {
		t.Error(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640 kept", fi.Mode())
	}
}

func TestAppendBeforeNextKey(t *testing.T) {
	orig := `# header
repo: /srv/repo
tokens:   # who may push
  - token: abc   # first
    name: one
  - sha256: ` + strings.Repeat("1", 64) + `
    refs:
      - app/*
      # still the second token

# where to listen
address: ":8080"
session_ttl: 12h
`
	path := writeFile(t, orig)
	appendNew(t, path, Token{Name: "new", Refs: []string{"runtime/*"}})
	before, after := splitAt(orig, 9)
	entry := checkInserted(t, readFile(t, path), before, after)
	if !strings.HasPrefix(entry, "  - sha256: \"") || !strings.Contains(entry, "\n    name: \"new\"\n    refs:\n      - \"runtime/*\"\n    created: \"") {
		t.Errorf("entry %q", entry)
	}
	cfg, _ := Load(path)
	if cfg.Address != ":8080" || cfg.SessionTTL.Duration != 12*time.Hour || len(cfg.Tokens) != 3 {
		t.Errorf("config %+v", cfg)
	}
}

func TestAppendNoTokensKey(t *testing.T) {
	for _, orig := range []string{"repo: /srv/repo\naddress: :9000\n", "repo: /srv/repo # no newline", "", "# just a comment\n", "---\nrepo: r\n"} {
		path := writeFile(t, orig)
		appendNew(t, path, Token{})
		before := orig
		if orig != "" && !strings.HasSuffix(orig, "\n") {
			before += "\n"
		}
		entry := checkInserted(t, readFile(t, path), before, "")
		if !strings.HasPrefix(entry, "tokens:\n- sha256: \"") || strings.Contains(entry, "name:") {
			t.Errorf("%q: entry %q", orig, entry)
		}
	}
}

func TestAppendIndentedTopLevel(t *testing.T) {
	orig := "  repo: r\n  address: a\n"
	path := writeFile(t, orig)
	appendNew(t, path, Token{Name: "x"})
	if entry := checkInserted(t, readFile(t, path), orig, ""); !strings.HasPrefix(entry, "  tokens:\n  - sha256: \"") {
		t.Errorf("entry %q", entry)
	}
}

func TestAppendEmptyTokens(t *testing.T) {
	cases := []struct{ orig, want string }{
		{"tokens: []\n", "tokens:\n"},
		{"repo: r\ntokens: []\naddress: a\n", "repo: r\ntokens:\n"},
		{"repo: r\ntokens: [ ]  # none yet\naddress: a\n", "repo: r\ntokens:   # none yet\n"},
		{"repo: r\ntokens:\naddress: a\n", "repo: r\ntokens:\n"},
		{"repo: r\ntokens: ~\n\naddress: a\n", "repo: r\ntokens:\n"},
		{"repo: r\ntokens: null", "repo: r\ntokens:\n"},
		{"tokens: []", "tokens:\n"},
	}
	for _, c := range cases {
		path := writeFile(t, c.orig)
		appendNew(t, path, Token{Name: "x"})
		got := readFile(t, path)
		// Lines after the tokens line are unchanged.
		n := strings.Count(c.want, "\n")
		_, after := splitAt(c.orig, n)
		entry := checkInserted(t, got, c.want, after)
		if !strings.HasPrefix(entry, "- sha256: \"") {
			t.Errorf("%q: entry %q", c.orig, entry)
		}
	}
}

func TestAppendCRLF(t *testing.T) {
	orig := "repo: r\r\ntokens:\r\n- token: abc\r\naddress: a\r\n"
	path := writeFile(t, orig)
	appendNew(t, path, Token{Name: "x"})
	entry := checkInserted(t, readFile(t, path), "repo: r\r\ntokens:\r\n- token: abc\r\n", "address: a\r\n")
	if strings.Count(entry, "\n") != strings.Count(entry, "\r\n") {
		t.Errorf("entry %q mixes line ends", entry)
	}
}

func TestAppendSymlink(t *testing.T) {
	path := writeFile(t, liriosFile)
	link := filepath.Join(t.TempDir(), "link.yaml")
	if err := os.Symlink(path, link); err != nil {
		t.Skip(err)
	}
	secret, hash, _ := auth.Generate()
	if err := AppendToken(link, Token{SHA256: hash}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatal("the symlink was replaced")
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewKeyring(cfg.Tokens, nil).Authenticate(secret, time.Now()); err != nil {
		t.Error(err)
	}
}

// Whatever fails leaves the file as it was, with no temporary file about.
func TestAppendLeavesFileUntouched(t *testing.T) {
	hash := auth.Hash("x")
	cases := []struct {
		name, orig string
		tok        Token
		want       string
	}{
		{"flow mapping", "{repo: r}\n", Token{SHA256: hash}, "flow mapping"},
		{"flow mapping with tokens", "{repo: r, tokens: []}\n", Token{SHA256: hash}, "flow mapping"},
		{"flow list", "tokens: [{token: a}]\n", Token{SHA256: hash}, "flow list"},
		{"document end", "repo: r\n...\n", Token{SHA256: hash}, "invalid"},
		{"anchored tokens", "tokens: &t []\n", Token{SHA256: hash}, "anchor"},
		{"invalid original", "repo: r\nbogus: 1\n", Token{SHA256: hash}, "unknown key"},
		{"duplicate name", liriosFile + "- sha256: " + auth.Hash("y") + "\n  name: ci\n", Token{SHA256: hash, Name: "ci"}, "already named"},
		{"bad glob", "", Token{SHA256: hash, Refs: []string{"a b"}}, "printable"},
		{"bad sha256", "", Token{SHA256: "ABC"}, "sha256"},
		{"no secret", "", Token{Name: "n"}, "sha256"},
		{"mismatch", "", Token{Token: "a", SHA256: hash}, "disagree"},
	}
	for _, c := range cases {
		path := writeFile(t, c.orig)
		err := AppendToken(path, c.tok)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error about %q\n%s", c.name, err, c.want, readFile(t, path))
			continue
		}
		if c.name == "duplicate name" && !errors.Is(err, ErrDuplicateName) {
			t.Errorf("%s: %v does not wrap ErrDuplicateName", c.name, err)
		}
		if strings.Contains(err.Error(), hash) {
			t.Errorf("%s: error shows the hash: %v", c.name, err)
		}
		if got := readFile(t, path); got != c.orig {
			t.Errorf("%s: file changed to %q", c.name, got)
		}
		if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
			t.Errorf("%s: directory holds %d entries", c.name, len(entries))
		}
	}
}

func TestAppendClearTokenStoresHash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := AppendToken(path, Token{Token: "clear-secret"}); err != nil {
		t.Fatal(err)
	}
	got := readFile(t, path)
	if strings.Contains(got, "clear-secret") || !strings.Contains(got, auth.Hash("clear-secret")) {
		t.Errorf("content %q", got)
	}
}

func TestAppendScopes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ostree-upload.yaml")
	appendNew(t, path, Token{Name: "ops", Scopes: []string{auth.ScopeAdmin}})
	appendNew(t, path, Token{Name: "ci"})
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg.Tokens[0].Scopes, []string{auth.ScopeAdmin}) || cfg.Tokens[1].Scopes != nil {
		t.Errorf("scopes read back: %q, %q", cfg.Tokens[0].Scopes, cfg.Tokens[1].Scopes)
	}
	before := readFile(t, path)
	if err := AppendToken(path, Token{SHA256: auth.Hash("x"), Scopes: []string{"root"}}); err == nil || !strings.Contains(err.Error(), "unknown scope") {
		t.Errorf("bad scope: %v", err)
	}
	if readFile(t, path) != before {
		t.Error("a refused token changed the file")
	}
}

// A token's repository globs are written, in an ostree-push file too,
// whose comments and keys stay as they are.
func TestAppendRepos(t *testing.T) {
	orig, err := os.ReadFile("testdata/ostree-receive.conf")
	if err != nil {
		t.Fatal(err)
	}
	path := writeFile(t, string(orig))
	secret := appendNew(t, path, Token{Name: "beta", Repos: []string{"beta", "team/*"}, Refs: []string{"app/*"}})
	got := readFile(t, path)
	entry := checkInserted(t, got, string(orig), "")
	want := "tokens:\n- sha256: \"" + auth.Hash(secret) + "\"\n  name: \"beta\"\n  repos:\n    - \"beta\"\n    - \"team/*\"\n  refs:\n    - \"app/*\"\n  created: \""
	if !strings.HasPrefix(entry, want) {
		t.Errorf("entry %q\nwant %q…", entry, want)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	id, err := NewKeyring(cfg.Tokens, nil).Authenticate(secret, time.Now())
	if err != nil || !reflect.DeepEqual(id.Repos, []string{"beta", "team/*"}) || !id.AllowsRepo("team/x") || id.AllowsRepo("stable") {
		t.Errorf("identity %+v, %v", id, err)
	}
	before := readFile(t, path)
	if err := AppendToken(path, Token{SHA256: auth.Hash("x"), Repos: []string{"be ta"}}); err == nil || !strings.Contains(err.Error(), "repository glob") {
		t.Errorf("bad repository glob: %v", err)
	}
	if readFile(t, path) != before {
		t.Error("a refused token changed the file")
	}
}
