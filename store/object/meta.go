package object

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/bits"
	"strings"
	"time"

	"github.com/ostree-upload/ostree-upload/store/internal/gvariant"
)

// GVariant types of the objects an archive repo stores.
var (
	typeDirTree    = gvariant.MustParseType("(a(say)a(sayay))")
	typeDirMeta    = gvariant.MustParseType("(uuua(ayay))")
	typeCommit     = gvariant.MustParseType("(a{sv}aya(say)sstayay)")
	typeCommitMeta = gvariant.MustParseType("a{sv}")
	typeFileHeader = gvariant.MustParseType("(tuuuusa(ayay))") // archive .filez header
	typeFileCanon  = gvariant.MustParseType("(uuuusa(ayay))")  // what a file's checksum covers
)

// Mode bits as stored (big-endian) in OSTree headers.
const (
	modeTypeMask = 0o170000
	modeDir      = 0o040000
	modeReg      = 0o100000
	modeLink     = 0o120000
	modePerms    = 0o7777
)

// TreeFile is a file entry of a dirtree.
type TreeFile struct {
	Name string
	Sum  Checksum // of the File object
}

// TreeDir is a subdirectory entry of a dirtree.
type TreeDir struct {
	Name string
	Tree Checksum // DirTree object
	Meta Checksum // DirMeta object
}

// Tree is a parsed dirtree object.
type Tree struct {
	Files []TreeFile
	Dirs  []TreeDir
}

// CommitInfo is what a commit object says, plus whether the repo holds it
// only partially.
type CommitInfo struct {
	Sum               Checksum
	Parent            *Checksum // nil for a root commit
	Subject           string
	Body              string
	Timestamp         time.Time
	RootTree          Checksum
	RootMeta          Checksum
	MetadataSum       [32]byte // SHA-256 of the commit's metadata (a{sv}, normal form): equal metadata, equal sums
	RefBindings       []string // "ostree.ref-binding"
	CollectionBinding string   // "ostree.collection-binding"
	Partial           bool     // the repo marks it .commitpartial
}

// SameContent reports whether two commits hold the same tree and the same
// metadata (a reproducible rebuild): publishing one over the other changes
// nothing a client sees but the checksum.
func (c *CommitInfo) SameContent(o *CommitInfo) bool {
	return c.RootTree == o.RootTree && c.RootMeta == o.RootMeta && c.MetadataSum == o.MetadataSum
}

func validFilename(name string) error {
	switch {
	case name == "", name == ".", name == "..":
		return fmt.Errorf("invalid file name %q", name)
	case strings.ContainsRune(name, '/'):
		return fmt.Errorf("file name %q contains '/'", name)
	}
	return nil
}

func checksumOf(b []byte, what string) (Checksum, error) {
	var c Checksum
	if len(b) != len(c) {
		return c, fmt.Errorf("%s: checksum of %d bytes", what, len(b))
	}
	copy(c[:], b)
	return c, nil
}

// viewMeta checks b as a value of type t in place (strict: also in normal
// form) and returns a view of it.
func viewMeta(t *gvariant.Type, b []byte, strict bool) (gvariant.View, error) {
	check := gvariant.ValidateLoose
	if strict {
		check = gvariant.Validate
	}
	if err := check(t, b); err != nil {
		return gvariant.View{}, err
	}
	return gvariant.NewView(t, b), nil
}

// ParseDirTree parses and validates a dirtree object: entries with valid
// names and 32-byte checksums. With strict set (objects as they arrive),
// the bytes must also be in normal form, hold at most MaxDirTreeEntries
// entries, in libostree's order (files, and subdirectories, each sorted by
// name, no name twice); the check runs over the bytes in place, so a
// hostile dirtree costs no memory beyond the Tree it describes.
func ParseDirTree(b []byte, strict bool) (*Tree, error) {
	return parseDirTree(b, strict, true)
}

