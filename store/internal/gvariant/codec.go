package gvariant

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"
)

// Variant is a value of type "v": a value together with its own type.
type Variant struct {
	Type  *Type
	Value any
}

// Maybe is a value of type "m…"; Valid is false for Nothing.
type Maybe struct {
	Valid bool
	Value any
}

// ErrNotNormal reports bytes that decode but are not in normal form.
var ErrNotNormal = errors.New("gvariant: not in normal form")

// Decode decodes b as a value of type t. It fails on anything the
// serialisation format does not allow; it does not check normal form.
func Decode(t *Type, b []byte) (any, error) { return decode(t, b, 0) }

// DecodeNormal decodes b and fails with ErrNotNormal unless b is the unique
// normal-form serialisation of the decoded value.
func DecodeNormal(t *Type, b []byte) (any, error) {
	v, err := decode(t, b, 0)
	if err != nil {
		return nil, err
	}
	enc, err := Encode(t, v)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(enc, b) {
		return nil, ErrNotNormal
	}
	return v, nil
}

func errAt(t *Type, format string, args ...any) error {
	return fmt.Errorf("gvariant: %s: %s", t.str, fmt.Sprintf(format, args...))
}

func decode(t *Type, b []byte, depth int) (any, error) {
	if depth > maxDepth {
		return nil, errAt(t, "nested too deeply")
	}
	if t.fixed != 0 && len(b) != t.fixed {
		return nil, errAt(t, "size %d, want %d", len(b), t.fixed)
	}
	le := binary.LittleEndian
	switch t.code {
	case 'b':
		if b[0] > 1 {
			return nil, errAt(t, "boolean byte %d", b[0])
		}
		return b[0] == 1, nil
	case 'y':
		return b[0], nil
	case 'n':
		return int16(le.Uint16(b)), nil
	case 'q':
		return le.Uint16(b), nil
	case 'i', 'h':
		return int32(le.Uint32(b)), nil
	case 'u':
		return le.Uint32(b), nil
	case 'x':
		return int64(le.Uint64(b)), nil
	case 't':
		return le.Uint64(b), nil
	case 'd':
		return math.Float64frombits(le.Uint64(b)), nil
	case 's', 'o', 'g':
		return decodeString(t, b)
	case 'v':
		return decodeVariant(t, b, depth)
	case 'm':
		return decodeMaybe(t, b, depth)
	case 'a':
		return decodeArray(t, b, depth)
	case '(', '{':
		return decodeTuple(t, b, depth)
	}
	return nil, errAt(t, "unknown type")
}

func decodeString(t *Type, b []byte) (any, error) {
	if len(b) == 0 || b[len(b)-1] != 0 {
		return nil, errAt(t, "string not nul-terminated")
	}
	s := b[:len(b)-1]
	if bytes.IndexByte(s, 0) >= 0 {
		return nil, errAt(t, "nul inside string")
	}
	if !utf8.Valid(s) {
		return nil, errAt(t, "string is not UTF-8")
	}
	str := string(s)
	switch t.code {
	case 'o':
		if !validObjectPath(str) {
			return nil, errAt(t, "bad object path %q", str)
		}
	case 'g':
		for rest := str; rest != ""; {
			_, r, err := parseType(rest, 0)
			if err != nil {
				return nil, errAt(t, "bad signature %q", str)
			}
			rest = r
		}
	}
	return str, nil
}

func validObjectPath(s string) bool {
	if s == "/" {
		return true
	}
	if len(s) < 2 || s[0] != '/' || s[len(s)-1] == '/' {
		return false
	}
	prev := byte('/')
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '/':
			if prev == '/' {
				return false
			}
		case c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		default:
			return false
		}
		prev = c
	}
	return true
}

