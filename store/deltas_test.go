package store

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// ListDeltas lists the deltas `ostree static-delta generate` wrote, from a
// commit and from nothing, by libostree's names; a delta whose superblock
// is missing (a generation cut off) is not one.
func TestListDeltas(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	mustOstree(t, "init", "--mode=archive", "--repo="+repo)
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(tree, 0o755)
	os.WriteFile(filepath.Join(tree, "f"), []byte(strings.Repeat("one ", 5000)), 0o644)
	a, err := commitTree(repo, "main", tree, 1700000000)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(tree, "f"), []byte(strings.Repeat("two ", 5000)), 0o644)
	b, err := commitTree(repo, "main", tree, 1700000100)
	if err != nil {
		t.Fatal(err)
	}
	r := openArchive(t, repo)
	if got, err := r.ListDeltas(ctx); err != nil || len(got) != 0 {
		t.Fatalf("deltas of a new repository: %v, %v", got, err)
	}
	mustOstree(t, "static-delta", "generate", "--repo="+repo, "--from="+a.String(), "--to="+b.String())
	mustOstree(t, "static-delta", "generate", "--repo="+repo, "--empty", "--to="+b.String())
	got, err := r.ListDeltas(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names := func(ds []Delta) []string {
		var out []string
		for _, d := range ds {
			out = append(out, d.String())
		}
		slices.Sort(out)
		return out
	}
	want := []string{a.String() + "-" + b.String(), b.String()}
	slices.Sort(want)
	if !slices.Equal(names(got), want) {
		t.Fatalf("deltas %v, want %v", names(got), want)
	}
	for _, d := range got {
		if d.To != b || !d.FromEmpty() && d.From != a || d.FromEmpty() && d.String() != b.String() {
			t.Errorf("delta %+v", d)
		}
	}
	// Cut the delta from A off before its superblock.
	supers, _ := filepath.Glob(filepath.Join(repo, "deltas", "*", "*-*", "superblock"))
	if len(supers) != 1 {
		t.Fatalf("superblocks of deltas from a commit: %v", supers)
	}
	os.Remove(supers[0])
	if got, err := r.ListDeltas(ctx); err != nil || !slices.Equal(names(got), []string{b.String()}) {
		t.Fatalf("after removing a superblock: %v, %v", names(got), err)
	}
}

func TestParseDelta(t *testing.T) {
	a, b := strings.Repeat("ab", 32), strings.Repeat("cd", 32)
	for _, name := range []string{a + "-" + b, b} {
		d, err := ParseDelta(name)
		if err != nil || d.String() != name {
			t.Errorf("%s: %v, %v", name, d, err)
		}
	}
	for _, name := range []string{"", a + "-", "-" + b, a + "-" + b + "-" + a, strings.Repeat("00", 32) + "-" + b, "xyz"} {
		if d, err := ParseDelta(name); err == nil {
			t.Errorf("%q parsed as %v", name, d)
		}
	}
}
