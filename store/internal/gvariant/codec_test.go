package gvariant

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

// A .filez header written by libostree 2022.7 for a symlink to "a.txt"
// (size 0, uid 0, gid 0, mode 0120777 big-endian, rdev 0, no xattrs).
const symlinkHeader = "0000000000000000" + "00000000" + "00000000" + "0000a1ff" + "00000000" + "612e74787400" + "1e"

func TestDecodeLibostreeHeader(t *testing.T) {
	b, _ := hex.DecodeString(symlinkHeader)
	typ := MustParseType("(tuuuusa(ayay))")
	v, err := DecodeNormal(typ, b)
	if err != nil {
		t.Fatal(err)
	}
	f := v.([]any)
	if f[3].(uint32) != 0xffa10000 || f[5].(string) != "a.txt" || len(f[6].([]any)) != 0 {
		t.Fatalf("decoded %#v", f)
	}
}

func TestRoundTrip(t *testing.T) {
	cases := []struct {
		typ string
		val any
	}{
		{"s", "hello"},
		{"ay", []byte{1, 2, 3}},
		{"as", []any{"a", "bc", ""}},
		{"(tuuuusa(ayay))", []any{uint64(7), uint32(1), uint32(2), uint32(3), uint32(0), "", []any{[]any{[]byte("user.x\x00"), []byte("v")}}}},
		{"a{sv}", []any{
			[]any{"ostree.ref-binding", Variant{MustParseType("as"), []any{"main", "x/y"}}},
			[]any{"n", Variant{MustParseType("t"), uint64(1 << 40)}},
			[]any{"b", Variant{MustParseType("b"), true}},
		}},
		{"(a(say)a(sayay))", []any{
			[]any{[]any{"f", bytes.Repeat([]byte{0xab}, 32)}},
			[]any{[]any{"d", bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)}},
		}},
		{"ms", Maybe{Valid: true, Value: "x"}},
		{"mu", Maybe{}},
		{"()", []any{}},
		{"(yt)", []any{uint8(1), uint64(2)}},
		{"a(yt)", []any{[]any{uint8(1), uint64(2)}, []any{uint8(3), uint64(4)}}},
		{"as", make300Strings()}, // framing offsets wider than one byte
	}
	for _, c := range cases {
		typ := MustParseType(c.typ)
		b, err := Encode(typ, c.val)
		if err != nil {
			t.Fatalf("%s: encode: %v", c.typ, err)
		}
		v, err := DecodeNormal(typ, b)
		if err != nil {
			t.Fatalf("%s: decode: %v", c.typ, err)
		}
		b2, _ := Encode(typ, v)
		if !bytes.Equal(b, b2) {
			t.Fatalf("%s: round trip changed the bytes", c.typ)
		}
	}
}

func make300Strings() []any {
	out := make([]any, 300)
	for i := range out {
		out[i] = "string"
	}
	return out
}

func TestFixedSizes(t *testing.T) {
	for typ, want := range map[string]int{"(yt)": 16, "(ty)": 16, "()": 1, "(uy)": 8, "{yy}": 2} {
		if got := MustParseType(typ).fixed; got != want {
			t.Errorf("%s: fixed size %d, want %d", typ, got, want)
		}
	}
}

func TestRejectsNonNormal(t *testing.T) {
	header, _ := hex.DecodeString(symlinkHeader)
	typ := MustParseType("(tuuuusa(ayay))")
	cases := map[string]struct {
		typ string
		b   []byte
	}{
		"string offset past the end":   {"(tuuuusa(ayay))", withByte(header, len(header)-1, 0x40)},
		"string offset into the ints":  {"(tuuuusa(ayay))", withByte(header, len(header)-1, 0x05)},
		"string without nul":           {"s", []byte("abc")},
		"nul inside string":            {"s", []byte("a\x00b\x00")},
		"non-zero padding":             {"(yt)", append([]byte{1, 9, 0, 0, 0, 0, 0, 0}, make([]byte, 8)...)},
		"boolean 2":                    {"b", []byte{2}},
		"fixed array with a remainder": {"au", []byte{1, 2, 3, 4, 5}},
		"variant without type":         {"v", []byte{1, 2, 3}},
		"variant with two types":       {"v", []byte("a\x00ss")},
		"empty array with a byte":      {"as", []byte{0}},
		"array offsets decreasing":     {"as", []byte("ab\x00c\x00\x05\x03")},
	}
	_ = typ
	for name, c := range cases {
		_, err := DecodeNormal(MustParseType(c.typ), c.b)
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A decodable but non-normal value reports ErrNotNormal.
	_, err := DecodeNormal(MustParseType("(yt)"), append([]byte{1, 9, 0, 0, 0, 0, 0, 0}, make([]byte, 8)...))
	if !errors.Is(err, ErrNotNormal) {
		t.Errorf("padding: %v, want ErrNotNormal", err)
	}
}

func withByte(b []byte, i int, v byte) []byte {
	c := bytes.Clone(b)
	c[i] = v
	return c
}

func TestParseType(t *testing.T) {
	for _, bad := range []string{"", "a", "(", "(s", "{sv", "{vs}", "{s}", "z", "ss", "((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((s))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))"} {
		if _, err := ParseType(bad); err == nil {
			t.Errorf("ParseType(%q) accepted", bad)
		}
	}
}

// FuzzDecode checks that decoding never panics and that whatever DecodeNormal
// accepts re-encodes to the same bytes.
func FuzzDecode(f *testing.F) {
	header, _ := hex.DecodeString(symlinkHeader)
	f.Add("(tuuuusa(ayay))", header)
	f.Add("a{sv}", []byte("k\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00u\x00\x0a\x0b"))
	f.Add("(a(say)a(sayay))", []byte{})
	for _, c := range viewCases() {
		b, _ := Encode(MustParseType(c.typ), c.val)
		f.Add(c.typ, b)
		f.Add(c.typ, append(b, 0))
	}
	f.Fuzz(func(t *testing.T, ts string, b []byte) {
		typ, err := ParseType(ts)
		if err != nil {
			return
		}
		v, err := DecodeNormal(typ, b)
		if verr := Validate(typ, b); (verr == nil) != (err == nil) {
			t.Fatalf("Validate says %v, DecodeNormal says %v", verr, err)
		}
		if _, derr := Decode(typ, b); (ValidateLoose(typ, b) == nil) != (derr == nil) {
			t.Fatalf("ValidateLoose says %v, Decode says %v", ValidateLoose(typ, b), derr)
		}
		if err != nil {
			return
		}
		enc, err := Encode(typ, v)
		if err != nil || !bytes.Equal(enc, b) {
			t.Fatalf("accepted bytes do not re-encode: %v", err)
		}
	})
}
