// Package oneline shows a message, an error or a description on one line of
// bounded width, for logs, audit records and terminal output.
package oneline

import (
	"strings"
	"unicode/utf8"
)

// Cut returns the first line of s, trimmed, in at most width characters
// (runes: never half of one). A line cut short, or followed by more lines,
// ends with "…". A width below 2 is taken as 2.
func Cut(s string, width int) string {
	width = max(width, 2)
	line, _, more := strings.Cut(strings.TrimSpace(s), "\n")
	line = strings.TrimRight(line, "\r")
	if utf8.RuneCountInString(line) > width {
		n := 0
		for i := range line {
			if n == width-1 {
				return line[:i] + "…"
			}
			n++
		}
	}
	if more {
		return line + "…"
	}
	return line
}
