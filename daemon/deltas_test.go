package daemon_test

import (
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/auth"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/store/object"
	"github.com/ostree-upload/ostree-upload/store/storetest"
)

// deltaList lists the static deltas of repo as `ostree static-delta list`
// prints them.
func deltaList(t testing.TB, repo string) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(storetest.MustOstree(t, "static-delta", "list", "--repo="+repo), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "(") {
			out = append(out, l)
		}
	}
	return out
}

// waitDelta waits until repo has the static delta name, which the daemon
// generates after its answer, at nice 19: on a loaded machine that may take
// a while.
func waitDelta(t testing.TB, repo, name string) {
	t.Helper()
	for i := 0; !slices.Contains(deltaList(t, repo), name); i++ {
		if i == 900 {
			t.Fatalf("static delta %s not generated within 90 s; deltas: %v", name, deltaList(t, repo))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// summaryIndexes reports whether repo's summary indexes the static delta
// name (libostree's ostree.static-deltas).
func summaryIndexes(t testing.TB, repo, name string) bool {
	t.Helper()
	for _, l := range strings.Split(storetest.MustOstree(t, "summary", "--view", "--repo="+repo), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "Static Deltas") {
			return strings.Contains(l, "'"+name+"'")
		}
	}
	return false
}

// metricValue scrapes the daemon at url and returns the value of the
// series (0 when absent).
func metricValue(t testing.TB, url, series string) float64 {
	t.Helper()
	res, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	v, _ := sample(text, series)
	return v
}

// pushBuild pushes ref of the build repository to the daemon at url with
// the push command.
func pushBuild(t testing.TB, url, secret, build string, refs ...string) {
	t.Helper()
	args := []string{"push", "-q", "-r", build, "-a", url}
	for _, r := range refs {
		args = append(args, "-b", r)
	}
	cmd := exec.Command(fx.bin, args...)
	cmd.Env = append(os.Environ(), "OSTREE_UPLOAD_TOKEN="+secret)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("push %v: %v\n%s", refs, err, out)
	}
}

// freshBuilds makes two builds of a tree as a CI job does, each in a
// repository of its own, so that neither commit has a parent: A (ref main)
// with four 512 KiB files of random bytes and a hundred small ones, and B,
// a later commit of the same tree with a few bytes of each large file and
// three small files changed. It returns the build repositories and
// commits.
func freshBuilds(t *testing.T) (buildA, a, buildB, b string) {
	t.Helper()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(tree, 0o755)
	rng := rand.New(rand.NewSource(11))
	large := make([][]byte, 4)
	for i := range large {
		large[i] = make([]byte, 512<<10)
		rng.Read(large[i])
		os.WriteFile(filepath.Join(tree, fmt.Sprintf("large%d", i)), large[i], 0o644)
	}
	for i := range 100 {
		os.WriteFile(filepath.Join(tree, fmt.Sprintf("small%03d", i)), []byte(fmt.Sprintf("small file %d %d\n", i, rng.Int())), 0o644)
	}
	build := func(name string, ts int64) (string, string) {
		repo := filepath.Join(dir, name)
		if err := storetest.InitArchive(repo); err != nil {
			t.Fatal(err)
		}
		c, err := storetest.CommitTree(repo, "main", tree, ts)
		if err != nil {
			t.Fatal(err)
		}
		return repo, strings.TrimSpace(c)
	}
	buildA, a = build("build-a", 1700000000)
	for i, b := range large {
		copy(b[100<<10:], fmt.Sprintf("version 2 of large%d", i))
		os.WriteFile(filepath.Join(tree, fmt.Sprintf("large%d", i)), b, 0o644)
	}
	for i := range 3 {
		os.WriteFile(filepath.Join(tree, fmt.Sprintf("small%03d", i)), []byte(fmt.Sprintf("small file %d, version 2\n", i)), 0o644)
	}
	buildB, b = build("build-b", 1700000100)
	return buildA, a, buildB, b
}

// countingServer serves a directory over HTTP on 127.0.0.1 and counts the
// bytes of the bodies it sends and the paths it answers with 200.
type countingServer struct {
	URL   string
	mu    sync.Mutex
	bytes int64
	paths []string
}

func serveCounting(t *testing.T, dir string) *countingServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &countingServer{URL: "http://" + ln.Addr().String()}
	files := http.FileServer(http.Dir(dir))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &countingWriter{ResponseWriter: w, status: 200}
		files.ServeHTTP(cw, r)
		c.mu.Lock()
		defer c.mu.Unlock()
		c.bytes += cw.n
		if cw.status == 200 {
			c.paths = append(c.paths, r.URL.Path)
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return c
}

// take returns what was counted since the last take, and starts again.
func (c *countingServer) take() (int64, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, p := c.bytes, c.paths
	c.bytes, c.paths = 0, nil
	return n, p
}

type countingWriter struct {
	http.ResponseWriter
	n      int64
	status int
}

func (w *countingWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

// pullUpdate makes a client (a bare-user repository) that holds ref at
// commit from, pulled from srv, then pulls the update of ref to want, with
// the pull options opts, and returns the bytes and paths that update
// fetched, once the client checks clean. The update takes two pulls, the
// commit first (--commit-metadata-only), as flatpak does: libostree before
// 2023.7 (Debian bookworm's is 2022.7) scans a commit it takes from a
// delta's superblock while the delta is being applied, and fetches as
// loose objects whatever the delta has not written yet (libostree commit
// fc5aef6f, "lib/pull: Don't scan commit objects we fetch via deltas");
// with the commit already there, it fetches the delta alone.
func pullUpdate(t *testing.T, srv *countingServer, ref, from, want string, opts ...string) (int64, []string) {
	t.Helper()
	client := filepath.Join(t.TempDir(), "client")
	storetest.MustOstree(t, "init", "--mode=bare-user", "--repo="+client)
	storetest.MustOstree(t, "remote", "add", "--repo="+client, "--no-gpg-verify", "prod", srv.URL)
	storetest.MustOstree(t, "pull", "--repo="+client, "prod", ref+"@"+from)
	srv.take()
	storetest.MustOstree(t, "pull", "--repo="+client, "--commit-metadata-only", "prod", ref)
	storetest.MustOstree(t, append(append([]string{"pull", "--repo=" + client}, opts...), "prod", ref)...)
	n, paths := srv.take()
	if got := strings.TrimSpace(storetest.MustOstree(t, "rev-parse", "--repo="+client, "prod:"+ref)); got != want {
		t.Fatalf("client's %s after the update: %s, want %s", ref, got, want)
	}
	storetest.MustOstree(t, "fsck", "--repo="+client)
	return n, paths
}

// treeObject reports whether path is a file or directory object of a
// repository (not a commit or its detached metadata).
func treeObject(path string) bool {
	return strings.HasPrefix(path, "/objects/") && !strings.HasSuffix(path, ".commit") && !strings.HasSuffix(path, ".commitmeta")
}

// With static_deltas, a build from a fresh CI repository (its commit
// has no parent) published over the one before gets a delta from it,
// indexed by the summary, and a client holding the one before updates by
// fetching that delta: a fraction of the bytes of the update without it.
func TestStaticDeltaFromFreshBuild(t *testing.T) {
	t.Parallel()
	buildA, a, buildB, b := freshBuilds(t)
	if out, err := storetest.Ostree("rev-parse", "--repo="+buildB, b+"^"); err == nil {
		t.Fatalf("B has a parent: %s", out)
	}
	e := newEnv(t)
	e.Config.StaticDeltas = true
	e.Start()
	pushBuild(t, e.URL, e.Tok.Secret, buildA, "main")
	pushBuild(t, e.URL, e.Tok.Secret, buildB, "main")
	name := a + "-" + b
	waitDelta(t, e.Repo, name)
	if got := deltaList(t, e.Repo); !slices.Equal(got, []string{name}) {
		t.Fatalf("deltas %v, want only %s", got, name)
	}
	for i := 0; !summaryIndexes(t, e.Repo, name); i++ { // the summary follows the generation
		if i == 100 {
			t.Fatalf("the summary does not index %s:\n%s", name, storetest.MustOstree(t, "summary", "--view", "--repo="+e.Repo))
		}
		time.Sleep(100 * time.Millisecond)
	}
	storetest.MustOstree(t, "fsck", "--repo="+e.Repo)

	srv := serveCounting(t, e.Repo)
	deltaBytes, deltaPaths := pullUpdate(t, srv, "main", a, b)
	plainBytes, plainPaths := pullUpdate(t, srv, "main", a, b, "--disable-static-deltas")
	t.Logf("update A→B: %d bytes in %d requests with the static delta, %d bytes in %d requests without", deltaBytes, len(deltaPaths), plainBytes, len(plainPaths))
	if !slices.ContainsFunc(deltaPaths, func(p string) bool { return strings.HasPrefix(p, "/deltas/") }) {
		t.Errorf("the update fetched no delta: %v", deltaPaths)
	}
	if i := slices.IndexFunc(deltaPaths, treeObject); i >= 0 {
		t.Errorf("the update with the delta still fetched %s", deltaPaths[i])
	}
	if deltaBytes*10 > plainBytes {
		t.Errorf("the update fetched %d bytes with the delta, %d without: want a tenth at most", deltaBytes, plainBytes)
	}
}

// A publish is answered before its deltas are generated. A daemon killed
// while it generates one finishes it at its next start, without another
// publish; one killed after generating it, before the summary indexes it,
// regenerates the summary at its next start.
func TestStaticDeltaAfterCrash(t *testing.T) {
	t.Parallel()
	for _, fp := range []string{"during-delta-generation", "before-delta-summary"} {
		t.Run(fp, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.Config.StaticDeltas = true
			p := e.StartProcess(fx.bin, fp)
			if r := e.push(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false); r.status != 200 {
				t.Fatalf("push A: %d %s", r.status, r.body)
			}
			// The push of B, which fx.build's main holds, is answered before
			// or after the kill; after it, its retries reach the restarted
			// daemon.
			push := exec.Command(fx.bin, "push", "-q", "--retry-timeout", "60s", "-r", fx.build, "-a", e.URL, "-b", "main")
			push.Env = append(os.Environ(), "OSTREE_UPLOAD_TOKEN="+e.Tok.Secret)
			var out strings.Builder
			push.Stdout, push.Stderr = &out, &out
			if err := push.Start(); err != nil {
				t.Fatal(err)
			}
			waitKilled(t, p)
			name := fx.a + "-" + fx.b
			if refs := e.Refs(); refs["main"] != fx.b {
				t.Fatalf("killed at %s, main is %s, want B", fp, refs["main"])
			}
			want := []string(nil) // cut off: no superblock, no delta
			if fp == "before-delta-summary" {
				want = []string{name}
			}
			if got := deltaList(t, e.Repo); !slices.Equal(got, want) {
				t.Fatalf("deltas after a kill at %s: %v, want %v", fp, got, want)
			}
			if summaryIndexes(t, e.Repo, name) {
				t.Fatalf("the summary indexes %s before the kill let it", name)
			}
			e.StartProcess(fx.bin, "")
			if err := push.Wait(); err != nil {
				t.Fatalf("push: %v\n%s", err, out.String())
			}
			waitDelta(t, e.Repo, name)
			for i := 0; !summaryIndexes(t, e.Repo, name); i++ {
				if i == 100 {
					t.Fatalf("the summary does not index %s after the restart", name)
				}
				time.Sleep(100 * time.Millisecond)
			}
			storetest.MustOstree(t, "fsck", "--repo="+e.Repo)
			storetest.PullOverHTTP(t, e.Repo, "main")
		})
	}
}

// A delta whose target is no longer a ref's head stays in place and in the
// summary for static_delta_grace, for clients in the middle of fetching
// it, then goes.
func TestStaticDeltaRetirement(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Config.StaticDeltas, e.Config.StaticDeltaDepth = true, 1
	e.Config.StaticDeltaGrace.Duration = 2 * time.Second
	e.Start()
	for _, u := range []api.RefUpdate{{Name: "main", New: fx.a}, {Name: "main", Old: fx.a, New: fx.b}} {
		if r := e.push(e.Tok, []api.RefUpdate{u}, false); r.status != 200 {
			t.Fatalf("push %s: %d %s", u.New, r.status, r.body)
		}
	}
	ab, bd := fx.a+"-"+fx.b, fx.b+"-"+fx.d
	waitDelta(t, e.Repo, ab)
	// D, a later commit unrelated to B, moves main on.
	if r := e.push(e.Tok, []api.RefUpdate{{Name: "main", Old: fx.b, New: fx.d}}, false); r.status != 200 {
		t.Fatalf("push D: %d %s", r.status, r.body)
	}
	waitDelta(t, e.Repo, bd)
	moved := time.Now()
	if !slices.Contains(deltaList(t, e.Repo), ab) || !summaryIndexes(t, e.Repo, ab) {
		t.Fatalf("A→B went before its grace period: deltas %v", deltaList(t, e.Repo))
	}
	for slices.Contains(deltaList(t, e.Repo), ab) {
		if time.Since(moved) > 15*time.Second {
			t.Fatalf("A→B still there 15 s after main moved on, with a grace period of 2 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if since := time.Since(moved); since < time.Second {
		t.Errorf("A→B deleted %s after main moved on, within its grace period of 2 s", since)
	}
	for i := 0; summaryIndexes(t, e.Repo, ab); i++ {
		if i == 100 {
			t.Fatal("the summary still indexes the deleted A→B")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !summaryIndexes(t, e.Repo, bd) || !slices.Equal(deltaList(t, e.Repo), []string{bd}) {
		t.Errorf("after the retirement: deltas %v", deltaList(t, e.Repo))
	}
	if got := metricValue(t, e.URL, "ostree_upload_static_deltas_retired_total"); got != 1 {
		t.Errorf("static_deltas_retired_total = %v, want 1", got)
	}
	storetest.MustOstree(t, "fsck", "--repo="+e.Repo)
	storetest.PullOverHTTP(t, e.Repo, "main")
}

// A generation that fails (here: bsdiff over static_delta_memory_limit) is
// logged and counted; the publish was answered, and the other deltas are
// generated. The memory limit fails the same way on a loaded machine, where
// a time limit would also catch the small delta of a nice 19 child.
func TestStaticDeltaFailureSparesTheOthers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	small, large := filepath.Join(dir, "small"), filepath.Join(dir, "large")
	os.MkdirAll(small, 0o755)
	os.MkdirAll(large, 0o755)
	// bsdiff of 24 MiB needs more than 512 MiB of address space.
	blob := make([]byte, 24<<20)
	rand.New(rand.NewSource(5)).Read(blob)
	var builds, commits []string
	for v := range 2 {
		if v == 1 {
			// Changes all through the file: libostree's rolling checksums
			// reuse nothing, so it tries bsdiff.
			for i := 0; i < len(blob); i += 2048 {
				blob[i] ^= 0xff
			}
		}
		os.WriteFile(filepath.Join(large, "blob"), blob, 0o644)
		os.WriteFile(filepath.Join(small, "f"), []byte(strings.Repeat(fmt.Sprintf("version %d\n", v), 100)), 0o644)
		build := filepath.Join(dir, fmt.Sprintf("build%d", v))
		if err := storetest.InitArchive(build); err != nil {
			t.Fatal(err)
		}
		for ref, tree := range map[string]string{"big": large, "main": small} {
			c, err := storetest.CommitTree(build, ref, tree, int64(1700000000+100*v))
			if err != nil {
				t.Fatal(err)
			}
			commits = append(commits, ref+"="+strings.TrimSpace(c))
		}
		builds = append(builds, build)
	}
	e := newEnv(t)
	e.Config.StaticDeltas, e.Config.StaticDeltaDepth = true, 1
	e.Config.StaticDeltaMemoryLimit = 512 * config.MiB
	e.Start()
	pushBuild(t, e.URL, e.Tok.Secret, builds[0], "big", "main")
	pushBuild(t, e.URL, e.Tok.Secret, builds[1], "big", "main")
	head := func(build, ref string) string {
		return strings.TrimSpace(storetest.MustOstree(t, "rev-parse", "--repo="+build, ref))
	}
	// big sorts first: its generation fails before main's starts.
	waitDelta(t, e.Repo, head(builds[0], "main")+"-"+head(builds[1], "main"))
	// The delta's files are there before its generator has exited and
	// been counted.
	for deadline := time.Now().Add(30 * time.Second); metricValue(t, e.URL, "ostree_upload_static_delta_generations_total") == 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if got := metricValue(t, e.URL, "ostree_upload_static_delta_generation_failures_total"); got != 1 {
		t.Errorf("static_delta_generation_failures_total = %v, want 1", got)
	}
	if got := metricValue(t, e.URL, "ostree_upload_static_delta_generations_total"); got != 1 {
		t.Errorf("static_delta_generations_total = %v, want 1", got)
	}
	if got := metricValue(t, e.URL, "ostree_upload_static_delta_generation_seconds_count"); got != 2 {
		t.Errorf("static_delta_generation_seconds_count = %v, want 2", got)
	}
	if got := deltaList(t, e.Repo); len(got) != 1 {
		t.Errorf("deltas %v, want main's only", got)
	}
	if refs := e.Refs(); refs["big"] != head(builds[1], "big") || refs["main"] != head(builds[1], "main") {
		t.Errorf("refs %v, want %v", refs, commits[2:])
	}
}

// A Flatpak repository gets static deltas too, indexed by the summary
// flatpak build-update-repo writes, and flatpak still lists its apps.
func TestStaticDeltaFlatpak(t *testing.T) {
	t.Parallel()
	env := flatpakEnv(t)
	build1, ref := flatpakBuild(t, env, t.TempDir(), "1")
	time.Sleep(1100 * time.Millisecond) // a later build, by commit timestamp
	build2, _ := flatpakBuild(t, env, t.TempDir(), "2")
	e := newEnv(t)
	e.Config.StaticDeltas = true
	e.Start()
	for _, build := range []string{build1, build2} {
		push := exec.Command(fx.bin, "push", "-q", "-r", build, "-a", e.URL, "-b", ref)
		push.Env = append(env, "OSTREE_UPLOAD_TOKEN="+e.Tok.Secret)
		if out, err := push.CombinedOutput(); err != nil {
			t.Fatalf("push: %v\n%s", err, out)
		}
	}
	v1 := strings.TrimSpace(storetest.MustOstree(t, "rev-parse", "--repo="+build1, ref))
	v2 := strings.TrimSpace(storetest.MustOstree(t, "rev-parse", "--repo="+build2, ref))
	name := v1 + "-" + v2
	waitDelta(t, e.Repo, name)
	waitAppstream(t, e.URL, e.Repo)
	for i := 0; !summaryIndexes(t, e.Repo, name); i++ {
		if i == 100 {
			t.Fatalf("flatpak's summary does not index %s:\n%s", name, storetest.MustOstree(t, "summary", "--view", "--repo="+e.Repo))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(e.Repo, "summary.idx")); err != nil {
		t.Errorf("summary.idx: %v", err)
	}
	if out := flatpak(t, env, "remote-ls", "--app", "file://"+e.Repo); !strings.Contains(out, "org.example.App") {
		t.Fatalf("flatpak remote-ls does not list the app:\n%s", out)
	}
	storetest.MustOstree(t, "fsck", "--repo="+e.Repo)
	srv := serveCounting(t, e.Repo)
	_, paths := pullUpdate(t, srv, ref, v1, v2)
	if !slices.ContainsFunc(paths, func(p string) bool { return strings.HasPrefix(p, "/deltas/") }) || slices.ContainsFunc(paths, treeObject) {
		t.Errorf("a client of v1 updated with objects, not with the delta alone: %v", paths)
	}
}

// `ostree-upload prune` keeps the target of a delta that waits for its
// retirement, whatever the depth: libostree's prune would otherwise delete
// the delta with its target before its grace period ends.
func TestPruneKeepsRetiringDeltas(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ops := daemontest.NewToken(t)
	e.ExtraTokens = []config.Token{{SHA256: ops.Hash, Name: "ops", Scopes: []string{auth.ScopeAdmin}}}
	e.Config.StaticDeltas, e.Config.StaticDeltaDepth = true, 1
	e.Start()
	for _, u := range []api.RefUpdate{{Name: "main", New: fx.a}, {Name: "main", Old: fx.a, New: fx.b}} {
		want(t, e.push(e.Tok, []api.RefUpdate{u}, false), 200)
	}
	ab, bd := fx.a+"-"+fx.b, fx.b+"-"+fx.d
	waitDelta(t, e.Repo, ab)
	want(t, e.push(e.Tok, []api.RefUpdate{{Name: "main", Old: fx.b, New: fx.d}}, false), 200)
	waitDelta(t, e.Repo, bd)
	// main is D, which has no parent: at depth 0 no ref reaches A or B.
	cmd := exec.Command(fx.bin, "prune", "-a", e.URL, "--depth", "0")
	cmd.Env = append(os.Environ(), "OSTREE_UPLOAD_TOKEN="+ops.Secret)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "removed") {
		t.Fatalf("prune: %v\n%s", err, out)
	}
	commitFile := func(c string) string {
		return filepath.Join(e.Repo, filepath.FromSlash(object.Name{Sum: mustChecksum(t, c), Type: object.Commit}.RelPath()))
	}
	if _, err := os.Stat(commitFile(fx.a)); err == nil {
		t.Error("A, beyond the depth and no delta's target, survived the prune")
	}
	if _, err := os.Stat(commitFile(fx.b)); err != nil {
		t.Errorf("B, the target of the retiring A→B, was pruned: %v", err)
	}
	if got := deltaList(t, e.Repo); !slices.Contains(got, ab) || !slices.Contains(got, bd) {
		t.Errorf("deltas after the prune: %v", got)
	}
	storetest.MustOstree(t, "fsck", "--repo="+e.Repo)
	// A client holding A still updates to B through the delta.
	srv := serveCounting(t, e.Repo)
	client := filepath.Join(t.TempDir(), "client")
	storetest.MustOstree(t, "init", "--mode=bare-user", "--repo="+client)
	storetest.MustOstree(t, "pull-local", "--repo="+client, fx.build, fx.a)
	storetest.MustOstree(t, "remote", "add", "--repo="+client, "--no-gpg-verify", "prod", srv.URL)
	storetest.MustOstree(t, "pull", "--repo="+client, "--require-static-deltas", "prod", fx.b)
	storetest.MustOstree(t, "fsck", "--repo="+client)
}
