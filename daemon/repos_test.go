package daemon_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/daemon"
	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/store/object"
	"github.com/ostree-upload/ostree-upload/store/storetest"
)

// twoRepos is a daemon serving beta and stable under one root, each
// signing with its own key, with a token for everything (admin too) and
// one limited to beta.
type twoRepos struct {
	root, url, file string
	all, beta, ops  daemontest.Token // ops: admin and upload only, expiring in 30 minutes
	keys            map[string]ed25519.PrivateKey
	d               *daemon.Daemon
}

func startTwoRepos(t *testing.T) *twoRepos { return startTwoReposWith(t, "", "") }

// startTwoReposWith adds keys at the top level (top) and to beta's entry
// (beta), each a line of YAML or "".
func startTwoReposWith(t *testing.T, top, beta string) *twoRepos {
	t.Helper()
	dir := t.TempDir()
	r := &twoRepos{root: filepath.Join(dir, "srv"), all: daemontest.NewToken(t), beta: daemontest.NewToken(t), ops: daemontest.NewToken(t), keys: map[string]ed25519.PrivateKey{}}
	if err := os.Mkdir(r.root, 0o755); err != nil {
		t.Fatal(err)
	}
	var repos strings.Builder
	for _, name := range []string{"beta", "stable"} {
		_, key, _ := ed25519.GenerateKey(nil)
		r.keys[name] = key
		kf := filepath.Join(dir, name+".ed25519")
		if err := os.WriteFile(kf, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&repos, "  %s:\n    sign_keyfiles: [%s]\n", name, kf)
		if name == "beta" && beta != "" {
			fmt.Fprintf(&repos, "    %s\n", beta)
		}
	}
	r.file = filepath.Join(dir, "ostree-upload.yaml")
	yaml := fmt.Sprintf(`root: %s
`+top+`
repos:
%stokens:
- sha256: %s
  name: all
  scopes: [upload, publish, admin]
- sha256: %s
  name: beta-ci
  repos: [beta]
- sha256: %s
  name: ops
  scopes: [admin, upload]
  expires: %s
`, r.root, repos.String(), r.all.Hash, r.beta.Hash, r.ops.Hash, time.Now().Add(30*time.Minute).UTC().Format(time.RFC3339))
	if err := os.WriteFile(r.file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(r.file)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.d, err = daemon.New(ctx, cfg, daemon.Options{Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	r.d.SetConfigFile(r.file)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.url = "http://" + ln.Addr().String()
	done := make(chan struct{})
	go func() { r.d.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done; r.d.Close() })
	return r
}

// push runs the client against a repository's address.
func (r *twoRepos) push(t *testing.T, tok daemontest.Token, repo, build, ref string) (string, error) {
	t.Helper()
	cmd := exec.Command(fx.bin, "push", "-a", r.url+"/"+repo, "-r", build, "-b", ref)
	cmd.Env = append(os.Environ(), "OSTREE_UPLOAD_TOKEN="+tok.Secret)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (r *twoRepos) get(t *testing.T, tok daemontest.Token, path string, out any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", r.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok.Secret)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if out != nil && res.StatusCode == 200 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	return res.StatusCode
}

// published checks a repository's ref, fsck, a pull into a bare-user
// repository, and that the commit is signed by the repository's key alone.
func (r *twoRepos) published(t *testing.T, repo, ref, commit string) {
	t.Helper()
	path := filepath.Join(r.root, repo)
	if got := strings.TrimSpace(storetest.MustOstree(t, "rev-parse", "--repo="+path, ref)); got != commit {
		t.Fatalf("%s: %s = %s, want %s", repo, ref, got, commit)
	}
	storetest.MustOstree(t, "fsck", "--repo="+path)
	storetest.PullOverHTTP(t, path, ref)
	data, err := os.ReadFile(filepath.Join(path, "objects", commit[:2], commit[2:]+".commit"))
	if err != nil {
		t.Fatal(err)
	}
	sigs, err := object.SignaturesOf(prodCommitMeta(t, path, commit))
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range r.keys {
		signed := false
		for _, s := range sigs.Ed25519 {
			signed = signed || ed25519.Verify(key.Public().(ed25519.PublicKey), data, s)
		}
		if signed != (name == repo) {
			t.Errorf("%s's commit %s: signed by %s's key: %v", repo, commit, name, signed)
		}
	}
}

// One daemon, two repositories: pushes to both run at once and publish
// each in its own repository, signed with its own key; a token limited to
// one repository cannot see or touch the other; the info lists what a
// token may use; the metrics say which repository.
func TestTwoRepositories(t *testing.T) {
	t.Parallel()
	r := startTwoRepos(t)
	buildB, cB := newBuild(t, "app/main", 40, 1700000000, "app/main")
	buildS, cS := newBuild(t, "app/main", 40, 1700000100, "app/main")
	var wg sync.WaitGroup
	for repo, build := range map[string]string{"beta": buildB, "stable": buildS} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, err := r.push(t, r.all, repo, build, "app/main"); err != nil {
				t.Errorf("push to %s: %v\n%s", repo, err, out)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	r.published(t, "beta", "app/main", cB)
	r.published(t, "stable", "app/main", cS)

	// The beta token: its repository works, the other is not there.
	build2, c2 := newBuild(t, "app/other", 5, 1700000200, "app/other")
	if out, err := r.push(t, r.beta, "beta", build2, "app/other"); err != nil {
		t.Fatalf("beta token to beta: %v\n%s", err, out)
	}
	r.published(t, "beta", "app/other", c2)
	out, err := r.push(t, r.beta, "stable", build2, "app/other")
	if err == nil || !strings.Contains(out, "no repository") {
		t.Fatalf("beta token to stable: %v\n%s", err, out)
	}
	if _, err := exec.Command("ostree", "rev-parse", "--repo="+filepath.Join(r.root, "stable"), "app/other").Output(); err == nil {
		t.Fatal("stable got app/other")
	}
	if st := r.get(t, r.beta, "/stable"+api.PathInfo, nil); st != 404 {
		t.Fatalf("beta token, stable's info: %d", st)
	}
	var info api.Info
	if st := r.get(t, r.beta, api.PathInfo, &info); st != 200 || strings.Join(info.Repositories, ",") != "beta" {
		t.Fatalf("beta token, the daemon's info: %d %+v", st, info)
	}
	if st := r.get(t, r.all, api.PathInfo, &info); st != 200 || strings.Join(info.Repositories, ",") != "beta,stable" {
		t.Fatalf("full token, the daemon's info: %d %+v", st, info)
	}
	info = api.Info{}
	if st := r.get(t, r.all, "/stable"+api.PathInfo, &info); st != 200 || info.Repository != "stable" || info.Refs["app/main"] != cS || !info.Token.Configured {
		t.Fatalf("stable's info: %d %+v", st, info)
	}
	res, err := http.Get(r.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{`ostree_upload_sessions_published_total{repo="beta"} 2`, `ostree_upload_sessions_published_total{repo="stable"} 1`} {
		if !bytes.Contains(metrics, []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// Promote moves a published commit from beta to stable without sending
// it: stable's objects are hard links to beta's, signed with stable's key,
// and the update rule holds (an older commit needs --force).
func TestPromote(t *testing.T) {
	t.Parallel()
	r := startTwoRepos(t)
	build, c := newBuild(t, "app/main", 60, 1700000000, "app/main")
	if out, err := r.push(t, r.all, "beta", build, "app/main"); err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	promote := func(tok daemontest.Token, args ...string) (string, error) {
		cmd := exec.Command(fx.bin, append([]string{"promote", "-a", r.url + "/stable"}, args...)...)
		cmd.Env = append(os.Environ(), "OSTREE_UPLOAD_TOKEN="+tok.Secret)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := promote(r.beta, "app/main", "--from", "beta"); err == nil || !strings.Contains(out, "no repository") {
		t.Fatalf("beta token promoting into stable: %v\n%s", err, out)
	}
	start := time.Now()
	out, err := promote(r.all, "app/main", "--from", "beta")
	if err != nil {
		t.Fatalf("promote: %v\n%s", err, out)
	}
	t.Logf("promoted in %s: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
	r.published(t, "stable", "app/main", c)
	for _, n := range daemontest.Objects(t, build, c, "") {
		if n.Type != object.File {
			continue
		}
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(r.root, "stable", "objects", n.RelPath()[len("objects/"):]), &st); err != nil {
			t.Fatal(err)
		}
		if st.Nlink < 2 {
			t.Fatalf("%s was copied, not linked (%d links)", n, st.Nlink)
		}
		break
	}
	if out, err := promote(r.all, "app/main", "--from", "beta"); err != nil || !strings.Contains(out, "up to date") {
		t.Fatalf("promote again: %v\n%s", err, out)
	}
	// Two publishes later in beta (the one between never reaches stable),
	// the promote is a fast-forward of stable's ref: the history between
	// comes from beta.
	child := func(ts int64) string {
		tree := filepath.Join(t.TempDir(), "tree")
		os.MkdirAll(tree, 0o755)
		os.WriteFile(filepath.Join(tree, "f"), []byte(fmt.Sprint(ts)), 0o644)
		return strings.TrimSpace(storetest.MustOstree(t, "commit", "--repo="+build, "--branch=app/main", "--tree=dir="+tree,
			fmt.Sprintf("--timestamp=@%d", ts), "-s", "child", "--bind-ref=app/main"))
	}
	for _, ts := range []int64{1700000100, 1700000200} {
		child(ts)
		if out, err := r.push(t, r.all, "beta", build, "app/main"); err != nil {
			t.Fatalf("push a child: %v\n%s", err, out)
		}
	}
	c3 := strings.TrimSpace(storetest.MustOstree(t, "rev-parse", "--repo="+build, "app/main"))
	if out, err := promote(r.all, "app/main", "--from", "beta", "--commit", c3); err != nil {
		t.Fatalf("promote a fast-forward: %v\n%s", err, out)
	}
	r.published(t, "stable", "app/main", c3)

	// An older, unrelated commit does not go over stable's, unless forced.
	beta := filepath.Join(r.root, "beta")
	old, cOld := newBuild(t, "app/old", 5, 1600000000, "app/main", "app/old")
	storetest.MustOstree(t, "pull-local", "--repo="+beta, old, cOld)
	storetest.MustOstree(t, "refs", "--repo="+beta, "--create=app/old", cOld)
	if out, err := promote(r.all, "app/old", "--from", "beta", "--to-ref", "app/main"); err == nil || !strings.Contains(out, "not newer") {
		t.Fatalf("an older commit promoted without --force: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(storetest.MustOstree(t, "rev-parse", "--repo="+filepath.Join(r.root, "stable"), "app/main")); got != c3 {
		t.Fatalf("stable moved to %s", got)
	}
	if out, err := promote(r.all, "app/old", "--from", "beta", "--to-ref", "app/main", "--force"); err != nil {
		t.Fatalf("forced: %v\n%s", err, out)
	}
	r.published(t, "stable", "app/main", cOld)

	// A source object written behind the daemon's back is verified like an
	// arriving one: a .filez with bytes after its content is refused, and
	// nothing moves.
	bad, cBad := newBuild(t, "app/bad", 3, 1700000300, "app/bad")
	storetest.MustOstree(t, "pull-local", "--repo="+beta, bad, cBad)
	storetest.MustOstree(t, "refs", "--repo="+beta, "--create=app/bad", cBad)
	for _, n := range daemontest.Objects(t, bad, cBad, "") {
		if n.Type == object.File {
			f, err := os.OpenFile(filepath.Join(beta, n.RelPath()), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write([]byte("junk"))
			f.Close()
			break
		}
	}
	if out, err := promote(r.all, "app/bad", "--from", "beta"); err == nil || !strings.Contains(out, "fsck") {
		t.Fatalf("a corrupt source object: %v\n%s", err, out)
	}
	if _, err := exec.Command("ostree", "rev-parse", "--repo="+filepath.Join(r.root, "stable"), "app/bad").Output(); err == nil {
		t.Fatal("stable got app/bad")
	}
	var sessions []api.AdminSession
	if st := r.get(t, r.all, "/stable"+api.PathAdmin+"/sessions", &sessions); st != 200 || len(sessions) != 0 {
		t.Fatalf("open sessions after the refused promote: %d %+v", st, sessions)
	}
}

// An admin token mints a short-lived token for one repository; it works
// there, nowhere else, and cannot be wider than its maker.
func TestMintedTokens(t *testing.T) {
	t.Parallel()
	r := startTwoRepos(t)
	mint := func(tok daemontest.Token, body string) (int, api.MintedToken) {
		req, _ := http.NewRequest("POST", r.url+api.PathAdmin+"/tokens", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok.Secret)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var m api.MintedToken
		json.NewDecoder(res.Body).Decode(&m)
		return res.StatusCode, m
	}
	st, m := mint(r.all, `{"name":"job-1","repos":["beta"],"refs":["app/*"],"expires_in":600}`)
	if st != 201 || m.Secret == "" || m.Expires == nil || time.Until(*m.Expires) > 11*time.Minute {
		t.Fatalf("mint: %d %+v", st, m)
	}
	job := daemontest.Token{Secret: m.Secret}
	build, c := newBuild(t, "app/x", 5, 1700000000, "app/x")
	if out, err := r.push(t, job, "beta", build, "app/x"); err != nil {
		t.Fatalf("minted token to beta: %v\n%s", err, out)
	}
	r.published(t, "beta", "app/x", c)
	if out, err := r.push(t, job, "stable", build, "app/x"); err == nil {
		t.Fatalf("minted token to stable:\n%s", out)
	}
	for body, want := range map[string]int{
		`{"scopes":["admin"]}`:              403, // never admin
		`{"expires_in":9999999}`:            400, // over 7 days
		`{"repos":["nosuch"]}`:              400,
		`{"name":"job-1","repos":["beta"]}`: 409, // names are unique
	} {
		if st, _ := mint(r.all, body); st != want {
			t.Errorf("mint %s: %d, want %d", body, st, want)
		}
	}
	if st, _ := mint(r.beta, `{}`); st != 403 { // no admin scope
		t.Errorf("mint by a token without admin: %d", st)
	}
	// The command line: the secret alone on stdout.
	cmd := exec.Command(fx.bin, "tokens", "create", "-a", r.url, "--name", "job-2", "--repo", "beta", "--ref", "app/*", "--expires-in", "10m")
	cmd.Env = append(os.Environ(), "OSTREE_UPLOAD_TOKEN="+r.all.Secret)
	secret, err := cmd.Output()
	if err != nil {
		t.Fatalf("tokens create: %v", err)
	}
	job2 := daemontest.Token{Secret: strings.TrimSpace(string(secret))}
	var info api.Info
	if st := r.get(t, job2, "/beta"+api.PathInfo, &info); st != 200 || info.Token.Name != "job-2" || strings.Join(info.Token.Repos, ",") != "beta" {
		t.Fatalf("token from tokens create: %d %+v", st, info.Token)
	}
	cfg, err := config.Load(r.file)
	if err != nil || len(cfg.Tokens) != 5 || cfg.Tokens[3].Name != "job-1" || cfg.Tokens[3].MintedBy != r.all.Hash || strings.Contains(mustRead(t, r.file), m.Secret) {
		t.Fatalf("the configuration file after minting: %v %+v", err, cfg)
	}
	// A minted token is no wider than its maker: ops has no publish scope
	// and expires in half an hour.
	if st, _ := mint(r.ops, `{"scopes":["publish"]}`); st != 403 {
		t.Errorf("ops minting publish: %d", st)
	}
	st, opsJob := mint(r.ops, `{"scopes":["upload"],"expires_in":86400}`)
	if st != 201 || opsJob.Expires == nil || time.Until(*opsJob.Expires) > 31*time.Minute {
		t.Fatalf("ops minting for a day: %d %+v", st, opsJob)
	}
	// ops revoked in beta: it mints nothing that reaches beta, and what it
	// minted is refused there (not in stable).
	del := func(path string) int {
		req, _ := http.NewRequest("DELETE", r.url+path, nil)
		req.Header.Set("Authorization", "Bearer "+r.all.Secret)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if st := del("/beta" + api.PathAdmin + "/tokens/ops"); st != 200 {
		t.Fatalf("revoke ops in beta: %d", st)
	}
	for _, body := range []string{`{"scopes":["upload"]}`, `{"scopes":["upload"],"repos":["beta"]}`} {
		if st, _ := mint(r.ops, body); st != 401 {
			t.Errorf("revoked ops minting %s: %d", body, st)
		}
	}
	opsTok := daemontest.Token{Secret: opsJob.Secret}
	if st := r.get(t, opsTok, "/beta"+api.PathInfo, nil); st != 401 {
		t.Errorf("ops's token in beta after ops's revocation: %d", st)
	}
	if st := r.get(t, opsTok, "/stable"+api.PathInfo, nil); st != 200 {
		t.Errorf("ops's token in stable: %d", st)
	}
	// The daemon's own path revokes in every repository.
	if st := del(api.PathAdmin + "/tokens/ops"); st != 200 {
		t.Fatalf("revoke ops everywhere: %d", st)
	}
	if st := r.get(t, r.ops, api.PathInfo, nil); st != 401 {
		t.Errorf("ops's info after revocation everywhere: %d", st)
	}
	if st := r.get(t, opsTok, "/stable"+api.PathInfo, nil); st != 401 {
		t.Errorf("ops's token in stable after ops's revocation there: %d", st)
	}

	// Revocation works on it as on the others.
	req, _ := http.NewRequest("DELETE", r.url+"/beta"+api.PathAdmin+"/tokens/job-1", nil)
	req.Header.Set("Authorization", "Bearer "+r.all.Secret)
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("revoke: %v %v", err, res.Status)
	}
	res.Body.Close()
	if st := r.get(t, job, "/beta"+api.PathInfo, nil); st != 401 {
		t.Fatalf("revoked minted token: %d", st)
	}
}

func mustRead(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Two entries that are one directory are refused before anything opens.
func TestSameRepositoryTwiceRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	root := filepath.Join(dir, "srv")
	os.Mkdir(root, 0o755)
	storetest.MustOstree(t, "init", "--mode=archive", "--repo="+filepath.Join(root, "a"))
	if err := os.Symlink("a", filepath.Join(root, "b")); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "c.yaml")
	os.WriteFile(file, []byte("root: "+root+"\nrepos:\n  a: {}\n  b: {}\n"), 0o600)
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := daemon.New(context.Background(), cfg, daemon.Options{Version: "test"}); err == nil || !strings.Contains(err.Error(), "same directory") {
		t.Fatalf("same repository twice: %v", err)
	}
}

// A daemon started from a file in ostree-push's shape behaves as that file
// says there: yes/no booleans, repos: overrides keyed by relative and
// absolute paths under root (signing for one, update: no for the other),
// and a server-wide force: yes that lets no push with a token move a ref
// backwards.
func TestOstreeReceiveConfServes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	root := filepath.Join(dir, "srv")
	os.Mkdir(root, 0o755)
	_, key, _ := ed25519.GenerateKey(nil)
	kf := filepath.Join(dir, "foo.ed25519")
	os.WriteFile(kf, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600)
	tok := daemontest.NewToken(t)
	file := filepath.Join(dir, "ostree-receive.conf")
	conf := fmt.Sprintf(`# in ostree-push's shape
root: %s
gpg_verify: no
sign_verify: no
update: yes
log_level: INFO
force: yes
dry_run: no
repos:
  foo:
    sign_keyfiles: [%s]
  %s/path/to/bar:
    update: no
tokens:
- sha256: %s
  name: ci
`, root, kf, root, tok.Hash)
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Force || cfg.DryRun {
		t.Fatalf("force %v, dry_run %v", cfg.Force, cfg.DryRun)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d, err := daemon.New(ctx, cfg, daemon.Options{Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(d.Names(), ","); got != "foo,path/to/bar" {
		t.Fatalf("repositories %q", got)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { d.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done; d.Close() })
	url := "http://" + ln.Addr().String()
	push := func(repo, build, ref string) (string, error) {
		cmd := exec.Command(fx.bin, "push", "-a", url+"/"+repo, "-r", build, "-b", ref)
		cmd.Env = append(os.Environ(), "OSTREE_UPLOAD_TOKEN="+tok.Secret)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	build, c := newBuild(t, "app/main", 10, 1700000000, "app/main")
	for _, repo := range []string{"foo", "path/to/bar"} {
		if out, err := push(repo, build, "app/main"); err != nil {
			t.Fatalf("push to %s: %v\n%s", repo, err, out)
		}
		path := filepath.Join(root, repo)
		if got := strings.TrimSpace(storetest.MustOstree(t, "rev-parse", "--repo="+path, "app/main")); got != c {
			t.Fatalf("%s: app/main = %s", repo, got)
		}
		storetest.MustOstree(t, "fsck", "--repo="+path)
	}
	// foo signs (its override) and updates its summary; bar does neither.
	fooSigs, _ := object.SignaturesOf(prodCommitMeta(t, filepath.Join(root, "foo"), c))
	barSigs, _ := object.SignaturesOf(prodCommitMeta(t, filepath.Join(root, "path/to/bar"), c))
	if len(fooSigs.Ed25519) != 1 || len(barSigs.Ed25519) != 0 {
		t.Fatalf("signatures: foo %d, bar %d", len(fooSigs.Ed25519), len(barSigs.Ed25519))
	}
	if _, err := os.Stat(filepath.Join(root, "foo", "summary")); err != nil {
		t.Fatalf("foo has no summary: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "path/to/bar", "summary")); err == nil {
		t.Fatal("bar (update: no) got a summary")
	}
	// force: yes in the file acts on pushes over ssh only: a token's
	// older commit is refused.
	old, _ := newBuild(t, "app/main", 3, 1600000000, "app/main")
	if out, err := push("foo", old, "app/main"); err == nil {
		t.Fatalf("an older commit went over a newer one:\n%s", out)
	}
	if got := strings.TrimSpace(storetest.MustOstree(t, "rev-parse", "--repo="+filepath.Join(root, "foo"), "app/main")); got != c {
		t.Fatalf("foo moved to %s", got)
	}
}

// A repository's own limits hold on every path, tus included.
func TestRepositoryLimitsApplyToTus(t *testing.T) {
	t.Parallel()
	r := startTwoReposWith(t, "max_object_size: 1KiB", "max_object_size: 1MiB")
	for repo, want := range map[string]string{"beta": "1048576", "stable": "1024"} {
		req, _ := http.NewRequest("OPTIONS", r.url+"/"+repo+api.PathUploads+"/", nil)
		req.Header.Set("Authorization", "Bearer "+r.all.Secret)
		req.Header.Set("Tus-Resumable", "1.0.0")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if got := res.Header.Get("Tus-Max-Size"); got != want {
			t.Errorf("%s: Tus-Max-Size %q, want %s", repo, got, want)
		}

		var info api.Info
		if st := r.get(t, r.all, "/"+repo+api.PathInfo, &info); st != 200 || fmt.Sprint(info.Limits.MaxObjectSize) != want {
			t.Errorf("%s: info limits %+v", repo, info.Limits)
		}
	}
}

// A repository inside another's own directories is refused: libostree
// would take its files for the other's refs or objects.
func TestRepositoryInsideAnotherRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	root := filepath.Join(dir, "srv")
	os.Mkdir(root, 0o755)
	file := filepath.Join(dir, "c.yaml")
	os.WriteFile(file, []byte("root: "+root+"\nrepos:\n  beta: {}\n  beta/refs/heads/x: {}\n"), 0o600)
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := daemon.New(context.Background(), cfg, daemon.Options{Version: "test"}); err == nil || !strings.Contains(err.Error(), "inside repository \"beta\"'s refs/") {
		t.Fatalf("a repository in another's refs/: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "beta")); err == nil {
		t.Fatal("beta was created before the refusal")
	}
}
