package storetest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// GPGKey is a throwaway GnuPG signing key.
type GPGKey struct {
	Home        string // GnuPG home holding the secret key
	ID          string // its fingerprint
	PublicRing  string // a binary keyring file holding only the public key
	PublicArmor string // the same, ASCII-armoured
}

// NewGPGKey makes a passphrase-less RSA signing key in a fresh GnuPG home
// under the test's temporary directory, and stops that home's agent when
// the test ends.
func NewGPGKey(t testing.TB) *GPGKey {
	t.Helper()
	// Short: the agent's socket path must fit in a sockaddr_un.
	home, err := os.MkdirTemp("", "oug")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		kill := exec.Command("gpgconf", "--kill", "all")
		kill.Env = append(os.Environ(), "GNUPGHOME="+home)
		kill.Run()
		os.RemoveAll(home)
	})
	gpg := func(args ...string) string {
		cmd := exec.Command("gpg", append([]string{"--batch", "--homedir", home, "--pinentry-mode", "loopback", "--passphrase", ""}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			stderr := ""
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("gpg %v: %v\n%s", args, err, stderr)
		}
		return string(out)
	}
	gpg("--quick-gen-key", "ostree-upload test <test@example.invalid>", "rsa2048", "sign", "never")
	k := &GPGKey{Home: home}
	for _, line := range strings.Split(gpg("--with-colons", "--list-secret-keys"), "\n") {
		if f := strings.Split(line, ":"); len(f) > 9 && f[0] == "fpr" {
			k.ID = f[9]
			break
		}
	}
	if k.ID == "" {
		t.Fatal("gpg made no key")
	}
	k.PublicRing = filepath.Join(home, "public.gpg")
	if err := os.WriteFile(k.PublicRing, []byte(gpg("--export", k.ID)), 0o644); err != nil {
		t.Fatal(err)
	}
	k.PublicArmor = filepath.Join(home, "public.asc")
	if err := os.WriteFile(k.PublicArmor, []byte(gpg("--armor", "--export", k.ID)), 0o644); err != nil {
		t.Fatal(err)
	}
	return k
}