func decodeVariant(t *Type, b []byte, depth int) (any, error) {
	i := bytes.LastIndexByte(b, 0)
	if i < 0 {
		return nil, errAt(t, "variant without type")
	}
	if len(b)-i-1 > MaxVariantType {
		return nil, errAt(t, "variant type of %d bytes, more than %d", len(b)-i-1, MaxVariantType)
	}
	vt, err := ParseType(string(b[i+1:]))
	if err != nil {
		return nil, errAt(t, "variant type %q: %v", b[i+1:], err)
	}
	v, err := decode(vt, b[:i], depth+1)
	if err != nil {
		return nil, err
	}
	return Variant{Type: vt, Value: v}, nil
}

func decodeMaybe(t *Type, b []byte, depth int) (any, error) {
	if len(b) == 0 {
		return Maybe{}, nil
	}
	if t.elem.fixed == 0 {
		if b[len(b)-1] != 0 {
			return nil, errAt(t, "maybe without trailing zero")
		}
		b = b[:len(b)-1]
	}
	v, err := decode(t.elem, b, depth)
	if err != nil {
		return nil, err
	}
	return Maybe{Valid: true, Value: v}, nil
}

func readOffset(b []byte, w int) int {
	var v uint64
	for i := w - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	if v > math.MaxInt32 {
		return math.MaxInt32 // out of range for any slice we accept
	}
	return int(v)
}

func decodeArray(t *Type, b []byte, depth int) (any, error) {
	e := t.elem
	if e.fixed != 0 {
		if len(b)%e.fixed != 0 {
			return nil, errAt(t, "size %d not a multiple of %d", len(b), e.fixed)
		}
		if e.code == 'y' {
			return bytes.Clone(b), nil
		}
		out := make([]any, 0, len(b)/e.fixed)
		for i := 0; i < len(b); i += e.fixed {
			v, err := decode(e, b[i:i+e.fixed], depth)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	}
	if len(b) == 0 {
		return []any{}, nil
	}
	w := offsetSize(len(b))
	if len(b) < w {
		return nil, errAt(t, "truncated framing")
	}
	tableStart := readOffset(b[len(b)-w:], w)
	if tableStart > len(b)-w || (len(b)-tableStart)%w != 0 {
		return nil, errAt(t, "bad framing offset %d", tableStart)
	}
	n := (len(b) - tableStart) / w
	out := make([]any, 0, n)
	pos := 0
	for i := 0; i < n; i++ {
		end := readOffset(b[tableStart+i*w:], w)
		start := alignUp(pos, e.align)
		if start > end || end > tableStart {
			return nil, errAt(t, "element %d out of bounds", i)
		}
		v, err := decode(e, b[start:end], depth)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		pos = end
	}
	return out, nil
}

func decodeTuple(t *Type, b []byte, depth int) (any, error) {
	if len(t.items) == 0 {
		if b[0] != 0 {
			return nil, errAt(t, "unit byte %d", b[0])
		}
		return []any{}, nil
	}
	w := offsetSize(len(b))
	limit := len(b) // start of the framing offsets consumed so far
	out := make([]any, 0, len(t.items))
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
				return nil, errAt(t, "truncated framing")
			}
			end = readOffset(b[limit:], w)
		}
		if start > end || end > limit {
			return nil, errAt(t, "member %d out of bounds", i)
		}
		v, err := decode(it, b[start:end], depth)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		pos = end
	}
	return out, nil
}

// Encode serialises v as type t in normal form.
func Encode(t *Type, v any) ([]byte, error) { return encode(nil, t, v) }

func typeErr(t *Type, v any) error {
	return fmt.Errorf("gvariant: cannot encode %T as %s", v, t.str)
}

