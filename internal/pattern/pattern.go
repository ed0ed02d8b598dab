// Package pattern compiles and matches name patterns: those of policies,
// delegations and event filters. "*" matches any run of characters,
// everything else is literal.
package pattern

import "strings"

// Any is the pattern that matches every name, and the peer list entry that
// stands for every peer.
const Any = "*"

// Pattern is a compiled name pattern: "*" matches any run of characters,
// everything else is literal.
type Pattern struct {
	kind   kind
	s      string   // the literal, prefix or suffix
	parts  []string // patGlob: the pattern split at "*"
	source string
}

type kind uint8

const (
	patLiteral kind = iota
	patAny
	patPrefix // "abc*"
	patSuffix // "*abc"
	patGlob   // anything else with a "*"
)

// Compile compiles s.
func Compile(s string) Pattern {
	n := strings.Count(s, "*")
	switch {
	case n == 0:
		return Pattern{kind: patLiteral, s: s, source: s}
	case strings.Trim(s, "*") == "":
		return Pattern{kind: patAny, source: s}
	case n == 1 && strings.HasSuffix(s, "*"):
		return Pattern{kind: patPrefix, s: s[:len(s)-1], source: s}
	case n == 1 && strings.HasPrefix(s, "*"):
		return Pattern{kind: patSuffix, s: s[1:], source: s}
	}
	return Pattern{kind: patGlob, parts: strings.Split(s, "*"), source: s}
}

// Match reports whether name matches p.
func (p *Pattern) Match(name string) bool {
	switch p.kind {
	case patLiteral:
		return name == p.s
	case patAny:
		return true
	case patPrefix:
		return strings.HasPrefix(name, p.s)
	case patSuffix:
		return strings.HasSuffix(name, p.s)
	}
	return globMatch(p.parts, name)
}

// globMatch matches name against a pattern split at its stars: the first
// part is a prefix, the last a suffix, and the ones between appear in order.
// With "*" the only wildcard, taking the leftmost occurrence of each middle
// part is never wrong.
func globMatch(parts []string, name string) bool {
	first, last := parts[0], parts[len(parts)-1]
	if len(name) < len(first)+len(last) || !strings.HasPrefix(name, first) || !strings.HasSuffix(name, last) {
		return false
	}
	rest := name[len(first) : len(name)-len(last)]
	for _, part := range parts[1 : len(parts)-1] {
		i := strings.Index(rest, part)
		if i < 0 {
			return false
		}
		rest = rest[i+len(part):]
	}
	return true
}
