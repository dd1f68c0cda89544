package daemon_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/daemon"
	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/journal"
	"github.com/ostree-upload/ostree-upload/repository"
)

// apiError decodes an error answer.
func apiError(t testing.TB, r resp) api.Error {
	t.Helper()
	var e api.Error
	r.json(t, &e)
	return e
}

func wantScopeRefusal(t *testing.T, r resp, what string) {
	t.Helper()
	if r.status != 403 || apiError(t, r).Code != api.CodeScope {
		t.Fatalf("%s: %d %s, want 403 with code %q", what, r.status, r.body, api.CodeScope)
	}
}

// An upload-only token uploads but cannot publish; a publish-only token
// whose refs cover the session publishes it; no one else sees it.
func TestScopes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	builder, release, ops := daemontest.NewToken(t), daemontest.NewToken(t), daemontest.NewToken(t)
	e.ExtraTokens = []config.Token{
		{SHA256: builder.Hash, Name: "builder", Scopes: []string{auth.ScopeUpload}},
		{SHA256: release.Hash, Name: "release", Scopes: []string{auth.ScopePublish}, Refs: []string{"ma*"}},
		{SHA256: ops.Hash, Name: "ops", Scopes: []string{auth.ScopeAdmin}},
	}
	e.Start()

	var info api.Info
	e.doJSON(builder, "GET", api.PathInfo, nil).json(t, &info)
	if info.Token == nil || info.Token.Name != "builder" || strings.Join(info.Token.Scopes, ",") != "upload" || info.Token.ID != builder.Hash[:12] {
		t.Fatalf("info's token: %+v", info.Token)
	}
	e.doJSON(e.Tok, "GET", api.PathInfo, nil).json(t, &info)
	if strings.Join(info.Token.Scopes, ",") != "upload,publish" {
		t.Fatalf("default scopes: %+v", info.Token)
	}

	updates := []api.RefUpdate{{Name: "main", New: fx.a}}
	s := e.session(builder, updates, true) // forced: the publisher must agree
	if err := e.uploadAll(builder, s.ID, e.need(builder, s.ID, objectsOf(t, fx.a, ""))); err != nil {
		t.Fatal(err)
	}
	commit := api.PathSessions + "/" + s.ID + "/commit"
	wantScopeRefusal(t, e.doJSON(builder, "POST", commit, nil), "upload-only commit")
	wantScopeRefusal(t, e.doJSON(release, "POST", api.PathSessions, api.SessionRequest{Refs: updates}), "publish-only session")
	wantScopeRefusal(t, e.doJSON(ops, "POST", api.PathSessions, api.SessionRequest{Refs: updates}), "admin-only session")
	wantScopeRefusal(t, e.upload(release, s.ID, "00.filez", []byte("x")), "publish-only upload")
	wantScopeRefusal(t, e.doJSON(builder, "GET", api.PathAdmin+"/sessions", nil), "upload-only admin")
	wantScopeRefusal(t, e.doJSON(e.Tok, "GET", api.PathAdmin+"/tokens", nil), "default-scoped admin")
	// Tokens that may not publish every ref of the session do not see it.
	want(t, e.doJSON(e.Narrow, "GET", api.PathSessions+"/"+s.ID, nil), 404)
	want(t, e.doJSON(e.Narrow, "POST", commit, nil), 404)
	want(t, e.doJSON(ops, "GET", api.PathSessions+"/"+s.ID, nil), 404)
	// A default token may publish a staged session too; its own stay
	// private to it (TestIsolationBetweenTokens).
	want(t, e.doJSON(e.Tok, "GET", api.PathSessions+"/"+s.ID, nil), 200)
	// Nor may a publisher feed another token's session.
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/objects", api.ObjectsRequest{}), 404)
	if refs := e.Refs(); len(refs) != 0 {
		t.Fatalf("refs moved before a publisher committed: %v", refs)
	}

	var got api.Session
	r := e.doJSON(release, "GET", api.PathSessions+"/"+s.ID, nil)
	want(t, r, 200)
	r.json(t, &got)
	if got.Verified != got.Objects || got.Objects == 0 {
		t.Fatalf("the publisher sees %d of %d objects verified", got.Verified, got.Objects)
	}
	r = e.doJSON(release, "POST", commit, nil)
	if r.status != 409 || apiError(t, r).Code != api.CodeForce {
		t.Fatalf("commit of a forced staged session without force: %d %s", r.status, r.body)
	}
	r = e.doJSON(release, "POST", commit, api.CommitRequest{Force: true})
	want(t, r, 200)
	e.CheckPublished(map[string]string{"main": fx.a})
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestAdminAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ops := daemontest.NewToken(t)
	slashed := daemontest.NewToken(t)
	e.ExtraTokens = []config.Token{{SHA256: ops.Hash, Name: "ops", Scopes: []string{auth.ScopeAdmin}},
		{SHA256: slashed.Hash, Name: "team/ci"}}
	logs := &syncBuffer{}
	e.Logger = slog.New(slog.NewTextHandler(logs, nil))
	e.Start()

	s1 := e.session(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false)
	names := e.need(e.Tok, s1.ID, objectsOf(t, fx.a, ""))
	created := e.do(e.Tok, "POST", api.PathUploads+"/", strings.NewReader("12345"), map[string]string{
		"Tus-Resumable": "1.0.0", "Upload-Length": "100", "Content-Type": "application/offset+octet-stream",
		"Upload-Metadata": meta(api.MetaSession, s1.ID, api.MetaObject, names[0]),
	})
	want(t, created, 201)
	s2 := e.session(e.Narrow, []api.RefUpdate{{Name: "other", New: fx.c}}, false)

	var list []api.AdminSession
	e.doJSON(ops, "GET", api.PathAdmin+"/sessions", nil).json(t, &list)
	if len(list) != 2 || list[0].ID != s1.ID || list[0].Token != "ci" || list[1].Token != "narrow" ||
		list[0].TokenID != e.Tok.Hash[:12] || list[0].State != "open" || list[0].Objects != len(names) {
		t.Fatalf("sessions: %+v", list)
	}
	var one api.AdminSession
	e.doJSON(ops, "GET", api.PathAdmin+"/sessions/"+s1.ID, nil).json(t, &one)
	if len(one.Uploads) != 1 || one.Uploads[0].Offset != 5 || one.Uploads[0].Object != names[0] {
		t.Fatalf("session's uploads: %+v", one.Uploads)
	}
	want(t, e.doJSON(ops, "GET", api.PathAdmin+"/sessions/"+strings.Repeat("0", 32), nil), 404)
	want(t, e.doJSON(ops, "GET", api.PathAdmin+"/sessions/..%2f..%2fjournal.db", nil), 404)

	// Abort another token's session: its partial upload goes.
	r := e.doJSON(ops, "DELETE", api.PathAdmin+"/sessions/"+s1.ID, nil)
	want(t, r, 200)
	var aborted api.AdminSession
	r.json(t, &aborted)
	if aborted.State != "aborted" || aborted.Result != "aborted by ops" || len(aborted.Uploads) != 0 {
		t.Fatalf("after abort: %+v", aborted)
	}
	if _, err := os.Stat(filepath.Join(e.State, "uploads", filepath.FromSlash(one.Uploads[0].ID))); err == nil {
		t.Error("the aborted session's partial upload is still there")
	}
	want(t, e.doJSON(ops, "DELETE", api.PathAdmin+"/sessions/"+s1.ID, nil), 409)
	e.doJSON(ops, "GET", api.PathAdmin+"/sessions", nil).json(t, &list)
	if len(list) != 1 || list[0].ID != s2.ID {
		t.Fatalf("open sessions after the abort: %+v", list)
	}
	e.doJSON(ops, "GET", api.PathAdmin+"/sessions?all=true", nil).json(t, &list)
	if len(list) != 2 {
		t.Fatalf("all sessions: %+v", list)
	}

	var toks []api.Token
	e.doJSON(ops, "GET", api.PathAdmin+"/tokens", nil).json(t, &toks)
	if len(toks) != 4 || toks[0].Name != "ci" || toks[1].Name != "narrow" || toks[1].OpenSessions != 1 ||
		strings.Join(toks[1].Refs, ",") != "other*" || toks[2].Name != "ops" || strings.Join(toks[2].Scopes, ",") != "admin" ||
		toks[0].LastActivity == nil || toks[2].LastActivity != nil || !toks[0].Configured {
		t.Fatalf("tokens: %+v", toks)
	}
	if strings.Contains(string(e.doJSON(ops, "GET", api.PathAdmin+"/tokens", nil).body), e.Narrow.Hash) {
		t.Error("the token list shows a whole hash")
	}

	// Revoke by name: refused from now on, its session aborted.
	var rev api.Token
	r = e.doJSON(ops, "DELETE", api.PathAdmin+"/tokens/narrow", nil)
	want(t, r, 200)
	r.json(t, &rev)
	if rev.Revoked == nil || rev.RevokedBy != "ops" || rev.OpenSessions != 0 {
		t.Fatalf("revoked: %+v", rev)
	}
	r = e.doJSON(e.Narrow, "GET", api.PathInfo, nil)
	if r.status != 401 || apiError(t, r).Error != "token revoked" {
		t.Fatalf("revoked token: %d %s", r.status, r.body)
	}
	var s2now api.AdminSession
	e.doJSON(ops, "GET", api.PathAdmin+"/sessions/"+s2.ID, nil).json(t, &s2now)
	if s2now.State != "aborted" || s2now.Result != "token revoked by ops" {
		t.Fatalf("the revoked token's session: %+v", s2now)
	}
	want(t, e.doJSON(ops, "DELETE", api.PathAdmin+"/tokens/nosuch", nil), 404)
	want(t, e.doJSON(ops, "DELETE", api.PathAdmin+"/tokens/team%2Fci", nil), 200)
	want(t, e.doJSON(slashed, "GET", api.PathInfo, nil), 401)
	want(t, e.doJSON(e.Tok, "GET", api.PathInfo, nil), 200)
	if strings.Contains(logs.String(), e.Narrow.Secret) || strings.Contains(logs.String(), e.Narrow.Hash) {
		t.Error("the log shows the revoked token's secret or hash")
	}

	// The revocation outlives a restart.
	e.Restart()
	want(t, e.doJSON(e.Narrow, "GET", api.PathInfo, nil), 401)

	// With the daemon running, its state dir is locked.
	cfg := e.Effective()
	if _, err := daemon.OpenAdmin(context.Background(), cfg, "", nil); !errors.Is(err, journal.ErrInUse) {
		t.Fatalf("OpenAdmin beside the daemon: %v", err)
	}
	// Stopped, the state dir answers, and a revocation there holds once the
	// daemon is back, by ID this time.
	e.Stop()
	a, err := daemon.OpenAdmin(context.Background(), cfg, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if ss, err := a.Sessions(context.Background(), true); err != nil || len(ss) != 2 {
		t.Fatalf("offline sessions: %+v, %v", ss, err)
	}
	if tk, err := a.Revoke(context.Background(), e.Tok.Hash[:12], repository.ByLocal); err != nil || tk.Name != "ci" || tk.RevokedBy != "local" {
		t.Fatalf("offline revoke: %+v, %v", tk, err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	nothing := *cfg
	nothing.StateDir = filepath.Join(t.TempDir(), "nothing")
	if _, err := daemon.OpenAdmin(context.Background(), &nothing, "", nil); err == nil || !strings.Contains(err.Error(), "no journal") {
		t.Fatalf("OpenAdmin of an empty dir: %v", err)
	}
	e.Start()
	want(t, e.doJSON(e.Tok, "GET", api.PathInfo, nil), 401)
	want(t, e.doJSON(ops, "GET", api.PathAdmin+"/tokens", nil), 200)
}

// Forwarded headers count only from the configured proxies.
func TestForwardedHeaders(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	e := newEnv(t)
	e.Logger = slog.New(slog.NewTextHandler(logs, nil))
	forwarded := map[string]string{
		"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "ostree.example.com",
	}
	create := func(what string) (location, logged string) {
		t.Helper()
		s := e.session(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false)
		names := e.need(e.Tok, s.ID, objectsOf(t, fx.a, ""))
		hdr := map[string]string{"Tus-Resumable": "1.0.0", "Upload-Length": "10",
			"Upload-Metadata": meta(api.MetaSession, s.ID, api.MetaObject, names[0])}
		for k, v := range forwarded {
			hdr[k] = v
		}
		r := e.do(e.Tok, "POST", api.PathUploads+"/", nil, hdr)
		want(t, r, 201)
		e.doJSON(e.Tok, "DELETE", api.PathSessions+"/"+s.ID, nil)
		lines := strings.Split(logs.String(), "\n")
		for i := len(lines) - 1; i >= 0; i-- {
			if strings.Contains(lines[i], "path=/api/v1/uploads/") && strings.Contains(lines[i], "method=POST") {
				return r.header.Get("Location"), lines[i]
			}
		}
		t.Fatalf("%s: no log line for the upload", what)
		return "", ""
	}
	for _, c := range []struct {
		name    string
		proxies []netip.Prefix
		trusted bool
	}{
		{"none configured", nil, false},
		{"another proxy", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, false},
		{"from the proxy", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32")}, true},
	} {
		e.Config.TrustedProxies = c.proxies
		e.Start()
		loc, line := create(c.name)
		if c.trusted {
			if !strings.HasPrefix(loc, "https://ostree.example.com/api/v1/uploads/") || !strings.Contains(line, "remote=203.0.113.9") {
				t.Errorf("%s: Location %s, log %s", c.name, loc, line)
			}
		} else if !strings.HasPrefix(loc, e.URL+"/api/v1/uploads/") || !strings.Contains(line, "remote=127.0.0.1") {
			t.Errorf("%s: Location %s, log %s", c.name, loc, line)
		}
		e.Stop()
	}
}

// A staged session whose token got revoked without its sessions being
// swept (a session made while the revocation ran) is no publisher's to
// commit, and the janitor aborts it.
func TestRevokedStagedSession(t *testing.T) {
	e := newEnv(t)
	e.Config.SessionTTL = config.Duration{Duration: 20 * time.Second} // the janitor looks every 5 s
	builder := daemontest.NewToken(t)
	e.ExtraTokens = []config.Token{{SHA256: builder.Hash, Name: "builder", Scopes: []string{auth.ScopeUpload}}}
	e.Start()
	s := e.session(builder, []api.RefUpdate{{Name: "main", New: fx.a}}, false)
	if err := e.uploadAll(builder, s.ID, e.need(builder, s.ID, objectsOf(t, fx.a, ""))); err != nil {
		t.Fatal(err)
	}
	e.Stop()
	j, err := journal.Open(filepath.Join(e.State, "journal.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := j.Revoke(context.Background(), journal.Revocation{Owner: builder.Hash, Name: "builder", By: "test"}); err != nil {
		t.Fatal(err)
	}
	j.Close()
	e.Start()
	want(t, e.doJSON(e.Tok, "GET", api.PathSessions+"/"+s.ID, nil), 404)
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil), 404)
	if refs := e.Refs(); len(refs) != 0 {
		t.Fatalf("a revoked token's session was published: %v", refs)
	}
	a := e.Service()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, err := a.AdminSession(context.Background(), s.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State == api.StateAborted && got.Result == "token revoked" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the revoked token's session is still %s (%s)", got.State, got.Result)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