// parseDirTree is ParseDirTree; without build it only checks, and returns
// an empty Tree.
func parseDirTree(b []byte, strict, build bool) (*Tree, error) {
	v, err := viewMeta(typeDirTree, b, strict)
	if err != nil {
		return nil, fmt.Errorf("dirtree: %w", err)
	}
	files, dirs := v.Field(0), v.Field(1)
	nf, nd := files.Len(), dirs.Len()
	if strict && nf+nd > MaxDirTreeEntries {
		return nil, fmt.Errorf("dirtree: %d entries, more than %d", nf+nd, MaxDirTreeEntries)
	}
	t := &Tree{}
	if build {
		t.Files, t.Dirs = make([]TreeFile, 0, nf), make([]TreeDir, 0, nd)
	}
	var prev []byte
	for i := 0; i < nf; i++ {
		e := files.Index(i)
		name := e.Field(0).StrBytes()
		if err := entryName(name, prev, i > 0, strict); err != nil {
			return nil, err
		}
		prev = name
		sum, err := checksumOf(e.Field(1).Raw(), "dirtree file")
		if err != nil {
			return nil, fmt.Errorf("dirtree: %w", err)
		}
		if build {
			t.Files = append(t.Files, TreeFile{Name: string(name), Sum: sum})
		}
	}
	prev = nil
	fi := 0 // the first file whose name is not below the current directory's
	for i := 0; i < nd; i++ {
		e := dirs.Index(i)
		name := e.Field(0).StrBytes()
		if err := entryName(name, prev, i > 0, strict); err != nil {
			return nil, err
		}
		prev = name
		if strict {
			for fi < nf && bytes.Compare(files.Index(fi).Field(0).StrBytes(), name) < 0 {
				fi++
			}
			if fi < nf && bytes.Equal(files.Index(fi).Field(0).StrBytes(), name) {
				return nil, fmt.Errorf("dirtree: duplicate entry %q", name)
			}
		}
		tree, err := checksumOf(e.Field(1).Raw(), "dirtree dir")
		if err != nil {
			return nil, fmt.Errorf("dirtree: %w", err)
		}
		meta, err := checksumOf(e.Field(2).Raw(), "dirtree dir")
		if err != nil {
			return nil, fmt.Errorf("dirtree: %w", err)
		}
		if build {
			t.Dirs = append(t.Dirs, TreeDir{Name: string(name), Tree: tree, Meta: meta})
		}
	}
	return t, nil
}

// entryName checks a dirtree entry's name and, when strict, that it sorts
// after the previous entry's of the same list.
func entryName(name, prev []byte, hasPrev, strict bool) error {
	if err := validFilename(string(name)); err != nil {
		return fmt.Errorf("dirtree: %w", err)
	}
	if strict && hasPrev {
		switch c := bytes.Compare(prev, name); {
		case c == 0:
			return fmt.Errorf("dirtree: duplicate entry %q", name)
		case c > 0:
			return fmt.Errorf("dirtree: entry %q after %q: entries are not sorted by name", name, prev)
		}
	}
	return nil
}

func validateDirMeta(b []byte) error {
	v, err := viewMeta(typeDirMeta, b, true)
	if err != nil {
		return fmt.Errorf("dirmeta: %w", err)
	}
	mode := bits.ReverseBytes32(v.Field(2).Uint32())
	if mode&modeTypeMask != modeDir || mode&^(modeTypeMask|modePerms) != 0 {
		return fmt.Errorf("dirmeta: mode %#o is not a directory", mode)
	}
	return nil
}

// ParseCommit parses and validates a commit object. With strict set, the
// bytes must also be in normal form. The check runs in place; only the
// fields CommitInfo names are copied out.
func ParseCommit(sum Checksum, b []byte, strict bool) (*CommitInfo, error) {
	v, err := viewMeta(typeCommit, b, strict)
	if err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	c := &CommitInfo{Sum: sum}
	if p := v.Field(1).Raw(); len(p) != 0 {
		parent, err := checksumOf(p, "commit parent")
		if err != nil {
			return nil, fmt.Errorf("commit: %w", err)
		}
		c.Parent = &parent
	}
	related := v.Field(2)
	for i := 0; i < related.Len(); i++ {
		if _, err := checksumOf(related.Index(i).Field(1).Raw(), "commit related"); err != nil {
			return nil, fmt.Errorf("commit: %w", err)
		}
	}
	c.Subject, c.Body = v.Field(3).Str(), v.Field(4).Str()
	ts := bits.ReverseBytes64(v.Field(5).Uint64())
	if ts > 1<<62 {
		return nil, fmt.Errorf("commit: timestamp %d out of range", ts)
	}
	c.Timestamp = time.Unix(int64(ts), 0).UTC()
	if c.RootTree, err = checksumOf(v.Field(6).Raw(), "commit root tree"); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	if c.RootMeta, err = checksumOf(v.Field(7).Raw(), "commit root meta"); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	meta := v.Field(0)
	c.MetadataSum = sha256.Sum256(meta.Raw())
	for i := 0; i < meta.Len(); i++ {
		e := meta.Index(i)
		switch string(e.Field(0).StrBytes()) {
		case "ostree.ref-binding":
			val := e.Field(1).Variant()
			if val.Type() == nil || val.Type().String() != "as" {
				return nil, fmt.Errorf("commit: ostree.ref-binding of type %s, want as", typeName(val))
			}
			for j := 0; j < val.Len(); j++ {
				c.RefBindings = append(c.RefBindings, val.Index(j).Str())
			}
		case "ostree.collection-binding":
			val := e.Field(1).Variant()
			if val.Type() == nil || val.Type().String() != "s" {
				return nil, fmt.Errorf("commit: ostree.collection-binding of type %s, want s", typeName(val))
			}
			c.CollectionBinding = val.Str()
		}
	}
	return c, nil
}

func typeName(v gvariant.View) string {
	if v.Type() == nil {
		return "?"
	}
	return v.Type().String()
}
