package store

import (
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
	RefBindings       []string // "ostree.ref-binding"
	CollectionBinding string   // "ostree.collection-binding"
	Partial           bool     // the repo marks it .commitpartial
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

func checksumOf(v any, what string) (Checksum, error) {
	var c Checksum
	b, ok := v.([]byte)
	if !ok || len(b) != len(c) {
		return c, fmt.Errorf("%s: checksum of %d bytes", what, len(b))
	}
	copy(c[:], b)
	return c, nil
}

// decodeMeta decodes b as t; strict additionally requires normal form.
func decodeMeta(t *gvariant.Type, b []byte, strict bool) ([]any, error) {
	var v any
	var err error
	if strict {
		v, err = gvariant.DecodeNormal(t, b)
	} else {
		v, err = gvariant.Decode(t, b)
	}
	if err != nil {
		return nil, err
	}
	if l, ok := v.([]any); ok {
		return l, nil
	}
	return []any{v}, nil
}

// ParseDirTree parses and validates a dirtree object. With strict set, the
// bytes must also be in normal form.
func ParseDirTree(b []byte, strict bool) (*Tree, error) {
	v, err := decodeMeta(typeDirTree, b, strict)
	if err != nil {
		return nil, fmt.Errorf("dirtree: %w", err)
	}
	files, dirs := v[0].([]any), v[1].([]any)
	t := &Tree{Files: make([]TreeFile, 0, len(files)), Dirs: make([]TreeDir, 0, len(dirs))}
	seen := make(map[string]struct{}, len(files)+len(dirs))
	for _, f := range files {
		e := f.([]any)
		name := e[0].(string)
		if err := validFilename(name); err != nil {
			return nil, fmt.Errorf("dirtree: %w", err)
		}
		if _, dup := seen[name]; dup {
			return nil, fmt.Errorf("dirtree: duplicate entry %q", name)
		}
		seen[name] = struct{}{}
		sum, err := checksumOf(e[1], "dirtree file "+name)
		if err != nil {
			return nil, fmt.Errorf("dirtree: %w", err)
		}
		t.Files = append(t.Files, TreeFile{Name: name, Sum: sum})
	}
	for _, d := range dirs {
		e := d.([]any)
		name := e[0].(string)
		if err := validFilename(name); err != nil {
			return nil, fmt.Errorf("dirtree: %w", err)
		}
		if _, dup := seen[name]; dup {
			return nil, fmt.Errorf("dirtree: duplicate entry %q", name)
		}
		seen[name] = struct{}{}
		tree, err := checksumOf(e[1], "dirtree dir "+name)
		if err != nil {
			return nil, fmt.Errorf("dirtree: %w", err)
		}
		meta, err := checksumOf(e[2], "dirtree dir "+name)
		if err != nil {
			return nil, fmt.Errorf("dirtree: %w", err)
		}
		t.Dirs = append(t.Dirs, TreeDir{Name: name, Tree: tree, Meta: meta})
	}
	return t, nil
}

func validateDirMeta(b []byte) error {
	v, err := decodeMeta(typeDirMeta, b, true)
	if err != nil {
		return fmt.Errorf("dirmeta: %w", err)
	}
	mode := bits.ReverseBytes32(v[2].(uint32))
	if mode&modeTypeMask != modeDir || mode&^(modeTypeMask|modePerms) != 0 {
		return fmt.Errorf("dirmeta: mode %#o is not a directory", mode)
	}
	return nil
}

// ParseCommit parses and validates a commit object. With strict set, the
// bytes must also be in normal form.
func ParseCommit(sum Checksum, b []byte, strict bool) (*CommitInfo, error) {
	v, err := decodeMeta(typeCommit, b, strict)
	if err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	c := &CommitInfo{Sum: sum}
	if p := v[1].([]byte); len(p) != 0 {
		parent, err := checksumOf(p, "commit parent")
		if err != nil {
			return nil, fmt.Errorf("commit: %w", err)
		}
		c.Parent = &parent
	}
	for _, rel := range v[2].([]any) {
		if _, err := checksumOf(rel.([]any)[1], "commit related"); err != nil {
			return nil, fmt.Errorf("commit: %w", err)
		}
	}
	c.Subject, c.Body = v[3].(string), v[4].(string)
	ts := bits.ReverseBytes64(v[5].(uint64))
	if ts > 1<<62 {
		return nil, fmt.Errorf("commit: timestamp %d out of range", ts)
	}
	c.Timestamp = time.Unix(int64(ts), 0).UTC()
	if c.RootTree, err = checksumOf(v[6], "commit root tree"); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	if c.RootMeta, err = checksumOf(v[7], "commit root meta"); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	for _, kv := range v[0].([]any) {
		e := kv.([]any)
		val := e[1].(gvariant.Variant)
		switch e[0].(string) {
		case "ostree.ref-binding":
			refs, ok := val.Value.([]any)
			if !ok || val.Type.String() != "as" {
				return nil, fmt.Errorf("commit: ostree.ref-binding of type %s, want as", val.Type)
			}
			for _, r := range refs {
				c.RefBindings = append(c.RefBindings, r.(string))
			}
		case "ostree.collection-binding":
			s, ok := val.Value.(string)
			if !ok || val.Type.String() != "s" {
				return nil, fmt.Errorf("commit: ostree.collection-binding of type %s, want s", val.Type)
			}
			c.CollectionBinding = s
		}
	}
	return c, nil
}

func validateCommitMeta(b []byte) error {
	if _, err := gvariant.DecodeNormal(typeCommitMeta, b); err != nil {
		return fmt.Errorf("commitmeta: %w", err)
	}
	return nil
}
