package uploader_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/store"
	"github.com/ostree-upload/ostree-upload/store/object"
	"github.com/ostree-upload/ostree-upload/store/storetest"
	"github.com/ostree-upload/ostree-upload/uploader"
)

var (
	ctx = context.Background()
	fx  *storetest.Fixture
	bin string
)

func TestMain(m *testing.M) {
	storetest.Main(m, func(dir string) (err error) {
		if fx, err = storetest.BuildFixture(dir, 500); err != nil {
			return err
		}
		bin, err = daemontest.BuildBinary(dir)
		return err
	})
}

func opts(e *daemontest.Env, url string, refs ...string) uploader.Options {
	o := uploader.Options{Repo: fx.Build, Address: url, Token: e.Tok.Secret, Refs: refs, Jobs: 4, RetryTimeout: 30 * time.Second}
	if os.Getenv("OSTREE_UPLOAD_TEST_LOG") != "" {
		o.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return o
}

func push(t *testing.T, o uploader.Options) *uploader.Result {
	t.Helper()
	res, err := uploader.Push(ctx, o)
	if err != nil {
		t.Fatalf("push %v: %v", o.Refs, err)
	}
	return res
}

// objectBytes is the size of a set of objects of the build repo.
func objectBytes(t testing.TB, commit, base string) (n int, bytes int64) {
	t.Helper()
	for _, o := range daemontest.Objects(t, fx.Build, commit, base) {
		fi, err := os.Stat(filepath.Join(fx.Build, filepath.FromSlash(o.RelPath())))
		if err != nil {
			t.Fatal(err)
		}
		n, bytes = n+1, bytes+fi.Size()
	}
	return n, bytes
}

// packed is what objects of these sizes cost in packs of this package's
// tar layout (a 512-byte header each, data padded to 512), without the
// 1,024-byte end of each pack.
func packed(t testing.TB, commit, base string) int64 {
	t.Helper()
	var total int64
	for _, o := range daemontest.Objects(t, fx.Build, commit, base) {
		fi, err := os.Stat(filepath.Join(fx.Build, filepath.FromSlash(o.RelPath())))
		if err != nil {
			t.Fatal(err)
		}
		total += 512 + (fi.Size()+511)/512*512
	}
	return total
}

func TestColdNoopAndIncremental(t *testing.T) {
	t.Parallel()
	e := daemontest.New(t)
	e.Start()
	// Cold: main at A.
	o := opts(e, e.URL, "main")
	o.Repo = partialRepo(t, fx.A)
	res := push(t, o)
	all := packed(t, fx.A, "") + int64(res.Packs)*1024
	if res.Packs == 0 || res.Uploads != 0 || res.BytesSent != all || res.Refs[0].Status != "updated" {
		t.Fatalf("cold push sent %d bytes (packs of the objects hold %d): %+v", res.BytesSent, all, res)
	}
	e.CheckPublished(map[string]string{"main": fx.A})
	// No-op.
	res = push(t, o)
	if res.BytesSent != 0 || res.Objects != 0 || res.Refs[0].Status != "up to date" {
		t.Fatalf("no-op push: %+v", res)
	}
	// Incremental with A in the build repo: the diff travels.
	res = push(t, opts(e, e.URL, "main"))
	n, _ := objectBytes(t, fx.B, fx.A)
	diff := packed(t, fx.B, fx.A) + int64(res.Packs)*1024
	if res.BytesSent > diff || res.Sent > n {
		t.Fatalf("incremental push sent %d objects / %d bytes, the diff is %d / %d", res.Sent, res.BytesSent, n, diff)
	}
	e.CheckPublished(map[string]string{"main": fx.B})
}

// partialRepo is an archive repo holding only commit c (not its parents),
// like a fresh CI machine that built one commit.
func partialRepo(t testing.TB, c string) string {
	dst := filepath.Join(t.TempDir(), "ci")
	storetest.MustOstree(t, "init", "--mode=archive", "--repo="+dst)
	storetest.MustOstree(t, "pull-local", "--depth=0", "--repo="+dst, fx.Build, c)
	storetest.MustOstree(t, "refs", "--repo="+dst, "--create=main", c)
	return dst
}

// A fresh CI machine lacks the daemon's commit: the daemon still names only
// what it lacks, and the push offers the metadata first, then only the files
// of the directories the daemon lacks.
func TestIncrementalWithoutOldCommit(t *testing.T) {
	t.Parallel()
	e := daemontest.New(t)
	e.Start()
	push(t, opts(e, e.URL, "other"))
	o := opts(e, e.URL, "main")
	o.Repo = partialRepo(t, fx.A)
	push(t, o)
	o.Repo = partialRepo(t, fx.B)
	res := push(t, o)
	diff := packed(t, fx.B, fx.A) + int64(res.Packs)*1024
	if res.BytesSent > diff {
		t.Fatalf("push without A sent %d bytes, the diff is %d", res.BytesSent, diff)
	}
	if all, _ := objectBytes(t, fx.B, ""); res.Objects >= all {
		t.Fatalf("push without A offered %d names, as many as B's %d objects", res.Objects, all)
	}
	e.CheckPublished(map[string]string{"main": fx.B, "other": fx.C})
}

// The top-down plan trusts the daemon to hold whole every directory whose
// dirtree it has. When it does not (here a dirtree of B alone, without its
// files, as an interrupted publish can leave one in production), the commit
// names what is missing, and the push offers its whole commit and sends it.
func TestTopDownPlanFallsBackOnMissingObjects(t *testing.T) {
	t.Parallel()
	e := daemontest.New(t)
	e.Start()
	o := opts(e, e.URL, "main")
	o.Repo = partialRepo(t, fx.A)
	push(t, o)
	r, err := store.Open(ctx, fx.Build)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	inA := map[object.Name]bool{}
	for _, n := range daemontest.Objects(t, fx.Build, fx.A, "") {
		inA[n] = true
	}
	var orphan object.Name
	for _, n := range daemontest.Objects(t, fx.Build, fx.B, fx.A) {
		if n.Type != object.DirTree {
			continue
		}
		tree, err := r.ReadTree(ctx, n.Sum)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range tree.Files {
			if !inA[object.Name{Sum: f.Sum, Type: object.File}] {
				orphan = n
			}
		}
	}
	if orphan.Type != object.DirTree {
		t.Fatal("B adds no directory with a file of its own")
	}
	data, err := os.ReadFile(filepath.Join(fx.Build, filepath.FromSlash(orphan.RelPath())))
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(e.Repo, filepath.FromSlash(orphan.RelPath()))
	os.MkdirAll(filepath.Dir(dst), 0o755)
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		t.Fatal(err)
	}
	o.Repo = partialRepo(t, fx.B)
	res := push(t, o)
	if all, _ := objectBytes(t, fx.B, ""); res.Objects != all {
		t.Errorf("after the daemon found objects missing, the push offered %d names, not B's %d", res.Objects, all)
	}
	e.CheckPublished(map[string]string{"main": fx.B})
}

