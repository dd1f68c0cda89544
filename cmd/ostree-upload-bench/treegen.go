package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
)

// shape describes the population of a generated tree.
type shape struct {
	Name     string
	Dirs     int   // directories, nested up to maxDepth
	Small    int   // files of SmallMin..SmallMax bytes
	Medium   int   // files of MediumMin..MediumMax bytes
	Large    int   // incompressible files of LargeMin..LargeMax bytes
	Symlinks int   // symbolic links to other entries
	DupPct   int   // percent of small and medium files that repeat an earlier file's content
	SmallMin int64 //
	SmallMax int64
	MedMin   int64
	MedMax   int64
	LargeMin int64
	LargeMax int64
}

const (
	kib = 1 << 10
	mib = 1 << 20
)

// shapes are the fixture sizes the bench knows.
var shapes = map[string]shape{
	"full": {
		Name: "full", Dirs: 320, Small: 18_800, Medium: 1_000, Large: 4, Symlinks: 200, DupPct: 2,
		SmallMin: 100, SmallMax: 20 * kib, MedMin: 100 * kib, MedMax: 2 * mib, LargeMin: 20 * mib, LargeMax: 100 * mib,
	},
	"small": {
		Name: "small", Dirs: 40, Small: 1_880, Medium: 100, Large: 1, Symlinks: 20, DupPct: 2,
		SmallMin: 100, SmallMax: 20 * kib, MedMin: 100 * kib, MedMax: 2 * mib, LargeMin: 8 * mib, LargeMax: 8 * mib,
	},
}

// contentKind says how a file's bytes are made.
type contentKind uint8

const (
	contentText   contentKind = iota // words and lines: compresses about 3:1
	contentRandom                    // incompressible
	contentMixed                     // a random first half, a text second half
)

func (k contentKind) String() string {
	return [...]string{"text", "random", "mixed"}[k]
}

// fileSpec is one entry of a generated tree. Two regular files with the same
// Kind, Size and Seed have the same bytes.
type fileSpec struct {
	Path   string // slash-separated, relative to the tree root
	Link   string // symlink target; empty for a regular file
	Kind   contentKind
	Size   int64
	Seed   uint64
	Mode   os.FileMode
	Change string // in a change list: "modify", "add" or "remove"
}

// treePlan is the complete, deterministic description of a tree.
type treePlan struct {
	Dirs  []string
	Files []fileSpec
}

const maxDepth = 4

// logUniform returns a size between lo and hi, inclusive, uniform in log
// space, so that small sizes are as common as large ones per decade.
func logUniform(r *rand.Rand, lo, hi int64) int64 {
	if hi <= lo {
		return lo
	}
	x := math.Exp(math.Log(float64(lo)) + r.Float64()*(math.Log(float64(hi))-math.Log(float64(lo))))
	return min(max(int64(x), lo), hi)
}

var dirWords = []string{"usr", "lib", "share", "bin", "etc", "doc", "locale", "icons", "plugins", "data",
	"modules", "include", "python3", "fonts", "themes", "help", "man", "res", "assets", "config"}

var fileExts = []string{".txt", ".so", ".json", ".png", ".py", ".mo", ".xml", ".dat", ".js", ".css"}

// planTree lays out a tree of the given shape; the same shape and seed always
// give the same plan.
func planTree(s shape, seed uint64) treePlan {
	r := rand.New(rand.NewPCG(seed, 0x6f737472656531))
	var p treePlan
	depth := map[string]int{"": 0}
	for i := range s.Dirs {
		parent := ""
		if i > 0 && r.IntN(4) != 0 { // three quarters nest below an earlier directory
			parent = p.Dirs[r.IntN(len(p.Dirs))]
		}
		if depth[parent] >= maxDepth {
			parent = ""
		}
		d := path.Join(parent, fmt.Sprintf("%s%03d", dirWords[r.IntN(len(dirWords))], i))
		depth[d] = depth[parent] + 1
		p.Dirs = append(p.Dirs, d)
	}
	n := 0
	file := func(kind contentKind, size int64, seed uint64) fileSpec {
		n++
		mode := os.FileMode(0o644)
		if r.IntN(20) == 0 {
			mode = 0o755
		}
		dir := ""
		if len(p.Dirs) > 0 {
			dir = p.Dirs[r.IntN(len(p.Dirs))]
		}
		return fileSpec{
			Path: path.Join(dir, fmt.Sprintf("f%06d%s", n, fileExts[r.IntN(len(fileExts))])),
			Kind: kind, Size: size, Seed: seed, Mode: mode,
		}
	}
	pickKind := func(textPct, randomPct int) contentKind {
		switch x := r.IntN(100); {
		case x < textPct:
			return contentText
		case x < textPct+randomPct:
			return contentRandom
		default:
			return contentMixed
		}
	}
	var regular []int // indexes of small and medium files, for duplicates
	add := func(count int, lo, hi int64, textPct, randomPct int) {
		for range count {
			if len(regular) > 0 && r.IntN(100) < s.DupPct {
				src := p.Files[regular[r.IntN(len(regular))]]
				p.Files = append(p.Files, file(src.Kind, src.Size, src.Seed))
				continue
			}
			regular = append(regular, len(p.Files))
			p.Files = append(p.Files, file(pickKind(textPct, randomPct), logUniform(r, lo, hi), r.Uint64()))
		}
	}
	add(s.Small, s.SmallMin, s.SmallMax, 60, 30)
	add(s.Medium, s.MedMin, s.MedMax, 50, 35)
	for range s.Large {
		size := s.LargeMin + r.Int64N(s.LargeMax-s.LargeMin+1)
		p.Files = append(p.Files, file(contentRandom, size, r.Uint64()))
	}
	targets := len(p.Files)
	for range s.Symlinks {
		f := file(contentText, 0, 0)
		f.Mode = os.ModeSymlink | 0o777
		target := p.Files[r.IntN(targets)].Path
		f.Link = relTarget(path.Dir(f.Path), target)
		p.Files = append(p.Files, f)
	}
	return p
}

