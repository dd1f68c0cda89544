package object

import (
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/ostree-upload/ostree-upload/store/storetest"
)

// fx is a build repository made with the ostree CLI: a tree of files,
// symlinks, xattrs, an empty file, and a commit with detached metadata.
var fx struct{ build string }

func TestMain(m *testing.M) {
	storetest.Main(m, func(dir string) error {
		fx.build = filepath.Join(dir, "build")
		if err := storetest.InitArchive(fx.build); err != nil {
			return err
		}
		tree := filepath.Join(dir, "tree")
		if err := storetest.WriteTree(tree, 500, rand.New(rand.NewSource(42))); err != nil {
			return err
		}
		_, err := storetest.CommitTree(fx.build, "main", tree, 1700000000, "--add-detached-metadata-string=note=detached")
		return err
	})
}

// allObjects returns every object file of the fixture build repo.
func allObjects(t testing.TB) map[Name][]byte {
	t.Helper()
	out := map[Name][]byte{}
	root := filepath.Join(fx.build, "objects")
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(fx.build, p)
		n, err := ParsePath(filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		out[n] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
