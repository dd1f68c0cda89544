package auth

import (
	"testing"
)

func TestMatchGlob(t *testing.T) {
	cases := []struct {
		glob, ref string
		want      bool
	}{
		{"app/*", "app/org.x/x86_64/stable", true},
		{"app/*", "app/", true},
		{"app/*", "runtime/org.x/x86_64/stable", false},
		{"app/*", "app", false},
		{"*", "anything/at/all", true},
		{"*", "", true},
		{"app/org.x/x86_64/stable", "app/org.x/x86_64/stable", true},
		{"app/org.x/x86_64/stable", "app/org.x/x86_64/beta", false},
		{"app/org.x/x86_64/stable", "app/org.x/x86_64/stable2", false},
		{"app/org.x/x86_6?/stable", "app/org.x/x86_64/stable", true},
		{"app/org.x/x86_6?/stable", "app/org.x/x86_6/stable", false},
		{"app/org.x/x86_6?/stable", "app/org.x/x86_644/stable", false},
		{"app/*/x86_64/stable", "app/org.x/x86_64/stable", true},
		{"app/*/x86_64/stable", "app/org.x/aarch64/stable", false},
		{"*/stable", "app/org.x/x86_64/stable", true},
		{"*/stable", "app/org.x/x86_64/stable/x", false},
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "aXbYbZ", false},
		{"a.b", "aXb", false}, // '.' is literal
		{"[ab]", "a", false},  // no character classes
		{"[ab]", "[ab]", true},
		{"??", "é!", true},
		{"", "", true},
		{"", "x", false},
	}
	for _, c := range cases {
		if got := MatchGlob(c.glob, c.ref); got != c.want {
			t.Errorf("MatchGlob(%q, %q) = %v, want %v", c.glob, c.ref, got, c.want)
		}
	}
}

func TestCheckGlobAndName(t *testing.T) {
	for _, g := range []string{"app/*", "*", "a?b", "[x]"} {
		if err := CheckGlob(g); err != nil {
			t.Errorf("%q: %v", g, err)
		}
	}
	for _, g := range []string{"", "a b", "a\tb", "é", "a\x00"} {
		if CheckGlob(g) == nil {
			t.Errorf("%q: no error", g)
		}
	}
	if CheckName("ci runner é") != nil || CheckName("a\nb") == nil || CheckName("\xff") == nil {
		t.Error("CheckName")
	}
}
