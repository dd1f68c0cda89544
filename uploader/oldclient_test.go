package uploader_test

import (
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/store/storetest"
)

// previousRelease is the commit of the previous release of ostree-upload
// ("Tidy after reading the whole change…", the last one with one repository
// per daemon and the wire types in daemon/api). Its client must keep
// working, unchanged, against today's daemon serving one repository.
const previousRelease = "52e38b017aec55f7396bbff4b55a416f9d859df3"

var (
	prevOnce  sync.Once
	prevBin   string
	prevErr   error
	prevTook  time.Duration
	prevShown sync.Once
)

// previousClient is the previous release's ostree-upload binary, built from
// git history once per test binary (beside the fixtures, removed when the
// tests end). Without that history the test fails and says how to get it.
func previousClient(t testing.TB) string {
	t.Helper()
	prevOnce.Do(func() {
		start := time.Now()
		prevBin, prevErr = buildPrevious(filepath.Join(filepath.Dir(bin), "previous-release"))
		prevTook = time.Since(start)
	})
	if prevErr != nil {
		t.Fatal(prevErr)
	}
	prevShown.Do(func() {
		t.Logf("built the previous release's client (%.12s) in %s", previousRelease, prevTook.Round(time.Millisecond))
	})
	return prevBin
}

// buildPrevious extracts the previous release's tree from git into dir and
// builds its ostree-upload command there. -trimpath keeps the build cache's
// keys free of the directory, so a later test binary reuses the cache.
func buildPrevious(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	git := func(args ...string) (string, error) {
		out, err := exec.Command("git", append([]string{"-C", root}, args...)...).Output()
		return strings.TrimSpace(string(out)), err
	}
	if _, err := git("rev-parse", "--git-dir"); err != nil {
		return "", fmt.Errorf("%s is not a git checkout: this test builds the previous release's client (commit %.12s) from git history; test a clone of the repository (git clone, not an export of the tree)", root, previousRelease)
	}
	if _, err := git("rev-parse", "--verify", "--quiet", previousRelease+"^{commit}"); err != nil {
		shallow, _ := git("rev-parse", "--is-shallow-repository")
		return "", fmt.Errorf("commit %.12s (the previous release, whose client this test runs) is not in the history of %s (shallow clone: %s): run `git fetch --unshallow` (or `git fetch origin %s`) and test again", previousRelease, root, shallow, previousRelease)
	}
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	archive := exec.Command("git", "-C", root, "archive", previousRelease)
	untar := exec.Command("tar", "-x", "-C", src)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		return "", err
	}
	untar.Stdin = pipe
	var archiveErr, untarErr strings.Builder
	archive.Stderr, untar.Stderr = &archiveErr, &untarErr
	if err := untar.Start(); err != nil {
		return "", err
	}
	if err := archive.Run(); err != nil {
		untar.Wait()
		return "", fmt.Errorf("git archive %.12s: %v: %s", previousRelease, err, archiveErr.String())
	}
	if err := untar.Wait(); err != nil {
		return "", fmt.Errorf("tar -x: %v: %s", err, untarErr.String())
	}
	out := filepath.Join(dir, "ostree-upload-prev")
	build := exec.Command("go", "build", "-trimpath", "-o", out, "./cmd/ostree-upload")
	build.Dir = src
	build.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	if b, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the previous release's client (%.12s): %v\n%s", previousRelease, err, b)
	}
	os.RemoveAll(src)
	return out, nil
}

// moduleRoot is the directory of this module's go.mod, above the test's
// working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// prevStats is what the previous client's --stats-json writes.
type prevStats struct {
	Objects, Sent, Skipped, Packs, Uploads int
	Bytes                                  int64
	Session, Error                         string
}

// prevRun is one run of the previous client.
type prevRun struct {
	code           int
	stdout, stderr string
	stats          prevStats
}

