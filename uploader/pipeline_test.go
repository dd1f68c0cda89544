package uploader_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/store/storetest"
	"github.com/ostree-upload/ostree-upload/uploader"
)

// dupRepo is a build repository whose ref "dup" holds dirs directories,
// each with the same shared files and unique files of its own: each
// shared file is met dirs times by a walk.
func dupRepo(t *testing.T, dirs, shared, unique int) (repo, commit string) {
	t.Helper()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	for d := range dirs {
		sub := filepath.Join(tree, fmt.Sprintf("d%02d", d))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range shared {
			if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("shared%03d", i)), []byte(fmt.Sprintf("shared file %d\n", i)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for i := range unique {
			if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("own%03d", i)), []byte(fmt.Sprintf("file %d of directory %d\n", i, d)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	repo = filepath.Join(dir, "build")
	storetest.MustOstree(t, "init", "--mode=archive", "--repo="+repo)
	c, err := storetest.CommitTree(repo, "dup", tree, 1700000000)
	if err != nil {
		t.Fatal(err)
	}
	return repo, c
}

// repoPacked is what the objects of commit in repo cost in packs (see
// packed), and how many they are.
func repoPacked(t *testing.T, repo, commit string) (n int, bytes int64) {
	t.Helper()
	for _, o := range daemontest.Objects(t, repo, commit, "") {
		fi, err := os.Stat(filepath.Join(repo, filepath.FromSlash(o.RelPath())))
		if err != nil {
			t.Fatal(err)
		}
		n, bytes = n+1, bytes+512+(fi.Size()+511)/512*512
	}
	return n, bytes
}

// checkSentOnce fails unless the push offered and sent each object of
// commit once: the bytes read into its packs are those of the distinct
// objects, with each pack's end.
func checkSentOnce(t *testing.T, res *uploader.Result, repo, commit string) {
	t.Helper()
	n, bytes := repoPacked(t, repo, commit)
	if res.Objects != n || res.Sent != n || res.Skipped != 0 || res.BytesSent != bytes+int64(res.Packs)*1024 || res.Retries != 0 {
		t.Fatalf("the commit has %d objects (%d bytes in packs); the push offered %d, sent %d, skipped %d, %d bytes in %d packs, %d retries",
			n, bytes, res.Objects, res.Sent, res.Skipped, res.BytesSent, res.Packs, res.Retries)
	}
}

// Files held by several directories, met again in later batches of the
// pipeline, are sent once, and the commit is complete: fsck, and a pull
// into a bare-user repository.
func TestDuplicateFilesAreSentOnce(t *testing.T) {
	t.Parallel()
	repo, c := dupRepo(t, 6, 40, 30)
	e := daemontest.New(t)
	e.Start()
	o := opts(e, e.URL, "dup")
	o.Repo = repo
	res := push(t, uploader.WithPipeline(o, 25, 1))
	checkSentOnce(t, res, repo, c)
	e.CheckPublished(map[string]string{"dup": c})
}

// A filter of file names that takes every file for one met before sends
// every file by the negotiation of the names in doubt, after the
// pipeline's uploads: the commit is still complete, and each object went
// once. The same holds for an incremental push (a diff).
func TestEveryFileInDoubtStillPushesTheCommit(t *testing.T) {
	t.Parallel()
	repo, c := dupRepo(t, 4, 30, 20)
	e := daemontest.New(t)
	e.Start()
	o := opts(e, e.URL, "dup")
	o.Repo = repo
	res := push(t, uploader.WithEveryFileInDoubt(uploader.WithPipeline(o, 25, 1)))
	checkSentOnce(t, res, repo, c)
	e.CheckPublished(map[string]string{"dup": c})

	// An incremental push: a diff against the daemon's commit.
	o = opts(e, e.URL, "main")
	o.Repo = partialRepo(t, fx.A)
	push(t, o)
	o.Repo = fx.Build
	res = push(t, uploader.WithEveryFileInDoubt(o))
	if n, _ := objectBytes(t, fx.B, fx.A); res.Sent == 0 || res.Sent > n || res.Sent > res.Objects {
		t.Fatalf("the incremental push sent %d of %d objects offered; the diff has %d", res.Sent, res.Objects, n)
	}
	e.CheckPublished(map[string]string{"dup": c, "main": fx.B})
}

// The pipeline holds a window of names, not the push: however many
// objects a commit has, the names between the walk and the end of their
// work stay within the batches waiting for their negotiation, the one the
// walk is handing over, the one being negotiated, the one waiting for the
// feeder, the one the feeder hands out, and the workers' units of earlier
// batches.
func TestPipelineHoldsAWindowOfNames(t *testing.T) {
	t.Parallel()
	e := daemontest.New(t)
	e.Start()
	const batch, window, jobs = 20, 1, 2
	o := opts(e, e.URL, "main")
	o.Repo, o.Jobs = partialRepo(t, fx.B), jobs
	res := push(t, uploader.WithPipeline(o, batch, window))
	bound := int64((window + 4 + jobs) * batch)
	if peak := uploader.PeakNames(res); peak > bound || peak == 0 || int64(res.Objects) < 3*bound {
		t.Fatalf("%d objects pushed holding at most %d names at once, want at most %d", res.Objects, peak, bound)
	}
	t.Logf("%d objects pushed holding at most %d names at once", res.Objects, uploader.PeakNames(res))
	e.CheckPublished(map[string]string{"main": fx.B})
}
