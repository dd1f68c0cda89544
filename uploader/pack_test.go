package uploader

import (
	"archive/tar"
	"bytes"
	"testing"

	"github.com/ostree-upload/ostree-upload/store/object"
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
