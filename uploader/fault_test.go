package uploader_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
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

	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/store/object"
	"github.com/ostree-upload/ostree-upload/store/storetest"
	"github.com/ostree-upload/ostree-upload/uploader"
)

var (
	faultCases = flag.Int("faults", 10, "fault matrix: cases to run")
	faultSeed  = flag.Uint64("fault-seed", 1, "fault matrix: seed choosing the faults")
)

// faultKinds are the faults the matrix injects, each at a random point.
var faultKinds = []string{
	"client-kill", "daemon-kill", "link-reset", "link-stall", "racing-push", "abandoned", "link-slow", "daemon-kill",
}

// daemonKillPoints are where a daemon-kill case kills the daemon: during
// uploads (a byte count) or at a step of the publish.
var daemonKillPoints = []string{"", "before-verdict", "after-adopt", "after-intent", "after-sign", "publish-between-transactions",
	"publish-before-refs", "after-refs", "before-summary-signature", "after-summary", "before-intent-done"}

// faultOpts is the push every case makes: main at A plus big at E, small
// objects in packs and E's larger files as uploads of their own.
func faultOpts(e *daemontest.Env, url string) uploader.Options {
	o := opts(e, url, "main", "big")
	o.Repo = faultBuildRepo(fx.A, fx.E)
	o.Jobs = 3
	o.PackMax = 512 << 10
	o.RetryTimeout = time.Minute
	return o
}

var (
	faultRepoOnce sync.Once
	faultRepo     string
)

// faultBuildRepo is a build repository holding only commits a (as main)
// and e (as big), made once for the whole matrix.
func faultBuildRepo(a, e string) string {
	faultRepoOnce.Do(func() {
		dir, err := os.MkdirTemp("", "oufault")
		if err != nil {
			panic(err)
		}
		faultRepo = filepath.Join(dir, "build")
		for _, args := range [][]string{
			{"init", "--mode=archive", "--repo=" + faultRepo},
			{"pull-local", "--depth=0", "--repo=" + faultRepo, fx.Build, a, e},
			{"refs", "--repo=" + faultRepo, "--create=main", a},
			{"refs", "--repo=" + faultRepo, "--create=big", e},
		} {
			if _, err := storetest.Ostree(args...); err != nil {
				panic(err)
			}
		}
	})
	return faultRepo
}

// observer pulls main from production over HTTP, again and again, into a
// fresh bare-user repository, and records any pull of an existing ref that
// fails: a client must never see a ref it cannot pull completely.
type observer struct {
	t       *testing.T
	srv     *httptest.Server
	stop    chan struct{}
	done    chan struct{}
	pulls   atomic.Int64
	failure atomic.Pointer[string]
}

