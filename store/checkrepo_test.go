package store

import (
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/ostree-upload/ostree-upload/store/object"
	"github.com/ostree-upload/ostree-upload/store/storetest"
)

// A check repository holds the new commits complete, for the ostree CLI
// to read, with production as its parent: only the objects production
// lacks are in it (hard links to the spool's), the refs are the new
// commits', the detached metadata is the one given, and production is left
// as it was.
func TestMakeCheckRepo(t *testing.T) {
	t.Parallel()
	build := openArchive(t, fx.build)
	prod := newArchive(t)
	if err := prod.Publish(ctx, spoolWith(t, build, walkSet(t, build, fx.a)), []RefUpdate{{Ref: "main", New: fx.a}}, nil); err != nil {
		t.Fatal(err)
	}
	pushed := diffSet(t, build, fx.b, fx.a)
	maps.Copy(pushed, walkSet(t, build, fx.other))
	spool := spoolWith(t, build, pushed)
	prodObjects, prodRefs := repoObjects(t, prod.Path()), refsOf(t, prod)
	given, err := storetest.CommitMeta("note", "s", "as the publish will write it")
	if err != nil {
		t.Fatal(err)
	}
	updates := []RefUpdate{{Ref: "main", Old: &fx.a, New: fx.b}, {Ref: "other", New: fx.other}}
	dir := filepath.Join(t.TempDir(), "check")
	if err := prod.MakeCheckRepo(ctx, dir, spool, updates, map[object.Checksum][]byte{fx.other: given}); err != nil {
		t.Fatal(err)
	}

	mustOstree(t, "fsck", "--repo="+dir)
	if refs := strings.Fields(mustOstree(t, "refs", "--repo="+dir)); !reflect.DeepEqual(sorted(refs), []string{"main", "other"}) {
		t.Errorf("refs of the check repo: %q", refs)
	}
	if c := strings.TrimSpace(mustOstree(t, "rev-parse", "--repo="+dir, "main")); c != fx.b.String() {
		t.Errorf("main is %s in the check repo, want %s", c, fx.b)
	}
	// Each new commit checks out as the build's does.
	for _, c := range []object.Checksum{fx.b, fx.other} {
		co := t.TempDir()
		mustOstree(t, "checkout", "-U", "--repo="+dir, c.String(), filepath.Join(co, "check"))
		mustOstree(t, "checkout", "-U", "--repo="+fx.build, c.String(), filepath.Join(co, "build"))
		if out, err := exec.Command("diff", "-r", "--no-dereference", filepath.Join(co, "check"), filepath.Join(co, "build")).CombinedOutput(); err != nil {
			t.Errorf("checkout of %s from the check repo differs from the build's: %v\n%s", c, err, out)
		}
	}
	// Only what production lacks, linked from the spool; the given
	// detached metadata, not the spool's.
	want := map[object.Name]bool{}
	for n := range pushed {
		if _, has := prodObjects[n]; !has && n.Type != object.CommitMeta {
			want[n] = true
		}
	}
	want[object.Name{Sum: fx.other, Type: object.CommitMeta}] = true
	got := map[object.Name]bool{}
	for n := range repoObjects(t, dir) {
		got[n] = true
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the check repo holds %d objects, want the %d production lacks", len(got), len(want))
	}
	check, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()
	if meta, err := check.CommitMeta(ctx, fx.other); err != nil || string(meta) != string(given) {
		t.Errorf("detached metadata of the check repo's commit: %v, want the given one", err)
	}
	for n := range want {
		if n.Type != object.File {
			continue
		}
		if !sameFile(t, check.ObjectPath(n), spool.ObjectPath(n)) {
			t.Errorf("%s was copied into the check repo, not linked", n)
		}
		break
	}
	if !reflect.DeepEqual(repoObjects(t, prod.Path()), prodObjects) || !reflect.DeepEqual(refsOf(t, prod), prodRefs) {
		t.Error("making the check repo changed production")
	}

	// A commit incomplete in production and the spool together.
	var drop object.Name
	for n := range want {
		if n.Type == object.File {
			drop = n
			break
		}
	}
	if err := os.Remove(spool.ObjectPath(drop)); err != nil {
		t.Fatal(err)
	}
	var me *MissingError
	err = prod.MakeCheckRepo(ctx, filepath.Join(t.TempDir(), "check"), spool, updates, nil)
	if !errors.As(err, &me) || me.Missing[0] != drop {
		t.Errorf("without %s: %v, want a MissingError naming it", drop, err)
	}
	if err := prod.MakeCheckRepo(ctx, dir, spool, updates, nil); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("over an existing directory: %v", err)
	}
}

func sorted(s []string) []string { slices.Sort(s); return s }

func sameFile(t testing.TB, a, b string) bool {
	t.Helper()
	fa, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := os.Stat(b)
	if err != nil {
		t.Fatal(err)
	}
	return os.SameFile(fa, fb)
}