// relTarget is the relative symlink target from directory dir to path target.
func relTarget(dir, target string) string {
	rel, err := filepath.Rel("/"+dir, "/"+target)
	if err != nil {
		return target
	}
	return filepath.ToSlash(rel)
}

// planChange derives the next version of a tree: about pct percent of the
// entries change; half of those are rewritten regular files, a quarter are
// new files and a quarter are removed. It returns the new plan and the list
// of changes (each with Change set).
func planChange(p treePlan, seed uint64, pct float64) (treePlan, []fileSpec) {
	r := rand.New(rand.NewPCG(seed, 0x6368616e6765))
	total := max(int(math.Round(float64(len(p.Files))*pct/100)), 4)
	nModify, nAdd := total/2, total/4
	nRemove := total - nModify - nAdd

	next := treePlan{Dirs: slices.Clone(p.Dirs), Files: slices.Clone(p.Files)}
	var changes []fileSpec
	touched := map[int]bool{}
	pickRegular := func() int {
		for {
			i := r.IntN(len(next.Files))
			if !touched[i] && next.Files[i].Link == "" && next.Files[i].Size < 4*mib {
				touched[i] = true
				return i
			}
		}
	}
	for range nModify {
		i := pickRegular()
		f := next.Files[i]
		f.Seed = r.Uint64()
		f.Size = max(f.Size+r.Int64N(f.Size/4+1)-f.Size/8, 1)
		f.Change = "modify"
		next.Files[i] = f
		changes = append(changes, f)
	}
	removed := map[string]bool{}
	for range nRemove {
		f := next.Files[pickRegular()]
		removed[f.Path] = true
		f.Change = "remove"
		changes = append(changes, f)
	}
	next.Files = slices.DeleteFunc(next.Files, func(f fileSpec) bool { return removed[f.Path] })
	for k := range nAdd {
		f := fileSpec{
			Path: path.Join(p.Dirs[r.IntN(len(p.Dirs))], fmt.Sprintf("n%06d%s", k, fileExts[r.IntN(len(fileExts))])),
			Kind: contentKind(r.IntN(3)), Size: logUniform(r, 100, 64*kib), Seed: r.Uint64(), Mode: 0o644,
			Change: "add",
		}
		next.Files = append(next.Files, f)
		changes = append(changes, f)
	}
	return next, changes
}

// textWords is the vocabulary of text-like content.
var textWords = []string{"the", "ostree", "commit", "object", "static", "const", "return", "buffer",
	"error", "value", "string", "struct", "import", "function", "package", "module", "config", "system",
	"local", "remote", "update", "version", "install", "release", "library", "include", "default",
	"options", "license", "copyright", "public", "private", "window", "display", "content", "resource",
	"0", "1", "2", "16", "32", "64", "128", "255", "1024", "true", "false", "null", "{", "}", "(", ")",
	"=", ";", "//", "#", "-", "+", "*", "if", "else", "for", "while", "case"}

// writeContent writes exactly f.Size deterministic bytes for f to w.
func writeContent(w io.Writer, f fileSpec) error {
	r := rand.New(rand.NewChaCha8(seedBytes(f.Seed)))
	bw := bufio.NewWriterSize(w, 64*kib)
	randomPart, textPart := f.Size, int64(0)
	switch f.Kind {
	case contentText:
		randomPart, textPart = 0, f.Size
	case contentMixed:
		randomPart = f.Size / 2
		textPart = f.Size - randomPart
	}
	buf := make([]byte, 32*kib)
	for left := randomPart; left > 0; {
		n := min(left, int64(len(buf)))
		fillRandom(r, buf[:n])
		if _, err := bw.Write(buf[:n]); err != nil {
			return err
		}
		left -= n
	}
	for left, col := textPart, 0; left > 0; {
		word := textWords[r.IntN(len(textWords))]
		sep := byte(' ')
		col += len(word) + 1
		if col > 72 || r.IntN(12) == 0 {
			sep, col = '\n', 0
		}
		chunk := append([]byte(word), sep)
		if int64(len(chunk)) > left {
			chunk = chunk[:left]
		}
		if _, err := bw.Write(chunk); err != nil {
			return err
		}
		left -= int64(len(chunk))
	}
	return bw.Flush()
}

func seedBytes(seed uint64) [32]byte {
	var s [32]byte
	for i := range 4 {
		v := seed*0x9e3779b97f4a7c15 + uint64(i)*0xbf58476d1ce4e5b9
		for j := range 8 {
			s[i*8+j] = byte(v >> (8 * j))
		}
	}
	return s
}

func fillRandom(r *rand.Rand, b []byte) {
	for len(b) >= 8 {
		v := r.Uint64()
		for j := range 8 {
			b[j] = byte(v >> (8 * j))
		}
		b = b[8:]
	}
	for i := range b {
		b[i] = byte(r.Uint32())
	}
}

// writeEntry creates f below root, replacing what was there.
func writeEntry(root string, f fileSpec) error {
	p := filepath.Join(root, filepath.FromSlash(f.Path))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	_ = os.Remove(p)
	if f.Link != "" {
		return os.Symlink(f.Link, p)
	}
	fh, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, f.Mode.Perm())
	if err != nil {
		return err
	}
	if err := writeContent(fh, f); err != nil {
		fh.Close()
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err := fh.Close(); err != nil {
		return err
	}
	return os.Chmod(p, f.Mode.Perm()) // not subject to the umask
}
