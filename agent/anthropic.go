package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
)

// anthropicDefaultURL is the Anthropic API's base URL, used when none is
// set. The library appends "v1/messages" to the base URL.
const anthropicDefaultURL = "https://api.anthropic.com"

// anthropicBackend is a Backend speaking the Anthropic Messages API through
// the official client library.
type anthropicBackend struct {
	msgs      anthropic.MessageService
	model     string
	url       string // base URL, for error messages
	maxTokens int    // the configuration's bound; 0: none
	redact    func(string) string
}

// newAnthropic returns a backend speaking the Anthropic Messages API at
// cfg.URL (empty: Anthropic's own). The library adds "/v1/messages" to the
// URL; a URL written ending in "/v1", as OpenAI-style URLs are, has it
// taken off.
// cfg.Model and apiKey are required.
//
// The client reads nothing from the environment (no ANTHROPIC_API_KEY,
// ANTHROPIC_BASE_URL, profiles, ...): the key is the one the configuration
// names.
func newAnthropic(cfg ModelConfig, apiKey string) (Backend, error) {
	if cfg.Model == "" {
		return nil, errors.New(`anthropic backend: no model: set "model" (e.g. "claude-sonnet-4-5")`)
	}
	url := strings.TrimSuffix(strings.TrimSuffix(cfg.URL, "/"), "/v1")
	if url == "" {
		url = anthropicDefaultURL
	}
	if apiKey == "" {
		return nil, fmt.Errorf("anthropic backend (model %s at %s): no API key: set %q to name an environment variable holding it, and set that variable", cfg.Model, url, "apiKeyEnv")
	}
	if cfg.MaxTokens < 0 {
		return nil, fmt.Errorf("anthropic backend (model %s at %s): maxTokens %d is negative", cfg.Model, url, cfg.MaxTokens)
	}
	client := anthropic.NewClient(
		option.WithoutEnvironmentDefaults(),
		option.WithBaseURL(url),
		option.WithAPIKey(apiKey),
		option.WithMaxRetries(modelRetries),
	)
	return &anthropicBackend{
		msgs:      client.Messages,
		model:     cfg.Model,
		url:       url,
		maxTokens: cfg.MaxTokens,
		redact:    redactor(apiKey),
	}, nil
}

// Complete asks the model for the next turn of the conversation.
func (b *anthropicBackend) Complete(ctx context.Context, req *Request) (*Reply, error) {
	params, err := b.params(req)
	if err != nil {
		return nil, b.fail(err)
	}
	res, err := b.msgs.New(ctx, params)
	if err != nil {
		return nil, b.fail(err)
	}
	return anthropicReply(res), nil
}

// params translates a Request into the library's request parameters.
func (b *anthropicBackend) params(req *Request) (anthropic.MessageNewParams, error) {
	p := anthropic.MessageNewParams{
		Model:     anthropic.Model(b.model),
		MaxTokens: int64(maxTokens(b.maxTokens, req.MaxTokens)),
	}
	if req.System != "" {
		p.System = []anthropic.TextBlockParam{{Text: req.System}}
	}
	for i, m := range req.Messages {
		var blocks []anthropic.ContentBlockParamUnion
		switch m.Role {
		case User:
			// Tool results come first in the user turn that answers the
			// assistant's tool_use blocks.
			for _, r := range m.ToolResults {
				blocks = append(blocks, anthropic.NewToolResultBlock(r.CallID, r.Text, r.IsError))
			}
			if m.Text != "" {
				blocks = append(blocks, anthropic.NewTextBlock(m.Text))
			}
			if len(blocks) > 0 {
				p.Messages = append(p.Messages, anthropic.NewUserMessage(blocks...))
			}
		case Assistant:
			if m.Text != "" {
				blocks = append(blocks, anthropic.NewTextBlock(m.Text))
			}
			for _, c := range m.ToolCalls {
				var input any = json.RawMessage(c.Args)
				if len(c.Args) == 0 {
					input = map[string]any{}
				}
				blocks = append(blocks, anthropic.NewToolUseBlock(c.ID, input, c.Name))
			}
			if len(blocks) > 0 {
				p.Messages = append(p.Messages, anthropic.NewAssistantMessage(blocks...))
			}
		default:
			return p, fmt.Errorf("message %d: unknown role %q", i, m.Role)
		}
	}
	for _, t := range req.Tools {
		schema, err := schemaObject(t.InputSchema)
		if err != nil {
			return p, fmt.Errorf("tool %s: %w", t.Name, err)
		}
		in := anthropic.ToolInputSchemaParam{ExtraFields: map[string]any{}}
		for k, v := range schema {
			switch k {
			case "type": // always "object"
			case "properties":
				in.Properties = v
			case "required":
				for _, r := range asSlice(v) {
					if s, ok := r.(string); ok {
						in.Required = append(in.Required, s)
					}
				}
			default:
				in.ExtraFields[k] = v
			}
		}
		tool := anthropic.ToolUnionParamOfTool(in, t.Name)
		if t.Description != "" {
			tool.OfTool.Description = anthropic.String(t.Description)
		}
		p.Tools = append(p.Tools, tool)
	}
	return p, nil
}

// asSlice returns v as a slice, or nil.
func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

// anthropicReply translates the library's answer into a Reply.
func anthropicReply(res *anthropic.Message) *Reply {
	reply := &Reply{StopReason: string(res.StopReason), Model: string(res.Model)}
	var text []string
	for _, block := range res.Content {
		switch block.Type {
		case "text":
			text = append(text, block.Text)
		case "tool_use":
			args := block.Input
			if len(args) == 0 || string(args) == "null" {
				args = json.RawMessage("{}")
			}
			reply.ToolCalls = append(reply.ToolCalls, ToolCall{ID: block.ID, Name: block.Name, Args: args})
		}
	}
	reply.Text = strings.Join(text, "\n")
	return reply
}

// fail wraps an error of a completion with the backend, model and URL,
// with the API key taken out of its text.
func (b *anthropicBackend) fail(err error) error {
	var apiErr *anthropic.Error
	detail := err.Error()
	if errors.As(err, &apiErr) {
		// Error() holds the whole response body; say it shorter.
		detail = fmt.Sprintf("%d %s", apiErr.StatusCode, http.StatusText(apiErr.StatusCode))
		if t := apiErr.Type(); t != "" {
			detail += ": " + string(t)
		}
		if apiErr.Message != "" {
			detail += ": " + apiErr.Message
		}
		if apiErr.RequestID != "" {
			detail += " (request-id " + apiErr.RequestID + ")"
		}
	}
	return newModelError(fmt.Sprintf("anthropic messages (model %s at %s): %s", b.model, b.url, detail), err, b.redact)
}
