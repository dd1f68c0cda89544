package store

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/store/object"
)

// pruneCopy is a copy of the fixture's history of main (A, then B) in a
// repository of its own.
func pruneCopy(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "prod")
	mustOstree(t, "init", "--mode=archive", "--repo="+dst)
	mustOstree(t, "pull-local", "--depth=1", "--repo="+dst, fx.build, "main")
	return dst
}

// A prune keeps each ref's commit and the parents its depth names, the
// commits and objects it is told to keep, and nothing else; a dry run
// counts the same and removes nothing.
func TestPruneKeepsWhatItIsTold(t *testing.T) {
	t.Parallel()
	onlyA := map[object.Name]bool{}
	r0 := openArchive(t, fx.build)
	inB := walkSet(t, r0, fx.b)
	for n := range walkSet(t, r0, fx.a) {
		if !inB[n] {
			onlyA[n] = true
		}
	}
	if len(onlyA) < 10 {
		t.Fatalf("A has %d objects B lacks", len(onlyA))
	}
	has := func(r *Repo, n object.Name) bool {
		ok, err := r.HasObject(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}

	// Depth 1 keeps A (B's parent); depth 0 drops what only A has.
	path := pruneCopy(t)
	r := openArchive(t, path)
	if st, err := r.Prune(ctx, PruneOptions{Depth: 1}); err != nil || st.Pruned != 0 {
		t.Fatalf("depth 1: %+v, %v", st, err)
	}
	dry, err := r.Prune(ctx, PruneOptions{Depth: 0, DryRun: true})
	if err != nil || dry.Pruned != len(onlyA) {
		t.Fatalf("dry run at depth 0: %+v, %v; A alone has %d objects", dry, err, len(onlyA))
	}
	for n := range onlyA {
		if !has(r, n) {
			t.Fatalf("the dry run removed %s", n)
		}
	}
	st, err := r.Prune(ctx, PruneOptions{Depth: 0})
	if err != nil || st != dry {
		t.Fatalf("depth 0: %+v, %v; the dry run said %+v", st, err, dry)
	}
	for n := range onlyA {
		if has(r, n) {
			t.Fatalf("%s, which only A reaches, survived depth 0", n)
		}
	}
	mustOstree(t, "fsck", "--repo="+path)

	// Told to keep A whole, or one object of A's alone.
	path = pruneCopy(t)
	r = openArchive(t, path)
	if st, err := r.Prune(ctx, PruneOptions{Depth: 0, Commits: []object.Checksum{fx.a}}); err != nil || st.Pruned != 0 {
		t.Fatalf("keeping A: %+v, %v", st, err)
	}
	var one object.Name
	for n := range onlyA {
		if n.Type == object.File {
			one = n
			break
		}
	}
	if st, err := r.Prune(ctx, PruneOptions{Depth: 0, Objects: []object.Name{one}}); err != nil || st.Pruned != len(onlyA)-1 || !has(r, one) {
		t.Fatalf("keeping %s: %+v, %v, present %v", one, st, err, has(r, one))
	}
	if _, err := r.Prune(ctx, PruneOptions{Depth: -2}); err == nil {
		t.Fatal("depth -2 accepted")
	}
}

// HeldFor names what a repository holds of a commit read through a spool
// that holds the rest.
func TestHeldFor(t *testing.T) {
	t.Parallel()
	prod := openArchive(t, pruneCopy(t))
	spoolPath := filepath.Join(t.TempDir(), "spool")
	mustOstree(t, "init", "--mode=archive", "--repo="+spoolPath)
	spool := openArchive(t, spoolPath)
	got := map[object.Name]bool{}
	if err := prod.HeldFor(ctx, spool, fx.b, func(n object.Name) error { got[n] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	want := walkSet(t, openArchive(t, fx.build), fx.b)
	if len(got) != len(want) {
		t.Fatalf("HeldFor(B) named %d objects, B has %d", len(got), len(want))
	}
	n := 0
	if err := spool.HeldFor(ctx, prod, fx.b, func(object.Name) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("an empty repository holds %d objects of B: %v", n, err)
	}
}

// A prune reads the refs only once it holds the exclusive lock: a commit
// that another process's transaction (flatpak build-update-repo committing
// an appstream branch) writes while the prune waits for the lock stays.
func TestPruneReadsTheRefsUnderItsLock(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "prod")
	mustOstree(t, "init", "--mode=archive", "--repo="+path)
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(tree, 0o755)
	os.WriteFile(filepath.Join(tree, "f"), []byte("one\n"), 0o644)
	mustOstree(t, "commit", "--repo="+path, "-b", "appstream/x86_64", "--tree=dir="+tree, "-s", "one")
	pruner := openArchive(t, path)
	holder := openArchive(t, path)
	// Another process's transaction is in progress (a shared lock held).
	unlock, err := holder.lockShared(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := pruner.Prune(ctx, PruneOptions{Depth: -1}); done <- err }()
	time.Sleep(time.Second) // the traversal is done; the prune waits for the exclusive lock
	// That transaction commits a new appstream commit and moves the ref
	// (flatpak build-update-repo does this in the deferred worker).
	os.WriteFile(filepath.Join(tree, "f"), []byte("two, a new file object\n"), 0o644)
	c2 := strings.TrimSpace(mustOstree(t, "commit", "--repo="+path, "-b", "appstream/x86_64", "--tree=dir="+tree, "-s", "two"))
	unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mustOstree(t, "fsck", "--repo="+path)
	if _, err := os.Stat(filepath.Join(path, "objects", c2[:2], c2[2:]+".commit")); err != nil {
		t.Errorf("the ref's commit %s was pruned: %v", c2, err)
	}
}
