package object

import (
	"bytes"
	"cmp"
	"encoding/hex"
	"fmt"
	"strings"
)

// Type is the kind of an OSTree object as it is stored in an archive repo.
type Type uint8

// Object types; the values are libostree's OstreeObjectType.
const (
	File       Type = 1 // content, stored as .filez in archive repos
	DirTree    Type = 2
	DirMeta    Type = 3
	Commit     Type = 4
	CommitMeta Type = 6 // detached metadata, named after its commit
)

// Ext returns the loose-object file extension of t in an archive repo.
func (t Type) Ext() string {
	switch t {
	case File:
		return "filez"
	case DirTree:
		return "dirtree"
	case DirMeta:
		return "dirmeta"
	case Commit:
		return "commit"
	case CommitMeta:
		return "commitmeta"
	}
	return fmt.Sprintf("type%d", uint8(t))
}

// IsMeta reports whether t is a metadata object (sha256 of its bytes is its name).
func (t Type) IsMeta() bool { return t == DirTree || t == DirMeta || t == Commit }

func typeFromExt(ext string) (Type, bool) {
	switch ext {
	case "filez":
		return File, true
	case "dirtree":
		return DirTree, true
	case "dirmeta":
		return DirMeta, true
	case "commit":
		return Commit, true
	case "commitmeta":
		return CommitMeta, true
	}
	return 0, false
}

// Checksum is an OSTree SHA-256 object checksum.
type Checksum [32]byte

// String returns the 64 lower-case hex digits of c.
func (c Checksum) String() string { return hex.EncodeToString(c[:]) }

// ParseChecksum parses exactly 64 lower-case hex digits.
func ParseChecksum(s string) (Checksum, error) {
	var c Checksum
	if len(s) != 64 {
		return c, fmt.Errorf("checksum %q: want 64 hex digits", truncate(s))
	}
	for i := 0; i < len(s); i++ {
		if ch := s[i]; !(ch >= '0' && ch <= '9' || ch >= 'a' && ch <= 'f') {
			return c, fmt.Errorf("checksum %q: not lower-case hex", truncate(s))
		}
	}
	_, _ = hex.Decode(c[:], []byte(s))
	return c, nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// Name identifies one object: its checksum and type.
type Name struct {
	Sum  Checksum
	Type Type
}

// Compare orders names by checksum, then type: -1, 0 or +1.
func (n Name) Compare(m Name) int {
	if c := bytes.Compare(n.Sum[:], m.Sum[:]); c != 0 {
		return c
	}
	return cmp.Compare(n.Type, m.Type)
}

// String returns the name as "<checksum>.<ext>".
func (n Name) String() string { return n.Sum.String() + "." + n.Type.Ext() }

// RelPath is the object's path inside a repo: "objects/ab/cdef….ext".
func (n Name) RelPath() string {
	return string(n.AppendRelPath(make([]byte, 0, MaxRelPathLen)))
}

// MaxRelPathLen is the length of the longest RelPath.
const MaxRelPathLen = len("objects/xx/") + 62 + len(".commitmeta")

// AppendRelPath appends n's RelPath to b.
func (n Name) AppendRelPath(b []byte) []byte {
	var h [2 * len(Checksum{})]byte
	hex.Encode(h[:], n.Sum[:])
	b = append(b, "objects/"...)
	b = append(b, h[:2]...)
	b = append(b, '/')
	b = append(b, h[2:]...)
	b = append(b, '.')
	return append(b, n.Type.Ext()...)
}

// ParseName parses "<64 lower-case hex>.<ext>" with ext one of filez,
// dirtree, dirmeta, commit, commitmeta.
func ParseName(s string) (Name, error) {
	sum, ext, ok := strings.Cut(s, ".")
	if !ok {
		return Name{}, fmt.Errorf("object name %q: no type extension", truncate(s))
	}
	t, ok := typeFromExt(ext)
	if !ok {
		return Name{}, fmt.Errorf("object name %q: unknown type %q", truncate(s), truncate(ext))
	}
	c, err := ParseChecksum(sum)
	if err != nil {
		return Name{}, fmt.Errorf("object name: %w", err)
	}
	return Name{Sum: c, Type: t}, nil
}

// ParsePath parses an archive-repo relative path "objects/ab/cdef….ext".
func ParsePath(p string) (Name, error) {
	rest, ok := strings.CutPrefix(p, "objects/")
	if !ok || len(rest) < 3 || rest[2] != '/' {
		return Name{}, fmt.Errorf("object path %q: want objects/xx/…", truncate(p))
	}
	n, err := ParseName(rest[:2] + rest[3:])
	if err != nil {
		return Name{}, fmt.Errorf("object path %q: %w", truncate(p), err)
	}
	return n, nil
}