func mustSum(t testing.TB, s string) object.Checksum {
	t.Helper()
	c, err := object.ParseChecksum(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	e := daemontest.New(t)
	e.Start()
	for name, o := range map[string]uploader.Options{
		"unknown ref": opts(e, e.URL, "no/such/ref"),
		"bad token":   func() uploader.Options { o := opts(e, e.URL, "main"); o.Token = "ou_bad"; return o }(),
		"no token":    func() uploader.Options { o := opts(e, e.URL, "main"); o.Token = ""; return o }(),
		"bare repo": func() uploader.Options {
			o := opts(e, e.URL, "main")
			o.Repo = filepath.Join(t.TempDir(), "bare")
			storetest.MustOstree(t, "init", "--mode=bare-user", "--repo="+o.Repo)
			return o
		}(),
		"out of scope": func() uploader.Options { o := opts(e, e.URL, "main"); o.Token = e.Narrow.Secret; return o }(),
	} {
		_, err := uploader.Push(ctx, o)
		var pe *uploader.PermanentError
		if !errors.As(err, &pe) {
			t.Errorf("%s: %v, want a permanent error", name, err)
		}
	}
	push(t, opts(e, e.URL, "main")) // B
	// A is older than B: clients would refuse the downgrade.
	aRepo := filepath.Join(t.TempDir(), "a")
	storetest.MustOstree(t, "init", "--mode=archive", "--repo="+aRepo)
	storetest.MustOstree(t, "pull-local", "--repo="+aRepo, fx.Build, fx.A)
	storetest.MustOstree(t, "refs", "--repo="+aRepo, "--create=main", fx.A)
	o := opts(e, e.URL, "main")
	o.Repo = aRepo
	_, err := uploader.Push(ctx, o)
	var pe *uploader.PermanentError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "not newer") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("push of an older commit: %v", err)
	}
	if e.Refs()["main"] != fx.B {
		t.Fatal("a refused push moved the ref")
	}
	o.Force = true
	push(t, o)
	e.CheckPublished(map[string]string{"main": fx.A})
	// Nothing is left to do: a dry run says so and changes nothing.
	o.DryRun = true
	res := push(t, o)
	if res.Refs[0].Status != "up to date" {
		t.Fatalf("dry run: %+v", res.Refs)
	}
}

