package store

import (
	"bytes"
	"testing"
)

// FuzzVerify feeds arbitrary bytes to the verifier under real object names:
// it must never panic or hang, and its verdict must not depend on how the
// bytes are split into writes.
func FuzzVerify(f *testing.F) {
	objs := allObjects(f)
	var names []ObjectName
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
