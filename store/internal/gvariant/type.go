// Package gvariant decodes and encodes the GVariant serialisation format
// strictly: Decode refuses anything out of bounds, and a value is in normal
// form exactly when Encode(Decode(b)) == b.
//
// Values map to Go as: b bool, y uint8, n int16, q uint16, i int32, u uint32,
// x int64, t uint64, h int32, d float64, s/o/g string, ay []byte, other arrays
// []any, tuples and dict entries []any, v Variant, m Maybe.
package gvariant

import (
	"errors"
	"fmt"
)

// maxDepth bounds the nesting of types and of variants inside variants.
const maxDepth = 64

// Type is a parsed GVariant type.
type Type struct {
	code  byte    // one of "bynqiuxthdsogvam({"; '(' for tuples, '{' for dict entries
	elem  *Type   // for 'a' and 'm'
	items []*Type // for '(' and '{'
	str   string

	align int // alignment in bytes (1, 2, 4 or 8)
	fixed int // fixed serialised size, 0 when variable
}

// String returns the type string, e.g. "(tuuuusa(ayay))".
func (t *Type) String() string { return t.str }

// ParseType parses one complete type string.
func ParseType(s string) (*Type, error) {
	t, rest, err := parseType(s, 0)
	if err != nil {
		return nil, err
	}
	if rest != "" {
		return nil, fmt.Errorf("gvariant: trailing characters in type %q", s)
	}
	return t, nil
}

// MustParseType is ParseType for constant type strings.
func MustParseType(s string) *Type {
	t, err := ParseType(s)
	if err != nil {
		panic(err)
	}
	return t
}

var errBadType = errors.New("gvariant: bad type string")

func parseType(s string, depth int) (*Type, string, error) {
	if depth > maxDepth {
		return nil, "", fmt.Errorf("gvariant: type nested too deeply")
	}
	if s == "" {
		return nil, "", errBadType
	}
	c := s[0]
	switch c {
	case 'b', 'y':
		return &Type{code: c, str: s[:1], align: 1, fixed: 1}, s[1:], nil
	case 'n', 'q':
		return &Type{code: c, str: s[:1], align: 2, fixed: 2}, s[1:], nil
	case 'i', 'u', 'h':
		return &Type{code: c, str: s[:1], align: 4, fixed: 4}, s[1:], nil
	case 'x', 't', 'd':
		return &Type{code: c, str: s[:1], align: 8, fixed: 8}, s[1:], nil
	case 's', 'o', 'g':
		return &Type{code: c, str: s[:1], align: 1}, s[1:], nil
	case 'v':
		return &Type{code: c, str: s[:1], align: 8}, s[1:], nil
	case 'a', 'm':
		e, rest, err := parseType(s[1:], depth+1)
		if err != nil {
			return nil, "", err
		}
		return &Type{code: c, elem: e, str: s[:len(s)-len(rest)], align: e.align}, rest, nil
	case '(', '{':
		closer := byte(')')
		if c == '{' {
			closer = '}'
		}
		t := &Type{code: c, align: 1}
		rest := s[1:]
		for {
			if rest == "" {
				return nil, "", errBadType
			}
			if rest[0] == closer {
				rest = rest[1:]
				break
			}
			it, r, err := parseType(rest, depth+1)
			if err != nil {
				return nil, "", err
			}
			t.items = append(t.items, it)
			rest = r
		}
		if c == '{' && (len(t.items) != 2 || !t.items[0].basic()) {
			return nil, "", errBadType
		}
		t.str = s[:len(s)-len(rest)]
		t.layout()
		return t, rest, nil
	}
	return nil, "", errBadType
}

func (t *Type) basic() bool {
	switch t.code {
	case 'b', 'y', 'n', 'q', 'i', 'u', 'x', 't', 'h', 'd', 's', 'o', 'g':
		return true
	}
	return false
}

// layout computes alignment and fixed size of a tuple or dict entry.
func (t *Type) layout() {
	fixed := true
	off := 0
	for _, it := range t.items {
		if it.align > t.align {
			t.align = it.align
		}
		if it.fixed == 0 {
			fixed = false
			continue
		}
		off = alignUp(off, it.align) + it.fixed
	}
	if !fixed {
		return
	}
	if len(t.items) == 0 {
		t.fixed = 1 // the unit type serialises as one zero byte
		return
	}
	t.fixed = alignUp(off, t.align)
}

func alignUp(n, a int) int { return (n + a - 1) &^ (a - 1) }

// offsetSize is the width of framing offsets in a container of n bytes.
func offsetSize(n int) int {
	switch {
	case n == 0:
		return 0
	case n <= 0xff:
		return 1
	case n <= 0xffff:
		return 2
	case uint64(n) <= 0xffffffff:
		return 4
	}
	return 8
}
