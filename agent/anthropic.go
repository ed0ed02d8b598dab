package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

const (
	// anthropicDefaultURL is the Anthropic API's base URL, used when none is
	// set. "/v1/messages" is appended to the base URL.
	anthropicDefaultURL = "https://api.anthropic.com"
	// anthropicVersion is the API version asked for (the anthropic-version
	// header), the one anthropic-sdk-go v2.15.0 sent.
	anthropicVersion = "2026-10-21"
)

// anthropicBackend is a Backend speaking the Anthropic Messages API over
// net/http.
type anthropicBackend struct {
	api       apiClient
	endpoint  string // url + "/v1/messages"
	model     string
	url       string // base URL, for error messages
	maxTokens int    // the configuration's bound; 0: none
	redact    func(string) string
}

// newAnthropic returns a backend speaking the Anthropic Messages API at
// cfg.URL (empty: Anthropic's own). "/v1/messages" is added to the URL; a
// URL written ending in "/v1", as OpenAI-style URLs are, has it taken off.
// cfg.Model and apiKey are required.
//
// Nothing is read from the environment (no ANTHROPIC_API_KEY,
// ANTHROPIC_AUTH_TOKEN, ANTHROPIC_BASE_URL, profiles, ...): the key is the
// one the configuration names, sent only to the URL it names.
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
	header := http.Header{}
	// As anthropic-sdk-go v2 did: the key as a bearer token.
	header.Set("Authorization", "Bearer "+apiKey)
	header.Set("Anthropic-Version", anthropicVersion)
	return &anthropicBackend{
		api:       apiClient{http: http.DefaultClient, header: header, parseError: parseAnthropicError},
		endpoint:  url + "/v1/messages",
		model:     cfg.Model,
		url:       url,
		maxTokens: cfg.MaxTokens,
		redact:    redactor(apiKey),
	}, nil
}

// The Messages API's wire format, as far as the backend uses it
// (https://docs.anthropic.com/en/api/messages).
type (
	anthropicRequest struct {
		Model     string             `json:"model"`
		MaxTokens int                `json:"max_tokens"`
		System    []anthropicBlock   `json:"system,omitempty"`
		Messages  []anthropicMessage `json:"messages"`
		Tools     []anthropicTool    `json:"tools,omitempty"`
	}
	anthropicMessage struct {
		Role    string           `json:"role"`
		Content []anthropicBlock `json:"content"`
	}
	// anthropicBlock is a content block of the kinds the backend sends and
	// reads: text, tool_use, tool_result.
	anthropicBlock struct {
		Type string `json:"type"`
		Text string `json:"text,omitempty"`
		// tool_use
		ID    string          `json:"id,omitempty"`
		Name  string          `json:"name,omitempty"`
		Input json.RawMessage `json:"input,omitempty"`
		// tool_result
		ToolUseID string           `json:"tool_use_id,omitempty"`
		Content   []anthropicBlock `json:"content,omitempty"`
		IsError   *bool            `json:"is_error,omitempty"`
	}
	anthropicTool struct {
		Name        string         `json:"name"`
		Description string         `json:"description,omitempty"`
		InputSchema map[string]any `json:"input_schema"`
	}
	anthropicResponse struct {
		Model      string           `json:"model"`
		Content    []anthropicBlock `json:"content"`
		StopReason string           `json:"stop_reason"`
	}
)

// Complete asks the model for the next turn of the conversation.
func (b *anthropicBackend) Complete(ctx context.Context, req *Request) (*Reply, error) {
	params, err := b.params(req)
	if err != nil {
		return nil, b.fail(err)
	}
	var res anthropicResponse
	if err := b.api.post(ctx, b.endpoint, params, &res); err != nil {
		return nil, b.fail(err)
	}
	return anthropicReply(&res), nil
}

// params translates a Request into the API's request body.
func (b *anthropicBackend) params(req *Request) (*anthropicRequest, error) {
	p := &anthropicRequest{Model: b.model, MaxTokens: maxTokens(b.maxTokens, req.MaxTokens)}
	if req.System != "" {
		p.System = []anthropicBlock{{Type: "text", Text: req.System}}
	}
	for i, m := range req.Messages {
		var blocks []anthropicBlock
		switch m.Role {
		case User:
			// Tool results come first in the user turn that answers the
			// assistant's tool_use blocks.
			for _, r := range m.ToolResults {
				isError := r.IsError
				blocks = append(blocks, anthropicBlock{
					Type:      "tool_result",
					ToolUseID: r.CallID,
					Content:   []anthropicBlock{{Type: "text", Text: r.Text}},
					IsError:   &isError,
				})
			}
			if m.Text != "" {
				blocks = append(blocks, anthropicBlock{Type: "text", Text: m.Text})
			}
		case Assistant:
			if m.Text != "" {
				blocks = append(blocks, anthropicBlock{Type: "text", Text: m.Text})
			}
			for _, c := range m.ToolCalls {
				input := c.Args
				if len(input) == 0 {
					input = json.RawMessage("{}")
				}
				if !json.Valid(input) {
					return p, fmt.Errorf("message %d: tool call %s (%s): arguments are not valid JSON", i, c.ID, c.Name)
				}
				blocks = append(blocks, anthropicBlock{Type: "tool_use", ID: c.ID, Name: c.Name, Input: input})
			}
		default:
			return p, fmt.Errorf("message %d: unknown role %q", i, m.Role)
		}
		if len(blocks) > 0 {
			p.Messages = append(p.Messages, anthropicMessage{Role: string(m.Role), Content: blocks})
		}
	}
	for _, t := range req.Tools {
		schema, err := schemaObject(t.InputSchema)
		if err != nil {
			return p, fmt.Errorf("tool %s: %w", t.Name, err)
		}
		schema["type"] = "object" // the only type the API takes
		p.Tools = append(p.Tools, anthropicTool{Name: t.Name, Description: t.Description, InputSchema: schema})
	}
	return p, nil
}

// anthropicReply translates the API's answer into a Reply.
func anthropicReply(res *anthropicResponse) *Reply {
	reply := &Reply{StopReason: res.StopReason, Model: res.Model}
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

// parseAnthropicError reads an error answer: {"type": "error", "error": {"type",
// "message"}}, with the request's id in the request-id header.
func parseAnthropicError(status int, header http.Header, body []byte) *apiError {
	msg, typ := errorMessage(body)
	return &apiError{Status: status, Type: typ, Message: msg, RequestID: header.Get("Request-Id")}
}

// fail wraps an error of a completion with the backend, model and URL,
// with the API key taken out of its text.
func (b *anthropicBackend) fail(err error) error {
	return newModelError(fmt.Sprintf("anthropic messages (model %s at %s): %v", b.model, b.url, err), err, b.redact)
}
