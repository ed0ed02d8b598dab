package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/mcp/ask"
)

// borrowed is the backend that owns no model: each completion is asked of
// the agent's caller through MCP sampling with tools, which the mesh relays
// up the task tree to the first node whose owner answers sampling. It needs
// the context of the agent's served call (the loop gives it).
type borrowed struct {
	hint      string // model name hint for the caller, may be empty
	maxTokens int
}

// borrowedMaxTokens bounds a borrowed completion when the configuration
// does not: sampling requires a bound.
const borrowedMaxTokens = 4096

func newBorrowed(cfg ModelConfig) *borrowed {
	b := &borrowed{hint: cfg.Model, maxTokens: cfg.MaxTokens}
	if b.maxTokens <= 0 {
		b.maxTokens = borrowedMaxTokens
	}
	return b
}

// Complete asks the caller for the completion.
func (b *borrowed) Complete(ctx context.Context, req *Request) (*Reply, error) {
	params, err := samplingParams(req, b.hint, b.maxTokens)
	if err != nil {
		return nil, err
	}
	res, err := ask.SampleWithTools(ctx, params)
	if err != nil {
		if errors.Is(err, ask.ErrInputRequired) {
			return nil, err // the caller answers and calls again
		}
		return nil, fmt.Errorf("borrowed model: sampling asked of the caller: %w", err)
	}
	return samplingReply(res)
}

// samplingParams turns a Request into a sampling request with tools.
func samplingParams(req *Request, hint string, maxTok int) (*sdkmcp.CreateMessageWithToolsParams, error) {
	if req.MaxTokens > 0 {
		maxTok = req.MaxTokens
	}
	p := &sdkmcp.CreateMessageWithToolsParams{SystemPrompt: req.System, MaxTokens: int64(maxTok)}
	if hint != "" {
		p.ModelPreferences = &sdkmcp.ModelPreferences{Hints: []*sdkmcp.ModelHint{{Name: hint}}}
	}
	for _, t := range req.Tools {
		p.Tools = append(p.Tools, &sdkmcp.Tool{Name: t.Name, Description: t.Description, InputSchema: t.InputSchema})
	}
	for _, m := range req.Messages {
		var content []sdkmcp.Content
		if m.Text != "" {
			content = append(content, &sdkmcp.TextContent{Text: m.Text})
		}
		for _, c := range m.ToolCalls {
			var input map[string]any
			if len(c.Args) > 0 {
				if err := json.Unmarshal(c.Args, &input); err != nil {
					return nil, fmt.Errorf("tool call %s: arguments are not a JSON object: %w", c.ID, err)
				}
			}
			content = append(content, &sdkmcp.ToolUseContent{ID: c.ID, Name: c.Name, Input: input})
		}
		for _, r := range m.ToolResults {
			content = append(content, &sdkmcp.ToolResultContent{
				ToolUseID: r.CallID,
				Content:   []sdkmcp.Content{&sdkmcp.TextContent{Text: r.Text}},
				IsError:   r.IsError,
			})
		}
		if len(content) == 0 {
			continue
		}
		p.Messages = append(p.Messages, &sdkmcp.SamplingMessageV2{Role: sdkmcp.Role(m.Role), Content: content})
	}
	return p, nil
}

// samplingReply reads the caller's answer.
func samplingReply(res *sdkmcp.CreateMessageWithToolsResult) (*Reply, error) {
	r := &Reply{StopReason: res.StopReason, Model: res.Model}
	for _, c := range res.Content {
		switch c := c.(type) {
		case *sdkmcp.TextContent:
			if r.Text != "" {
				r.Text += "\n"
			}
			r.Text += c.Text
		case *sdkmcp.ToolUseContent:
			args, err := json.Marshal(c.Input)
			if err != nil {
				return nil, fmt.Errorf("borrowed model: tool call %s: %w", c.ID, err)
			}
			if c.Input == nil {
				args = []byte("{}")
			}
			r.ToolCalls = append(r.ToolCalls, ToolCall{ID: c.ID, Name: c.Name, Args: args})
		}
	}
	return r, nil
}
