package object

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"math/bits"
	"strings"
	"sync"
	"testing"

	"github.com/ostree-upload/ostree-upload/store/internal/gvariant"
)

func TestVerifyAcceptsEveryRealObject(t *testing.T) {
	t.Parallel()
	kinds := map[string]int{}
	for n, b := range allObjects(t) {
		info, err := Verify(n, bytes.NewReader(b))
		if err != nil {
			t.Fatalf("Verify(%s): %v", n, err)
		}
		if info.Size != int64(len(b)) {
			t.Fatalf("Verify(%s): size %d, want %d", n, info.Size, len(b))
		}
		switch {
		case n.Type != File:
			kinds[n.Type.Ext()]++
		case info.Mode&modeTypeMask == modeLink:
			kinds["symlink"]++
		case bytes.Contains(b[:64], []byte("user.fixture")):
			kinds["xattr"]++
		case info.ContentSize == 0:
			kinds["empty"]++
		default:
			kinds["regular"]++
		}
	}
	for _, k := range []string{"regular", "symlink", "xattr", "empty", "dirtree", "dirmeta", "commit", "commitmeta"} {
		if kinds[k] == 0 {
			t.Errorf("fixture has no %s object to verify (%v)", k, kinds)
		}
	}
}

func TestVerifierIncremental(t *testing.T) {
	t.Parallel()
	for n, b := range allObjects(t) {
		v := NewVerifier(n)
		for off := 0; off < len(b); off += 7 {
			if _, err := v.Write(b[off:min(off+7, len(b))]); err != nil {
				t.Fatalf("%s: Write: %v", n, err)
			}
		}
		if _, err := v.Close(); err != nil {
			t.Fatalf("%s: Close: %v", n, err)
		}
	}
	// Garbage is refused while it is written, before Close.
	n := Name{Type: File}
	v := NewVerifier(n)
	_, err := v.Write(append([]byte{0, 0x20, 0, 0, 0, 0, 0, 0}, make([]byte, 64<<10)...))
	if err == nil || !IsCorrupt(err) {
		t.Fatalf("Write of an oversized header: %v", err)
	}
	if _, err := v.Close(); !IsCorrupt(err) {
		t.Fatalf("Close after garbage: %v", err)
	}
}

