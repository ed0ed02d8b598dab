package agent

import (
	"context"
	"strings"
	"testing"
)

func TestScriptedPlaysStepsAndSubstitutes(t *testing.T) {
	s := newScripted([]ScriptStep{
		{Call: "search", Args: map[string]any{"query": "{{task}}", "tags": []any{"x"}, "limit": 3}},
		{Call: "call", Args: map[string]any{"ref": "{{ last.hits.1.ref }}", "arguments": map[string]any{"n": "{{last.hits.0}}"}}},
		{Answer: "got {{last}} for {{task}}"},
	})
	req := &Request{Messages: []Message{{Role: User, Text: "find it" + contextMarker + `{"a":1}` + "\n</context>"}}}
	r, err := s.Complete(context.Background(), req)
	if err != nil || len(r.ToolCalls) != 1 || r.ToolCalls[0].Name != "search" || string(r.ToolCalls[0].Args) != `{"limit":3,"query":"find it","tags":["x"]}` {
		t.Fatalf("step 1: %+v %v", r, err)
	}
	req.Messages = append(req.Messages,
		Message{Role: Assistant, ToolCalls: r.ToolCalls},
		Message{Role: User, ToolResults: []ToolResult{{CallID: "script-1", Text: `{"hits":[{"ref":"A"},{"ref":"B"}]}`}}})
	r, err = s.Complete(context.Background(), req)
	if err != nil || string(r.ToolCalls[0].Args) != `{"arguments":{"n":"{\"ref\":\"A\"}"},"ref":"B"}` {
		t.Fatalf("step 2: %s %v", r.ToolCalls[0].Args, err)
	}
	req.Messages = append(req.Messages,
		Message{Role: Assistant, ToolCalls: r.ToolCalls},
		Message{Role: User, ToolResults: []ToolResult{{CallID: "script-2", Text: "42"}}})
	r, err = s.Complete(context.Background(), req)
	if err != nil || r.Text != "got 42 for find it" || len(r.ToolCalls) != 0 {
		t.Fatalf("step 3: %+v %v", r, err)
	}
	// Past its end, the script answers with the last tool result.
	req.Messages = append(req.Messages, Message{Role: Assistant, Text: r.Text})
	if r, err = s.Complete(context.Background(), req); err != nil || r.Text != "42" {
		t.Fatalf("past the end: %+v %v", r, err)
	}
}

func TestScriptedPathErrors(t *testing.T) {
	s := newScripted([]ScriptStep{{Call: "call", Args: map[string]any{"ref": "{{last.hits.5.ref}}"}}})
	for _, last := range []string{"", "not json", `{"hits":[]}`, `{"other":1}`} {
		req := &Request{Messages: []Message{{Role: User, Text: "t"}}}
		if last != "" {
			req.Messages = append(req.Messages, Message{Role: User, ToolResults: []ToolResult{{Text: last}}})
		}
		_, err := s.Complete(context.Background(), req)
		if err == nil || !strings.Contains(err.Error(), "script step 1: call: {{last.hits.5.ref}}") {
			t.Errorf("last %q: %v", last, err)
		}
	}
}
