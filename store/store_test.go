package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var ctx = context.Background()

func walkSet(t testing.TB, r *Repo, c Checksum) map[ObjectName]bool {
	t.Helper()
	s := map[ObjectName]bool{}
	err := r.Walk(ctx, c, func(n ObjectName) error {
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

func TestRefsAndCommits(t *testing.T) {
	t.Parallel()
	r := openArchive(t, fx.build)
	refs, err := r.ListRefs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Checksum{"main": fx.b, "other": fx.other}
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
	if _, err := r.ReadCommit(ctx, Checksum{1}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ReadCommit(missing) = %v, want ErrNotFound", err)
	}
	if ok, err := r.HasObject(ctx, ObjectName{Sum: fx.a, Type: Commit}); !ok || err != nil {
		t.Fatalf("HasObject(A) = %v %v", ok, err)
	}
	if n, err := r.ObjectSize(ObjectName{Sum: fx.a, Type: Commit}); err != nil || n == 0 {
		t.Fatalf("ObjectSize(A) = %v %v", n, err)
	}
}

// The reachable set equals what ostree copies when it pulls the commit
// into an empty repo.
func TestWalkMatchesOstreePull(t *testing.T) {
	t.Parallel()
	r := openArchive(t, fx.build)
	for _, c := range []Checksum{fx.a, fx.b, fx.other} {
		dst := filepath.Join(t.TempDir(), "pulled")
		mustOstree(t, "init", "--mode=archive", "--repo="+dst)
		mustOstree(t, "pull-local", "--repo="+dst, fx.build, c.String())
		want := map[ObjectName]bool{}
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
	want := map[ObjectName]bool{}
	for n := range b {
		if !a[n] {
			want[n] = true
		}
	}
	got := map[ObjectName]bool{}
	if err := r.Diff(ctx, fx.b, fx.a, func(n ObjectName) error { got[n] = true; return nil }); err != nil {
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
	r.Diff(ctx, fx.b, fx.b, func(ObjectName) error { n++; return nil })
	if n != 0 {
		t.Fatalf("Diff(B, B) emitted %d objects", n)
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
	err = r.Diff(ctx, newc, old, func(n ObjectName) error {
		if !newSet[n] {
			t.Errorf("Diff emitted %s, not reachable from the new commit", n)
		}
		if oldSet[n] && n.Type != File {
			t.Errorf("Diff emitted old %s", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func symDiff(a, b map[ObjectName]bool) []string {
	d := map[ObjectName]bool{}
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
	err := r.Walk(ctx, fx.a, func(ObjectName) error {
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
	if err := r.Walk(cctx, fx.a, func(ObjectName) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("Walk with cancelled context = %v", err)
	}
}

func TestObjectNames(t *testing.T) {
	t.Parallel()
	good := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, ext := range []string{"filez", "dirtree", "dirmeta", "commit", "commitmeta"} {
		n, err := ParseObjectName(good + "." + ext)
		if err != nil || n.String() != good+"."+ext {
			t.Fatalf("ParseObjectName(%s) = %v, %v", ext, n, err)
		}
		if p, err := ParseObjectPath(n.RelPath()); err != nil || p != n {
			t.Fatalf("ParseObjectPath(%s) = %v, %v", n.RelPath(), p, err)
		}
	}
	for _, bad := range []string{
		good, good + ".file", good + ".FILEZ", strings.ToUpper(good) + ".filez", good[:63] + ".filez",
		good + "0.filez", "../" + good[3:] + ".filez", good[:62] + "/x.filez", good + ".filez.x", "",
	} {
		if _, err := ParseObjectName(bad); err == nil {
			t.Errorf("ParseObjectName(%q) accepted", bad)
		}
	}
	for _, bad := range []string{"objects/01/" + good + ".filez", "objects/0/" + good[1:] + ".filez", "/objects/01/" + good[2:] + ".filez", "objects/01/../" + good[2:] + ".filez"} {
		if _, err := ParseObjectPath(bad); err == nil {
			t.Errorf("ParseObjectPath(%q) accepted", bad)
		}
	}
}

func TestRefConflict(t *testing.T) {
	t.Parallel()
	existing := map[string]Checksum{"app/org.x/stable": {}, "main": {}}
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
