package repository

import (
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ostree-upload/ostree-upload/api"
)

// What a client gets of a check's output is its end, bounded in lines and
// bytes, printable as it is on a terminal.
func TestCheckOutput(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", api.MaxCheckOutputBytes) // 2 bytes each
	cases := []struct {
		name, in string
		want     []string
	}{
		{"nothing", " \n\n", nil},
		{"lines", "a\r\nb\n\tc\n", []string{"a", "b", "\tc"}},
		{"escape sequences and invalid UTF-8", "\x1b[31mred\x1b[0m \xff\x07\u009b", []string{"\ufffd[31mred\ufffd[0m \ufffd\ufffd\ufffd"}},
		{"a last line over the bytes keeps its end", "first\n" + long + "x", []string{long[len(long)-api.MaxCheckOutputBytes+2:] + "x"}},
		{"lines over the bytes go from the start", "a\n" + long[:3500] + "\n" + long[:1000] + "\nz", []string{long[:1000], "z"}},
	}
	for _, c := range cases {
		got := checkOutput(c.in)
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
		n := 0
		for _, l := range got {
			n += len(l)
			if !utf8.ValidString(l) {
				t.Errorf("%s: %q is not valid UTF-8", c.name, l)
			}
		}
		if n > api.MaxCheckOutputBytes || len(got) > api.MaxCheckOutputLines {
			t.Errorf("%s: %d lines, %d bytes", c.name, len(got), n)
		}
	}
	var many []string
	for i := range 50 {
		many = append(many, strings.Repeat("x", i))
	}
	if got := checkOutput(strings.Join(many, "\n")); !reflect.DeepEqual(got, many[30:]) {
		t.Errorf("50 lines: got %d lines, want the last %d", len(got), api.MaxCheckOutputLines)
	}
}
