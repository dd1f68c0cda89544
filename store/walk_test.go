package store

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ostree-upload/ostree-upload/store/object"
)

// askSet is a NameSet that records every name it is asked about and
// answers with answer (nil: exactly, new the first time).
type askSet struct {
	asked  map[object.Name]int
	answer func(object.Name) bool
}

func (s *askSet) Add(n object.Name) bool {
	if s.asked == nil {
		s.asked = map[object.Name]int{}
	}
	s.asked[n]++
	if s.answer != nil {
		return s.answer(n)
	}
	return s.asked[n] == 1
}

func collect(t *testing.T, walk func(fn func(object.Name) error) error) map[object.Name]bool {
	t.Helper()
	s := map[object.Name]bool{}
	if err := walk(func(n object.Name) error {
		if s[n] {
			t.Errorf("emitted %s twice", n)
		}
		s[n] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return s
}

func filesOf(s map[object.Name]bool) (files, meta map[object.Name]bool) {
	files, meta = map[object.Name]bool{}, map[object.Name]bool{}
	for n := range s {
		if n.Type == object.File {
			files[n] = true
		} else {
			meta[n] = true
		}
	}
	return files, meta
}

// With FileSet, a walk asks the set about every file it meets and emits
// those the set reports new: an exact set gives the default walk; a set
// that reports nothing new leaves only the metadata, which the walk still
// dedupes itself. So do WalkInto and Diff.
func TestFileSetDecidesWhichFilesAWalkEmits(t *testing.T) {
	t.Parallel()
	r := openArchive(t, fx.build)
	walks := map[string]func(fn func(object.Name) error, opts ...WalkOption) error{
		"Walk": func(fn func(object.Name) error, opts ...WalkOption) error { return r.Walk(ctx, fx.b, fn, opts...) },
		"WalkInto": func(fn func(object.Name) error, opts ...WalkOption) error {
			return r.WalkInto(ctx, fx.b, func(object.Checksum) bool { return true }, fn, opts...)
		},
		"Diff": func(fn func(object.Name) error, opts ...WalkOption) error {
			return r.Diff(ctx, fx.b, fx.a, fn, opts...)
		},
	}
	for name, walk := range walks {
		def := collect(t, func(fn func(object.Name) error) error { return walk(fn) })
		defFiles, defMeta := filesOf(def)
		if len(defFiles) == 0 || len(defMeta) == 0 {
			t.Fatalf("%s: the fixture's walk emits %d files and %d metadata objects", name, len(defFiles), len(defMeta))
		}
		exact := &askSet{}
		if got := collect(t, func(fn func(object.Name) error) error { return walk(fn, FileSet(exact)) }); !maps.Equal(got, def) {
			t.Errorf("%s with an exact FileSet emitted %d objects, the default walk %d", name, len(got), len(def))
		}
		for n := range defFiles {
			if exact.asked[n] == 0 {
				t.Errorf("%s emitted %s without asking the set", name, n)
			}
		}
		for n := range exact.asked {
			if n.Type != object.File {
				t.Errorf("%s asked the file set about %s", name, n)
			}
		}
		none := &askSet{answer: func(object.Name) bool { return false }}
		got := collect(t, func(fn func(object.Name) error) error { return walk(fn, FileSet(none)) })
		if files, meta := filesOf(got); len(files) != 0 || !maps.Equal(meta, defMeta) {
			t.Errorf("%s with a set that reports nothing new emitted %d files and %d metadata objects, want 0 and %d", name, len(files), len(meta), len(defMeta))
		}
		if !maps.EqualFunc(none.asked, exact.asked, func(a, b int) bool { return a == b }) {
			t.Errorf("%s asked the two sets about different files", name)
		}
	}
}

// A file held by two directories is met twice: the walk asks its set both
// times, and with the default exact set emits it once.
func TestFileSetIsAskedAboutEveryFileMet(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	for _, f := range []struct{ path, data string }{{"a/same", "twice"}, {"b/same", "twice"}, {"b/other", "once"}} {
		p := filepath.Join(tree, filepath.FromSlash(f.path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f.data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	repo := filepath.Join(dir, "repo")
	mustOstree(t, "init", "--mode=archive", "--repo="+repo)
	c, err := commitTree(repo, "main", tree, 1700000000)
	if err != nil {
		t.Fatal(err)
	}
	r := openArchive(t, repo)
	set := &askSet{}
	if err := r.Walk(ctx, c, func(object.Name) error { return nil }, FileSet(set)); err != nil {
		t.Fatal(err)
	}
	counts := slices.Sorted(maps.Values(set.asked))
	if !slices.Equal(counts, []int{1, 2}) {
		t.Fatalf("the set was asked %v times about the commit's files, want once about one and twice about the other", counts)
	}
	if files, _ := filesOf(walkSet(t, r, c)); len(files) != 2 {
		t.Fatalf("the default walk emitted %d files, want 2", len(files))
	}
}
