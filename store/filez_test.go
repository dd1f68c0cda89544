package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

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

// An object read from its file reads as its bytes, at any offset, and may
// be closed while other goroutines read it (as net/http may still read a
// request's body when its answer came): those reads end, later ones fail
// with os.ErrClosed, and the descriptor is never read after its close.
func TestLooseObjectClosedWhileRead(t *testing.T) {
	t.Parallel()
	r := openArchive(t, fx.build)
	n, want := fileOf(t, r, fx.a)
	if got := readObject(t, r, n); !bytes.Equal(got, want) {
		t.Fatalf("%s: read %d bytes, the file has %d", n, len(got), len(want))
	}
	rc, err := r.OpenObject(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	ra, ok := rc.(io.ReaderAt)
	if !ok {
		t.Fatalf("%T is not an io.ReaderAt", rc)
	}
	tail := make([]byte, len(want)/2)
	if k, err := ra.ReadAt(tail, int64(len(want)-len(tail))); k != len(tail) || err != nil || !bytes.Equal(tail, want[len(want)-len(tail):]) {
		t.Fatalf("ReadAt of the last %d bytes: %d, %v", len(tail), k, err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			b := make([]byte, 1)
			for {
				if _, err := ra.ReadAt(b, 0); err != nil {
					if !errors.Is(err, os.ErrClosed) {
						t.Errorf("a read cut by Close: %v, want os.ErrClosed", err)
					}
					return
				}
				if b[0] != want[0] {
					t.Errorf("read %q at 0, want %q", b[0], want[0])
					return
				}
			}
		})
	}
	time.Sleep(10 * time.Millisecond)
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if _, err := rc.Read(make([]byte, 1)); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Read after Close: %v, want os.ErrClosed", err)
	}
	if err := rc.Close(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("second Close: %v, want os.ErrClosed", err)
	}
}
