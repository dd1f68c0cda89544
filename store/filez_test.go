package store

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"testing"

	"github.com/ostree-upload/ostree-upload/store/object"
)

// Every object of a commit, read from bare-user and bare copies of an
// archive repository, has an archive form that verifies against its name,
// whose size ArchiveSize gives exactly; made twice, the form is the same
// bytes.
func TestConvertedObjectsVerify(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, mode := range []string{"bare-user", "bare"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), mode)
			mustOstree(t, "init", "--mode="+mode, "--repo="+path)
			mustOstree(t, "pull-local", "--repo="+path, fx.build, "other")
			r, err := Open(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			files := 0
			err = r.Walk(ctx, fx.other, func(n object.Name) error {
				if r.Converts(n) != (n.Type == object.File) {
					t.Fatalf("%s: Converts %v in a %s repository", n, r.Converts(n), mode)
				}
				if n.Type != object.File {
					return nil
				}
				files++
				form := readObject(t, r, n)
				if _, err := object.Verify(n, bytes.NewReader(form)); err != nil {
					t.Fatalf("archive form of %s: %v", n, err)
				}
				if again := readObject(t, r, n); !bytes.Equal(form, again) {
					t.Fatalf("archive form of %s differs from one read to the next", n)
				}
				size, err := r.ArchiveSize(ctx, n)
				if err != nil || size != int64(len(form)) {
					t.Fatalf("ArchiveSize(%s) = %d, %v; read %d bytes", n, size, err, len(form))
				}
				if _, err := r.SizeEstimate(n); err != nil {
					t.Fatal(err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if files == 0 {
				t.Fatal("no file objects walked")
			}
		})
	}
}

func readObject(t *testing.T, r *Repo, n object.Name) []byte {
	t.Helper()
	rc, err := r.OpenObject(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
