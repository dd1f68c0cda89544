package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/ostree-upload/ostree-upload/store/object"
	"github.com/ostree-upload/ostree-upload/store/storetest"
)

// spoolWith returns a new archive repo holding the given objects of the
// build repo, as the daemon's spool would after verifying an upload.
func spoolWith(t testing.TB, build *Repo, objs map[object.Name]bool) *Repo {
	t.Helper()
	spool := newArchive(t)
	for n := range objs {
		copyObject(t, build, spool, n)
	}
	return spool
}

func diffSet(t testing.TB, r *Repo, newc, oldc object.Checksum) map[object.Name]bool {
	t.Helper()
	s := map[object.Name]bool{}
	if err := r.Diff(ctx, newc, oldc, func(n object.Name) error { s[n] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	return s
}

func refsOf(t testing.TB, r *Repo) map[string]object.Checksum {
	t.Helper()
	refs, err := r.ListRefs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return refs
}

func TestPublishColdThenIncremental(t *testing.T) {
	t.Parallel()
	build := openArchive(t, fx.build)
	prod := newArchive(t)

	spool := spoolWith(t, build, walkSet(t, build, fx.a))
	if err := prod.Publish(ctx, spool, []RefUpdate{{Ref: "main", New: fx.a}}, nil); err != nil {
		t.Fatal(err)
	}
	if got := refsOf(t, prod); !reflect.DeepEqual(got, map[string]object.Checksum{"main": fx.a}) {
		t.Fatalf("refs after cold publish: %v", got)
	}
	c, err := prod.ReadCommit(ctx, fx.a)
	if err != nil || c.Partial {
		t.Fatalf("published commit: %+v, %v", c, err)
	}
	// Every object arrived by hard link from the spool, and nothing else.
	objs := repoObjects(t, prod.Path())
	if len(objs) != len(walkSet(t, build, fx.a)) {
		t.Fatalf("production has %d objects, commit has %d", len(objs), len(walkSet(t, build, fx.a)))
	}
	for n := range objs {
		fi, err := os.Stat(prod.ObjectPath(n))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Sys().(*syscall.Stat_t).Nlink < 2 {
			t.Fatalf("%s was copied, not hard-linked from the spool", n)
		}
		break
	}
	mustOstree(t, "fsck", "--repo="+prod.Path())

	// Incremental: the spool holds only the diff.
	spool2 := spoolWith(t, build, diffSet(t, build, fx.b, fx.a))
	if err := prod.Publish(ctx, spool2, []RefUpdate{{Ref: "main", Old: &fx.a, New: fx.b}}, nil); err != nil {
		t.Fatal(err)
	}
	if got := refsOf(t, prod); got["main"] != fx.b {
		t.Fatalf("refs after incremental publish: %v", got)
	}
	if err := prod.RegenerateSummary(ctx); err != nil {
		t.Fatal(err)
	}
	if out := mustOstree(t, "summary", "--view", "--repo="+prod.Path()); !strings.Contains(out, fx.b.String()) {
		t.Fatalf("summary does not list B:\n%s", out)
	}
	mustOstree(t, "fsck", "--repo="+prod.Path())
	pullOverHTTP(t, prod.Path(), "main")
}

func TestPublishSeveralRefsWithDetachedMetadata(t *testing.T) {
	t.Parallel()
	build := openArchive(t, fx.build)
	prod := newArchive(t)
	objs := walkSet(t, build, fx.a)
	for n := range walkSet(t, build, fx.other) {
		objs[n] = true
	}
	spool := spoolWith(t, build, objs)
	err := prod.Publish(ctx, spool, []RefUpdate{{Ref: "main", New: fx.a}, {Ref: "other", New: fx.other}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := refsOf(t, prod); !reflect.DeepEqual(got, map[string]object.Checksum{"main": fx.a, "other": fx.other}) {
		t.Fatalf("refs: %v", got)
	}
	meta, err := prod.CommitMeta(ctx, fx.other)
	if err != nil || meta == nil {
		t.Fatalf("detached metadata not published: %v", err)
	}
	mustOstree(t, "fsck", "--repo="+prod.Path())
	pullOverHTTP(t, prod.Path(), "other")
}

// The detached metadata a publish is given replaces, in its transaction,
// whatever the import copied from the spool along with the commit; an
// empty one leaves the commit without any.
func TestPublishWritesGivenDetachedMetadata(t *testing.T) {
	t.Parallel()
	build := openArchive(t, fx.build)
	spool := spoolWith(t, build, walkSet(t, build, fx.other))
	final, err := storetest.CommitMeta("ostree.sign.ed25519", "aay", []any{make([]byte, 64)})
	if err != nil {
		t.Fatal(err)
	}
	prod := newArchive(t)
	err = prod.Publish(ctx, spool, []RefUpdate{{Ref: "other", New: fx.other}}, map[object.Checksum][]byte{fx.other: final})
	if err != nil {
		t.Fatal(err)
	}
	if meta, _ := prod.CommitMeta(ctx, fx.other); !bytes.Equal(meta, final) {
		t.Fatalf("published detached metadata %x, want %x", meta, final)
	}
	prod2 := newArchive(t)
	if err := prod2.Publish(ctx, spool, []RefUpdate{{Ref: "other", New: fx.other}}, map[object.Checksum][]byte{fx.other: nil}); err != nil {
		t.Fatal(err)
	}
	if meta, _ := prod2.CommitMeta(ctx, fx.other); len(meta) != 0 {
		t.Fatalf("detached metadata %x, want none", meta)
	}
	mustOstree(t, "fsck", "--repo="+prod2.Path())
}

// An import places everything but the commits and moves no ref; a ref
// that moves before its Publish refuses it, and the commit stays out of
// objects/. The import keeps out another process's prune until Close.
func TestImportThenPublish(t *testing.T) {
	t.Parallel()
	build := openArchive(t, fx.build)
	prod := newArchive(t)
	objs := walkSet(t, build, fx.a)
	spool := spoolWith(t, build, objs)
	im, err := prod.Import(ctx, spool, []RefUpdate{{Ref: "main", New: fx.a}})
	if err != nil {
		t.Fatal(err)
	}
	for n := range objs {
		has, err := prod.HasObject(ctx, n)
		if err != nil || has != (n.Type != object.Commit && n.Type != object.CommitMeta) {
			t.Fatalf("after the import, %s in objects/: %v (%v)", n, has, err)
		}
	}
	if refs := refsOf(t, prod); len(refs) != 0 {
		t.Fatalf("refs after the import: %v", refs)
	}
	// Another publish sets main meanwhile.
	other := spoolWith(t, build, walkSet(t, build, fx.other))
	if err := prod.Publish(ctx, other, []RefUpdate{{Ref: "main", New: fx.other}}, nil); err != nil {
		t.Fatal(err)
	}
	var rm *RefMovedError
	if err := im.Publish(ctx, spool, nil); !errors.As(err, &rm) {
		t.Fatalf("Publish after main moved: %v, want RefMovedError", err)
	}
	if has, err := prod.HasObject(ctx, object.Name{Sum: fx.a, Type: object.Commit}); has || err != nil {
		t.Fatalf("the refused commit is in objects/ (%v)", err)
	}
	// Until Close, another process's prune cannot take the repository.
	mustOstree(t, "config", "--repo="+prod.Path(), "set", "core.lock-timeout-secs", "1")
	if out, err := storetest.Ostree("prune", "--repo="+prod.Path(), "--refs-only"); err == nil {
		t.Fatalf("ostree prune ran during the import:\n%s", out)
	}
	im.Close()
	im.Close()
	mustOstree(t, "prune", "--repo="+prod.Path(), "--refs-only")

	// Unrefused, the import's Publish sets the ref over what it imported.
	prod = newArchive(t)
	if im, err = prod.Import(ctx, spool, []RefUpdate{{Ref: "main", New: fx.a}}); err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if err := im.Publish(ctx, spool, nil); err != nil {
		t.Fatal(err)
	}
	if got := refsOf(t, prod); !reflect.DeepEqual(got, map[string]object.Checksum{"main": fx.a}) {
		t.Fatalf("refs: %v", got)
	}
	mustOstree(t, "fsck", "--repo="+prod.Path())
}

// A closure failure or a moved ref leaves refs and objects/ exactly as they were.
func TestPublishRefusalsTouchNothing(t *testing.T) {
	t.Parallel()
	build := openArchive(t, fx.build)
	prod := newArchive(t)
	if err := prod.Publish(ctx, spoolWith(t, build, walkSet(t, build, fx.a)), []RefUpdate{{Ref: "main", New: fx.a}}, nil); err != nil {
		t.Fatal(err)
	}
	refsBefore, objsBefore := refsOf(t, prod), repoObjects(t, prod.Path())

	diff := diffSet(t, build, fx.b, fx.a)
	for _, drop := range []object.Type{object.File, object.DirTree, object.DirMeta, object.Commit} {
		partial := map[object.Name]bool{}
		dropped := false
		for n := range diff {
			if n.Type == drop && !dropped {
				dropped = true
				continue
			}
			partial[n] = true
		}
		if !dropped {
			t.Fatalf("diff has no %s to drop", drop.Ext())
		}
		// Check refuses; Publish is only ever called after Check passed
		// (a transaction may find objects that an aborted one staged).
		err := prod.Check(ctx, spoolWith(t, build, partial), []RefUpdate{{Ref: "main", Old: &fx.a, New: fx.b}})
		var me *MissingError
		if !errors.As(err, &me) || me.Count == 0 {
			t.Fatalf("without one %s: Check = %v, want MissingError", drop.Ext(), err)
		}
	}
	full := spoolWith(t, build, diff)
	for name, u := range map[string]RefUpdate{
		"old absent but ref exists": {Ref: "main", New: fx.b},
		"old is not the ref":        {Ref: "main", Old: &fx.b, New: fx.b},
		"second ref moved":          {Ref: "other", Old: &fx.a, New: fx.other},
	} {
		updates := []RefUpdate{{Ref: "main", Old: &fx.a, New: fx.b}, u}
		if name != "second ref moved" {
			updates = updates[1:]
		}
		var rm *RefMovedError
		if err := prod.Publish(ctx, full, updates, nil); !errors.As(err, &rm) {
			t.Fatalf("%s: Publish = %v, want RefMovedError", name, err)
		}
		if err := prod.Check(ctx, full, updates); !errors.As(err, &rm) {
			t.Fatalf("%s: Check = %v, want RefMovedError", name, err)
		}
	}
	if err := prod.Publish(ctx, full, []RefUpdate{{Ref: "bad^ref", New: fx.b}}, nil); err == nil {
		t.Fatal("Publish accepted an invalid ref name")
	}
	if got := refsOf(t, prod); !reflect.DeepEqual(got, refsBefore) {
		t.Fatalf("refs changed: %v -> %v", refsBefore, got)
	}
	if got := repoObjects(t, prod.Path()); !reflect.DeepEqual(got, objsBefore) {
		t.Fatalf("objects/ changed: %d -> %d files", len(objsBefore), len(got))
	}
	mustOstree(t, "fsck", "--repo="+prod.Path())
}

func TestMissingReportsAbsentObjects(t *testing.T) {
	t.Parallel()
	build := openArchive(t, fx.build)
	if err := Missing(ctx, fx.b, nil, build); err != nil {
		t.Fatalf("complete commit: %v", err)
	}
	if err := Missing(ctx, fx.b, &fx.a, build); err != nil {
		t.Fatalf("complete commit against base: %v", err)
	}
	empty := newArchive(t)
	err := Missing(ctx, fx.b, nil, empty)
	var me *MissingError
	if !errors.As(err, &me) || me.Count != 1 || me.Missing[0] != (object.Name{Sum: fx.b, Type: object.Commit}) {
		t.Fatalf("empty repo: %v", err)
	}
}

func TestStage(t *testing.T) {
	t.Parallel()
	build := openArchive(t, fx.build)
	spool := newArchive(t)
	var file, meta object.Name
	for n := range walkSet(t, build, fx.a) {
		switch {
		case n.Type == object.File && file == (object.Name{}):
			file = n
		case n.Type == object.DirTree && meta == (object.Name{}):
			meta = n
		}
	}
	for _, n := range []object.Name{file, meta} {
		b, err := os.ReadFile(build.ObjectPath(n))
		if err != nil {
			t.Fatal(err)
		}
		// Short input, then corrupt input: nothing is kept.
		if _, err := spool.Stage(ctx, n, bytes.NewReader(b[:len(b)-1]), int64(len(b)), object.VerifyOptions{}); err == nil {
			t.Errorf("%s: short input accepted", n)
		}
		bad := append([]byte(nil), b...)
		bad[len(bad)/2] ^= 1
		if _, err := spool.Stage(ctx, n, bytes.NewReader(bad), int64(len(bad)), object.VerifyOptions{}); !object.IsCorrupt(err) {
			t.Errorf("%s: flipped bit: err = %v, want corrupt", n, err)
		}
		if _, err := os.Stat(spool.ObjectPath(n)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s: refused object is in the spool: %v", n, err)
		}
		// Only size bytes are read: what follows belongs to someone else.
		src := bytes.NewReader(append(append([]byte(nil), b...), "next entry"...))
		st, err := spool.Stage(ctx, n, src, int64(len(b)), object.VerifyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// A file object is written at its name, held back until Commit
		// (TestObjectBeingReceivedIsHeldBack); any other is not there.
		if _, err := os.Stat(spool.ObjectPath(n)); (err == nil) != (n.Type == object.File) {
			t.Fatalf("%s: staged object in objects/ before Commit: %v", n, err)
		}
		if err := st.Commit(); err != nil {
			t.Fatal(err)
		}
		info := st.Info
		if info.Size != int64(len(b)) || src.Len() != len("next entry") {
			t.Errorf("%s: size %d, %d bytes left; want %d, %d", n, info.Size, src.Len(), len(b), len("next entry"))
		}
		fi, err := os.Stat(spool.ObjectPath(n))
		if err != nil || fi.Mode().Perm() != 0o444 {
			t.Fatalf("%s: stored object: %v, %v", n, fi, err)
		}
	}
	if err := spool.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	left, _ := filepath.Glob(filepath.Join(spool.Path(), "objects", "*", TempPrefix+"*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// A file object being received at its own name is no object of the spool
// until its stage is committed: the spool does not have it, a publish finds
// it missing, a check repository does not get it, a removal leaves it. A verified copy staged
// meanwhile takes its name, and the first stage's failure leaves that copy.
func TestObjectBeingReceivedIsHeldBack(t *testing.T) {
	t.Parallel()
	build := openArchive(t, fx.build)
	objs := walkSet(t, build, fx.other)
	var file object.Name
	for n := range objs {
		if n.Type == object.File {
			file = n
			break
		}
	}
	delete(objs, file)
	spool := spoolWith(t, build, objs)
	b, err := os.ReadFile(build.ObjectPath(file))
	if err != nil {
		t.Fatal(err)
	}
	update := []RefUpdate{{Ref: "other", New: fx.other}}

	// The first stage gets half the object, then waits.
	pr, pw := io.Pipe()
	first := make(chan error, 1)
	go func() {
		_, err := spool.Stage(ctx, file, pr, int64(len(b)), object.VerifyOptions{})
		first <- err
	}()
	if _, err := pw.Write(b[:len(b)/2]); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(spool.ObjectPath(file)); err != nil {
		t.Fatalf("not written at its name: %v", err)
	}
	if has, err := spool.HasObject(ctx, file); has || err != nil {
		t.Fatalf("the spool has %s while it is received (%v)", file, err)
	}
	prod := newArchive(t)
	var missing *MissingError
	if err := prod.Check(ctx, spool, update); !errors.As(err, &missing) || !slices.Contains(missing.Missing, file) {
		t.Fatalf("check while %s is received: %v, want it missing", file, err)
	}
	if _, err := prod.Import(ctx, spool, update); !errors.As(err, &missing) || !slices.Contains(missing.Missing, file) {
		t.Fatalf("import while %s is received: %v, want it missing", file, err)
	}
	if has, err := prod.HasObject(ctx, file); has || err != nil {
		t.Fatalf("%s linked into production while received (%v)", file, err)
	}
	check := filepath.Join(t.TempDir(), "check")
	if err := prod.MakeCheckRepo(ctx, check, spool, update, nil); !errors.As(err, &missing) || !slices.Contains(missing.Missing, file) {
		t.Fatalf("check repository while %s is received: %v, want it missing", file, err)
	}
	if err := spool.Remove(file); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(spool.ObjectPath(file)); err != nil {
		t.Fatalf("Remove took a file being received: %v", err)
	}

	// A second stage of the same object, verified and committed.
	second, err := spool.Stage(ctx, file, bytes.NewReader(b), int64(len(b)), object.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Commit(); err != nil {
		t.Fatal(err)
	}
	// The first one's end is corrupt: it fails, and takes nothing.
	bad := append([]byte(nil), b[len(b)/2:]...)
	bad[len(bad)-1] ^= 1
	pw.Write(bad)
	if err := <-first; !object.IsCorrupt(err) {
		t.Fatalf("first stage: %v, want corrupt", err)
	}
	if got, err := os.ReadFile(spool.ObjectPath(file)); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("after the failed stage, the spool's copy: %d bytes, %v; want the %d verified", len(got), err, len(b))
	}
	if err := prod.Publish(ctx, spool, update, nil); err != nil {
		t.Fatal(err)
	}
	mustOstree(t, "fsck", "--repo="+prod.Path())
}

// A file object found in many directories is imported once and checked in
// each: the publish's walks keep no set of files, and a missing one is
// reported where it appears.
func TestPublishFileInManyDirectories(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	for i := range 40 {
		d := filepath.Join(tree, fmt.Sprintf("d%02d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "same"), []byte("shared content\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "own"), []byte(fmt.Sprintf("own %d\n", i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	buildPath := filepath.Join(dir, "build")
	mustOstree(t, "init", "--mode=archive", "--repo="+buildPath)
	c, err := commitTree(buildPath, "main", tree, 1700000000)
	if err != nil {
		t.Fatal(err)
	}
	build := openArchive(t, buildPath)
	objs := walkSet(t, build, c)
	// "ostree ls -C" prints the content checksum last.
	fields := strings.Fields(mustOstree(t, "ls", "-C", "--repo="+buildPath, "main", "/d00/same"))
	sum, err := object.ParseChecksum(fields[len(fields)-2])
	if err != nil {
		t.Fatalf("ostree ls: %v", err)
	}
	shared := object.Name{Sum: sum, Type: object.File}
	if !objs[shared] {
		t.Fatalf("%s is not among the commit's objects", shared)
	}

	// Without the shared file, the check names it once per directory.
	partial := map[object.Name]bool{}
	for n := range objs {
		if n != shared {
			partial[n] = true
		}
	}
	var me *MissingError
	if err := Missing(ctx, c, nil, spoolWith(t, build, partial)); !errors.As(err, &me) || me.Count != 40 || me.Missing[0] != shared {
		t.Fatalf("spool without the shared file: %v (want it missing in 40 places)", err)
	}

	prod := newArchive(t)
	if err := prod.Publish(ctx, spoolWith(t, build, objs), []RefUpdate{{Ref: "main", New: c}}, nil); err != nil {
		t.Fatal(err)
	}
	if got := len(repoObjects(t, prod.Path())); got != len(objs) {
		t.Fatalf("production has %d objects, the commit %d", got, len(objs))
	}
	mustOstree(t, "fsck", "--repo="+prod.Path())
	pullOverHTTP(t, prod.Path(), "main")
}

// Publish itself finds an object that neither production nor the spool
// holds, of every kind, in production repositories whose objects it links
// directly (archive) and through libostree (an archive with a parent):
// a *MissingError naming it, no ref moved, no commit in objects/.
func TestPublishFindsWhatNeitherRepoHolds(t *testing.T) {
	t.Parallel()
	build := openArchive(t, fx.build)
	objs := walkSet(t, build, fx.a)
	withParent := func(t *testing.T) *Repo {
		parent := newArchive(t)
		dir := filepath.Join(t.TempDir(), "child")
		mustOstree(t, "init", "--mode=archive", "--repo="+dir)
		mustOstree(t, "config", "--repo="+dir, "set", "core.parent", parent.Path())
		return openArchive(t, dir)
	}
	for name, newProd := range map[string]func(*testing.T) *Repo{
		"archive":             func(t *testing.T) *Repo { return newArchive(t) },
		"archive with parent": withParent,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, drop := range []object.Type{object.File, object.DirMeta, object.DirTree} {
				var dropped object.Name
				partial := map[object.Name]bool{}
				for n := range objs {
					if n.Type == drop && dropped == (object.Name{}) {
						dropped = n
						continue
					}
					partial[n] = true
				}
				prod := newProd(t)
				err := prod.Publish(ctx, spoolWith(t, build, partial), []RefUpdate{{Ref: "main", New: fx.a}}, nil)
				var me *MissingError
				if !errors.As(err, &me) || !slices.Contains(me.Missing, dropped) {
					t.Fatalf("without %s: Publish = %v, want a MissingError naming it", dropped, err)
				}
				if refs := refsOf(t, prod); len(refs) != 0 {
					t.Fatalf("without %s: refs %v", dropped, refs)
				}
				if has, err := prod.HasObject(ctx, object.Name{Sum: fx.a, Type: object.Commit}); has || err != nil {
					t.Fatalf("without %s: the commit is in objects/ (%v)", dropped, err)
				}
			}
			prod := newProd(t)
			if err := prod.Publish(ctx, spoolWith(t, build, objs), []RefUpdate{{Ref: "main", New: fx.a}}, nil); err != nil {
				t.Fatal(err)
			}
			for n := range objs {
				if has, err := prod.HasObject(ctx, n); !has || err != nil {
					t.Fatalf("%s not published (%v)", n, err)
				}
			}
			mustOstree(t, "fsck", "--repo="+prod.Path())
		})
	}
}

// Stage creates its files read-only for everyone only under a umask that
// keeps every read bit; under any other it sets the mode itself.
func TestUmaskKeepsRead(t *testing.T) {
	t.Parallel()
	for status, want := range map[string]bool{
		"Name:\tx\nUmask:\t0022\nState:\tR\n": true,
		"Umask:\t0002\n":                      true,
		"Umask:\t0077\n":                      false,
		"Umask:\t0004\n":                      false,
		"Umask:\tzz\n":                        false,
		"Name:\tx\n":                          false,
	} {
		if got := umaskKeepsRead(status); got != want {
			t.Errorf("%q: %v, want %v", status, got, want)
		}
	}
}
