package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ostree-upload/ostree-upload/store/object"
)

// nest makes levels nested directories named name under dir and a file in
// the deepest, and returns the deepest.
func nest(t *testing.T, dir, name string, levels int) string {
	t.Helper()
	p := dir
	for i := 0; i < levels; i++ {
		p = filepath.Join(p, name)
	}
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p, "f"), []byte(name), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func commitDir(t *testing.T, repo *Repo, dir string) object.Checksum {
	t.Helper()
	c, err := commitTree(repo.Path(), "deep", dir, 1700000000)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Directories nest at most MaxTreeDepth levels: a walk, a diff and the
// closure check refuse deeper commits, also when the deep part is a subtree
// met before at a shallower place.
func TestTreeDepthLimit(t *testing.T) {
	t.Parallel()
	r := newArchive(t)
	root := t.TempDir()
	ok := filepath.Join(root, "ok")
	nest(t, ok, "d", object.MaxTreeDepth)
	okc := commitDir(t, r, ok)
	if err := r.Walk(ctx, okc, func(object.Name) error { return nil }); err != nil {
		t.Fatalf("%d levels: %v", object.MaxTreeDepth, err)
	}
	if err := Missing(ctx, okc, nil, r); err != nil {
		t.Fatalf("%d levels: %v", object.MaxTreeDepth, err)
	}

	deep := filepath.Join(root, "deep")
	nest(t, deep, "d", object.MaxTreeDepth+1)
	// The same 200-level subtree at depth 1 and again below 60 levels.
	shared := filepath.Join(root, "shared")
	nest(t, filepath.Join(shared, "s"), "d", 200)
	nest(t, filepath.Join(nest(t, shared, "z", 60), "s"), "d", 200)
	for what, dir := range map[string]string{"one level too deep": deep, "shared subtree": shared} {
		c := commitDir(t, r, dir)
		if err := r.Walk(ctx, c, func(object.Name) error { return nil }); !errors.Is(err, ErrTreeLimit) {
			t.Errorf("%s: walk: %v", what, err)
		}
		if err := Missing(ctx, c, nil, r); !errors.Is(err, ErrTreeLimit) {
			t.Errorf("%s: closure check: %v", what, err)
		}
		if err := r.Diff(ctx, c, okc, func(object.Name) error { return nil }); !errors.Is(err, ErrTreeLimit) {
			t.Errorf("%s: diff against %d levels: %v", what, object.MaxTreeDepth, err)
		}
	}
}

// A walk of a deep tree costs memory for its pending directories only, not
// for every tree above the current one.
func TestWalkOfDeepTreeIsFlat(t *testing.T) {
	t.Parallel()
	r := newArchive(t)
	dir := t.TempDir()
	// A wide tree at each of 200 levels: 200 files and a subdirectory.
	p := dir
	for i := 0; i < 200; i++ {
		for j := 0; j < 200; j++ {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(p, fmt.Sprintf("f%03d", j)), []byte(fmt.Sprint(i, j)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		p = filepath.Join(p, "d")
	}
	c := commitDir(t, r, dir)
	n := 0
	if err := r.Walk(ctx, c, func(object.Name) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n < 200*200 {
		t.Fatalf("walked %d objects", n)
	}
}

// A tree met again deeper down is checked there too when a diff skips it
// as compared already: a subtree of 200 levels at depth 1, new, and again
// below 60 levels of a directory the old commit has.
func TestDiffChecksDepthOfTreesMetAgain(t *testing.T) {
	t.Parallel()
	r := newArchive(t)
	root := t.TempDir()
	old := filepath.Join(root, "old")
	nest(t, filepath.Join(nest(t, filepath.Join(old, "b"), "z", 60), "s"), "x", 1)
	oldc := commitDir(t, r, old)
	nw := filepath.Join(root, "new")
	nest(t, filepath.Join(nw, "a"), "d", 200)
	nest(t, filepath.Join(nest(t, filepath.Join(nw, "b"), "z", 60), "s"), "d", 200)
	c := commitDir(t, r, nw)
	if err := r.Walk(ctx, c, func(object.Name) error { return nil }); !errors.Is(err, ErrTreeLimit) {
		t.Errorf("walk: %v", err)
	}
	if err := Missing(ctx, c, &oldc, r); !errors.Is(err, ErrTreeLimit) {
		t.Errorf("closure check against the old commit: %v", err)
	}
}
