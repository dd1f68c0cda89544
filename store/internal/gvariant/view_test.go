package gvariant

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

type viewCase struct {
	typ string
	val any
}

func viewCases() []viewCase {
	return []viewCase{
		{"(a(say)a(sayay))", []any{
			[]any{[]any{"a", bytes.Repeat([]byte{1}, 32)}, []any{"b", bytes.Repeat([]byte{2}, 32)}},
			[]any{[]any{"d", bytes.Repeat([]byte{3}, 32), bytes.Repeat([]byte{4}, 32)}},
		}},
		{"a{sv}", []any{
			[]any{"ostree.ref-binding", Variant{MustParseType("as"), []any{"main", "x/y"}}},
			[]any{"n", Variant{MustParseType("t"), uint64(1 << 40)}},
		}},
		{"as", make300Strings()},
		{"(uuua(ayay))", []any{uint32(1), uint32(2), uint32(0x41ed0000), []any{}}},
		{"(yt)", []any{uint8(1), uint64(2)}},
		{"ms", Maybe{Valid: true, Value: "x"}},
	}
}

// Validate accepts exactly what DecodeNormal accepts, here on every value
// of the round-trip cases and on each of them with one byte changed or
// added; FuzzDecode holds the two together on arbitrary bytes.
func TestValidateAgreesWithDecodeNormal(t *testing.T) {
	for _, c := range viewCases() {
		typ := MustParseType(c.typ)
		b, err := Encode(typ, c.val)
		if err != nil {
			t.Fatal(err)
		}
		variants := [][]byte{b, append(bytes.Clone(b), 0), b[:len(b)-1]}
		for i := range b {
			for _, x := range []byte{0, 1, 0xff} {
				m := bytes.Clone(b)
				m[i] = x
				variants = append(variants, m)
			}
		}
		for _, m := range variants {
			_, derr := DecodeNormal(typ, m)
			if verr := Validate(typ, m); (verr == nil) != (derr == nil) {
				t.Fatalf("%s %x: Validate %v, DecodeNormal %v", c.typ, m, verr, derr)
			}
			_, lerr := Decode(typ, m)
			if verr := ValidateLoose(typ, m); (verr == nil) != (lerr == nil) {
				t.Fatalf("%s %x: ValidateLoose %v, Decode %v", c.typ, m, verr, lerr)
			}
		}
	}
}

func TestValidateRefusesPaddingAndSlack(t *testing.T) {
	typ := MustParseType("a(yt)")
	b, _ := Encode(typ, []any{[]any{uint8(1), uint64(2)}})
	b[1] = 7 // padding between y and t
	if err := Validate(typ, b); !errors.Is(err, ErrNotNormal) {
		t.Fatalf("non-zero padding: %v", err)
	}
	as := MustParseType("as")
	// "a\0" then one byte of slack before the framing offset that says 2.
	if err := Validate(as, []byte{'a', 0, 0, 2}); err == nil {
		t.Fatal("slack between the last element and the framing table accepted")
	}
}

func TestViewReadsInPlace(t *testing.T) {
	typ := MustParseType("(a(say)a(sayay))")
	c := viewCases()[0]
	b, _ := Encode(typ, c.val)
	if err := Validate(typ, b); err != nil {
		t.Fatal(err)
	}
	v := NewView(typ, b)
	files, dirs := v.Field(0), v.Field(1)
	if files.Len() != 2 || dirs.Len() != 1 {
		t.Fatalf("lens %d %d", files.Len(), dirs.Len())
	}
	if f := files.Index(1); f.Field(0).Str() != "b" || !bytes.Equal(f.Field(1).Raw(), bytes.Repeat([]byte{2}, 32)) {
		t.Fatalf("file 1: %q %x", f.Field(0).Str(), f.Field(1).Raw())
	}
	if d := dirs.Index(0); d.Field(0).Str() != "d" || d.Field(2).Raw()[0] != 4 {
		t.Fatalf("dir 0: %q", d.Field(0).Str())
	}

	m := MustParseType("a{sv}")
	mb, _ := Encode(m, viewCases()[1].val)
	mv := NewView(m, mb)
	if mv.Len() != 2 || mv.Index(1).Field(0).Str() != "n" || mv.Index(1).Field(1).Variant().Uint64() != 1<<40 {
		t.Fatalf("a{sv}: %d entries", mv.Len())
	}
	bind := mv.Index(0).Field(1).Variant()
	if bind.Type().String() != "as" || bind.Len() != 2 || bind.Index(1).Str() != "x/y" {
		t.Fatalf("binding %s %d", bind.Type(), bind.Len())
	}

	s := MustParseType("as")
	var strs []any
	for i := 0; i < 300; i++ {
		strs = append(strs, fmt.Sprintf("string number %d", i))
	}
	sb, _ := Encode(s, strs)
	sv := NewView(s, sb)
	for i := 0; i < sv.Len(); i++ {
		if got, want := sv.Index(i).Str(), fmt.Sprintf("string number %d", i); got != want {
			t.Fatalf("element %d = %q, want %q", i, got, want)
		}
	}
}

// Validating a large array costs no allocation per element.
func TestValidateDoesNotAllocate(t *testing.T) {
	typ := MustParseType("(a(say)a(sayay))")
	var files []any
	for i := 0; i < 20000; i++ {
		files = append(files, []any{fmt.Sprintf("f%06d", i), bytes.Repeat([]byte{1}, 32)})
	}
	b, _ := Encode(typ, []any{files, []any{}})
	allocs := testing.AllocsPerRun(3, func() {
		if err := Validate(typ, b); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 10 {
		t.Fatalf("%v allocations to validate 20,000 entries", allocs)
	}
}

// A variant's type string is parsed into a value per character: a long one
// is refused before it is parsed.
func TestLongVariantTypeRefused(t *testing.T) {
	typ := MustParseType("a{sv}")
	long := "(" + strings.Repeat("y", 1<<20) + ")"
	vals := make([]any, 1<<20)
	for i := range vals {
		vals[i] = uint8(0)
	}
	b, err := Encode(typ, []any{[]any{"k", Variant{Type: MustParseType(long), Value: vals}}})
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err = Validate(typ, b)
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatal("accepted")
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Fatalf("refusing a %d-byte variant type allocated %d bytes", len(long), grew)
	}
	if len(err.Error()) > 1000 {
		t.Fatalf("an error of %d bytes", len(err.Error()))
	}
	if _, err := Decode(typ, b); err == nil {
		t.Fatal("Decode accepted it")
	}
}