func newObserver(t *testing.T, repo string) *observer {
	o := &observer{t: t, srv: httptest.NewServer(http.FileServer(http.Dir(repo))), stop: make(chan struct{}), done: make(chan struct{})}
	dst := filepath.Join(t.TempDir(), "observer")
	storetest.MustOstree(t, "init", "--mode=bare-user", "--repo="+dst)
	storetest.MustOstree(t, "remote", "add", "--repo="+dst, "--no-gpg-verify", "prod", o.srv.URL)
	go func() {
		defer close(o.done)
		for {
			select {
			case <-o.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			head, err := os.ReadFile(filepath.Join(repo, "refs", "heads", "main"))
			if err != nil {
				continue // not published yet
			}
			out, err := exec.Command("ostree", "pull", "--repo="+dst, "prod", strings.TrimSpace(string(head))).CombinedOutput()
			o.pulls.Add(1)
			if err != nil {
				msg := fmt.Sprintf("pull of published %s failed: %v\n%s", strings.TrimSpace(string(head)), err, out)
				o.failure.Store(&msg)
				return
			}
		}
	}()
	return o
}

func (o *observer) close() {
	close(o.stop)
	<-o.done
	o.srv.Close()
	if f := o.failure.Load(); f != nil {
		o.t.Fatal(*f)
	}
}

// verifyAllObjects checks every file under a repository's objects/ with the
// strict verifier.
func verifyAllObjects(t *testing.T, repo string) int {
	n := 0
	err := filepath.WalkDir(filepath.Join(repo, "objects"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(repo, p)
		name, err := object.ParsePath(filepath.ToSlash(rel))
		if err != nil {
			return fmt.Errorf("stray file %s in objects/", rel)
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := object.Verify(name, f); err != nil {
			return err
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestFaultMatrix pushes the same commits under one randomly placed fault
// per case (seeded: -fault-seed; more cases: -faults) and checks after each
// that the push ended published with every object verified, that an
// observer pulling during the push never saw a ref it could not pull, and
// that the bytes sent stayed within a clean push plus 4 MiB a stream.
func TestFaultMatrix(t *testing.T) {
	// The clean push, for the byte budget.
	clean := func() int64 {
		e := daemontest.New(t)
		e.Start()
		defer e.Stop()
		c := newCounter(t, strings.TrimPrefix(e.URL, "http://"))
		push(t, faultOpts(e, c.url()))
		return c.up.Load()
	}()
	budget := clean + 3*(4<<20)
	rng := rand.New(rand.NewPCG(*faultSeed, 0x6f75))
	for i := 0; i < *faultCases; i++ {
		kind := faultKinds[i%len(faultKinds)]
		frac := 0.1 + 0.8*rng.Float64()
		point := daemonKillPoints[rng.IntN(len(daemonKillPoints))]
		name := fmt.Sprintf("%02d-%s-%.2f", i, kind, frac)
		if kind == "daemon-kill" && point != "" {
			name = fmt.Sprintf("%02d-%s-%s", i, kind, point)
		}
		t.Run(name, func(t *testing.T) {
			runFault(t, kind, frac, point, clean, budget)
		})
	}
}

// faultSigner is the ed25519 key the matrix's daemons sign with.
var faultSigner = func() ed25519.PrivateKey {
	_, k, _ := ed25519.GenerateKey(nil)
	return k
}()

func runFault(t *testing.T, kind string, frac float64, point string, clean, budget int64) {
	e := daemontest.New(t)
	keyfile := filepath.Join(t.TempDir(), "ed25519.key")
	if err := os.WriteFile(keyfile, []byte(base64.StdEncoding.EncodeToString(faultSigner)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.Config.SignKeyfiles = []string{keyfile}
	if kind == "abandoned" {
		e.Config.SessionTTL = config.Duration{Duration: 2 * time.Second}
	}
	failpoint := ""
	if kind == "daemon-kill" {
		failpoint = point
	}
	proc := e.StartProcess(bin, failpoint)
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	px := toxiproxy.NewProxy(srv, "daemon", "127.0.0.1:0", strings.TrimPrefix(e.URL, "http://"))
	if err := px.Start(); err != nil {
		t.Fatal(err)
	}
	defer px.Stop()
	c := newCounter(t, px.Listen)
	obs := newObserver(t, e.Repo)
	defer obs.close()
	o := faultOpts(e, c.url())
	at := int64(frac * float64(clean))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	switch kind {
	case "client-kill", "abandoned":
		args := []string{"push", "-q", "-r", o.Repo, "-a", c.url(), "-b", "main,big", "-j", "3"}
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append(os.Environ(), "OSTREE_UPLOAD_TOKEN="+e.Tok.Secret)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		c.waitFor(t, at)
		cmd.Process.Kill()
		cmd.Wait()
		if kind == "abandoned" {
			// Nobody comes back: the session and its bytes go after the TTL.
			waitEmpty(t, e.State)
			return
		}
		rerun := exec.CommandContext(ctx, bin, args...)
		rerun.Env = cmd.Env
		if out, err := rerun.CombinedOutput(); err != nil {
			t.Fatalf("rerun: %v\n%s", err, out)
		}
	case "daemon-kill":
		done := make(chan error, 1)
		go func() { _, err := uploader.Push(ctx, o); done <- err }()
		if point == "" {
			c.waitFor(t, at)
			proc.Kill()
		} else {
			proc.Wait() // the failpoint kills it
		}
		time.Sleep(200 * time.Millisecond)
		e.StartProcess(bin, "")
		if err := <-done; err != nil {
			t.Fatalf("push across a daemon kill at %q: %v", point, err)
		}
	case "link-reset", "link-stall":
		done := make(chan error, 1)
		go func() { _, err := uploader.Push(ctx, o); done <- err }()
		c.waitFor(t, at)
		if kind == "link-reset" {
			px.Stop()
			time.Sleep(300 * time.Millisecond)
			if err := px.Start(); err != nil {
				t.Fatal(err)
			}
		} else {
			tox, err := px.Toxics.AddToxicJson(strings.NewReader(`{"name":"stall","type":"timeout","stream":"upstream","attributes":{"timeout":0}}`))
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * time.Second)
			px.Toxics.RemoveToxic(context.Background(), tox.Name)
			px.Stop() // the stalled connections end
			if err := px.Start(); err != nil {
				t.Fatal(err)
			}
		}
		if err := <-done; err != nil {
			t.Fatalf("push across a %s: %v", kind, err)
		}
	case "link-slow":
		// A slow link (2 MB/s on each connection) with resets on top.
		if _, err := px.Toxics.AddToxicJson(strings.NewReader(`{"name":"slow","type":"bandwidth","stream":"upstream","attributes":{"rate":2000}}`)); err != nil {
			t.Fatal(err)
		}
		if _, err := px.Toxics.AddToxicJson(strings.NewReader(`{"name":"reset","type":"reset_peer","stream":"upstream","toxicity":0.02,"attributes":{"timeout":200}}`)); err != nil {
			t.Fatal(err)
		}
		if _, err := uploader.Push(ctx, o); err != nil {
			t.Fatalf("push over a slow link that resets: %v", err)
		}
	case "racing-push":
		errs := make(chan error, 2)
		for range 2 {
			go func() { _, err := uploader.Push(ctx, o); errs <- err }()
		}
		for range 2 {
			if err := <-errs; err != nil && !strings.Contains(err.Error(), "moved") {
				t.Fatalf("racing push: %v", err)
			}
		}
	}
	e.CheckPublished(map[string]string{"main": fx.A, "big": fx.E})
	n := verifyAllObjects(t, e.Repo)
	summary, _ := os.ReadFile(filepath.Join(e.Repo, "summary"))
	sig, _ := os.ReadFile(filepath.Join(e.Repo, "summary.sig"))
	if err := object.VerifyEd25519(sig, summary, []ed25519.PublicKey{faultSigner.Public().(ed25519.PublicKey)}); err != nil {
		t.Errorf("summary after the fault: %v", err)
	}
	if sent := c.up.Load(); kind != "racing-push" && sent > budget {
		t.Errorf("%d bytes sent, budget %d (clean push %d)", sent, budget, clean)
	}
	// A daemon killed in the middle of the bytes keeps what it had
	// verified: the push costs at most a tenth more than a clean one.
	if sent := c.up.Load(); kind == "daemon-kill" && float64(sent) > 1.10*float64(clean) {
		t.Errorf("%d bytes sent across a daemon kill at %q: %.3fx a clean push (%d), over 1.10x", sent, point, float64(sent)/float64(clean), clean)
	}
	t.Logf("%d objects verified, %d bytes sent (clean %d), %d observer pulls", n, c.up.Load(), clean, obs.pulls.Load())
}

// waitEmpty waits for the janitor to delete an abandoned session's uploads
// and spool objects.
func waitEmpty(t *testing.T, state string) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		files := 0
		for _, dir := range []string{"uploads", "spools"} {
			filepath.WalkDir(filepath.Join(state, dir), func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() && strings.Contains(p, "/objects/") || err == nil && !d.IsDir() && dir == "uploads" {
					files++
				}
				return nil
			})
		}
		if files == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d files left of an abandoned session after its TTL", files)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
