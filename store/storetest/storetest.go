// Package storetest builds real OSTree repositories with the ostree CLI for
// tests, and checks published repositories the way clients see them.
package storetest

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ostree-upload/ostree-upload/store/internal/gvariant"
)

// Ostree runs the ostree CLI and returns its trimmed standard output.
func Ostree(args ...string) (string, error) {
	cmd := exec.Command("ostree", args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("ostree %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return strings.TrimSpace(out.String()), nil
}

// MustOstree is Ostree failing the test on error.
func MustOstree(t testing.TB, args ...string) string {
	t.Helper()
	out, err := Ostree(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// InitArchive creates an archive-mode repository at path.
func InitArchive(path string) error {
	_, err := Ostree("init", "--mode=archive", "--repo="+path)
	return err
}

// CommitTree commits dir to ref in repo at timestamp ts and returns the
// commit checksum. extra are more `ostree commit` options.
func CommitTree(repo, ref, dir string, ts int64, extra ...string) (string, error) {
	args := append([]string{"commit", "--repo=" + repo, "-b", ref, "--tree=dir=" + dir,
		fmt.Sprintf("--timestamp=@%d", ts), "-s", "commit of " + filepath.Base(dir)}, extra...)
	return Ostree(args...)
}

// WriteTree fills dir with n files of unique content spread over nested
// directories, plus symlinks, an empty file and xattrs.
func WriteTree(dir string, n int, rng *rand.Rand) error {
	for i := 0; i < n; i++ {
		sub := filepath.Join(dir, fmt.Sprintf("d%02d", i%40), fmt.Sprintf("e%d", i%7))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return err
		}
		size := 16 + rng.Intn(2048)
		if i%50 == 0 {
			size = 64 << 10
		}
		content := make([]byte, size)
		rng.Read(content)
		copy(content, fmt.Sprintf("file %d\n", i))
		p := filepath.Join(sub, fmt.Sprintf("f%05d", i))
		if err := os.WriteFile(p, content, 0o644); err != nil {
			return err
		}
		if i%97 == 0 {
			if err := os.Symlink(fmt.Sprintf("f%05d", i), p+".link"); err != nil {
				return err
			}
		}
		if i%89 == 0 {
			if err := unix.Setxattr(p, "user.fixture", []byte(fmt.Sprint(i)), 0); err != nil {
				return err
			}
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "empty"), nil, 0o644); err != nil {
		return err
	}
	return os.Chmod(filepath.Join(dir, "empty"), 0o600)
}

// MutateTree changes a tree made by WriteTree (of at least 400 files):
// renames, moves across directories, a moved directory, deletions, edits,
// additions and a mode change.
func MutateTree(dir string, rng *rand.Rand) error {
	mv := func(from, to string) error {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, to)), 0o755); err != nil {
			return err
		}
		return os.Rename(filepath.Join(dir, from), filepath.Join(dir, to))
	}
	for i := 1; i < 400; i += 20 {
		if err := mv(fmt.Sprintf("d%02d/e%d/f%05d", i%40, i%7, i), fmt.Sprintf("d%02d/e%d/renamed%05d", i%40, i%7, i)); err != nil {
			return err
		}
	}
	for i := 2; i < 400; i += 20 {
		if err := mv(fmt.Sprintf("d%02d/e%d/f%05d", i%40, i%7, i), fmt.Sprintf("moved/f%05d", i)); err != nil {
			return err
		}
	}
	if err := mv("d05/e3", "d06/e3moved"); err != nil {
		return err
	}
	for i := 3; i < 400; i += 20 {
		if err := os.Remove(filepath.Join(dir, fmt.Sprintf("d%02d/e%d/f%05d", i%40, i%7, i))); err != nil {
			return err
		}
	}
	for i := 4; i < 400; i += 20 {
		p := filepath.Join(dir, fmt.Sprintf("d%02d/e%d/f%05d", i%40, i%7, i))
		if err := os.WriteFile(p, []byte(fmt.Sprintf("edited %d %d", i, rng.Int())), 0o644); err != nil {
			return err
		}
	}
	for i := 0; i < 30; i++ {
		p := filepath.Join(dir, fmt.Sprintf("d%02d/added%02d", i, i))
		if err := os.WriteFile(p, []byte(fmt.Sprintf("added %d %d", i, rng.Int())), 0o644); err != nil {
			return err
		}
	}
	return os.Chmod(filepath.Join(dir, "d07"), 0o700)
}

