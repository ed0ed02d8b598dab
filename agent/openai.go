package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	neturl "net/url"
	"strings"
)

// openAIDefaultURL is the OpenAI API's base URL, used when none is set.
const openAIDefaultURL = "https://api.openai.com/v1"

// openAIBackend is a Backend speaking the OpenAI chat-completions API over
// net/http. It serves OpenAI itself and the servers that copy its API:
// Ollama, vLLM, llama.cpp, LM Studio.
type openAIBackend struct {
	api       apiClient
	endpoint  string // url + "/chat/completions"
	model     string
	url       string // base URL, for error messages
	maxTokens int    // the configuration's bound; 0: none
	official  bool   // api.openai.com: max_completion_tokens, not max_tokens
	redact    func(string) string
}

// newOpenAI returns a backend speaking the OpenAI chat-completions API at
// cfg.URL (empty: OpenAI's own). cfg.Model is required. apiKey may be empty
// only for a server of one's own (cfg.URL set): Ollama and most local
// servers need none.
//
// Nothing is read from the environment (no OPENAI_API_KEY,
// OPENAI_BASE_URL, OPENAI_ORG_ID, ...): the key is the one the
// configuration names, sent only to the URL it names.
func newOpenAI(cfg ModelConfig, apiKey string) (Backend, error) {
	if cfg.Model == "" {
		return nil, errors.New(`openai backend: no model: set "model" (e.g. "gpt-4o-mini", or "llama3.1" for Ollama)`)
	}
	url := cfg.URL
	if url == "" {
		url = openAIDefaultURL
		if apiKey == "" {
			return nil, fmt.Errorf("openai backend (model %s at %s): no API key: set %q to name an environment variable holding it, and set that variable", cfg.Model, url, "apiKeyEnv")
		}
	}
	if cfg.MaxTokens < 0 {
		return nil, fmt.Errorf("openai backend (model %s at %s): maxTokens %d is negative", cfg.Model, url, cfg.MaxTokens)
	}
	header := http.Header{}
	if apiKey != "" {
		header.Set("Authorization", "Bearer "+apiKey)
	}
	return &openAIBackend{
		api:       apiClient{http: http.DefaultClient, header: header, parseError: parseOpenAIError},
		endpoint:  strings.TrimSuffix(url, "/") + "/chat/completions",
		model:     cfg.Model,
		url:       url,
		maxTokens: cfg.MaxTokens,
		official:  isOpenAI(url),
		redact:    redactor(apiKey),
	}, nil
}

// isOpenAI reports whether base is OpenAI's own API, whose newer models
// take max_completion_tokens and refuse max_tokens.
func isOpenAI(base string) bool {
	u, err := neturl.Parse(base)
	return err == nil && strings.EqualFold(u.Hostname(), "api.openai.com")
}

// The chat-completions wire format, as far as the backend uses it
// (https://platform.openai.com/docs/api-reference/chat/create).
type (
	openAIRequest struct {
		Model               string          `json:"model"`
		Messages            []openAIMessage `json:"messages"`
		Tools               []openAITool    `json:"tools,omitempty"`
		MaxTokens           int             `json:"max_tokens,omitempty"`
		MaxCompletionTokens int             `json:"max_completion_tokens,omitempty"`
	}
	// openAIMessage is a message of any role: system, user and tool
	// messages carry a string content; an assistant message may carry none
	// (content null or absent) and tool calls.
	openAIMessage struct {
		Role       string           `json:"role"`
		Content    *string          `json:"content,omitempty"`
		Refusal    string           `json:"refusal,omitempty"`
		ToolCalls  []openAIToolCall `json:"tool_calls,omitempty"`
		ToolCallID string           `json:"tool_call_id,omitempty"`
	}
	openAIToolCall struct {
		ID       string `json:"id"`
		Type     string `json:"type"` // "function"
		Function struct {
			Name      string `json:"name"`
			Arguments string `json:"arguments"` // a JSON object, as a string
		} `json:"function"`
	}
	openAITool struct {
		Type     string         `json:"type"` // "function"
		Function openAIFunction `json:"function"`
	}
	openAIFunction struct {
		Name        string         `json:"name"`
		Description string         `json:"description,omitempty"`
		Parameters  map[string]any `json:"parameters"`
	}
	openAIResponse struct {
		Model   string `json:"model"`
		Choices []struct {
			FinishReason string        `json:"finish_reason"`
			Message      openAIMessage `json:"message"`
		} `json:"choices"`
	}
)

