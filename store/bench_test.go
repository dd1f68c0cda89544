package store

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ostree-upload/ostree-upload/store/object"
)

// Benchmark fixtures are built on first use, outside the test fixtures.
var bfx struct {
	once      sync.Once
	err       error
	repo      string
	large     object.Name     // a 64 MiB incompressible file
	largeZ    object.Name     // a 64 MiB file that deflate halves
	largeSize int64           // their uncompressed size
	small     object.Checksum // commit of 5,000 small files
	treeA     object.Checksum // 20,000 files
	treeB     object.Checksum // treeA with ~1 % of the files changed
}

func benchFixtures(b *testing.B) {
	bfx.once.Do(func() { bfx.err = buildBenchFixtures() })
	if bfx.err != nil {
		b.Fatal(bfx.err)
	}
}

func buildBenchFixtures() error {
	dir := filepath.Join(fx.dir, "bench")
	bfx.repo = filepath.Join(dir, "repo")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if _, err := ostree("init", "--mode=archive", "--repo="+bfx.repo); err != nil {
		return err
	}
	rng := rand.New(rand.NewSource(7))
	large := filepath.Join(dir, "large")
	os.MkdirAll(large, 0o755)
	bfx.largeSize = 64 << 20
	data := make([]byte, bfx.largeSize)
	rng.Read(data)
	if err := os.WriteFile(filepath.Join(large, "blob"), data, 0o644); err != nil {
		return err
	}
	for i := 0; i < len(data); i += 4096 { // every other 2 KiB run zeroed
		clear(data[i : i+2048])
	}
	if err := os.WriteFile(filepath.Join(large, "blobz"), data, 0o644); err != nil {
		return err
	}
	c, err := commitTree(bfx.repo, "large", large, 1)
	if err != nil {
		return err
	}
	r, err := Open(ctx, bfx.repo)
	if err != nil {
		return err
	}
	defer r.Close()
	lc, err := r.ReadCommit(ctx, c)
	if err != nil {
		return err
	}
	files, err := r.ReadTree(ctx, lc.RootTree)
	if err != nil {
		return err
	}
	bfx.large = object.Name{Sum: files.Files[0].Sum, Type: object.File}
	bfx.largeZ = object.Name{Sum: files.Files[1].Sum, Type: object.File}
	small := filepath.Join(dir, "small")
	for i := 0; i < 5000; i++ {
		p := filepath.Join(small, fmt.Sprintf("d%02d", i%50), fmt.Sprintf("f%04d", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		b := make([]byte, 100+rng.Intn(4000))
		rng.Read(b[len(b)/2:]) // half compressible
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
	}
	if bfx.small, err = commitTree(bfx.repo, "small", small, 1); err != nil {
		return err
	}
	tree := filepath.Join(dir, "tree")
	if err := writeTree(tree, 20000, rng); err != nil {
		return err
	}
	if bfx.treeA, err = commitTree(bfx.repo, "tree", tree, 1); err != nil {
		return err
	}
	for i := 0; i < 20000; i += 100 { // 1 %: 200 files edited
		p := filepath.Join(tree, fmt.Sprintf("d%02d", i%40), fmt.Sprintf("e%d", i%7), fmt.Sprintf("f%05d", i))
		if err := os.WriteFile(p, []byte(fmt.Sprint("changed ", i)), 0o644); err != nil {
			return err
		}
	}
	bfx.treeB, err = commitTree(bfx.repo, "tree", tree, 2)
	return err
}

// BenchmarkVerifyLargeFile reports raw (uncompressed) MB/s on one 64 MiB
// object of random bytes (stored blocks) and one that deflate halves.
func BenchmarkVerifyLargeFile(b *testing.B) {
	benchFixtures(b)
	r := openArchive(b, bfx.repo)
	b.Run("incompressible", func(b *testing.B) { benchVerifyFile(b, r, bfx.large) })
	b.Run("compressible", func(b *testing.B) { benchVerifyFile(b, r, bfx.largeZ) })
}

func benchVerifyFile(b *testing.B, r *Repo, n object.Name) {
	b.SetBytes(bfx.largeSize)
	for i := 0; i < b.N; i++ {
		f, err := os.Open(r.ObjectPath(n))
		if err != nil {
			b.Fatal(err)
		}
		_, err = object.Verify(n, f)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifySmallObjects verifies the 5,000 file objects of a commit
// from memory and reports the cost per object.
func BenchmarkVerifySmallObjects(b *testing.B) {
	benchFixtures(b)
	r := openArchive(b, bfx.repo)
	var names []object.Name
	var data [][]byte
	r.Walk(ctx, bfx.small, func(n object.Name) error {
		if n.Type == object.File {
			d, err := os.ReadFile(r.ObjectPath(n))
			if err != nil {
				return err
			}
			names, data = append(names, n), append(data, d)
		}
		return nil
	})
	if len(names) != 5000 {
		b.Fatalf("%d small objects, want 5000", len(names))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j, n := range names {
			if _, err := object.Verify(n, bytes.NewReader(data[j])); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(names)), "ns/object")
}

func benchTraverse(b *testing.B, diff bool) {
	benchFixtures(b)
	r := openArchive(b, bfx.repo)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n := 0
		count := func(object.Name) error { n++; return nil }
		var err error
		if diff {
			err = r.Diff(ctx, bfx.treeB, bfx.treeA, count)
		} else {
			err = r.Walk(ctx, bfx.treeB, count)
		}
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(n), "objects")
	}
}

// BenchmarkDiff1Percent is the pruned diff of a 20,000-file tree after a
// 1 % change; BenchmarkWalkFull is the full traversal of the same commit.
func BenchmarkDiff1Percent(b *testing.B) { benchTraverse(b, true) }
func BenchmarkWalkFull(b *testing.B)     { benchTraverse(b, false) }

// BenchmarkMissingFull is the closure check of the 20,000-file commit (a
// look-up per object, as a publish's check makes).
func BenchmarkMissingFull(b *testing.B) {
	benchFixtures(b)
	r := openArchive(b, bfx.repo)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := Missing(ctx, bfx.treeB, nil, r); err != nil {
			b.Fatal(err)
		}
	}
}