// PullOverHTTP serves repo on 127.0.0.1 and pulls ref into a fresh
// bare-user repository with the ostree CLI, which unpacks and checksums
// every object (catching what `ostree fsck` of an archive repo misses), then
// fscks the result.
func PullOverHTTP(t testing.TB, repo, ref string) {
	t.Helper()
	PullOverHTTPWith(t, repo, ref, "--no-gpg-verify")
}

// PullOverHTTPWith is PullOverHTTP with the given options of
// `ostree remote add` (e.g. to require signatures). It returns the
// bare-user repository pulled into.
func PullOverHTTPWith(t testing.TB, repo, ref string, remoteOpts ...string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(repo))}
	go srv.Serve(ln)
	defer srv.Close()
	dst := filepath.Join(t.TempDir(), "bare-user")
	MustOstree(t, "init", "--mode=bare-user", "--repo="+dst)
	MustOstree(t, append(append([]string{"remote", "add", "--repo=" + dst}, remoteOpts...), "prod", "http://"+ln.Addr().String())...)
	MustOstree(t, "pull", "--repo="+dst, "prod", ref)
	MustOstree(t, "fsck", "--repo="+dst)
	return dst
}

// Fixture is a build repository with the commits tests push:
// main: A, then B (B's parent A, a later timestamp, renames and edits);
// other: C (small); D: unrelated to A and B but bound to main;
// big: E, thirty incompressible files of 300 KiB to 1.5 MiB.
type Fixture struct {
	Build         string
	A, B, C, D, E string
}

// BuildFixture makes a Fixture under dir with a tree of files files (at
// least 400).
func BuildFixture(dir string, files int) (*Fixture, error) {
	f := &Fixture{Build: filepath.Join(dir, "build")}
	if err := InitArchive(f.Build); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewSource(3))
	tree := filepath.Join(dir, "tree")
	var err error
	if err = WriteTree(tree, files, rng); err != nil {
		return nil, err
	}
	if f.A, err = CommitTree(f.Build, "main", tree, 1700000000); err != nil {
		return nil, err
	}
	if err = MutateTree(tree, rng); err != nil {
		return nil, err
	}
	if f.B, err = CommitTree(f.Build, "main", tree, 1700000100); err != nil {
		return nil, err
	}
	small := filepath.Join(dir, "small")
	if err = WriteTree(small, 60, rng); err != nil {
		return nil, err
	}
	if f.C, err = CommitTree(f.Build, "other", small, 1700000200); err != nil {
		return nil, err
	}
	f.D, err = Ostree("commit", "--repo="+f.Build, "--orphan", "--bind-ref=main", "--tree=dir="+small,
		"--timestamp=@1700000300", "-s", "unrelated")
	if err != nil {
		return nil, err
	}
	big := filepath.Join(dir, "big")
	if err := os.MkdirAll(big, 0o755); err != nil {
		return nil, err
	}
	for i := 0; i < 30; i++ {
		b := make([]byte, 300<<10+rng.Intn(1200<<10))
		rng.Read(b)
		if err := os.WriteFile(filepath.Join(big, fmt.Sprintf("blob%02d", i)), b, 0o644); err != nil {
			return nil, err
		}
	}
	f.E, err = CommitTree(f.Build, "big", big, 1700000400)
	return f, err
}

// Main runs a package's tests after setup built its fixtures in a fresh
// temporary directory, removes the directory, and exits. Use it from
// TestMain.
func Main(m *testing.M, setup func(dir string) error) {
	os.Exit(runMain(m, setup))
}

func runMain(m *testing.M, setup func(dir string) error) int {
	dir, err := os.MkdirTemp("", "ostree-upload-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "fixtures:", err)
		return 2
	}
	defer os.RemoveAll(dir)
	if err := setup(dir); err != nil {
		fmt.Fprintln(os.Stderr, "fixtures:", err)
		return 2
	}
	return m.Run()
}

