package repository

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/journal"
	"github.com/ostree-upload/ostree-upload/store"
	"github.com/ostree-upload/ostree-upload/store/object"
	"github.com/ostree-upload/ostree-upload/store/storetest"
)

// serviceWith opens a service on a new repository with the defaults
// changed by mod, and returns it with its configuration.
func serviceWith(t *testing.T, mod func(*config.Config)) (*Service, *config.Config) {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Repo, cfg.StateDir = filepath.Join(dir, "repo"), filepath.Join(dir, "state")
	mod(cfg)
	s, err := Open(ctx, cfg, Env{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, cfg
}

// commitDir commits dir into repo (on ref, or as an orphan when ref is
// empty) at Unix time ts and returns the commit.
func commitDir(t *testing.T, repo, ref, dir string, ts int64) object.Checksum {
	t.Helper()
	var out string
	var err error
	if ref == "" {
		out, err = storetest.Ostree("commit", "--repo="+repo, "--orphan", "--tree=dir="+dir, fmt.Sprintf("--timestamp=@%d", ts), "-s", "orphan")
	} else {
		out, err = storetest.CommitTree(repo, ref, dir, ts)
	}
	if err != nil {
		t.Fatal(err)
	}
	c, err := object.ParseChecksum(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func deltaNames(t *testing.T, s *Service) []string {
	t.Helper()
	ds, err := s.repo.ListDeltas(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range ds {
		out = append(out, d.String())
	}
	slices.Sort(out)
	return out
}

// A generation runs in a child process within the configured limits: the
// address space static_delta_memory_limit allows (too little fails, as
// libostree runs out of memory), and static_delta_time_limit, at which it
// is killed. Each failure names its limit and leaves no delta; within the
// limits the delta is made.
func TestGenerationLimits(t *testing.T) {
	t.Parallel()
	s, cfg := serviceWith(t, func(*config.Config) {})
	dir := t.TempDir()
	// An 8 MiB file with a byte changed every 2 KiB: libostree's rolling
	// checksums find nothing to reuse, so it runs bsdiff, for seconds.
	big := make([]byte, 8<<20)
	rand.Read(big)
	tree := filepath.Join(dir, "big")
	os.MkdirAll(tree, 0o755)
	os.WriteFile(filepath.Join(tree, "blob"), big, 0o644)
	x := commitDir(t, s.repo.Path(), "", tree, 1700000000)
	for i := 0; i < len(big); i += 2048 {
		big[i] ^= 0xff
	}
	os.WriteFile(filepath.Join(tree, "blob"), big, 0o644)
	y := commitDir(t, s.repo.Path(), "", tree, 1700000100)
	small := filepath.Join(dir, "small")
	os.MkdirAll(small, 0o755)
	os.WriteFile(filepath.Join(small, "f"), []byte(strings.Repeat("one\n", 1000)), 0o644)
	a := commitDir(t, s.repo.Path(), "", small, 1700000000)
	os.WriteFile(filepath.Join(small, "f"), []byte(strings.Repeat("two\n", 1000)), 0o644)
	b := commitDir(t, s.repo.Path(), "", small, 1700000100)

	cfg.StaticDeltaMemoryLimit = 256 * config.MiB
	err := s.generateDelta(ctx, store.Delta{From: a, To: b})
	if err == nil || !strings.Contains(err.Error(), "static_delta_memory_limit 256MiB") || !strings.Contains(err.Error(), "Out of memory") {
		t.Fatalf("generation within 256 MiB of address space: %v", err)
	}
	cfg.StaticDeltaMemoryLimit = config.DefaultStaticDeltaMemoryLimit

	// While it runs, the ostree process is niced and limited. The time
	// limit is the default here, so that a loaded machine cannot end the
	// process before it is seen; the test cancels the generation then.
	gctx, cancel := context.WithCancel(ctx)
	errc, ended := make(chan error, 1), make(chan struct{})
	go func() {
		errc <- s.generateDelta(gctx, store.Delta{From: x, To: y})
		close(ended)
	}()
	pid, found := findProcess(t, "--to="+y.String(), ended)
	if !found {
		t.Fatalf("the generation ended before its process was seen: %v", <-errc)
	}
	stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	limits, _ := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	_, fields, _ := strings.Cut(string(stat), ") ")
	if f := append(strings.Fields(fields), make([]string, 17)...); f[16] != "19" {
		t.Errorf("generation's nice value (field 19 of /proc/%d/stat) is %q, want 19", pid, f[16])
	}
	if want := fmt.Sprintf("Max address space         %d", 4<<30); !strings.Contains(string(limits), want) {
		t.Errorf("generation's limits lack %q:\n%s", want, limits)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("a generation cancelled: %v", err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		t.Errorf("process %d outlived its generation's cancellation", pid)
	}

	// At the time limit, the process is killed.
	cfg.StaticDeltaTimeLimit = config.Duration{Duration: time.Second}
	start := time.Now()
	err = s.generateDelta(ctx, store.Delta{From: x, To: y})
	if err == nil || !strings.Contains(err.Error(), "killed at static_delta_time_limit (1s)") {
		t.Fatalf("bsdiff of 8 MiB within a second: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("killed after %s, the limit is 1s", took)
	}
	if pid, found := findProcess(t, "--to="+y.String(), closed); found {
		t.Errorf("process %d outlived its time limit", pid)
	}
	if got := deltaNames(t, s); len(got) != 0 {
		t.Fatalf("deltas after failed generations: %v", got)
	}
	cfg.StaticDeltaTimeLimit = config.Duration{Duration: config.DefaultStaticDeltaTimeLimit}
	if err := s.generateDelta(ctx, store.Delta{From: a, To: b}); err != nil {
		t.Fatal(err)
	}
	if err := s.generateDelta(ctx, store.Delta{To: b}); err != nil {
		t.Fatal(err)
	}
	want := []string{a.String() + "-" + b.String(), b.String()}
	slices.Sort(want)
	if got := deltaNames(t, s); !slices.Equal(got, want) {
		t.Fatalf("deltas %v, want %v", got, want)
	}
}

// The earlier commits of a ref are its heads as publishes recorded them
// (fresh CI commits have no parent), then the parents of the oldest, the
// nearest first, up to static_delta_depth of those production holds;
// with static_delta_from_empty, each head also gets a delta from nothing.
// The appstream branches get none.
func TestWantedDeltas(t *testing.T) {
	t.Parallel()
	s, _ := serviceWith(t, func(c *config.Config) {
		c.StaticDeltaDepth, c.StaticDeltaFromEmpty = 3, true
	})
	repo := s.repo.Path()
	dir := t.TempDir()
	tree := func(content string) string {
		d := filepath.Join(dir, content)
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "f"), []byte(content), 0o644)
		return d
	}
	// main: P1 <- P2 by parents, then CI commits C1 and C2 without
	// parents, published over it in turn; C0 was a head that production
	// no longer holds.
	p1 := commitDir(t, repo, "main", tree("p1"), 1700000000)
	p2 := commitDir(t, repo, "main", tree("p2"), 1700000010)
	c1 := commitDir(t, repo, "", tree("c1"), 1700000020)
	c2 := commitDir(t, repo, "", tree("c2"), 1700000030)
	c0 := strings.Repeat("ee", 32)
	storetest.MustOstree(t, "refs", "--repo="+repo, "--create=other", p1.String())
	storetest.MustOstree(t, "refs", "--repo="+repo, "--create=appstream2/x86_64", p1.String())
	storetest.MustOstree(t, "reset", "--repo="+repo, "main", c2.String())
	sess := func(old, new string) {
		in := journalIntent(t, s, "main", old, new)
		if err := s.journal.SetPublishing(ctx, in, nil); err != nil {
			t.Fatal(err)
		}
	}
	sess(p2.String(), c0)
	sess(c0, c1.String())
	sess(c1.String(), c2.String())
	got, err := wanted(t, s)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range got {
		names = append(names, d.String())
	}
	want := []string{
		c1.String() + "-" + c2.String(), // main's nearest
		p2.String() + "-" + c2.String(), // C0 is not in production: P2 before it
		p1.String() + "-" + c2.String(), // P2's parent
		c2.String(), p1.String(),        // from nothing: main, other
	}
	if !slices.Equal(names, want) {
		t.Fatalf("wanted deltas\n%v\nwant\n%v", names, want)
	}

	// A prune removes P2, which no ref reaches: the delta P2→C2 that
	// exists stays wanted (clients holding P2 still update with it), but
	// nothing is made from P2 any more, nor from what came before it.
	storetest.MustOstree(t, "static-delta", "generate", "--repo="+repo, "--from="+p2.String(), "--to="+c2.String())
	if err := os.Remove(filepath.Join(repo, filepath.FromSlash(object.Name{Sum: p2, Type: object.Commit}.RelPath()))); err != nil {
		t.Fatal(err)
	}
	if got, err = wanted(t, s); err != nil {
		t.Fatal(err)
	}
	names = nil
	for _, d := range got {
		names = append(names, d.String())
	}
	want = []string{c1.String() + "-" + c2.String(), p2.String() + "-" + c2.String(), c2.String(), p1.String()}
	if !slices.Equal(names, want) {
		t.Fatalf("wanted deltas once P2 is pruned\n%v\nwant\n%v", names, want)
	}
}

// journalIntent opens a session moving ref from old to new and returns
// the intent a publish of it journals.
func journalIntent(t *testing.T, s *Service, ref, old, new string) journal.Intent {
	t.Helper()
	sess, _, err := s.journal.CreateOrResume(ctx, journal.Session{Owner: strings.Repeat("0", 64), OwnerName: "ci",
		Refs: []journal.RefUpdate{{Ref: ref, Old: old, New: new}}})
	if err != nil {
		t.Fatal(err)
	}
	return journal.Intent{Session: sess.ID, Refs: sess.Refs, Heads: s.headsToKeep()}
}

// A delta no longer wanted stays, indexed, for static_delta_grace after it
// stopped being wanted, counted from when that was first recorded, a
// restart included; then it is deleted and the summary no longer indexes it.
func TestRetirementSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Repo, cfg.StateDir = filepath.Join(dir, "repo"), filepath.Join(dir, "state")
	cfg.StaticDeltas, cfg.StaticDeltaDepth, cfg.StaticDeltaGrace = true, 1, config.Duration{Duration: time.Hour}
	if err := storetest.InitArchive(cfg.Repo); err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(tree, 0o755)
	var commits []object.Checksum
	for i, content := range []string{"one", "two", "three"} {
		os.WriteFile(filepath.Join(tree, "f"), []byte(strings.Repeat(content+"\n", 500)), 0o644)
		commits = append(commits, commitDir(t, cfg.Repo, "main", tree, int64(1700000000+i)))
	}
	a, b, c := commits[0], commits[1], commits[2]
	// A→B was wanted while B was the head.
	storetest.MustOstree(t, "static-delta", "generate", "--repo="+cfg.Repo, "--from="+a.String(), "--to="+b.String())
	ab, bc := a.String()+"-"+b.String(), b.String()+"-"+c.String()

	open := func() *Service {
		s, err := Open(ctx, cfg, Env{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	r, err := s.RetireStaticDeltas(ctx)
	if err != nil {
		t.Fatal(err)
	}
	due := r.Waiting[ab] // an hour after the first pass (this one, or the start-up pass) found A→B unwanted
	if len(r.Deleted) != 0 || len(r.Waiting) != 1 || time.Until(due) < 59*time.Minute || time.Until(due) > time.Hour {
		t.Fatalf("first retirement: %+v", r)
	}
	waitFor(t, func() bool { return slices.Contains(deltaNames(t, s), bc) }, "the start-up pass generates B→C")
	s.Close()

	s = open()
	defer s.Close()
	setClock(s, due.Add(-time.Minute))
	r, err = s.RetireStaticDeltas(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Deleted) != 0 || !r.Waiting[ab].Equal(due) || !slices.Contains(deltaNames(t, s), ab) {
		t.Fatalf("59 minutes in, after a restart: %+v, deltas %v", r, deltaNames(t, s))
	}
	if sum := storetest.MustOstree(t, "summary", "--view", "--repo="+cfg.Repo); !strings.Contains(sum, ab) {
		t.Fatalf("the summary stopped indexing %s before its grace period ended:\n%s", ab, sum)
	}
	setClock(s, due.Add(time.Minute))
	r, err = s.RetireStaticDeltas(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.Deleted, []string{ab}) || len(r.Waiting) != 0 || !slices.Equal(deltaNames(t, s), []string{bc}) {
		t.Fatalf("61 minutes in: %+v, deltas %v", r, deltaNames(t, s))
	}
	sum := storetest.MustOstree(t, "summary", "--view", "--repo="+cfg.Repo)
	if strings.Contains(sum, ab) || !strings.Contains(sum, bc) {
		t.Fatalf("the summary after the retirement:\n%s", sum)
	}
	storetest.MustOstree(t, "fsck", "--repo="+cfg.Repo)
}

// setClock sets the clock of the service's retirements to t.
func setClock(s *Service, t time.Time) {
	s.deferred.deltaMu.Lock()
	s.now = func() time.Time { return t }
	s.deferred.deltaMu.Unlock()
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for i := 0; !cond(); i++ {
		if i == 300 {
			t.Fatalf("not within 30 s: %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// findProcess returns the pid of the ostree process whose command line holds
// arg, looking until it appears or done is closed (then found is false).
func findProcess(t *testing.T, arg string, done <-chan struct{}) (pid int, found bool) {
	t.Helper()
	for {
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range procs {
			b, _ := os.ReadFile(p)
			if slices.Contains(strings.Split(string(b), "\x00"), arg) && strings.HasPrefix(string(b), "ostree\x00") {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
				return pid, true
			}
		}
		select {
		case <-done:
			return 0, false
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// closed is a closed channel: findProcess given it looks once.
var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// wanted is s.wantedDeltas given the deltas s's repository holds.
func wanted(t *testing.T, s *Service) ([]store.Delta, error) {
	t.Helper()
	have, err := s.repo.ListDeltas(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s.wantedDeltas(ctx, have)
}