// Complete asks the model for the next turn of the conversation.
func (b *openAIBackend) Complete(ctx context.Context, req *Request) (*Reply, error) {
	params, err := b.params(req)
	if err != nil {
		return nil, b.fail(err)
	}
	var res openAIResponse
	if err := b.api.post(ctx, b.endpoint, params, &res); err != nil {
		return nil, b.fail(err)
	}
	reply, err := openAIReply(&res)
	if err != nil {
		return nil, b.fail(err)
	}
	return reply, nil
}

// params translates a Request into the API's request body.
func (b *openAIBackend) params(req *Request) (*openAIRequest, error) {
	p := &openAIRequest{Model: b.model}
	text := func(s string) *string { return &s }
	if req.System != "" {
		p.Messages = append(p.Messages, openAIMessage{Role: "system", Content: text(req.System)})
	}
	for i, m := range req.Messages {
		switch m.Role {
		case User:
			// Tool results first: they must follow the assistant message
			// whose tool calls they answer.
			for _, r := range m.ToolResults {
				t := r.Text
				if r.IsError {
					t = "error: " + t
				}
				p.Messages = append(p.Messages, openAIMessage{Role: "tool", Content: text(t), ToolCallID: r.CallID})
			}
			if m.Text != "" || len(m.ToolResults) == 0 {
				p.Messages = append(p.Messages, openAIMessage{Role: "user", Content: text(m.Text)})
			}
		case Assistant:
			a := openAIMessage{Role: "assistant"}
			if m.Text != "" {
				a.Content = text(m.Text)
			}
			for _, c := range m.ToolCalls {
				args := string(c.Args)
				if len(c.Args) == 0 {
					args = "{}"
				}
				call := openAIToolCall{ID: c.ID, Type: "function"}
				call.Function.Name = c.Name
				call.Function.Arguments = args
				a.ToolCalls = append(a.ToolCalls, call)
			}
			p.Messages = append(p.Messages, a)
		default:
			return p, fmt.Errorf("message %d: unknown role %q", i, m.Role)
		}
	}
	for _, t := range req.Tools {
		schema, err := schemaObject(t.InputSchema)
		if err != nil {
			return p, fmt.Errorf("tool %s: %w", t.Name, err)
		}
		p.Tools = append(p.Tools, openAITool{Type: "function", Function: openAIFunction{Name: t.Name, Description: t.Description, Parameters: schema}})
	}
	n := maxTokens(b.maxTokens, req.MaxTokens)
	if b.official {
		// OpenAI's newer models refuse max_tokens.
		p.MaxCompletionTokens = n
	} else {
		// What every compatible server understands.
		p.MaxTokens = n
	}
	return p, nil
}

// openAIReply translates the API's answer into a Reply.
func openAIReply(res *openAIResponse) (*Reply, error) {
	if len(res.Choices) == 0 {
		return nil, errors.New("answer has no choices")
	}
	choice := res.Choices[0]
	msg := choice.Message
	reply := &Reply{StopReason: choice.FinishReason, Model: res.Model}
	if msg.Content != nil {
		reply.Text = *msg.Content
	}
	if reply.Text == "" && msg.Refusal != "" {
		reply.Text = msg.Refusal
	}
	for i, c := range msg.ToolCalls {
		if c.Type != "" && c.Type != "function" {
			continue // custom tools are never offered
		}
		args := strings.TrimSpace(c.Function.Arguments)
		if args == "" {
			args = "{}"
		}
		if !json.Valid([]byte(args)) {
			return nil, fmt.Errorf("tool call %d (%s): arguments are not valid JSON", i, c.Function.Name)
		}
		id := c.ID
		if id == "" {
			id = fmt.Sprintf("call_%d", i)
		}
		reply.ToolCalls = append(reply.ToolCalls, ToolCall{ID: id, Name: c.Function.Name, Args: json.RawMessage(args)})
	}
	return reply, nil
}

// parseOpenAIError reads an error answer: {"error": {"message", "type",
// "param", "code"}} from OpenAI, other shapes from compatible servers. The
// message alone is kept: OpenAI's types say little more than the status.
func parseOpenAIError(status int, _ http.Header, body []byte) *apiError {
	msg, _ := errorMessage(body)
	return &apiError{Status: status, Message: msg}
}

// fail wraps an error of a completion with the backend, model and URL,
// with the API key taken out of its text.
func (b *openAIBackend) fail(err error) error {
	return newModelError(fmt.Sprintf("openai chat completion (model %s at %s): %v", b.model, b.url, err), err, b.redact)
}