func encode(dst []byte, t *Type, v any) ([]byte, error) {
	le := binary.LittleEndian
	var ok bool
	switch t.code {
	case 'b':
		var x bool
		if x, ok = v.(bool); ok {
			if x {
				return append(dst, 1), nil
			}
			return append(dst, 0), nil
		}
	case 'y':
		var x uint8
		if x, ok = v.(uint8); ok {
			return append(dst, x), nil
		}
	case 'n':
		var x int16
		if x, ok = v.(int16); ok {
			return le.AppendUint16(dst, uint16(x)), nil
		}
	case 'q':
		var x uint16
		if x, ok = v.(uint16); ok {
			return le.AppendUint16(dst, x), nil
		}
	case 'i', 'h':
		var x int32
		if x, ok = v.(int32); ok {
			return le.AppendUint32(dst, uint32(x)), nil
		}
	case 'u':
		var x uint32
		if x, ok = v.(uint32); ok {
			return le.AppendUint32(dst, x), nil
		}
	case 'x':
		var x int64
		if x, ok = v.(int64); ok {
			return le.AppendUint64(dst, uint64(x)), nil
		}
	case 't':
		var x uint64
		if x, ok = v.(uint64); ok {
			return le.AppendUint64(dst, x), nil
		}
	case 'd':
		var x float64
		if x, ok = v.(float64); ok {
			return le.AppendUint64(dst, math.Float64bits(x)), nil
		}
	case 's', 'o', 'g':
		var x string
		if x, ok = v.(string); ok {
			return append(append(dst, x...), 0), nil
		}
	case 'v':
		var x Variant
		if x, ok = v.(Variant); ok && x.Type != nil {
			dst, err := encode(dst, x.Type, x.Value)
			if err != nil {
				return nil, err
			}
			return append(append(dst, 0), x.Type.str...), nil
		}
	case 'm':
		var x Maybe
		if x, ok = v.(Maybe); ok {
			if !x.Valid {
				return dst, nil
			}
			dst, err := encode(dst, t.elem, x.Value)
			if err != nil || t.elem.fixed != 0 {
				return dst, err
			}
			return append(dst, 0), nil
		}
	case 'a':
		return encodeArray(dst, t, v)
	case '(', '{':
		return encodeTuple(dst, t, v)
	}
	return nil, typeErr(t, v)
}

func pad(dst []byte, base, align int) []byte {
	for (len(dst)-base)%align != 0 {
		dst = append(dst, 0)
	}
	return dst
}

// appendOffsets appends the framing offsets (relative to base) to a body.
func appendOffsets(dst []byte, base int, offs []int) []byte {
	body := len(dst) - base
	w := 1
	for ; w < 8; w *= 2 {
		if uint64(body+len(offs)*w) <= uint64(1)<<(8*w)-1 {
			break
		}
	}
	for _, o := range offs {
		for i := 0; i < w; i++ {
			dst = append(dst, byte(uint64(o)>>(8*i)))
		}
	}
	return dst
}

func encodeArray(dst []byte, t *Type, v any) ([]byte, error) {
	if t.elem.code == 'y' {
		if x, ok := v.([]byte); ok {
			return append(dst, x...), nil
		}
	}
	items, ok := v.([]any)
	if !ok {
		return nil, typeErr(t, v)
	}
	base := len(dst)
	var offs []int
	for _, it := range items {
		dst = pad(dst, base, t.elem.align)
		var err error
		if dst, err = encode(dst, t.elem, it); err != nil {
			return nil, err
		}
		if t.elem.fixed == 0 {
			offs = append(offs, len(dst)-base)
		}
	}
	return appendOffsets(dst, base, offs), nil
}

func encodeTuple(dst []byte, t *Type, v any) ([]byte, error) {
	items, ok := v.([]any)
	if !ok || len(items) != len(t.items) {
		return nil, typeErr(t, v)
	}
	if len(items) == 0 {
		return append(dst, 0), nil
	}
	base := len(dst)
	var offs []int
	for i, it := range t.items {
		dst = pad(dst, base, it.align)
		var err error
		if dst, err = encode(dst, it, items[i]); err != nil {
			return nil, err
		}
		if it.fixed == 0 && i != len(items)-1 {
			offs = append(offs, len(dst)-base)
		}
	}
	if t.fixed != 0 {
		return pad(dst, base, t.align), nil
	}
	for i, j := 0, len(offs)-1; i < j; i, j = i+1, j-1 {
		offs[i], offs[j] = offs[j], offs[i]
	}
	return appendOffsets(dst, base, offs), nil
}
