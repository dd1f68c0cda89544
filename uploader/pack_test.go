package uploader

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/store"
	"github.com/ostree-upload/ostree-upload/store/object"
	"github.com/ostree-upload/ostree-upload/store/storetest"
)

func TestPackSizeMatchesTar(t *testing.T) {
	sizes := []int64{0, 1, 511, 512, 513, 100000}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i, s := range sizes {
		n := object.Name{Sum: object.Checksum{byte(i)}, Type: object.CommitMeta} // the longest name
		if err := tw.WriteHeader(&tar.Header{Name: n.RelPath(), Size: s, Mode: 0o644, ModTime: packTime, Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}); err != nil {
			t.Fatal(err)
		}
		tw.Write(make([]byte, s))
	}
	tw.Close()
	if got := packSize(sizes); got != int64(buf.Len()) {
		t.Fatalf("packSize = %d, tar wrote %d", got, buf.Len())
	}
}

func TestPackWork(t *testing.T) {
	var objs []object.Name
	size := map[object.Name]int64{}
	for i := range 10000 {
		n := object.Name{Sum: object.Checksum{byte(i), byte(i >> 8)}, Type: object.File}
		objs = append(objs, n)
		size[n] = int64(i%7) * 1000
	}
	sizes := make([]int64, len(objs))
	for i, n := range objs {
		sizes[i] = size[n]
	}
	ws := packWork(objs, sizes, 1<<20)
	seen := 0
	for _, w := range ws {
		if w.bytes > 1<<20 || len(w.pack) > packMaxObjs || len(w.pack) == 0 {
			t.Fatalf("pack of %d objects, %d bytes", len(w.pack), w.bytes)
		}
		var sum int64
		for i, n := range w.pack {
			if w.sizes[i] != size[n] {
				t.Fatalf("pack gives %s %d bytes, want %d", n, w.sizes[i], size[n])
			}
			sum += w.sizes[i]
		}
		if len(w.sizes) != len(w.pack) || sum != w.bytes {
			t.Fatalf("pack of %d objects and %d sizes, %d bytes, sizes sum to %d", len(w.pack), len(w.sizes), w.bytes, sum)
		}
		seen += len(w.pack)
	}
	if seen != len(objs) {
		t.Fatalf("packs hold %d of %d objects", seen, len(objs))
	}
	// One object over the target still travels, alone.
	big := object.Name{Type: object.File}
	size[big] = 2 << 20
	if ws := packWork([]object.Name{objs[1], big, objs[2]}, []int64{size[objs[1]], size[big], size[objs[2]]}, 1<<20); len(ws) != 3 {
		t.Fatalf("%d packs, want 3", len(ws))
	}
}

// writeSizes records the size of each write.
type writeSizes struct {
	bytes.Buffer
	sizes []int
}

func (w *writeSizes) Write(b []byte) (int, error) {
	w.sizes = append(w.sizes, len(b))
	return w.Buffer.Write(b)
}

// smallTreeRepo is an archive repository with one commit, of a tree of
// 400 files made from seed, opened for the test's duration; and its path.
func smallTreeRepo(t *testing.T, seed int64) (r *store.Repo, repo, commit string) {
	t.Helper()
	dir := t.TempDir()
	repo, tree := filepath.Join(dir, "repo"), filepath.Join(dir, "tree")
	if err := storetest.InitArchive(repo); err != nil {
		t.Fatal(err)
	}
	if err := storetest.WriteTree(tree, 400, rand.New(rand.NewSource(seed))); err != nil {
		t.Fatal(err)
	}
	commit, err := storetest.CommitTree(repo, "main", tree, 1)
	if err != nil {
		t.Fatal(err)
	}
	r, err = store.Open(context.Background(), repo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, repo, commit
}

// A pack of small objects reaches the request in writes of packWriteSize
// (the last one shorter), not one per header, content and padding: and it
// is still a tar of exactly those objects, as packSize says.
func TestPackIsWrittenInLargeWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, repo, commit := smallTreeRepo(t, 1)
	p := &pusher{repo: r}
	var objs []object.Name
	var sizes []int64
	for _, n := range daemontest.Objects(t, repo, commit, "") {
		s, err := r.SizeEstimate(n)
		if err != nil {
			t.Fatal(err)
		}
		if s < 4096 && len(objs) < 2000 {
			objs, sizes = append(objs, n), append(sizes, s)
		}
	}
	if packSize(sizes) < 4*packWriteSize {
		t.Fatalf("the fixture's small objects make a pack of %d bytes only", packSize(sizes))
	}
	var w writeSizes
	if err := p.writePack(ctx, &w, objs, sizes); err != nil {
		t.Fatal(err)
	}
	for i, s := range w.sizes[:len(w.sizes)-1] {
		if s != packWriteSize {
			t.Fatalf("write %d of %d is of %d bytes, want %d", i, len(w.sizes), s, packWriteSize)
		}
	}
	if int64(w.Len()) != packSize(sizes) {
		t.Fatalf("pack of %d bytes, packSize says %d", w.Len(), packSize(sizes))
	}
	tr := tar.NewReader(&w.Buffer)
	for i, n := range objs {
		hdr, err := tr.Next()
		if err != nil || hdr.Name != n.RelPath() || hdr.Size != sizes[i] {
			t.Fatalf("entry %d: %+v, %v; want %s of %d bytes", i, hdr, err, n.RelPath(), sizes[i])
		}
	}
}

