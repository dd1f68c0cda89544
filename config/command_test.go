package config

import (
	"reflect"
	"testing"
)

func TestSplitCommand(t *testing.T) {
	for in, want := range map[string][]string{
		"/usr/bin/hook": {"/usr/bin/hook"},
		`  flatpak build-update-repo  --gpg-sign=ABC repo `: {"flatpak", "build-update-repo", "--gpg-sign=ABC", "repo"},
		`sh -c 'echo "$OSTREE_RECEIVE_REFS"'`:               {"sh", "-c", `echo "$OSTREE_RECEIVE_REFS"`},
		`a "b c" d\ e "x\"y" ''`:                            {"a", "b c", "d e", `x"y`, ""},
	} {
		got, err := SplitCommand(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("SplitCommand(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "   ", `a 'b`, `a "b`, `a\`} {
		if got, err := SplitCommand(bad); err == nil {
			t.Errorf("SplitCommand(%q) = %q, want an error", bad, got)
		}
	}
}

func TestLoadUpdateKeys(t *testing.T) {
	cfg, err := Load(writeFile(t, "update: false\nupdate_hook: \"/usr/local/bin/publish 'my repo'\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Update || !reflect.DeepEqual(cfg.UpdateHook, Command{"/usr/local/bin/publish", "my repo"}) {
		t.Fatalf("update %v, hook %q", cfg.Update, cfg.UpdateHook)
	}
	if cfg, err := Load(writeFile(t, "repo: r\n")); err != nil || !cfg.Update {
		t.Fatalf("update defaults to on: %v %v", cfg, err)
	}
	if _, err := Load(writeFile(t, "update_hook: \"sh -c 'unterminated\"\n")); err == nil {
		t.Fatal("an unterminated quote in update_hook accepted")
	}
}

func TestLoadGPGKeys(t *testing.T) {
	cfg, err := Load(writeFile(t, "gpg_sign: 0123ABCD\ngpg_homedir: /srv/gnupg\ngpg_verify: true\ngpg_trustedkeys: /etc/ostree/builders.gpg\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg.GPGSign, []string{"0123ABCD"}) || cfg.GPGHomedir != "/srv/gnupg" || !cfg.GPGVerify || cfg.GPGTrustedKeys != "/etc/ostree/builders.gpg" {
		t.Fatalf("%+v", cfg)
	}
}