func TestConcurrentPushesOfDifferentRefs(t *testing.T) {
	t.Parallel()
	e := daemontest.New(t)
	e.Start()
	pushAtOnce(t, opts(e, e.URL, "main"), opts(e, e.URL, "other"))
	e.CheckPublished(map[string]string{"main": fx.B, "other": fx.C})
}

// counter is a TCP proxy on 127.0.0.1 that counts the bytes clients send.
type counter struct {
	ln       net.Listener
	upstream string
	up       atomic.Int64
}

func newCounter(t testing.TB, upstream string) *counter {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &counter{ln: ln, upstream: upstream}
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go c.pipe(in)
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return c
}

type countWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// pipe relays one connection; when either side ends, both are closed, as
// a real link drop would reset them.
func (c *counter) pipe(in net.Conn) {
	out, err := net.Dial("tcp", c.upstream)
	if err != nil {
		in.Close()
		return
	}
	var once sync.Once
	closeBoth := func() { once.Do(func() { in.Close(); out.Close() }) }
	go func() { io.Copy(in, out); closeBoth() }()
	io.Copy(countWriter{out, &c.up}, in)
	closeBoth()
}

func (c *counter) url() string { return "http://" + c.ln.Addr().String() }

func (c *counter) waitFor(t testing.TB, n int64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for c.up.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d bytes went through, waited for %d", c.up.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The client killed with SIGKILL halfway, then rerun: everything arrives,
// and little is sent twice.
func TestClientKilledThenRerun(t *testing.T) {
	e := daemontest.New(t)
	e.Start()
	c := newCounter(t, strings.TrimPrefix(e.URL, "http://"))
	_, total := objectBytes(t, fx.E, "")
	args := []string{"push", "-r", fx.Build, "-a", c.url(), "-b", "big", "-j", "2", "-q"}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "OSTREE_UPLOAD_TOKEN="+e.Tok.Secret)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, total/2)
	cmd.Process.Kill()
	cmd.Wait()
	t.Logf("client killed after %d of %d bytes", c.up.Load(), total)
	cmd = exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "OSTREE_UPLOAD_TOKEN="+e.Tok.Secret)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("rerun: %v\n%s", err, out)
	}
	// What a kill may cost: the entry or upload in flight on each of the
	// two streams, bounded by 4 MiB a stream, plus the packs' tar headers.
	if sent := c.up.Load(); sent > packed(t, fx.E, "")+2*(4<<20) {
		t.Fatalf("%d bytes sent for %d bytes of objects (%.2fx)", sent, total, float64(sent)/float64(total))
	}
	t.Logf("%d bytes on the wire for %d bytes of objects (%.3fx)", c.up.Load(), total, float64(c.up.Load())/float64(total))
	e.CheckPublished(map[string]string{"big": fx.E})
}