// Concurrent verification shares nothing (run under -race).
func TestVerifyConcurrent(t *testing.T) {
	t.Parallel()
	objs := allObjects(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n, b := range objs {
				if _, err := Verify(n, bytes.NewReader(b)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// header fields of a .filez, in host order.
type fileHeader struct {
	size                 uint64
	uid, gid, mode, rdev uint32
	target               string
	xattrs               []any
}

func parseHeader(t testing.TB, b []byte) (fileHeader, []byte) {
	t.Helper()
	hlen := binary.BigEndian.Uint32(b)
	v, err := gvariant.DecodeNormal(typeFileHeader, b[8:8+hlen])
	if err != nil {
		t.Fatal(err)
	}
	f := v.([]any)
	return fileHeader{
		size: bits.ReverseBytes64(f[0].(uint64)), uid: bits.ReverseBytes32(f[1].(uint32)),
		gid: bits.ReverseBytes32(f[2].(uint32)), mode: bits.ReverseBytes32(f[3].(uint32)),
		rdev: bits.ReverseBytes32(f[4].(uint32)), target: f[5].(string), xattrs: f[6].([]any),
	}, b[8+hlen:]
}

// buildFilez serialises a header and payload and returns the bytes with the
// name libostree would give them, so a test isolates one check at a time.
func buildFilez(t testing.TB, h fileHeader, payload []byte) (Name, []byte) {
	t.Helper()
	be32 := bits.ReverseBytes32
	hdr, err := gvariant.Encode(typeFileHeader, []any{bits.ReverseBytes64(h.size), be32(h.uid), be32(h.gid), be32(h.mode), be32(h.rdev), h.target, h.xattrs})
	if err != nil {
		t.Fatal(err)
	}
	canon, _ := gvariant.Encode(typeFileCanon, []any{be32(h.uid), be32(h.gid), be32(h.mode), be32(h.rdev), h.target, h.xattrs})
	sum := sha256.New()
	binary.Write(sum, binary.BigEndian, uint32(len(canon)))
	sum.Write([]byte{0, 0, 0, 0})
	sum.Write(canon)
	if h.mode&modeTypeMask == modeReg {
		r := flate.NewReader(bytes.NewReader(payload))
		io.Copy(sum, r)
	}
	var n Name
	n.Type = File
	sum.Sum(n.Sum[:0])
	out := binary.BigEndian.AppendUint32(nil, uint32(len(hdr)))
	out = append(append(out, 0, 0, 0, 0), hdr...)
	return n, append(out, payload...)
}

func deflate(b []byte) []byte {
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, flate.BestSpeed)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func metaName(t Type, b []byte) Name { return Name{Sum: sha256.Sum256(b), Type: t} }

func TestVerifyRejectsTraps(t *testing.T) {
	t.Parallel()
	objs := allObjects(t)
	var reg, link Name
	var regBytes, linkBytes, treeBytes, commitBytes []byte
	var tree Name
	for n, b := range objs {
		switch {
		case n.Type == File && len(b) > 1000 && reg == (Name{}):
			reg, regBytes = n, b
		case n.Type == File && len(b) < 200 && link == (Name{}) && strings.Contains(string(b[32:]), "f0"):
			if h, _ := parseHeader(t, b); h.mode&modeTypeMask == modeLink {
				link, linkBytes = n, b
			}
		case n.Type == DirTree && len(b) > 100:
			tree, treeBytes = n, b
		case n.Type == Commit:
			commitBytes = b
		}
	}
	if reg == (Name{}) || link == (Name{}) || tree == (Name{}) || commitBytes == nil {
		t.Fatal("fixture lacks a regular file, a symlink, a dirtree or a commit")
	}
	h, payload := parseHeader(t, regBytes)
	lh, _ := parseHeader(t, linkBytes)

	// Sanity: the builder reproduces real objects byte for byte.
	if n, b := buildFilez(t, h, payload); n != reg || !bytes.Equal(b, regBytes) {
		t.Fatal("buildFilez does not reproduce a real object")
	}

	type trap struct {
		name Name
		b    []byte
		want string // part of the reason
	}
	flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 0x01; return c }
	with := func(mod func(*fileHeader), payload []byte) trap {
		hh := h
		mod(&hh)
		n, b := buildFilez(t, hh, payload)
		return trap{n, b, ""}
	}
	traps := map[string]trap{
		"flipped content byte": {reg, flip(regBytes, len(regBytes)-20), ""},
		"flipped header byte":  {reg, flip(regBytes, 20), "hashes to"},
		"truncated":            {reg, regBytes[:len(regBytes)-3], ""},
		"truncated header":     {reg, regBytes[:12], "truncated"},
		"empty":                {reg, nil, "truncated"},
		"size field +5": func() trap {
			tr := with(func(x *fileHeader) { x.size += 5 }, payload)
			tr.want = "header says"
			return tr
		}(),
		"size field -1": func() trap {
			tr := with(func(x *fileHeader) { x.size-- }, payload)
			tr.want = "header says"
			return tr
		}(),
		"trailing bytes":  {reg, append(bytes.Clone(regBytes), "junk"...), "trailing"},
		"trailing stream": {reg, append(bytes.Clone(regBytes), deflate([]byte("more"))...), "trailing"},
		"oversized header": {reg, append(binary.BigEndian.AppendUint32(nil, MaxFileHeaderSize+1),
			make([]byte, MaxFileHeaderSize+12)...), "out of range"},
		"non-zero padding": {reg, withByteAt(regBytes, 5, 1), "padding"},
		"device mode": func() trap {
			tr := with(func(x *fileHeader) { x.mode = 0o020644 }, payload)
			tr.want = "neither"
			return tr
		}(),
		"fifo mode": func() trap {
			tr := with(func(x *fileHeader) { x.mode = 0o010644 }, payload)
			tr.want = "neither"
			return tr
		}(),
		"unknown mode bits": func() trap {
			tr := with(func(x *fileHeader) { x.mode |= 0o200000 }, payload)
			tr.want = "unknown bits"
			return tr
		}(),
		"rdev set": func() trap {
			tr := with(func(x *fileHeader) { x.rdev = 5 }, payload)
			tr.want = "rdev"
			return tr
		}(),
		"regular file with target": func() trap {
			tr := with(func(x *fileHeader) { x.target = "/etc/passwd" }, payload)
			tr.want = "symlink target"
			return tr
		}(),
		"symlink with payload": func() trap {
			n, b := buildFilez(t, lh, deflate([]byte("payload")))
			return trap{n, b, "trailing"}
		}(),
		"symlink with size": func() trap {
			x := lh
			x.size = 7
			n, b := buildFilez(t, x, nil)
			return trap{n, b, "symlink with size"}
		}(),
		"wrong name":           {Name{Sum: sha256.Sum256([]byte("x")), Type: File}, regBytes, "hashes to"},
		"metadata as a file":   {Name{Sum: tree.Sum, Type: File}, treeBytes, ""},
		"non-normal header":    {reg, nonNormalHeader(regBytes), "header"},
		"dirtree flipped byte": {tree, flip(treeBytes, 10), "hashes to"},
		"dirtree truncated":    {tree, treeBytes[:len(treeBytes)-1], "hashes to"},
		"dirtree with ..": func() trap {
			b, _ := gvariant.Encode(typeDirTree, []any{[]any{[]any{"..", make([]byte, 32)}}, []any{}})
			return trap{metaName(DirTree, b), b, "invalid file name"}
		}(),
		"dirtree with slash": func() trap {
			b, _ := gvariant.Encode(typeDirTree, []any{[]any{[]any{"a/b", make([]byte, 32)}}, []any{}})
			return trap{metaName(DirTree, b), b, "contains '/'"}
		}(),
		"dirtree short checksum": func() trap {
			b, _ := gvariant.Encode(typeDirTree, []any{[]any{[]any{"a", make([]byte, 31)}}, []any{}})
			return trap{metaName(DirTree, b), b, "checksum of 31"}
		}(),
		"dirtree duplicate": func() trap {
			e := []any{"a", make([]byte, 32)}
			b, _ := gvariant.Encode(typeDirTree, []any{[]any{e, e}, []any{}})
			return trap{metaName(DirTree, b), b, "duplicate"}
		}(),
		"dirmeta of a file": func() trap {
			b, _ := gvariant.Encode(typeDirMeta, []any{uint32(0), uint32(0), bits.ReverseBytes32(0o100644), []any{}})
			return trap{metaName(DirMeta, b), b, "not a directory"}
		}(),
		"commit not normal": func() trap {
			b := nonNormalCommit(t, commitBytes)
			return trap{metaName(Commit, b), b, "normal form"}
		}(),
		"commit garbage": func() trap {
			b := []byte("this is not a commit")
			return trap{metaName(Commit, b), b, "commit"}
		}(),
		"commitmeta garbage": {Name{Sum: reg.Sum, Type: CommitMeta}, []byte("\x01\x02garbage"), "commitmeta"},
		"commitmeta oversized": {Name{Sum: reg.Sum, Type: CommitMeta},
			make([]byte, MaxCommitMetaSize+1), "larger than"},
	}
	for what, tr := range traps {
		_, err := Verify(tr.name, bytes.NewReader(tr.b))
		if err == nil {
			t.Errorf("%s: accepted", what)
			continue
		}
		if !IsCorrupt(err) {
			t.Errorf("%s: error %v is not a corruption verdict", what, err)
		}
		if !strings.Contains(err.Error(), tr.want) {
			t.Errorf("%s: %v, want it to mention %q", what, err, tr.want)
		}
	}
}

func withByteAt(b []byte, i int, v byte) []byte {
	c := bytes.Clone(b)
	c[i] = v
	return c
}

// nonNormalHeader points the symlink-target framing offset outside the
// header: GLib reads such a header with default values instead of failing.
func nonNormalHeader(b []byte) []byte {
	c := bytes.Clone(b)
	hlen := binary.BigEndian.Uint32(c)
	c[8+hlen-1] = 0xff
	return c
}

// nonNormalCommit puts a non-zero byte into the alignment padding of a
// commit's a{sv} metadata entry (between the key and the variant value).
func nonNormalCommit(t testing.TB, commit []byte) []byte {
	t.Helper()
	v, err := gvariant.DecodeNormal(typeCommit, commit)
	if err != nil {
		t.Fatal(err)
	}
	f := v.([]any)
	f[0] = []any{[]any{"k", gvariant.Variant{Type: gvariant.MustParseType("t"), Value: uint64(1)}}}
	b, err := gvariant.Encode(typeCommit, f)
	if err != nil {
		t.Fatal(err)
	}
	// "k\0" then padding up to offset 8 where the variant's value starts.
	if b[2] != 0 {
		t.Fatal("unexpected commit layout")
	}
	b[3] = 0x55
	return b
}
