package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/store/storetest"
)

var fixture struct {
	once sync.Once
	f    *storetest.Fixture
	err  error
}

// buildFixture makes the build repository once for the package's tests.
func buildFixture(t *testing.T) *storetest.Fixture {
	t.Helper()
	fixture.once.Do(func() {
		dir, err := os.MkdirTemp("", "ostree-upload-cmd-")
		if err != nil {
			fixture.err = err
			return
		}
		fixture.f, fixture.err = storetest.BuildFixture(dir, 400)
	})
	if fixture.err != nil {
		t.Fatal(fixture.err)
	}
	return fixture.f
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fixture.f != nil {
		os.RemoveAll(filepath.Dir(fixture.f.Build))
	}
	if binary.dir != "" {
		os.RemoveAll(binary.dir)
	}
	os.Exit(code)
}

func tokenFile(t *testing.T, tok daemontest.Token) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(tok.Secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustRun(t *testing.T, code int, args ...string) string {
	t.Helper()
	got, stdout, stderr := runCmd(t, args...)
	if got != code {
		t.Fatalf("%v: exit %d, want %d\nstdout: %s\nstderr: %s", args, got, code, stdout, stderr)
	}
	return stdout + stderr
}

func wantOutput(t *testing.T, out string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(out, p) {
			t.Fatalf("output lacks %q:\n%s", p, out)
		}
	}
}

