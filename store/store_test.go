package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/ostree-upload/ostree-upload/store/object"
)

var ctx = context.Background()

func walkSet(t testing.TB, r *Repo, c object.Checksum) map[object.Name]bool {
	t.Helper()
	s := map[object.Name]bool{}
	err := r.Walk(ctx, c, func(n object.Name) error {
		if s[n] {
			t.Errorf("Walk emitted %s twice", n)
		}
		s[n] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestOpenRefusesNonArchive(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "bare")
	mustOstree(t, "init", "--mode=bare-user", "--repo="+dir)
	_, err := OpenArchive(ctx, dir)
	if !errors.Is(err, ErrNotArchive) || !strings.Contains(err.Error(), "bare-user") {
		t.Fatalf("OpenArchive(bare-user) = %v", err)
	}
	if _, err := Open(ctx, t.TempDir()); err == nil {
		t.Fatal("Open of an empty directory succeeded")
	}
}

// A repository that cannot be created is reported with libostree's reason
// alone, without the Go source position the binding puts before it.
func TestCreateErrorIsLibostreesReason(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Create(ctx, filepath.Join(file, "repo"), ModeArchive)
	if err == nil {
		t.Fatal("a repository was created under a file")
	}
	want := "create repo " + filepath.Join(file, "repo") + ": "
	if msg := err.Error(); !strings.HasPrefix(msg, want) || strings.Contains(msg, ".go:") || strings.Contains(msg, "github.com/") || !strings.Contains(msg, "Not a directory") {
		t.Fatalf("Create under a file: %q, want %q and libostree's reason", msg, want)
	}
}

func TestRefsAndCommits(t *testing.T) {
	t.Parallel()
	r := openArchive(t, fx.build)
	refs, err := r.ListRefs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]object.Checksum{"main": fx.b, "other": fx.other}
	if !reflect.DeepEqual(refs, want) {
		t.Fatalf("ListRefs = %v, want %v", refs, want)
	}
	if c, ok, err := r.ResolveRef(ctx, "main"); err != nil || !ok || c != fx.b {
		t.Fatalf("ResolveRef(main) = %v %v %v", c, ok, err)
	}
	if _, ok, err := r.ResolveRef(ctx, "nope"); err != nil || ok {
		t.Fatalf("ResolveRef(nope) = %v %v", ok, err)
	}
	for _, bad := range []string{"main^", "../x", "/abs", "a b", ""} {
		if _, _, err := r.ResolveRef(ctx, bad); err == nil {
			t.Errorf("ResolveRef(%q) accepted", bad)
		}
	}
	c, err := r.ReadCommit(ctx, fx.b)
	if err != nil {
		t.Fatal(err)
	}
	if c.Parent == nil || *c.Parent != fx.a || c.Timestamp.Unix() != 1700000100 || c.Subject != "commit of tree" || c.Partial {
		t.Fatalf("commit B = %+v", c)
	}
	if len(c.RefBindings) != 1 || c.RefBindings[0] != "main" {
		t.Fatalf("ref bindings %v, want [main]", c.RefBindings)
	}
	if _, err := r.ReadCommit(ctx, object.Checksum{1}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ReadCommit(missing) = %v, want ErrNotFound", err)
	}
	if ok, err := r.HasObject(ctx, object.Name{Sum: fx.a, Type: object.Commit}); !ok || err != nil {
		t.Fatalf("HasObject(A) = %v %v", ok, err)
	}
	if n, err := r.ObjectSize(object.Name{Sum: fx.a, Type: object.Commit}); err != nil || n == 0 {
		t.Fatalf("ObjectSize(A) = %v %v", n, err)
	}
}

// The reachable set equals what ostree copies when it pulls the commit
// into an empty repo.
func TestWalkMatchesOstreePull(t *testing.T) {
	t.Parallel()
	r := openArchive(t, fx.build)
	for _, c := range []object.Checksum{fx.a, fx.b, fx.other} {
		dst := filepath.Join(t.TempDir(), "pulled")
		mustOstree(t, "init", "--mode=archive", "--repo="+dst)
		mustOstree(t, "pull-local", "--repo="+dst, fx.build, c.String())
		want := map[object.Name]bool{}
		for n := range repoObjects(t, dst) {
			want[n] = true
		}
		got := walkSet(t, r, c)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("commit %s: Walk has %d objects, ostree pulled %d", c, len(got), len(want))
		}
	}
}

