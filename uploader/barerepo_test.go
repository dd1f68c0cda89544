package uploader_test

import (
	"context"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/store/storetest"
	"github.com/ostree-upload/ostree-upload/uploader"
)

// The same commits pushed from an archive, a bare-user and a bare build
// repository give the same production refs and object names; what was
// pushed passes fsck and a pull into a bare-user repository whose checkout
// is the same whichever build repository it came from. The fixture's tree
// has symlinks, xattrs, an empty file of mode 0600, and large files that go
// as resumable uploads of their own.
func TestPushFromBareRepositories(t *testing.T) {
	t.Parallel()
	refs := map[string]string{"main": fx.B, "other": fx.C, "big": fx.E}
	type result struct {
		refs     map[string]string
		objects  []string
		checkout string
	}
	results := map[string]result{}
	for _, mode := range []string{"archive", "bare-user", "bare"} {
		build := filepath.Join(t.TempDir(), mode)
		storetest.MustOstree(t, "init", "--mode="+mode, "--repo="+build)
		storetest.MustOstree(t, "pull-local", "--repo="+build, fx.Build, "main", "other", "big")
		e := daemontest.New(t)
		e.Start()
		o := opts(e, e.URL)
		o.Repo, o.PackMax = build, 256<<10 // the large files go as uploads of their own
		res := push(t, o)
		if res.Uploads == 0 || res.Packs == 0 {
			t.Fatalf("%s: %d uploads, %d packs: both ways should have been used", mode, res.Uploads, res.Packs)
		}
		e.CheckPublished(refs)
		pulled := storetest.PullOverHTTPWith(t, e.Repo, "main", "--no-gpg-verify")
		out := filepath.Join(t.TempDir(), "checkout")
		storetest.MustOstree(t, "checkout", "--repo="+pulled, "-U", "main", out)
		results[mode] = result{refs: e.Refs(), objects: objectFiles(t, e.Repo), checkout: out}
	}
	want := results["archive"]
	for _, mode := range []string{"bare-user", "bare"} {
		got := results[mode]
		if !maps.Equal(got.refs, want.refs) {
			t.Errorf("pushed from %s: refs %v, from archive %v", mode, got.refs, want.refs)
		}
		if !slices.Equal(got.objects, want.objects) {
			t.Errorf("pushed from %s: %d objects, from archive %d, or other names", mode, len(got.objects), len(want.objects))
		}
		if out, err := exec.Command("diff", "-r", "--no-dereference", want.checkout, got.checkout).CombinedOutput(); err != nil {
			t.Errorf("checkout of what was pushed from %s differs: %v\n%s", mode, err, out)
		}
		if a, b := modes(t, want.checkout), modes(t, got.checkout); !maps.Equal(a, b) {
			t.Errorf("checkout of what was pushed from %s has other file modes", mode)
		}
	}
}

// A push from a bare-user repository cut in the middle of a large object
// resumes at the daemon's offset: the object's archive form is made again
// and its first bytes skipped, which gives the same bytes, so the daemon
// verifies the whole.
func TestBareRepositoryPushResumes(t *testing.T) {
	t.Parallel()
	build := filepath.Join(t.TempDir(), "bare-user")
	storetest.MustOstree(t, "init", "--mode=bare-user", "--repo="+build)
	storetest.MustOstree(t, "pull-local", "--repo="+build, fx.Build, "big")
	e := daemontest.New(t)
	e.Start()
	px := daemontest.SlowLink(t, strings.TrimPrefix(e.URL, "http://"), 2000)
	o := opts(e, "http://"+px.Listen, "big")
	o.Repo, o.Jobs, o.PackMax = build, 1, 256<<10
	first, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, err := uploader.Push(first, o); done <- err }()
	for deadline := time.Now().Add(30 * time.Second); !uploadHalfway(sessionNow(t, e.URL, e.Tok, "big", fx.E), 256<<10, 64<<10); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no upload was caught halfway")
		}
	}
	stop()
	px.Stop()
	<-done
	time.Sleep(1500 * time.Millisecond) // the daemon settles what it got
	s := sessionNow(t, e.URL, e.Tok, "big", fx.E)
	var partial int64
	for _, u := range s.Uploads {
		partial += u.Offset
	}
	if partial < 256<<10 {
		t.Fatalf("only %d bytes of partial uploads to resume: %+v", partial, s.Uploads)
	}
	// The archive forms made here are about as large as the build
	// fixture's (the content is incompressible).
	_, total := objectBytes(t, fx.E, "")
	lacks := total - s.Bytes - partial

	c := newCounter(t, strings.TrimPrefix(e.URL, "http://"))
	o.Address = c.url()
	push(t, o)
	if sent := c.up.Load(); sent > lacks+partial/2 {
		t.Fatalf("the rerun sent %d bytes; the daemon lacked about %d (%d of them in partial uploads' rest)", sent, lacks, partial)
	}
	e.CheckPublished(map[string]string{"big": fx.E})
}

// objectFiles lists the object files of a repository by name.
func objectFiles(t testing.TB, repo string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(filepath.Join(repo, "objects"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			names = append(names, filepath.Base(filepath.Dir(p))+filepath.Base(p))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

// modes maps each path under dir to its file mode.
func modes(t testing.TB, dir string) map[string]os.FileMode {
	t.Helper()
	out := map[string]os.FileMode{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = fi.Mode()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
