package object

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

func encodeTree(t *testing.T, files []string, dirs []string) (Name, []byte) {
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
	var steps, total, largest int64
	if _, err := VerifyWith(n, bytes.NewReader(b), VerifyOptions{MaxContentSize: 5 << 20, Work: func(n int64) error {
		steps, total, largest = steps+1, total+n, max(largest, n)
		return nil
	}}); err != nil {
		t.Fatal(err)
	}
	if total != 5<<20 || largest > 32<<10 {
		t.Fatalf("%d steps of up to %d bytes for %d bytes of content", steps, largest, total)
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

// The bomb the daemon's tests send is a real, valid
func TestZeroFilezIsValid(t *testing.T) {
	t.Parallel()
	name, b, err := storetest.ZeroFilez(64 << 20)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := ParseName(name)
	info, err := Verify(n, bytes.NewReader(b))
	if err != nil || info.ContentSize != 64<<20 {
		t.Fatalf("%d bytes: %+v %v", len(b), info, err)
	}
	if len(b) > 100<<10 {
		t.Fatalf("a bomb of %d bytes", len(b))
	}
}

// Verifying a small object from its file allocates no read buffer of its
// own per call (64 KiB): the daemon verifies each staged dirtree so, and a
// Flatpak commit has tens of thousands. The bound leaves room for the
// pooled buffers, which the race detector makes sync.Pool drop a quarter
// of the time. Not parallel: the count is of the whole process's
// allocations.
func TestVerifyFileAllocatesLittle(t *testing.T) {
	picked := map[Type]Name{}
	objs := allObjects(t)
	for n, b := range objs {
		if _, ok := picked[n.Type]; !ok && (n.Type == DirTree || n.Type == File) && len(b) < 4<<10 {
			picked[n.Type] = n
		}
	}
	for _, typ := range []Type{DirTree, File} {
		n, ok := picked[typ]
		if !ok {
			t.Fatalf("the fixture has no %s object under 4 KiB", typ.Ext())
		}
		path := filepath.Join(t.TempDir(), "object")
		if err := os.WriteFile(path, objs[n], 0o644); err != nil {
			t.Fatal(err)
		}
		VerifyFile(n, path, VerifyOptions{}) // the pools filled
		const calls = 200
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range calls {
			if _, err := VerifyFile(n, path, VerifyOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		runtime.ReadMemStats(&after)
		per := (after.TotalAlloc - before.TotalAlloc) / calls
		t.Logf("%s: %d bytes per call", typ.Ext(), per)
		if per > 48<<10 {
			t.Errorf("verifying %s (%d bytes) from its file allocated %d bytes per call, want at most 48 KiB", n, len(objs[n]), per)
		}
	}
}
