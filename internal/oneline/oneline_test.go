package oneline

import "testing"

func TestCut(t *testing.T) {
	for _, c := range []struct {
		in    string
		width int
		want  string
	}{
		{"short", 10, "short"},
		{"  padded\t", 10, "padded"},
		{"first\nsecond", 10, "first…"},
		{"first\r\nsecond", 10, "first…"},
		{"abcdefghij", 10, "abcdefghij"},
		{"abcdefghijk", 10, "abcdefghi…"},
		{"héllo wörld", 6, "héllo…"}, // runes, not bytes
		{"日本語のテキスト", 4, "日本語…"},      // never half a rune
		{"abc", 0, "a…"},
		{"", 5, ""},
	} {
		if got := Cut(c.in, c.width); got != c.want {
			t.Errorf("Cut(%q, %d) = %q, want %q", c.in, c.width, got, c.want)
		}
	}
}
