// Package template fills the placeholders of the strings users write in
// scripts and rules: {{NAME}} for a value as a whole and {{NAME.PATH}} for a
// field of a JSON value, PATH a dotted path of object keys and array
// indexes ({{last.hits.0.ref}}, {{event.data.uri}}). Agents' scripted
// steps and triggers' arguments use it.
package template

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Var is one name a template may use: its text as a whole ({{NAME}}) and,
// if Doc is set, the JSON value its fields are read from ({{NAME.PATH}}).
type Var struct {
	Text string
	// Doc is the value as JSON text (what {{NAME.PATH}} reads), or "" if the
	// name has no fields.
	Doc string
	// What names the value in errors: "the last tool result".
	What string
}

// Vars are the names a template may use. Placeholders of other names are
// left as they are.
type Vars map[string]Var

var placeholder = regexp.MustCompile(`\{\{\s*([A-Za-z_][A-Za-z0-9_]*)((?:\.[^.{}\s]+)*)\s*\}\}`)

// Expand fills the placeholders of text. A field read as a string is put in
// as is; anything else as JSON.
func (vs Vars) Expand(text string) (string, error) {
	var failed error
	out := placeholder.ReplaceAllStringFunc(text, func(m string) string {
		parts := placeholder.FindStringSubmatch(m)
		v, ok := vs[parts[1]]
		if !ok {
			return m
		}
		val, err := vs.field(v, parts[2], m)
		if err != nil {
			failed = err
			return ""
		}
		if s, ok := val.(string); ok {
			return s
		}
		b, err := json.Marshal(val)
		if err != nil {
			failed = err
		}
		return string(b)
	})
	return out, failed
}

// field reads the field path (".a.b", or "" for the whole) of v.
func (vs Vars) field(v Var, path, m string) (any, error) {
	if path == "" {
		return v.Text, nil
	}
	if v.Doc == "" {
		return nil, fmt.Errorf("%s: %s has no fields", m, v.What)
	}
	val, err := Lookup(v.Doc, strings.Split(path[1:], "."), v.What)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m, err)
	}
	return val, nil
}

// ExpandValue expands the placeholders in every string of v (a decoded
// JSON value). With whole set, a string that is one placeholder of a field
// and nothing else takes the field's value itself, number or object as it
// is, so that a tool gets arguments of the types its schema wants.
func (vs Vars) ExpandValue(v any, whole bool) (any, error) {
	switch v := v.(type) {
	case string:
		if whole {
			if parts := placeholder.FindStringSubmatch(v); parts != nil && parts[0] == v && parts[2] != "" {
				if vr, ok := vs[parts[1]]; ok {
					return vs.field(vr, parts[2], v)
				}
			}
		}
		return vs.Expand(v)
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			e, err := vs.ExpandValue(x, whole)
			if err != nil {
				return nil, err
			}
			out[k] = e
		}
		return out, nil
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			e, err := vs.ExpandValue(x, whole)
			if err != nil {
				return nil, err
			}
			out[i] = e
		}
		return out, nil
	default:
		return v, nil
	}
}

// Lookup reads the value at path in the JSON text doc; what names doc in
// errors.
func Lookup(doc string, path []string, what string) (any, error) {
	var v any
	if err := json.Unmarshal([]byte(doc), &v); err != nil {
		return nil, fmt.Errorf("%s is not JSON: %q", what, clip(doc, 80))
	}
	for _, key := range path {
		switch x := v.(type) {
		case map[string]any:
			next, ok := x[key]
			if !ok {
				return nil, fmt.Errorf("%s has no field %q", what, key)
			}
			v = next
		case []any:
			i, err := strconv.Atoi(key)
			if err != nil || i < 0 || i >= len(x) {
				return nil, fmt.Errorf("%s has no item %q (it has %d)", what, key, len(x))
			}
			v = x[i]
		default:
			return nil, fmt.Errorf("%s has no field %q", what, key)
		}
	}
	return v, nil
}

// clip shortens s to at most n bytes, on a rune boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + "…"
}
