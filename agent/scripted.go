package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// scripted is the deterministic backend: its replies are the steps of a
// script, one per completion, whatever the model would have said. It keeps
// no state of its own: the step to play is the number of replies the
// conversation already holds, so one backend serves concurrent runs.
type scripted struct {
	steps []ScriptStep
}

func newScripted(steps []ScriptStep) *scripted { return &scripted{steps: steps} }

// Complete plays the script's next step. Once the script has run out, it
// answers with the text of the last tool result.
func (s *scripted) Complete(ctx context.Context, req *Request) (*Reply, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n := 0
	for _, m := range req.Messages {
		if m.Role == Assistant {
			n++
		}
	}
	sub := substitutions{task: taskOf(req), last: lastResult(req)}
	if n >= len(s.steps) {
		return &Reply{Text: sub.last, StopReason: "end_of_script", Model: "scripted"}, nil
	}
	step := s.steps[n]
	if step.Answer != "" {
		text, err := sub.expand(step.Answer)
		if err != nil {
			return nil, fmt.Errorf("script step %d: answer: %w", n+1, err)
		}
		return &Reply{Text: text, StopReason: "end_turn", Model: "scripted"}, nil
	}
	args, err := sub.expandValue(map[string]any(step.Args))
	if err != nil {
		return nil, fmt.Errorf("script step %d: %s: %w", n+1, step.Call, err)
	}
	raw, err := json.Marshal(args)
	if err != nil {
		return nil, fmt.Errorf("script step %d: %s: %w", n+1, step.Call, err)
	}
	call := ToolCall{ID: "script-" + strconv.Itoa(n+1), Name: step.Call, Args: raw}
	return &Reply{ToolCalls: []ToolCall{call}, StopReason: "tool_use", Model: "scripted"}, nil
}

// taskOf returns the task: the first user message, without its context.
func taskOf(req *Request) string {
	for _, m := range req.Messages {
		if m.Role == User {
			task, _, _ := strings.Cut(m.Text, contextMarker)
			return task
		}
	}
	return ""
}

// lastResult returns the text of the conversation's last tool result.
func lastResult(req *Request) string {
	for i := len(req.Messages) - 1; i >= 0; i-- {
		if rs := req.Messages[i].ToolResults; len(rs) > 0 {
			return rs[len(rs)-1].Text
		}
	}
	return ""
}

// substitutions fill a script's placeholders: {{task}}, {{last}}, and
// {{last.PATH}}, PATH a dotted path into the last tool result read as JSON
// (object keys and array indexes: {{last.hits.0.ref}}).
type substitutions struct {
	task, last string
}

var placeholder = regexp.MustCompile(`\{\{\s*(task|last)((?:\.[^.{}\s]+)*)\s*\}\}`)

func (s substitutions) expand(text string) (string, error) {
	var failed error
	out := placeholder.ReplaceAllStringFunc(text, func(m string) string {
		parts := placeholder.FindStringSubmatch(m)
		if parts[1] == "task" {
			if parts[2] != "" {
				failed = fmt.Errorf("%s: {{task}} has no fields", m)
			}
			return s.task
		}
		if parts[2] == "" {
			return s.last
		}
		v, err := lookupPath(s.last, strings.Split(parts[2][1:], "."))
		if err != nil {
			failed = fmt.Errorf("%s: %w", m, err)
			return ""
		}
		return v
	})
	return out, failed
}

// expandValue expands the placeholders in every string of v.
func (s substitutions) expandValue(v any) (any, error) {
	switch v := v.(type) {
	case string:
		return s.expand(v)
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			e, err := s.expandValue(x)
			if err != nil {
				return nil, err
			}
			out[k] = e
		}
		return out, nil
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			e, err := s.expandValue(x)
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

// lookupPath reads the value at path in the JSON text doc: a string as is,
// anything else as JSON.
func lookupPath(doc string, path []string) (string, error) {
	var v any
	if err := json.Unmarshal([]byte(doc), &v); err != nil {
		return "", fmt.Errorf("the last tool result is not JSON: %q", clip(doc, 80))
	}
	for _, key := range path {
		switch x := v.(type) {
		case map[string]any:
			next, ok := x[key]
			if !ok {
				return "", fmt.Errorf("the last tool result has no field %q", key)
			}
			v = next
		case []any:
			i, err := strconv.Atoi(key)
			if err != nil || i < 0 || i >= len(x) {
				return "", fmt.Errorf("the last tool result has no item %q (it has %d)", key, len(x))
			}
			v = x[i]
		default:
			return "", fmt.Errorf("the last tool result has no field %q", key)
		}
	}
	if s, ok := v.(string); ok {
		return s, nil
	}
	b, err := json.Marshal(v)
	return string(b), err
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
