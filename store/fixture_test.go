package store

import (
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/ostree-upload/ostree-upload/store/object"
	"github.com/ostree-upload/ostree-upload/store/storetest"
)

// fx holds repositories built once for the whole package.
var fx struct {
	dir   string
	build string          // archive repo: commits A and B on ref "main"
	a, b  object.Checksum // B's parent is A
	other object.Checksum // a commit on ref "other" with symlinks and xattrs only
}

func TestMain(m *testing.M) {
	storetest.Main(m, func(dir string) error {
		fx.dir = dir
		return buildFixtures(dir)
	})
}

var (
	ostree       = storetest.Ostree
	mustOstree   = storetest.MustOstree
	writeTree    = storetest.WriteTree
	mutateTree   = storetest.MutateTree
	pullOverHTTP = storetest.PullOverHTTP
)

// commitTree commits dir to ref in repo and returns the commit checksum.
func commitTree(repo, ref, dir string, ts int64, extra ...string) (object.Checksum, error) {
	out, err := storetest.CommitTree(repo, ref, dir, ts, extra...)
	if err != nil {
		return object.Checksum{}, err
	}
	return object.ParseChecksum(out)
}

func buildFixtures(dir string) error {
	rng := rand.New(rand.NewSource(42))
	fx.build = filepath.Join(dir, "build")
	if _, err := ostree("init", "--mode=archive", "--repo="+fx.build); err != nil {
		return err
	}
	tree := filepath.Join(dir, "tree")
	if err := writeTree(tree, 3000, rng); err != nil {
		return err
	}
	var err error
	if fx.a, err = commitTree(fx.build, "main", tree, 1700000000); err != nil {
		return err
	}
	if err := mutateTree(tree, rng); err != nil {
		return err
	}
	if fx.b, err = commitTree(fx.build, "main", tree, 1700000100); err != nil {
		return err
	}
	small := filepath.Join(dir, "small")
	if err := writeTree(small, 120, rng); err != nil {
		return err
	}
	fx.other, err = commitTree(fx.build, "other", small, 1700000200, "--add-metadata-string=purpose=fixture", "--add-detached-metadata-string=note=detached")
	return err
}

// repoObjects lists the object files of an archive repo by name.
func repoObjects(t testing.TB, repo string) map[object.Name]int64 {
	t.Helper()
	out := map[object.Name]int64{}
	root := filepath.Join(repo, "objects")
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(repo, p)
		n, err := object.ParsePath(filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		out[n] = fi.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sortedNames(s map[object.Name]bool) []string {
	var out []string
	for n := range s {
		out = append(out, n.String())
	}
	sort.Strings(out)
	return out
}

func openArchive(t testing.TB, path string) *Repo {
	t.Helper()
	r, err := OpenArchive(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func newArchive(t testing.TB) *Repo {
	t.Helper()
	r, err := Create(context.Background(), filepath.Join(t.TempDir(), "repo"), ModeArchive)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// copyObject places an object file from one archive repo into another, as
// the daemon places verified objects into its spool.
func copyObject(t testing.TB, from, to *Repo, n object.Name) {
	t.Helper()
	b, err := os.ReadFile(from.ObjectPath(n))
	if err != nil {
		t.Fatal(err)
	}
	p := to.ObjectPath(n)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o444); err != nil {
		t.Fatal(err)
	}
}

// fileOf returns a file object of commit c in r and its bytes.
func fileOf(t testing.TB, r *Repo, c object.Checksum) (object.Name, []byte) {
	t.Helper()
	for n := range walkSet(t, r, c) {
		if n.Type == object.File {
			b, err := os.ReadFile(r.ObjectPath(n))
			if err != nil {
				t.Fatal(err)
			}
			return n, b
		}
	}
	t.Fatalf("commit %s has no file object", c)
	return object.Name{}, nil
}
