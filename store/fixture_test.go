package store

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fx holds repositories built once for the whole package.
var fx struct {
	dir   string
	build string   // archive repo: commits A and B on ref "main"
	a, b  Checksum // B's parent is A
	other Checksum // a commit on ref "other" with symlinks and xattrs only
}

func TestMain(m *testing.M) {
	code, err := runWithFixtures(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fixtures:", err)
		os.Exit(2)
	}
	os.Exit(code)
}

func runWithFixtures(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "store-test-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	fx.dir = dir
	if err := buildFixtures(dir); err != nil {
		return 0, err
	}
	return m.Run(), nil
}

func ostree(args ...string) (string, error) {
	cmd := exec.Command("ostree", args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("ostree %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return strings.TrimSpace(out.String()), nil
}

func mustOstree(t testing.TB, args ...string) string {
	t.Helper()
	out, err := ostree(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// commitTree commits dir to ref in repo and returns the commit checksum.
func commitTree(repo, ref, dir string, ts int64, extra ...string) (Checksum, error) {
	args := append([]string{"commit", "--repo=" + repo, "-b", ref, "--tree=dir=" + dir,
		fmt.Sprintf("--timestamp=@%d", ts), "-s", "commit of " + filepath.Base(dir)}, extra...)
	out, err := ostree(args...)
	if err != nil {
		return Checksum{}, err
	}
	return ParseChecksum(out)
}

// writeTree fills dir with n files of unique content spread over nested
// directories, plus symlinks, empty files and xattrs.
func writeTree(dir string, n int, rng *rand.Rand) error {
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

// mutateTree turns tree A into tree B: renames, moves within and across
// directories, a moved directory, deletions, additions, edits, a mode change.
func mutateTree(dir string, rng *rand.Rand) error {
	mv := func(from, to string) error {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, to)), 0o755); err != nil {
			return err
		}
		return os.Rename(filepath.Join(dir, from), filepath.Join(dir, to))
	}
	for i := 1; i < 400; i += 20 { // renames in place
		if err := mv(fmt.Sprintf("d%02d/e%d/f%05d", i%40, i%7, i), fmt.Sprintf("d%02d/e%d/renamed%05d", i%40, i%7, i)); err != nil {
			return err
		}
	}
	for i := 2; i < 400; i += 20 { // moves across directories
		if err := mv(fmt.Sprintf("d%02d/e%d/f%05d", i%40, i%7, i), fmt.Sprintf("moved/f%05d", i)); err != nil {
			return err
		}
	}
	if err := mv("d05/e3", "d06/e3moved"); err != nil { // a whole directory
		return err
	}
	for i := 3; i < 400; i += 20 { // deletions
		if err := os.Remove(filepath.Join(dir, fmt.Sprintf("d%02d/e%d/f%05d", i%40, i%7, i))); err != nil {
			return err
		}
	}
	for i := 4; i < 400; i += 20 { // edits
		p := filepath.Join(dir, fmt.Sprintf("d%02d/e%d/f%05d", i%40, i%7, i))
		if err := os.WriteFile(p, []byte(fmt.Sprintf("edited %d %d", i, rng.Int())), 0o644); err != nil {
			return err
		}
	}
	for i := 0; i < 30; i++ { // additions
		p := filepath.Join(dir, fmt.Sprintf("d%02d/added%02d", i, i))
		if err := os.WriteFile(p, []byte(fmt.Sprintf("added %d %d", i, rng.Int())), 0o644); err != nil {
			return err
		}
	}
	return os.Chmod(filepath.Join(dir, "d07"), 0o700)
}

func buildFixtures(dir string) error {
	rng := rand.New(rand.NewSource(42))
	fx.build = filepath.Join(dir, "build")
	if _, err := ostree("init", "--mode=archive", "--repo="+fx.build); err != nil {
		return err
	}
	tree := filepath.Join(dir, "tree")
	if err := writeTree(tree, 3000, rng); err != nil {
		return err
	}
	var err error
	if fx.a, err = commitTree(fx.build, "main", tree, 1700000000); err != nil {
		return err
	}
	if err := mutateTree(tree, rng); err != nil {
		return err
	}
	if fx.b, err = commitTree(fx.build, "main", tree, 1700000100); err != nil {
		return err
	}
	small := filepath.Join(dir, "small")
	if err := writeTree(small, 120, rng); err != nil {
		return err
	}
	fx.other, err = commitTree(fx.build, "other", small, 1700000200, "--add-metadata-string=purpose=fixture", "--add-detached-metadata-string=note=detached")
	return err
}

// repoObjects lists the object files of an archive repo by name.
func repoObjects(t testing.TB, repo string) map[ObjectName]int64 {
	t.Helper()
	out := map[ObjectName]int64{}
	root := filepath.Join(repo, "objects")
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(repo, p)
		n, err := ParseObjectPath(filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		out[n] = fi.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sortedNames(s map[ObjectName]bool) []string {
	var out []string
	for n := range s {
		out = append(out, n.String())
	}
	sort.Strings(out)
	return out
}

func openArchive(t testing.TB, path string) *Repo {
	t.Helper()
	r, err := OpenArchive(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func newArchive(t testing.TB) *Repo {
	t.Helper()
	r, err := Create(context.Background(), filepath.Join(t.TempDir(), "repo"), ModeArchive)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// pullOverHTTP serves repo on 127.0.0.1 and pulls ref into a fresh bare-user
// repo with the ostree CLI, which unpacks and checksums every object.
func pullOverHTTP(t testing.TB, repo, ref string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(repo))}
	go srv.Serve(ln)
	defer srv.Close()
	dst := filepath.Join(t.TempDir(), "bare-user")
	mustOstree(t, "init", "--mode=bare-user", "--repo="+dst)
	mustOstree(t, "remote", "add", "--repo="+dst, "--no-gpg-verify", "prod", "http://"+ln.Addr().String())
	mustOstree(t, "pull", "--repo="+dst, "prod", ref)
	mustOstree(t, "fsck", "--repo="+dst)
}

// copyObject places an object file from one archive repo into another, as
// the daemon places verified objects into its spool.
func copyObject(t testing.TB, from, to *Repo, n ObjectName) {
	t.Helper()
	b, err := os.ReadFile(from.ObjectPath(n))
	if err != nil {
		t.Fatal(err)
	}
	p := to.ObjectPath(n)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o444); err != nil {
		t.Fatal(err)
	}
}
