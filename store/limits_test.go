package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/ostree-upload/ostree-upload/store/internal/gvariant"
	"github.com/ostree-upload/ostree-upload/store/storetest"
)

// nest makes levels nested directories named name under dir and a file in
// the deepest, and returns the deepest.
func nest(t *testing.T, dir, name string, levels int) string {
	t.Helper()
	p := dir
	for i := 0; i < levels; i++ {
		p = filepath.Join(p, name)
	}
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p, "f"), []byte(name), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func commitDir(t *testing.T, repo *Repo, dir string) Checksum {
	t.Helper()
	c, err := commitTree(repo.Path(), "deep", dir, 1700000000)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Directories nest at most MaxTreeDepth levels: a walk, a diff and the
// closure check refuse deeper commits, also when the deep part is a subtree
// met before at a shallower place.
func TestTreeDepthLimit(t *testing.T) {
	t.Parallel()
	r := newArchive(t)
	root := t.TempDir()
	ok := filepath.Join(root, "ok")
	nest(t, ok, "d", MaxTreeDepth)
	okc := commitDir(t, r, ok)
	if err := r.Walk(ctx, okc, func(ObjectName) error { return nil }); err != nil {
		t.Fatalf("%d levels: %v", MaxTreeDepth, err)
	}
	if err := Missing(ctx, okc, nil, r); err != nil {
		t.Fatalf("%d levels: %v", MaxTreeDepth, err)
	}

	deep := filepath.Join(root, "deep")
	nest(t, deep, "d", MaxTreeDepth+1)
	// The same 200-level subtree at depth 1 and again below 60 levels.
	shared := filepath.Join(root, "shared")
	nest(t, filepath.Join(shared, "s"), "d", 200)
	nest(t, filepath.Join(nest(t, shared, "z", 60), "s"), "d", 200)
	for what, dir := range map[string]string{"one level too deep": deep, "shared subtree": shared} {
		c := commitDir(t, r, dir)
		if err := r.Walk(ctx, c, func(ObjectName) error { return nil }); !errors.Is(err, ErrTreeLimit) {
			t.Errorf("%s: walk: %v", what, err)
		}
		if err := Missing(ctx, c, nil, r); !errors.Is(err, ErrTreeLimit) {
			t.Errorf("%s: closure check: %v", what, err)
		}
		if err := r.Diff(ctx, c, okc, func(ObjectName) error { return nil }); !errors.Is(err, ErrTreeLimit) {
			t.Errorf("%s: diff against %d levels: %v", what, MaxTreeDepth, err)
		}
	}
}

// A walk of a deep tree costs memory for its pending directories only, not
// for every tree above the current one.
func TestWalkOfDeepTreeIsFlat(t *testing.T) {
	t.Parallel()
	r := newArchive(t)
	dir := t.TempDir()
	// A wide tree at each of 200 levels: 200 files and a subdirectory.
	p := dir
	for i := 0; i < 200; i++ {
		for j := 0; j < 200; j++ {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(p, fmt.Sprintf("f%03d", j)), []byte(fmt.Sprint(i, j)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		p = filepath.Join(p, "d")
	}
	c := commitDir(t, r, dir)
	n := 0
	if err := r.Walk(ctx, c, func(ObjectName) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n < 200*200 {
		t.Fatalf("walked %d objects", n)
	}
}

func encodeTree(t *testing.T, files []string, dirs []string) (ObjectName, []byte) {
	t.Helper()
	sum := bytes.Repeat([]byte{7}, 32)
	var fl, dl []any
	for _, f := range files {
		fl = append(fl, []any{f, sum})
	}
	for _, d := range dirs {
		dl = append(dl, []any{d, sum, sum})
	}
	if fl == nil {
		fl = []any{}
	}
	if dl == nil {
		dl = []any{}
	}
	b, err := gvariant.Encode(typeDirTree, []any{fl, dl})
	if err != nil {
		t.Fatal(err)
	}
	return metaName(DirTree, b), b
}

// Dirtrees are checked in place as libostree writes them: entries sorted by
// name, no name twice, within MaxDirTreeEntries.
func TestDirTreeChecks(t *testing.T) {
	t.Parallel()
	for what, c := range map[string]struct {
		files, dirs []string
		want        string
	}{
		"sorted":               {[]string{"a", "b"}, []string{"c", "d"}, ""},
		"files out of order":   {[]string{"b", "a"}, nil, "not sorted"},
		"dirs out of order":    {nil, []string{"d", "c"}, "not sorted"},
		"file twice":           {[]string{"a", "a"}, nil, "duplicate"},
		"file and dir":         {[]string{"a", "m"}, []string{"b", "m"}, "duplicate"},
		"dot-dot":              {[]string{".."}, nil, "invalid file name"},
		"slash":                {nil, []string{"a/b"}, "contains '/'"},
		"empty name":           {[]string{""}, nil, "invalid file name"},
		"a later file and dir": {[]string{"a", "z"}, []string{"b", "z"}, "duplicate"},
	} {
		n, b := encodeTree(t, c.files, c.dirs)
		_, err := Verify(n, bytes.NewReader(b))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", what, err)
		case c.want != "" && (!IsCorrupt(err) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want %q", what, err, c.want)
		}
	}
	names := make([]string, MaxDirTreeEntries+1)
	for i := range names {
		names[i] = fmt.Sprintf("%06x", i)
	}
	_, b := encodeTree(t, names, nil)
	if _, err := ParseDirTree(b, true); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("%d entries: %v", len(names), err)
	}
}

// A hostile dirtree of many bad entries costs its bytes, not a decoded
// value per entry: the check stops at the first bad one.
func TestHostileDirTreeCostsItsBytes(t *testing.T) {
	// 2 million entries with empty names and empty checksums: each a
	// well-framed (say) of two bytes, the empty string and its end offset.
	entry := []byte{0, 1}
	var body []byte
	var offs []int
	for i := 0; i < 2_000_000; i++ {
		body = append(body, entry...)
		offs = append(offs, len(body))
	}
	files := body
	for _, o := range offs {
		files = append(files, byte(o), byte(o>>8), byte(o>>16), byte(o>>24))
	}
	b := append(files, byte(len(files)), byte(len(files)>>8), byte(len(files)>>16), byte(len(files)>>24))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := ParseDirTree(b, true)
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatal("accepted")
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Fatalf("checking %d bytes allocated %d bytes", len(b), grew)
	}
}

// A .filez whose header declares more content than allowed is refused
// before a byte is inflated; Work paces inflation and can stop it.
func TestVerifyBoundsAndPacing(t *testing.T) {
	t.Parallel()
	content := make([]byte, 5<<20)
	n, b := buildFilez(t, fileHeader{size: uint64(len(content)), mode: modeReg | 0o644}, deflate(content))
	_, err := VerifyWith(n, bytes.NewReader(b), VerifyOptions{MaxContentSize: 4 << 20})
	if !IsCorrupt(err) || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("content over the limit: %v", err)
	}
	steps := 0
	if _, err := VerifyWith(n, bytes.NewReader(b), VerifyOptions{MaxContentSize: 5 << 20, Work: func(int64) error { steps++; return nil }}); err != nil {
		t.Fatal(err)
	}
	if steps < 5 || steps > 7 {
		t.Fatalf("%d steps for 5 MiB of content", steps)
	}
	stop := errors.New("stop")
	steps = 0
	_, err = VerifyWith(n, bytes.NewReader(b), VerifyOptions{Work: func(int64) error {
		if steps++; steps == 2 {
			return stop
		}
		return nil
	}})
	if !errors.Is(err, stop) || IsCorrupt(err) {
		t.Fatalf("stopped verification: %v", err)
	}
	// A metadata object is one step, taken before it is read whole.
	tn, tb := encodeTree(t, []string{"a"}, nil)
	path := filepath.Join(t.TempDir(), "tree")
	os.WriteFile(path, tb, 0o644)
	var sizes []int64
	if _, err := VerifyFile(tn, path, VerifyOptions{Work: func(n int64) error { sizes = append(sizes, n); return nil }}); err != nil {
		t.Fatal(err)
	}
	if len(sizes) != 1 || sizes[0] != int64(len(tb)) {
		t.Fatalf("steps %v for a dirtree of %d bytes", sizes, len(tb))
	}
}

// The bomb the daemon's tests send is a real, valid object.
func TestZeroFilezIsValid(t *testing.T) {
	t.Parallel()
	name, b, err := storetest.ZeroFilez(64 << 20)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := ParseObjectName(name)
	info, err := Verify(n, bytes.NewReader(b))
	if err != nil || info.ContentSize != 64<<20 {
		t.Fatalf("%d bytes: %+v %v", len(b), info, err)
	}
	if len(b) > 100<<10 {
		t.Fatalf("a bomb of %d bytes", len(b))
	}
}
