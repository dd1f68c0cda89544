package object

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzVerify feeds arbitrary bytes to the verifier under real object names:
// it must never panic or hang, and its verdict must not depend on how the
// bytes are split into writes.
func FuzzVerify(f *testing.F) {
	objs := allObjects(f)
	var names []Name
	for n, b := range objs {
		if len(b) < 4096 && len(names) < 64 {
			names = append(names, n)
			f.Add(uint8(len(names)-1), b, uint16(len(b)/2))
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, b []byte, split uint16) {
		n := names[int(which)%len(names)]
		_, err1 := Verify(n, bytes.NewReader(b))
		v := NewVerifier(n)
		cut := int(split) % (len(b) + 1)
		_, werr := v.Write(b[:cut])
		if werr == nil {
			_, werr = v.Write(b[cut:])
		}
		_, err2 := v.Close()
		if (err1 == nil) != (err2 == nil) || (err1 == nil && werr != nil) {
			t.Fatalf("Verify = %v, Verifier = %v / %v", err1, werr, err2)
		}
		if err1 != nil && !IsCorrupt(err1) {
			t.Fatalf("in-memory input gave a non-corruption error: %v", err1)
		}
	})
}

// FuzzParseObjectName: a name parses only in its one canonical form, and
// the path made from it stays inside objects/.
func FuzzParseObjectName(f *testing.F) {
	for _, s := range []string{
		strings.Repeat("ab", 32) + ".filez", strings.Repeat("0", 64) + ".commitmeta",
		"../" + strings.Repeat("a", 61) + ".dirtree", strings.Repeat("A", 64) + ".commit", "x.filez", "",
		strings.Repeat("a", 64) + ".filez/../x", strings.Repeat("a", 64) + ".filez\x00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseName(s)
		if err != nil {
			return
		}
		if n.String() != s {
			t.Fatalf("%q parses as %q", s, n)
		}
		p := n.RelPath()
		if !strings.HasPrefix(p, "objects/") || strings.Contains(p, "..") || strings.Count(p, "/") != 2 {
			t.Fatalf("%q gives the path %q", s, p)
		}
		if back, err := ParsePath(p); err != nil || back != n {
			t.Fatalf("path %q parses as %v, %v", p, back, err)
		}
	})
}