func TestDiffIsSetDifference(t *testing.T) {
	t.Parallel()
	r := openArchive(t, fx.build)
	a, b := walkSet(t, r, fx.a), walkSet(t, r, fx.b)
	want := map[object.Name]bool{}
	for n := range b {
		if !a[n] {
			want[n] = true
		}
	}
	got := map[object.Name]bool{}
	if err := r.Diff(ctx, fx.b, fx.a, func(n object.Name) error { got[n] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Diff(B, A) = %d objects, set difference %d\nextra or missing: %v",
			len(got), len(want), symDiff(got, want))
	}
	if len(want) < 100 || len(want) > len(b)/4 {
		t.Fatalf("fixture change of %d objects out of %d is not a small change", len(want), len(b))
	}
	// Diff against itself is empty.
	n := 0
	r.Diff(ctx, fx.b, fx.b, func(object.Name) error { n++; return nil })
	if n != 0 {
		t.Fatalf("Diff(B, B) emitted %d objects", n)
	}
}

// The top-down walk of a receiver holding A finds what B adds: the
// metadata first (WalkMeta), then the files of the directories the receiver
// lacks (WalkInto), which together cover the set difference and stay inside
// B, at the cost of the changed directories only.
func TestTopDownWalkCoversTheDiff(t *testing.T) {
	t.Parallel()
	r := openArchive(t, fx.build)
	a, b := walkSet(t, r, fx.a), walkSet(t, r, fx.b)
	meta := map[object.Name]bool{}
	if err := r.WalkMeta(ctx, fx.b, func(n object.Name) error { meta[n] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	wantMeta := map[object.Name]bool{}
	for n := range b {
		if n.Type != object.File {
			wantMeta[n] = true
		}
	}
	if !reflect.DeepEqual(meta, wantMeta) {
		t.Fatalf("WalkMeta(B): %v", symDiff(meta, wantMeta))
	}
	got := map[object.Name]bool{}
	for n := range meta {
		if !a[n] {
			got[n] = true
		}
	}
	files := 0
	enter := func(tree object.Checksum) bool { return !a[object.Name{Sum: tree, Type: object.DirTree}] }
	err := r.WalkInto(ctx, fx.b, enter, func(n object.Name) error {
		if !b[n] {
			t.Errorf("WalkInto emitted %s, not in B", n)
		}
		if n.Type == object.File {
			files++
			got[n] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for n := range b {
		if !a[n] && !got[n] {
			t.Errorf("the top-down walk missed %s, which only B has", n)
		}
	}
	if files == 0 || files > len(b)/4 {
		t.Fatalf("WalkInto offered %d files of B's %d objects", files, len(b))
	}
	// Entering nothing: the commit and its root only.
	var top []object.Name
	r.WalkInto(ctx, fx.b, func(object.Checksum) bool { return false }, func(n object.Name) error { top = append(top, n); return nil })
	for _, n := range top {
		if n.Type == object.File || n.Type == object.DirTree && len(top) > 4 {
			t.Fatalf("entering nothing emitted %v", top)
		}
	}
}

// A file added to a changed directory whose content the old commit held
// only in an unchanged subtree is the one case the pruned diff over-reports:
// such extras must still be reachable from the old commit.
func TestDiffExtrasAreOld(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	repo := filepath.Join(dir, "r")
	mustOstree(t, "init", "--mode=archive", "--repo="+repo)
	tree := filepath.Join(dir, "t")
	os.MkdirAll(filepath.Join(tree, "same"), 0o755)
	os.MkdirAll(filepath.Join(tree, "changed"), 0o755)
	os.WriteFile(filepath.Join(tree, "same", "x"), []byte("shared content"), 0o644)
	os.WriteFile(filepath.Join(tree, "changed", "y"), []byte("y1"), 0o644)
	old, err := commitTree(repo, "main", tree, 1)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(tree, "changed", "copy-of-x"), []byte("shared content"), 0o644)
	newc, err := commitTree(repo, "main", tree, 2)
	if err != nil {
		t.Fatal(err)
	}
	r := openArchive(t, repo)
	oldSet, newSet := walkSet(t, r, old), walkSet(t, r, newc)
	err = r.Diff(ctx, newc, old, func(n object.Name) error {
		if !newSet[n] {
			t.Errorf("Diff emitted %s, not reachable from the new commit", n)
		}
		if oldSet[n] && n.Type != object.File {
			t.Errorf("Diff emitted old %s", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func symDiff(a, b map[object.Name]bool) []string {
	d := map[object.Name]bool{}
	for n := range a {
		if !b[n] {
			d[n] = true
		}
	}
	for n := range b {
		if !a[n] {
			d[n] = true
		}
	}
	names := sortedNames(d)
	if len(names) > 10 {
		names = names[:10]
	}
	return names
}

func TestWalkStopsOnCallbackError(t *testing.T) {
	t.Parallel()
	r := openArchive(t, fx.build)
	stop := errors.New("stop")
	n := 0
	err := r.Walk(ctx, fx.a, func(object.Name) error {
		n++
		if n == 5 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 5 {
		t.Fatalf("Walk = %v after %d objects", err, n)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := r.Walk(cctx, fx.a, func(object.Name) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("Walk with cancelled context = %v", err)
	}
}

func TestRefConflict(t *testing.T) {
	t.Parallel()
	existing := map[string]object.Checksum{"app/org.x/stable": {}, "main": {}}
	for _, c := range []struct {
		refs         []string
		ref, other   string
		wantConflict bool
	}{
		{[]string{"beta"}, "", "", false},
		{[]string{"app/org.x/beta", "app/org.y/stable"}, "", "", false},
		{[]string{"main/x"}, "main/x", "main", true},
		{[]string{"app/org.x"}, "app/org.x", "app/org.x/stable", true},
		{[]string{"x", "x/y"}, "x", "x/y", true},
		{[]string{"a/b/c", "a"}, "a/b/c", "a", true},
		{[]string{"main"}, "", "", false}, // the ref itself moves
		{[]string{"mai", "main2"}, "", "", false},
	} {
		ref, other, found := RefConflict(c.refs, existing)
		if found != c.wantConflict || ref != c.ref || other != c.other {
			t.Errorf("%v: %q %q %v, want %q %q %v", c.refs, ref, other, found, c.ref, c.other, c.wantConflict)
		}
	}
	if err := ValidateRef(strings.Repeat("a", 256)); err == nil {
		t.Error("a ref part of 256 bytes is valid")
	}
	if err := ValidateRef("a/" + strings.Repeat("b", 255)); err != nil {
		t.Error(err)
	}
}

// HasObject answers as libostree does: every object a commit reaches is
// there and nothing else is, in an archive repository (looked up directly),
// in a bare-user one and through an archive repository's parent (both asked
// of libostree).
func TestHasObjectAnswersAsOstree(t *testing.T) {
	t.Parallel()
	pulled := func(mode string, extra ...string) string {
		dst := filepath.Join(t.TempDir(), mode)
		mustOstree(t, append([]string{"init", "--mode=" + mode, "--repo=" + dst}, extra...)...)
		mustOstree(t, "pull-local", "--repo="+dst, fx.build, fx.a.String())
		return dst
	}
	build := openArchive(t, fx.build)
	in, other := walkSet(t, build, fx.a), walkSet(t, build, fx.other)
	child := filepath.Join(t.TempDir(), "child")
	mustOstree(t, "init", "--mode=archive", "--repo="+child)
	mustOstree(t, "config", "--repo="+child, "set", "core.parent", pulled("archive"))
	for _, tc := range []struct {
		path      string
		looseOnly bool
	}{{pulled("archive"), true}, {pulled("bare-user"), false}, {child, false}} {
		r, err := Open(ctx, tc.path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if r.looseOnly != tc.looseOnly {
			t.Errorf("%s: looked up directly: %v, want %v", tc.path, r.looseOnly, tc.looseOnly)
		}
		for n := range in {
			if ok, err := r.HasObject(ctx, n); !ok || err != nil {
				t.Fatalf("%s: HasObject(%s) = %v, %v; ostree pulled it", tc.path, n, ok, err)
			}
		}
		absent := 0
		for n := range other {
			if in[n] {
				continue
			}
			absent++
			if ok, err := r.HasObject(ctx, n); ok || err != nil {
				t.Fatalf("%s: HasObject(%s) = %v, %v; not pulled", tc.path, n, ok, err)
			}
		}
		if absent == 0 {
			t.Fatal("the other commit shares every object with A: nothing absent was asked")
		}
	}
}

// The per-object calls resolve their paths against the repository's
// directory descriptor, which Close gives back: after Close they answer
// ErrClosed and touch nothing, even where the descriptor's number now names
// another directory with the same layout. Not parallel: the number is
// reused only if no other test opens a file meanwhile.
func TestObjectCallsAfterClose(t *testing.T) {
	n, b := fileOf(t, openArchive(t, fx.build), fx.a)
	r, err := Create(ctx, filepath.Join(t.TempDir(), "repo"), ModeArchive)
	if err != nil {
		t.Fatal(err)
	}
	staged, err := r.Stage(ctx, n, bytes.NewReader(b), int64(len(b)), object.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The same layout elsewhere: an object and a staged file by the
	// same relative names, which a stale descriptor would reach (a file
	// object is staged at its own name).
	other := t.TempDir()
	rels := slices.Compact([]string{n.RelPath(), staged.tmp})
	for _, rel := range rels {
		if err := os.MkdirAll(filepath.Join(other, filepath.Dir(rel)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(other, rel), b, 0o444); err != nil {
			t.Fatal(err)
		}
	}
	old := r.dfd
	r.Close()
	d, err := os.Open(other)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if int(d.Fd()) != old {
		t.Logf("descriptor %d not reused (got %d): the calls are checked against a closed repository only", old, d.Fd())
	}
	if has, err := r.HasObject(ctx, n); has || !errors.Is(err, ErrClosed) {
		t.Errorf("HasObject after Close = %v, %v; want ErrClosed", has, err)
	}
	if _, err := r.ObjectSize(n); !errors.Is(err, ErrClosed) {
		t.Errorf("ObjectSize after Close: %v, want ErrClosed", err)
	}
	if rc, err := r.OpenObject(ctx, n); !errors.Is(err, ErrClosed) {
		if rc != nil {
			rc.Close()
		}
		t.Errorf("OpenObject after Close: %v, want ErrClosed", err)
	}
	if _, err := r.Stage(ctx, n, bytes.NewReader(b), int64(len(b)), object.VerifyOptions{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Stage after Close: %v, want ErrClosed", err)
	}
	if err := staged.Commit(); !errors.Is(err, ErrClosed) {
		t.Errorf("Commit after Close: %v, want ErrClosed", err)
	}
	staged.Discard()
	if err := r.Sync(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Sync after Close: %v, want ErrClosed", err)
	}
	if err := r.Remove(n); !errors.Is(err, ErrClosed) {
		t.Errorf("Remove after Close: %v, want ErrClosed", err)
	}
	for _, rel := range rels {
		if _, err := os.Stat(filepath.Join(other, rel)); err != nil {
			t.Errorf("%s of the other directory: %v", rel, err)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(other, "objects", "*", "*")); len(left) != len(rels) {
		t.Errorf("the other directory holds %v, want %v", left, rels)
	}
}