// runPrevious runs the previous client's command with --stats-json (which
// it takes on push) and a deadline.
func runPrevious(t *testing.T, prev string, args ...string) prevRun {
	t.Helper()
	statsFile := filepath.Join(t.TempDir(), "stats.json")
	c, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(c, prev, append(args, "--stats-json", statsFile)...)
	cmd.Env = append(os.Environ(), "OSTREE_UPLOAD_TOKEN=") // the token only from -t
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := prevRun{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("previous client %v: %v", args, err)
	}
	if b, err := os.ReadFile(statsFile); err == nil {
		if err := json.Unmarshal(b, &r.stats); err != nil {
			t.Fatalf("previous client's --stats-json: %v: %s", err, b)
		}
	}
	return r
}

// The previous release's client (built from git history) pushes to
// today's daemon serving one repository, unchanged: a cold push, a dry
// run, an incremental push of two refs, a no-op rerun, refusals with the
// exit code it gives them, and pushes killed halfway then rerun, which
// resume: one killed among its packs (the rerun skips what the daemon
// verified), one in the middle of a tus upload (the rerun continues it
// from the daemon's offset). Production is checked as clients see it: its
// refs, `ostree fsck`, and pulls into fresh bare-user repositories.
func TestPreviousReleaseClientPushes(t *testing.T) {
	t.Parallel()
	prev := previousClient(t)
	e := daemontest.New(t)
	e.Start()
	pushArgs := func(url, tok, repo, refs string, extra ...string) []string {
		return append([]string{"push", "-a", url, "-t", tok, "-r", repo, "-b", refs}, extra...)
	}
	ok := func(what string, args ...string) prevRun {
		t.Helper()
		r := runPrevious(t, prev, args...)
		if r.code != 0 {
			t.Fatalf("%s: the previous client exited %d\nstdout:\n%s\nstderr:\n%s", what, r.code, r.stdout, r.stderr)
		}
		return r
	}
	has := func(what string, r prevRun, lines ...string) {
		t.Helper()
		for _, l := range lines {
			if !strings.Contains(r.stdout, l+"\n") {
				t.Fatalf("%s: the previous client's output lacks %q:\n%s\n%s", what, l, r.stdout, r.stderr)
			}
		}
	}
	onlyRefs := func(what string, want map[string]string) {
		t.Helper()
		got := e.Refs()
		if len(got) != len(want) {
			t.Fatalf("%s: production refs %v, want %v", what, got, want)
		}
		for ref, c := range want {
			if got[ref] != c {
				t.Fatalf("%s: production refs %v, want %v", what, got, want)
			}
		}
	}
	a, b, c := fx.A[:12], fx.B[:12], fx.C[:12]

	// Cold: main at A, from a CI repository that holds only A.
	r := ok("cold push", pushArgs(e.URL, e.Tok.Secret, partialRepo(t, fx.A), "main")...)
	has("cold push", r, "main: updated (new) → "+a)
	if n, _ := objectBytes(t, fx.A, ""); r.stats.Objects != n || r.stats.Sent != n || r.stats.Packs == 0 {
		t.Fatalf("cold push: stats %+v; A has %d objects", r.stats, n)
	}
	onlyRefs("cold push", map[string]string{"main": fx.A})
	e.CheckPublished(map[string]string{"main": fx.A})

	// A dry run of main (A → B) and other (new, C): said, not done.
	r = ok("dry run", pushArgs(e.URL, e.Tok.Secret, fx.Build, "main,other", "--dry-run")...)
	has("dry run", r, "main: would update "+a+" → "+b, "other: would update (new) → "+c)
	if !strings.Contains(r.stderr, "dry run: would offer") || r.stats.Sent != 0 || r.stats.Bytes != 0 {
		t.Fatalf("dry run: stats %+v\n%s", r.stats, r.stderr)
	}
	onlyRefs("dry run", map[string]string{"main": fx.A})

	// Incremental: both refs in one session, main sending only its diff.
	r = ok("incremental push", pushArgs(e.URL, e.Tok.Secret, fx.Build, "main,other")...)
	has("incremental push", r, "main: updated "+a+" → "+b, "other: updated (new) → "+c)
	nDiff, _ := objectBytes(t, fx.B, fx.A)
	nC, _ := objectBytes(t, fx.C, "")
	if r.stats.Sent == 0 || r.stats.Sent > nDiff+nC {
		t.Fatalf("incremental push sent %d objects; B's diff and C hold %d (stats %+v)", r.stats.Sent, nDiff+nC, r.stats)
	}
	onlyRefs("incremental push", map[string]string{"main": fx.B, "other": fx.C})
	e.CheckPublished(map[string]string{"main": fx.B, "other": fx.C})

	// The same command again: nothing to do, nothing sent.
	r = ok("rerun", pushArgs(e.URL, e.Tok.Secret, fx.Build, "main,other")...)
	has("rerun", r, "main: up to date ("+b+")", "other: up to date ("+c+")")
	if r.stats.Sent != 0 || r.stats.Bytes != 0 || r.stats.Packs != 0 || r.stats.Uploads != 0 {
		t.Fatalf("no-op rerun: stats %+v", r.stats)
	}

	// Refusals reach it as refusals: exit 1 with the daemon's reason, no
	// retries (75).
	dRepo := filepath.Join(t.TempDir(), "a") // main at A, older than the daemon's B
	storetest.MustOstree(t, "init", "--mode=archive", "--repo="+dRepo)
	storetest.MustOstree(t, "pull-local", "--repo="+dRepo, fx.Build, fx.A)
	storetest.MustOstree(t, "refs", "--repo="+dRepo, "--create=main", fx.A)
	for _, refusal := range []struct {
		what string
		args []string
		says string
	}{
		{"bad token", pushArgs(e.URL, "ou_wrong", fx.Build, "other"), "refused the token"},
		{"out of scope", pushArgs(e.URL, e.Narrow.Secret, fx.Build, "main"), "token narrow may not push ref main"},
		{"an older commit", pushArgs(e.URL, e.Tok.Secret, dRepo, "main"), "not newer"},
	} {
		r := runPrevious(t, prev, append(refusal.args, "--retry-timeout", "10s")...)
		if r.code != 1 || !strings.Contains(r.stderr, refusal.says) {
			t.Fatalf("%s: the previous client exited %d, want 1 saying %q:\n%s", refusal.what, r.code, refusal.says, r.stderr)
		}
	}
	onlyRefs("refusals", map[string]string{"main": fx.B, "other": fx.C})

	// Killed halfway (SIGKILL, through a proxy counting what it sends),
	// then rerun: the rerun resumes the session, skipping what the daemon
	// verified, and the two runs send little more than the objects.
	cp := newCounter(t, strings.TrimPrefix(e.URL, "http://"))
	_, total := objectBytes(t, fx.E, "")
	args := pushArgs(cp.url(), e.Tok.Secret, fx.Build, "big", "-j", "2", "-q")
	cmd := exec.Command(prev, args...)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	cp.waitFor(t, total/2)
	cmd.Process.Kill()
	if err := <-exited; err == nil {
		t.Fatal("the previous client finished before it could be killed")
	}
	killedAt := cp.up.Load()
	if _, found := e.Refs()["big"]; found {
		t.Fatal("big was published by a killed push")
	}
	r = ok("rerun after a kill", args...)
	if r.stats.Skipped == 0 || r.stats.Sent+r.stats.Skipped != r.stats.Objects {
		t.Fatalf("the rerun after a kill (at %d of %d bytes) resumed nothing: stats %+v", killedAt, total, r.stats)
	}
	if sent := cp.up.Load(); sent > packed(t, fx.E, "")+2*(4<<20) {
		t.Fatalf("%d bytes sent for %d bytes of objects (%.2fx): the rerun started again", sent, total, float64(sent)/float64(total))
	}
	t.Logf("killed at %d of %d bytes; the rerun skipped %d of %d objects; %d bytes on the wire in all", killedAt, total, r.stats.Skipped, r.stats.Objects, cp.up.Load())
	onlyRefs("rerun after a kill", map[string]string{"main": fx.B, "other": fx.C, "big": fx.E})

	// Killed in the middle of a tus upload (a file over the 2 MiB it packs,
	// through a link of 2 MB/s), then rerun: the rerun continues the
	// daemon's partial upload from its offset.
	largeRepo, large, size := largeBuildRepo(t, 4<<20)
	px := daemontest.SlowLink(t, strings.TrimPrefix(e.URL, "http://"), 2000)
	args = pushArgs("http://"+px.Listen, e.Tok.Secret, largeRepo, "large", "-j", "1", "-q")
	cmd = exec.Command(prev, args...)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited = make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	session := func() api.Session { return sessionNow(t, e.URL, e.Tok, "large", large) }
	for deadline := time.Now().Add(30 * time.Second); !uploadHalfway(session(), 1<<20, 1<<20); time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-exited:
			t.Fatalf("the previous client ended (%v) before its upload was caught halfway: %+v", err, session())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no upload of the previous client was caught halfway: %+v", session())
		}
	}
	cmd.Process.Kill()
	<-exited
	px.Stop()                           // and the bytes the proxy still holds are lost
	time.Sleep(1500 * time.Millisecond) // the daemon settles what it got
	var partial int64
	for _, u := range session().Uploads {
		partial += u.Offset
	}
	if partial < 1<<20 {
		t.Fatalf("only %d bytes of partial uploads to resume", partial)
	}
	cl := newCounter(t, strings.TrimPrefix(e.URL, "http://"))
	r = ok("rerun after a kill mid-upload", pushArgs(cl.url(), e.Tok.Secret, largeRepo, "large", "-j", "1")...)
	has("rerun after a kill mid-upload", r, "large: updated (new) → "+large[:12])
	if r.stats.Uploads == 0 {
		t.Fatalf("the rerun made no upload: stats %+v", r.stats)
	}
	// A partial upload sent again from its start would cost its offset.
	if sent := cl.up.Load(); sent > size-partial+partial/2 {
		t.Fatalf("the rerun sent %d bytes; the file is %d, %d of them in the daemon's partial upload", sent, size, partial)
	}
	t.Logf("upload killed at %d of %d bytes; the rerun sent %d bytes", partial, size, cl.up.Load())

	published := map[string]string{"main": fx.B, "other": fx.C, "big": fx.E, "large": large}
	onlyRefs("rerun after a kill mid-upload", published)

	// Production as clients see it: fsck, and everything published pulled
	// at once into a fresh bare-user repository.
	storetest.MustOstree(t, "fsck", "--repo="+e.Repo)
	dst := filepath.Join(t.TempDir(), "bare-user")
	storetest.MustOstree(t, "init", "--mode=bare-user", "--repo="+dst)
	storetest.MustOstree(t, "pull-local", "--repo="+dst, e.Repo, "main", "other", "big", "large")
	storetest.MustOstree(t, "fsck", "--repo="+dst)
	for ref, want := range published {
		if got := storetest.MustOstree(t, "rev-parse", "--repo="+dst, ref); got != want {
			t.Fatalf("pulled %s = %s, want %s", ref, got, want)
		}
	}
}

// largeBuildRepo is a build repository whose ref "large" is a commit of one
// incompressible file of size bytes, and the total size of its objects.
func largeBuildRepo(t *testing.T, size int) (repo, commit string, total int64) {
	t.Helper()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	data := make([]byte, size)
	crand.Read(data)
	if err := os.MkdirAll(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "blob"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	repo = filepath.Join(dir, "build")
	if err := storetest.InitArchive(repo); err != nil {
		t.Fatal(err)
	}
	commit, err := storetest.CommitTree(repo, "large", tree, 1700000500)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range daemontest.Objects(t, repo, commit, "") {
		fi, err := os.Stat(filepath.Join(repo, filepath.FromSlash(o.RelPath())))
		if err != nil {
			t.Fatal(err)
		}
		total += fi.Size()
	}
	return repo, commit, total
}