// The daemon killed (SIGKILL) and restarted during a push: the same
// invocation rides it out.
func TestDaemonKilledDuringPush(t *testing.T) {
	e := daemontest.New(t)
	p := e.StartProcess(bin, "")
	c := newCounter(t, strings.TrimPrefix(e.URL, "http://"))
	_, total := objectBytes(t, fx.E, "")
	done := make(chan error, 1)
	o := opts(e, c.url(), "big")
	o.Jobs = 2
	o.PackMax = 256 << 10 // the fixture's large files go as uploads of their own
	go func() { _, err := uploader.Push(ctx, o); done <- err }()
	c.waitFor(t, total/3)
	p.Kill()
	time.Sleep(300 * time.Millisecond)
	e.StartProcess(bin, "")
	if err := <-done; err != nil {
		t.Fatalf("push across a daemon restart: %v", err)
	}
	e.CheckPublished(map[string]string{"big": fx.E})
}

// A 500 ms link cut (toxiproxy drops every connection and refuses new
// ones) in the middle of a push is ridden out in one invocation.
func TestLinkFlap(t *testing.T) {
	e := daemontest.New(t)
	e.Start()
	link := newFlappyLink(t, e.URL)
	done := make(chan *uploader.Result, 1)
	errc := make(chan error, 1)
	o := opts(e, link.url(), "big")
	o.Jobs = 2
	go func() { res, err := uploader.Push(ctx, o); done <- res; errc <- err }()
	link.flapAfterAThird(t)
	res := <-done
	if err := <-errc; err != nil {
		t.Fatalf("push across a link flap: %v", err)
	}
	if res.Retries == 0 {
		t.Fatal("the flap caused no retry: it did not hit the push")
	}
	e.CheckPublished(map[string]string{"big": fx.E})
}

// flappyLink is a toxiproxy in front of a daemon, with some latency (so
// that a push of the fixture's big commit is still running when the link
// goes) and a byte counter in front of it.
type flappyLink struct {
	px *toxiproxy.Proxy
	*counter
}

func newFlappyLink(t testing.TB, daemonURL string) flappyLink {
	t.Helper()
	px := toxiproxy.NewProxy(toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop()),
		"daemon", "127.0.0.1:0", strings.TrimPrefix(daemonURL, "http://"))
	if err := px.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(px.Stop)
	if _, err := px.Toxics.AddToxicJson(strings.NewReader(`{"name":"lat","type":"latency","stream":"downstream","attributes":{"latency":5}}`)); err != nil {
		t.Fatal(err)
	}
	return flappyLink{px: px, counter: newCounter(t, px.Listen)}
}

// flapAfterAThird cuts the link for 500 ms (every connection dropped, new
// ones refused) once a third of the big commit's bytes went through.
func (l flappyLink) flapAfterAThird(t testing.TB) {
	t.Helper()
	_, total := objectBytes(t, fx.E, "")
	l.waitFor(t, total/3)
	l.px.Stop()
	time.Sleep(500 * time.Millisecond)
	if err := l.px.Start(); err != nil {
		t.Fatal(err)
	}
}