// CommitMeta encodes detached metadata holding one key, whose value has
// the GVariant type typ ("aay": a []any of []byte; "s": a string; …), the
// way a client could send it, well-formed or not.
func CommitMeta(key, typ string, value any) ([]byte, error) {
	return gvariant.Encode(gvariant.MustParseType("a{sv}"), []any{[]any{key, gvariant.Variant{Type: gvariant.MustParseType(typ), Value: value}}})
}

// ZeroFilez returns the archive form (.filez) of a regular file of size
// zero bytes, and its object name: a decompression bomb, about a
// thousandth of its size, made from one compressed megabyte repeated.
// size must be a multiple of 1 MiB, at least 3 MiB.
func ZeroFilez(size int64) (string, []byte, error) { return zeroFilez(size, true) }

// ZeroFilezData is ZeroFilez without the name, which costs hashing the
// whole content: for bombs refused before their content is looked at.
func ZeroFilezData(size int64) ([]byte, error) {
	_, b, err := zeroFilez(size, false)
	return b, err
}

func zeroFilez(size int64, named bool) (string, []byte, error) {
	const mib = 1 << 20
	if size%mib != 0 || size < 3*mib {
		return "", nil, fmt.Errorf("ZeroFilez: size %d is not 3 MiB or more in whole MiB", size)
	}
	var stream bytes.Buffer
	w, _ := flate.NewWriter(&stream, flate.BestCompression)
	zeros := make([]byte, mib)
	var chunks [][]byte
	for i := 0; i < 3; i++ {
		start := stream.Len()
		w.Write(zeros)
		w.Flush()
		chunks = append(chunks, bytes.Clone(stream.Bytes()[start:]))
	}
	if !bytes.Equal(chunks[1], chunks[2]) {
		return "", nil, errors.New("ZeroFilez: compressed megabytes differ")
	}
	end := stream.Len()
	w.Close()
	final := bytes.Clone(stream.Bytes()[end:])
	be32 := bits.ReverseBytes32
	mode := be32(0o100644)
	hdr, err := gvariant.Encode(gvariant.MustParseType("(tuuuusa(ayay))"), []any{bits.ReverseBytes64(uint64(size)), uint32(0), uint32(0), mode, uint32(0), "", []any{}})
	if err != nil {
		return "", nil, err
	}
	canon, err := gvariant.Encode(gvariant.MustParseType("(uuuusa(ayay))"), []any{uint32(0), uint32(0), mode, uint32(0), "", []any{}})
	if err != nil {
		return "", nil, err
	}
	h := sha256.New()
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(canon))))
	h.Write([]byte{0, 0, 0, 0})
	h.Write(canon)
	for i := int64(0); named && i < size/mib; i++ {
		h.Write(zeros)
	}
	out := binary.BigEndian.AppendUint32(nil, uint32(len(hdr)))
	out = append(append(out, 0, 0, 0, 0), hdr...)
	out = append(out, chunks[0]...)
	for i := int64(1); i < size/mib; i++ {
		out = append(out, chunks[1]...)
	}
	out = append(out, final...)
	return hex.EncodeToString(h.Sum(nil)) + ".filez", out, nil
}

// DirTree returns a dirtree object of n files named f0000000, f0000001, …
// (sorted, as libostree writes them) whose checksums are made from seed,
// and its object name: a valid dirtree as large as a test wants.
func DirTree(n int, seed byte) (string, []byte, error) {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("f%07d", i)
	}
	return DirTreeNamed(names, seed)
}

// DirTreeNamed returns a dirtree object of files named names, in that
// order, whose checksums are made from seed, and its object name.
func DirTreeNamed(names []string, seed byte) (string, []byte, error) {
	files := make([]any, len(names))
	for i, name := range names {
		sum := sha256.Sum256([]byte{seed, byte(i), byte(i >> 8), byte(i >> 16)})
		files[i] = []any{name, sum[:]}
	}
	b, err := gvariant.Encode(gvariant.MustParseType("(a(say)a(sayay))"), []any{files, []any{}})
	if err != nil {
		return "", nil, err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]) + ".dirtree", b, nil
}