// countingFile counts the reads of a file.
type countingFile struct {
	f     *os.File
	reads int
}

func (c *countingFile) Read(p []byte) (int, error) {
	c.reads++
	return c.f.Read(p)
}

// An object smaller than the copy buffer is read from its file in one
// read when it has the size planned, and a file that grew or shrank since
// is copied as it is now, for the caller to refuse.
func TestSmallObjectsAreReadOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	buf := make([]byte, 4096)
	for _, c := range []struct {
		name        string
		size, wrote int
		reads       int // at most
	}{
		{"as planned", 1000, 1000, 1},
		{"one byte under the buffer", 4095, 4095, 1},
		{"grown", 1000, 1500, 1},
		{"shrunk", 1000, 600, 2},
		{"as large as the buffer", 4096, 4096, 2},
		{"larger than the buffer", 10000, 10000, 4},
	} {
		path := filepath.Join(dir, c.name)
		content := bytes.Repeat([]byte{'x'}, c.wrote)
		if err := os.WriteFile(path, content, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		src := &countingFile{f: f}
		var w bytes.Buffer
		k, err := copyObject(struct{ io.Writer }{&w}, src, int64(c.size), buf)
		f.Close()
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if c.wrote == c.size && (k != int64(c.size) || !bytes.Equal(w.Bytes(), content)) {
			t.Errorf("%s: copied %d bytes (%d written), want the file's %d", c.name, k, w.Len(), c.size)
		}
		if c.wrote != c.size && k == int64(c.size) {
			t.Errorf("%s: copied %d bytes, the planned size, of a file of %d", c.name, k, c.wrote)
		}
		if src.reads > c.reads {
			t.Errorf("%s: %d reads, want at most %d", c.name, src.reads, c.reads)
		}
	}
}

// The needed names of a negotiation are packed in name order, so that each
// pack holds neighbours in the daemon's journal (keyed by checksum) rather
// than names spread over all of it: within a pack the names ascend, and
// the packs cover ranges of names that do not overlap.
func TestPacksHoldNeighboursInNameOrder(t *testing.T) {
	t.Parallel()
	r, repo, commit := smallTreeRepo(t, 2)
	needed := daemontest.Objects(t, repo, commit, "") // in the walk's order
	if slices.IsSortedFunc(needed, object.Name.Compare) {
		t.Fatal("the walk's order is already the names' order: the test shows nothing")
	}
	p := &pusher{repo: r, opts: Options{PackMax: 1 << 20}, packTarget: 16 << 10}
	ws, _, err := p.works(slices.Clone(needed), nil)
	if err != nil {
		t.Fatal(err)
	}
	var packs [][]object.Name
	held := 0
	for _, w := range ws {
		held += max(len(w.pack), 1)
		if len(w.pack) == 0 {
			continue
		}
		if !slices.IsSortedFunc(w.pack, object.Name.Compare) {
			t.Fatalf("a pack of %d names not in name order", len(w.pack))
		}
		packs = append(packs, w.pack)
	}
	if held != len(needed) || len(packs) < 3 {
		t.Fatalf("%d packs holding %d of %d names", len(packs), held, len(needed))
	}
	slices.SortFunc(packs, func(a, b []object.Name) int { return a[0].Compare(b[0]) })
	for i := 1; i < len(packs); i++ {
		if prev := packs[i-1]; prev[len(prev)-1].Compare(packs[i][0]) >= 0 {
			t.Fatalf("packs %d and %d overlap: %s after %s", i-1, i, prev[len(prev)-1], packs[i][0])
		}
	}
}
