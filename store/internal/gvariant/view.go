package gvariant

import (
	"bytes"
	"encoding/binary"
	"unicode/utf8"
)

// MaxVariantType bounds the type string of a variant ("v") value: parsing
// a type costs memory per character, and real values' types are short.
const MaxVariantType = 256

// Validate checks that b is the normal-form serialisation of a value of type
// t, exactly as DecodeNormal would, but in place: it allocates nothing that
// grows with b, so a hostile value costs its bytes and no more.
func Validate(t *Type, b []byte) error { return check(t, b, 0, true) }

// ValidateLoose checks that b is a valid serialisation of a value of type t,
// in place, like Decode: normal form is not required (non-zero padding and
// unused bytes are allowed). Views of such bytes read correctly.
func ValidateLoose(t *Type, b []byte) error { return check(t, b, 0, false) }

// zeros reports whether every byte of b is zero (padding in normal form).
func zeros(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func check(t *Type, b []byte, depth int, normal bool) error {
	if depth > maxDepth {
		return errAt(t, "nested too deeply")
	}
	if t.fixed != 0 && len(b) != t.fixed {
		return errAt(t, "size %d, want %d", len(b), t.fixed)
	}
	switch t.code {
	case 'b':
		if b[0] > 1 {
			return errAt(t, "boolean byte %d", b[0])
		}
		return nil
	case 'y', 'n', 'q', 'i', 'h', 'u', 'x', 't', 'd':
		return nil
	case 's', 'o', 'g':
		return checkString(t, b)
	case 'v':
		i := bytes.LastIndexByte(b, 0)
		if i < 0 {
			return errAt(t, "variant without type")
		}
		if len(b)-i-1 > MaxVariantType {
			return errAt(t, "variant type of %d bytes, more than %d", len(b)-i-1, MaxVariantType)
		}
		vt, err := ParseType(string(b[i+1:]))
		if err != nil {
			return errAt(t, "variant type %q: %v", b[i+1:], err)
		}
		return check(vt, b[:i], depth+1, normal)
	case 'm':
		if len(b) == 0 {
			return nil
		}
		if t.elem.fixed == 0 {
			if b[len(b)-1] != 0 {
				return errAt(t, "maybe without trailing zero")
			}
			b = b[:len(b)-1]
		}
		return check(t.elem, b, depth, normal)
	case 'a':
		return checkArray(t, b, depth, normal)
	case '(', '{':
		return checkTuple(t, b, depth, normal)
	}
	return errAt(t, "unknown type")
}

func checkString(t *Type, b []byte) error {
	if len(b) == 0 || b[len(b)-1] != 0 {
		return errAt(t, "string not nul-terminated")
	}
	s := b[:len(b)-1]
	if bytes.IndexByte(s, 0) >= 0 {
		return errAt(t, "nul inside string")
	}
	if !utf8.Valid(s) {
		return errAt(t, "string is not UTF-8")
	}
	switch t.code {
	case 'o':
		if !validObjectPath(string(s)) {
			return errAt(t, "bad object path %q", s)
		}
	case 'g':
		for rest := string(s); rest != ""; {
			_, r, err := parseType(rest, 0)
			if err != nil {
				return errAt(t, "bad signature %q", s)
			}
			rest = r
		}
	}
	return nil
}

func checkArray(t *Type, b []byte, depth int, normal bool) error {
	e := t.elem
	if e.fixed != 0 {
		if len(b)%e.fixed != 0 {
			return errAt(t, "size %d not a multiple of %d", len(b), e.fixed)
		}
		if e.code == 'y' {
			return nil
		}
		for i := 0; i < len(b); i += e.fixed {
			if err := check(e, b[i:i+e.fixed], depth, normal); err != nil {
				return err
			}
		}
		return nil
	}
	if len(b) == 0 {
		return nil
	}
	w := offsetSize(len(b))
	tableStart := readOffset(b[len(b)-w:], w)
	if tableStart > len(b)-w || (len(b)-tableStart)%w != 0 {
		return errAt(t, "bad framing offset %d", tableStart)
	}
	n := (len(b) - tableStart) / w
	pos := 0
	for i := 0; i < n; i++ {
		end := readOffset(b[tableStart+i*w:], w)
		start := alignUp(pos, e.align)
		if start > end || end > tableStart {
			return errAt(t, "element %d out of bounds", i)
		}
		if normal && !zeros(b[pos:start]) {
			return ErrNotNormal
		}
		if err := check(e, b[start:end], depth, normal); err != nil {
			return err
		}
		pos = end
	}
	if normal && pos != tableStart {
		return ErrNotNormal
	}
	return nil
}

func checkTuple(t *Type, b []byte, depth int, normal bool) error {
	if len(t.items) == 0 {
		if b[0] != 0 {
			return errAt(t, "unit byte %d", b[0])
		}
		return nil
	}
	w := offsetSize(len(b))
	limit := len(b)
	pos := 0
	for i, it := range t.items {
		start := alignUp(pos, it.align)
		var end int
		switch {
		case it.fixed != 0:
			end = start + it.fixed
		case i == len(t.items)-1:
			end = limit
		default:
			limit -= w
			if limit < 0 || w == 0 {
				return errAt(t, "truncated framing")
			}
			end = readOffset(b[limit:], w)
		}
		if start > end || end > limit {
			return errAt(t, "member %d out of bounds", i)
		}
		if normal && !zeros(b[pos:start]) {
			return ErrNotNormal
		}
		if err := check(it, b[start:end], depth, normal); err != nil {
			return err
		}
		pos = end
	}
	if !normal {
		return nil
	}
	if t.fixed != 0 {
		if !zeros(b[pos:]) {
			return ErrNotNormal
		}
		return nil
	}
	if pos != limit {
		return ErrNotNormal
	}
	return nil
}

// View is a serialised value of a known type, read in place without
// copying. Its accessors assume bytes that Validate accepted (they do not
// panic on others, but their answers are then meaningless).
type View struct {
	t *Type
	b []byte
}

// NewView views b as a value of type t.
func NewView(t *Type, b []byte) View { return View{t: t, b: b} }

// Type is the view's type.
func (v View) Type() *Type { return v.t }

// Raw is the serialised bytes of the value.
func (v View) Raw() []byte { return v.b }

// Len is the number of elements of an array.
func (v View) Len() int {
	e := v.t.elem
	if v.t.code != 'a' || len(v.b) == 0 {
		return 0
	}
	if e.fixed != 0 {
		return len(v.b) / e.fixed
	}
	w := offsetSize(len(v.b))
	tableStart := readOffset(v.b[len(v.b)-w:], w)
	if tableStart > len(v.b) {
		return 0
	}
	return (len(v.b) - tableStart) / w
}

// Index is element i of an array (0 <= i < Len()).
func (v View) Index(i int) View {
	e := v.t.elem
	if e.fixed != 0 {
		return View{t: e, b: v.b[i*e.fixed : (i+1)*e.fixed]}
	}
	w := offsetSize(len(v.b))
	tableStart := readOffset(v.b[len(v.b)-w:], w)
	start := 0
	if i > 0 {
		start = alignUp(readOffset(v.b[tableStart+(i-1)*w:], w), e.align)
	}
	end := readOffset(v.b[tableStart+i*w:], w)
	if start > end || end > len(v.b) {
		return View{t: e}
	}
	return View{t: e, b: v.b[start:end]}
}

// Field is member i of a tuple or dict entry.
func (v View) Field(i int) View {
	b := v.b
	w := offsetSize(len(b))
	limit, pos := len(b), 0
	for k, it := range v.t.items {
		start := alignUp(pos, it.align)
		var end int
		switch {
		case it.fixed != 0:
			end = start + it.fixed
		case k == len(v.t.items)-1:
			end = limit
		default:
			limit -= w
			if limit < 0 {
				return View{t: it}
			}
			end = readOffset(b[limit:], w)
		}
		if start > end || end > len(b) {
			return View{t: it}
		}
		if k == i {
			return View{t: it, b: b[start:end]}
		}
		pos = end
	}
	return View{}
}

// StrBytes is the bytes of a string, without its terminating nul.
func (v View) StrBytes() []byte {
	if len(v.b) == 0 {
		return nil
	}
	return v.b[:len(v.b)-1]
}

// Str is the value of a string.
func (v View) Str() string { return string(v.StrBytes()) }

// Uint32 is the value of a u (as stored: little-endian).
func (v View) Uint32() uint32 {
	if len(v.b) < 4 {
		return 0
	}
	return binary.LittleEndian.Uint32(v.b)
}

// Uint64 is the value of a t (as stored: little-endian).
func (v View) Uint64() uint64 {
	if len(v.b) < 8 {
		return 0
	}
	return binary.LittleEndian.Uint64(v.b)
}

// Variant is the value inside a v, with its own type (nil type if the type
// string is bad).
func (v View) Variant() View {
	i := bytes.LastIndexByte(v.b, 0)
	if i < 0 || len(v.b)-i-1 > MaxVariantType {
		return View{}
	}
	vt, err := ParseType(string(v.b[i+1:]))
	if err != nil {
		return View{}
	}
	return View{t: vt, b: v.b[:i]}
}

// Decode decodes the viewed value into Go values (see the package doc).
func (v View) Decode() (any, error) {
	if v.t == nil {
		return nil, errBadType
	}
	return Decode(v.t, v.b)
}
