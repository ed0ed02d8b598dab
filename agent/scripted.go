package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/mcpmesh/mcpmesh/gateway"
	"github.com/mcpmesh/mcpmesh/internal/template"
)

// scripted is the deterministic backend: its replies are the steps of a
// script, one per completion, whatever the model would have said. In its
// strings, {{task}} is the task, {{last}} the last tool result and
// {{last.PATH}} a field of it read as JSON (internal/template). It keeps
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
	last := lastResult(req)
	sub := template.Vars{
		"task": {Text: taskOf(req), What: "{{task}}"},
		"last": {Text: last, Doc: last, What: "the last tool result"},
	}
	if n >= len(s.steps) {
		return &Reply{Text: last, StopReason: "end_of_script", Model: "scripted"}, nil
	}
	step := s.steps[n]
	if step.Answer != "" {
		text, err := sub.Expand(step.Answer)
		if err != nil {
			return nil, fmt.Errorf("script step %d: answer: %w", n+1, err)
		}
		return &Reply{Text: text, StopReason: "end_turn", Model: "scripted"}, nil
	}
	args, err := sub.ExpandValue(map[string]any(step.Args), false)
	if err != nil {
		if why := noHits(last); why != "" {
			return nil, fmt.Errorf("script step %d: %s: %w: %s", n+1, step.Call, err, why)
		}
		return nil, fmt.Errorf("script step %d: %s: %w", n+1, step.Call, err)
	}
	raw, err := json.Marshal(args)
	if err != nil {
		return nil, fmt.Errorf("script step %d: %s: %w", n+1, step.Call, err)
	}
	call := ToolCall{ID: "script-" + strconv.Itoa(n+1), Name: step.Call, Args: raw}
	return &Reply{ToolCalls: []ToolCall{call}, StopReason: "tool_use", Model: "scripted"}, nil
}

// noHits says why a search found nothing to call, if last is the result
// of a search without hits (a step reading {{last.hits.0.ref}} fails on
// it): the tools it skipped, which the node may not call, and why.
func noHits(last string) string {
	var out struct {
		Hits    *[]json.RawMessage `json:"hits"`
		Skipped []gateway.Skipped  `json:"skipped"`
	}
	if json.Unmarshal([]byte(last), &out) != nil || out.Hits == nil || len(*out.Hits) > 0 {
		return ""
	}
	if len(out.Skipped) == 0 {
		return "the search found no tool"
	}
	why := make([]string, len(out.Skipped))
	for i, s := range out.Skipped {
		why[i] = s.Ref + ": " + s.Why
	}
	return fmt.Sprintf("the search found no tool this node may call (%d found, none callable: %s)", len(out.Skipped), strings.Join(why, "; "))
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