// The command's exit codes and output, through the real binary.
func TestCommandExitCodes(t *testing.T) {
	t.Parallel()
	e := daemontest.New(t)
	e.Start()
	run := func(env string, args ...string) (int, string, string) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "OSTREE_UPLOAD_TOKEN="+env)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, out.String(), errb.String()
	}
	code, _, stderr := run("ou_wrong", "push", "-r", fx.Build, "-a", e.URL, "-b", "other")
	if code != 1 || !strings.Contains(stderr, "refused the token") {
		t.Fatalf("bad token: exit %d: %s", code, stderr)
	}
	code, _, stderr = run(e.Tok.Secret, "push", "-r", fx.Build, "-a", "http://"+freeAddr(t), "-b", "other", "--retry-timeout", "1s")
	if code != 75 || !strings.Contains(stderr, "rerun the same command") {
		t.Fatalf("daemon down: exit %d: %s", code, stderr)
	}
	statsFile := filepath.Join(t.TempDir(), "stats.json")
	// --prune prunes the build repository: a copy of the shared fixture
	// (hard links), whose orphan commit D goes.
	build := filepath.Join(t.TempDir(), "build")
	if out, err := exec.Command("cp", "-al", fx.Build, build).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	orphan := filepath.Join(build, "objects", fx.D[:2], fx.D[2:]+".commit")
	if _, err := os.Stat(orphan); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := run(e.Tok.Secret, "upload", "-r", build, "-a", e.URL, "-b", "other", "--prune", "--stats-json", statsFile)
	if code != 0 || !strings.Contains(stdout, "other: updated (new) → "+fx.C[:12]) || !strings.Contains(stderr, "sent ") {
		t.Fatalf("push: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if _, err := os.Stat(orphan); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("--prune left the orphan commit: %v", err)
	}
	var stats struct {
		Objects, Sent, Packs int
		Bytes                int64
		Seconds              float64
	}
	if b, err := os.ReadFile(statsFile); err != nil || json.Unmarshal(b, &stats) != nil {
		t.Fatalf("--stats-json: %v %s", err, b)
	}
	if n, _ := objectBytes(t, fx.C, ""); stats.Objects != n || stats.Sent != n || stats.Packs == 0 || stats.Bytes < packed(t, fx.C, "") || stats.Seconds <= 0 {
		t.Errorf("--stats-json says %+v; the commit has %d objects", stats, n)
	}
	code, stdout, _ = run(e.Tok.Secret, "push", "-r", fx.Build, "-a", e.URL, "-b", "other,main", "--dry-run")
	if code != 0 || !strings.Contains(stdout, "other: up to date") || !strings.Contains(stdout, "main: would update") {
		t.Fatalf("dry run: exit %d\n%s", code, stdout)
	}
	if e.Refs()["main"] != "" {
		t.Fatal("a dry run moved a ref")
	}
	e.CheckPublished(map[string]string{"other": fx.C})
}

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// The answers to uploads and packs that carried every byte are lost (a
// proxy turns them into 502s): the retries learn the objects are verified,
// send nothing twice, and the push goes on.
func TestLostAnswers(t *testing.T) {
	e := daemontest.New(t)
	e.Start()
	target, _ := url.Parse(e.URL)
	var droppedUploads, droppedPacks atomic.Int32
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(r *http.Response) error {
		if r.Request.Method != http.MethodPost {
			return nil
		}
		if r.StatusCode == http.StatusCreated && strings.HasPrefix(r.Request.URL.Path, "/api/v1/uploads") && droppedUploads.Add(1) <= 2 ||
			strings.HasSuffix(r.Request.URL.Path, "/packs") && droppedPacks.Add(1) <= 2 {
			return errors.New("answer lost")
		}
		return nil
	}
	srv := httptest.NewServer(rp)
	defer srv.Close()
	o := opts(e, srv.URL, "big")
	o.PackMax = 1 << 20 // some of the large files as uploads, the rest in packs
	res := push(t, o)
	if droppedUploads.Load() < 2 || droppedPacks.Load() < 2 || res.Retries < 4 || res.Uploads == 0 {
		t.Fatalf("%d upload and %d pack answers dropped, %d retries, %d uploads", droppedUploads.Load(), droppedPacks.Load(), res.Retries, res.Uploads)
	}
	if res.Sent != res.Objects {
		t.Errorf("sent %d of %d objects", res.Sent, res.Objects)
	}
	e.CheckPublished(map[string]string{"big": fx.E})
}

// Two runs of the same push at once share one session: both succeed. (It
// also catches the daemon failing requests whose context a previous tus
// request on the same kept-alive connection left cancelled.)
func TestSamePushTwiceAtOnce(t *testing.T) {
	t.Parallel()
	e := daemontest.New(t)
	e.Start()
	pushAtOnce(t, opts(e, e.URL, "main"), opts(e, e.URL, "main"))
	e.CheckPublished(map[string]string{"main": fx.B})
}

// pushAtOnce runs the pushes concurrently; each must succeed.
func pushAtOnce(t *testing.T, pushes ...uploader.Options) {
	t.Helper()
	errs := make(chan error, len(pushes))
	for _, o := range pushes {
		go func() {
			_, err := uploader.Push(ctx, o)
			errs <- err
		}()
	}
	for range pushes {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