// The two-person release: an upload-only token sends, an admin looks,
// a publisher commits; then tokens are listed and revoked, online and
// with the daemon stopped.
func TestAdminCommands(t *testing.T) {
	fx := buildFixture(t)
	e := daemontest.New(t)
	builder, release, ops := daemontest.NewToken(t), daemontest.NewToken(t), daemontest.NewToken(t)
	e.ExtraTokens = []config.Token{
		{SHA256: builder.Hash, Name: "builder", Scopes: []string{auth.ScopeUpload}},
		{SHA256: release.Hash, Name: "release", Scopes: []string{auth.ScopePublish}},
		{SHA256: ops.Hash, Name: "ops", Scopes: []string{auth.ScopeAdmin}},
	}
	e.Start()
	t.Setenv("OSTREE_UPLOAD_TOKEN", "")
	bTok, rTok, oTok := tokenFile(t, builder), tokenFile(t, release), tokenFile(t, ops)
	push := []string{"push", "-r", fx.Build, "-a", e.URL, "-b", "main", "-q", "--retry-timeout", "5s"}

	out := mustRun(t, exitFail, append(push, "--token-file", bTok)...)
	wantOutput(t, out, "may upload but not publish", "--no-publish")
	out = mustRun(t, exitOK, append(push, "--token-file", bTok, "--no-publish")...)
	wantOutput(t, out, "is uploaded and waits for a publisher", "sessions commit ")
	sid := strings.Fields(out[strings.Index(out, "session "):])[1]
	if len(sid) != 32 || len(e.Refs()) != 0 {
		t.Fatalf("session %q, refs %v after an upload-only push", sid, e.Refs())
	}

	admin := func(args ...string) []string { return append(args, "-a", e.URL, "--token-file", oTok) }
	out = mustRun(t, exitOK, admin("sessions", "list")...)
	wantOutput(t, out, "SESSION", sid, "builder", "open", "main")
	out = mustRun(t, exitOK, admin("sessions", "show", sid)...)
	wantOutput(t, out, "token", "builder (id "+builder.Hash[:12]+")", "main: (new) → "+fx.B)
	var shown api.AdminSession
	if err := json.Unmarshal([]byte(mustRun(t, exitOK, admin("sessions", "show", sid, "--json")...)), &shown); err != nil {
		t.Fatal(err)
	}
	if shown.Objects == 0 || shown.Verified != shown.Objects || shown.Token != "builder" {
		t.Fatalf("session as JSON: %+v", shown)
	}
	out = mustRun(t, exitFail, "sessions", "list", "-a", e.URL, "--token-file", bTok)
	wantOutput(t, out, "lacks the admin scope")
	out = mustRun(t, exitFail, "sessions", "commit", sid, "-a", e.URL, "--token-file", oTok)
	wantOutput(t, out, "lacks the publish scope")

	out = mustRun(t, exitOK, "sessions", "commit", sid, "-a", e.URL, "--token-file", rTok)
	wantOutput(t, out, "main: updated (new) → "+fx.B[:12])
	e.CheckPublished(map[string]string{"main": fx.B})
	out = mustRun(t, exitOK, admin("sessions", "list")...)
	wantOutput(t, out, "no sessions")
	out = mustRun(t, exitOK, admin("sessions", "list", "--all")...)
	wantOutput(t, out, sid, "published")

	// An open session of another token, aborted by the admin.
	body := strings.NewReader(`{"refs":[{"name":"other","new":"` + fx.C + `"}]}`)
	req, _ := http.NewRequest("POST", e.URL+api.PathSessions, body)
	req.Header.Set("Authorization", "Bearer "+e.Tok.Secret)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var open api.Session
	json.NewDecoder(res.Body).Decode(&open)
	res.Body.Close()
	out = mustRun(t, exitOK, admin("sessions", "abort", open.ID)...)
	wantOutput(t, out, "aborted session "+open.ID+" of token ci (other)")
	out = mustRun(t, exitFail, admin("sessions", "abort", open.ID)...)
	wantOutput(t, out, "already aborted")

	out = mustRun(t, exitOK, admin("tokens", "list")...)
	wantOutput(t, out, "NAME", "builder", "upload ", "release", "publish ", "ops", "admin ", "active")
	out = mustRun(t, exitOK, admin("tokens", "revoke", "builder")...)
	wantOutput(t, out, "revoked token builder (id "+builder.Hash[:12]+")", "by ops")
	out = mustRun(t, exitFail, append(push, "--token-file", bTok, "--no-publish")...)
	wantOutput(t, out, "token revoked")
	out = mustRun(t, exitOK, admin("tokens", "list")...)
	wantOutput(t, out, "revoked ")

	// Stopped: the same answers from the state dir.
	cfg := e.WriteConfig()
	local := []string{"-c", cfg, "--state-dir", e.State}
	out = mustRun(t, exitFail, append([]string{"tokens", "list"}, local...)...)
	wantOutput(t, out, "the daemon is running")
	e.Stop()
	out = mustRun(t, exitOK, append([]string{"sessions", "list", "--all"}, local...)...)
	wantOutput(t, out, sid, open.ID, "aborted")
	out = mustRun(t, exitOK, append([]string{"tokens", "revoke", e.Tok.Hash[:12]}, local...)...)
	wantOutput(t, out, "revoked token ci", "by local")
	out = mustRun(t, exitOK, append([]string{"tokens", "list"}, local...)...)
	wantOutput(t, out, "revoked ", "by local", "by ops")
	e.Start()
	out = mustRun(t, exitOK, admin("tokens", "list", "--json")...)
	var toks []api.Token
	if err := json.Unmarshal([]byte(out), &toks); err != nil || len(toks) != 5 || toks[0].Name != "ci" || toks[0].Revoked == nil {
		t.Fatalf("tokens after the local revocation: %+v, %v", toks, err)
	}
}

func TestAdminUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		out  string
	}{
		{[]string{"sessions"}, "missing subcommand"},
		{[]string{"sessions", "drop", "x"}, `unknown subcommand "drop"`},
		{[]string{"sessions", "show"}, "show takes one argument"},
		{[]string{"sessions", "list", "extra"}, "list takes no argument"},
		{[]string{"sessions", "show", "x", "--all"}, "--all goes with list"},
		{[]string{"sessions", "list", "-c", "x.yaml", "-a", "http://h"}, "use one or the other"},
		{[]string{"sessions", "list", "--state-dir", "/s"}, "go with -c"},
		{[]string{"tokens", "revoke"}, "revoke takes one argument"},
		{[]string{"tokens", "list", "--token", "a", "--token-file", "f"}, "give one"},
	} {
		wantOutput(t, mustRun(t, exitUsage, c.args...), c.out)
	}
	out := mustRun(t, exitFail, "tokens", "list", "-c", filepath.Join(t.TempDir(), "none.yaml"))
	wantOutput(t, out, "no such file")
}
