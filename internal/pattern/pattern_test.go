package pattern

import "testing"

func TestPatternMatch(t *testing.T) {
	for _, tt := range []struct {
		pat, name string
		want      bool
	}{
		{"echo", "echo", true},
		{"echo", "echo2", false},
		{"echo", "ech", false},
		{"*", "", true},
		{"**", "a/b", true},
		{"read_*", "read_", true},
		{"read_*", "read_file", true},
		{"read_*", "rea", false},
		{"*_file", "read_file", true},
		{"*_file", "read_files", false},
		{"file:///pub/*", "file:///pub/a/b/c", true},
		{"file:///pub/*", "file:///pubx", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "acb", false},
		{"a*b*c", "abcb", false},
		{"a*a", "a", false},
		{"a*a", "aa", true},
		{"*x*", "abxcd", true},
		{"*x*", "abcd", false},
		{"a*?", "ab?", true},
		{"a*?", "ab", false},
	} {
		p := Compile(tt.pat)
		if got := p.Match(tt.name); got != tt.want {
			t.Errorf("%q matches %q = %v, want %v", tt.pat, tt.name, got, tt.want)
		}
	}
}
