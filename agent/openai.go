package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	neturl "net/url"
	"strings"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"
)

// Defaults shared by the HTTP model backends.
const (
	// defaultMaxTokens bounds a completion when neither the configuration
	// nor the request says how long it may be. The Anthropic API requires a
	// bound; for OpenAI-compatible servers it stops a runaway local model.
	defaultMaxTokens = 4096
	// modelRetries is how many times a failed request (connection error,
	// 408, 409, 429, 5xx) is retried by the client library.
	modelRetries = 2
	// maxRetryWait bounds the wait between retries the OpenAI library
	// accepts from a server (Retry-After); a longer one ends the retries.
	maxRetryWait = 10 * time.Second
	// openAIDefaultURL is the OpenAI API's base URL, used when none is set.
	openAIDefaultURL = "https://api.openai.com/v1"
)

// openAIBackend is a Backend speaking the OpenAI chat-completions API
// through the official client library. It serves OpenAI itself and the
// servers that copy its API: Ollama, vLLM, llama.cpp, LM Studio.
type openAIBackend struct {
	svc       openai.ChatCompletionService
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
// The client reads nothing from the environment (no OPENAI_API_KEY,
// OPENAI_BASE_URL, ...): the key is the one the configuration names.
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
	opts := []option.RequestOption{
		option.WithBaseURL(url),
		option.WithMaxRetries(modelRetries),
		option.WithMaxRetryDelay(maxRetryWait),
	}
	if apiKey != "" {
		opts = append(opts, option.WithAPIKey(apiKey))
	}
	// NewChatCompletionService, not NewClient: NewClient adds defaults read
	// from OPENAI_* environment variables (a key, an organization, a base
	// URL), which must not reach a server the configuration did not name.
	return &openAIBackend{
		svc:       openai.NewChatCompletionService(opts...),
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

// Complete asks the model for the next turn of the conversation.
func (b *openAIBackend) Complete(ctx context.Context, req *Request) (*Reply, error) {
	params, err := b.params(req)
	if err != nil {
		return nil, b.fail(err)
	}
	res, err := b.svc.New(ctx, params)
	if err != nil {
		return nil, b.fail(err)
	}
	reply, err := openAIReply(res)
	if err != nil {
		return nil, b.fail(err)
	}
	return reply, nil
}

// params translates a Request into the library's request parameters.
func (b *openAIBackend) params(req *Request) (openai.ChatCompletionNewParams, error) {
	p := openai.ChatCompletionNewParams{Model: shared.ChatModel(b.model)}
	if req.System != "" {
		p.Messages = append(p.Messages, openai.SystemMessage(req.System))
	}
	for i, m := range req.Messages {
		switch m.Role {
		case User:
			// Tool results first: they must follow the assistant message
			// whose tool calls they answer.
			for _, r := range m.ToolResults {
				text := r.Text
				if r.IsError {
					text = "error: " + text
				}
				p.Messages = append(p.Messages, openai.ToolMessage(text, r.CallID))
			}
			if m.Text != "" || len(m.ToolResults) == 0 {
				p.Messages = append(p.Messages, openai.UserMessage(m.Text))
			}
		case Assistant:
			var a openai.ChatCompletionAssistantMessageParam
			if m.Text != "" {
				a.Content.OfString = openai.String(m.Text)
			}
			for _, c := range m.ToolCalls {
				args := string(c.Args)
				if len(c.Args) == 0 {
					args = "{}"
				}
				a.ToolCalls = append(a.ToolCalls, openai.ChatCompletionMessageToolCallUnionParam{
					OfFunction: &openai.ChatCompletionMessageFunctionToolCallParam{
						ID: c.ID,
						Function: openai.ChatCompletionMessageFunctionToolCallFunctionParam{
							Name:      c.Name,
							Arguments: args,
						},
					},
				})
			}
			p.Messages = append(p.Messages, openai.ChatCompletionMessageParamUnion{OfAssistant: &a})
		default:
			return p, fmt.Errorf("message %d: unknown role %q", i, m.Role)
		}
	}
	for _, t := range req.Tools {
		schema, err := schemaObject(t.InputSchema)
		if err != nil {
			return p, fmt.Errorf("tool %s: %w", t.Name, err)
		}
		fn := shared.FunctionDefinitionParam{Name: t.Name, Parameters: shared.FunctionParameters(schema)}
		if t.Description != "" {
			fn.Description = openai.String(t.Description)
		}
		p.Tools = append(p.Tools, openai.ChatCompletionFunctionTool(fn))
	}
	n := int64(maxTokens(b.maxTokens, req.MaxTokens))
	if b.official {
		// OpenAI's newer models refuse max_tokens.
		p.MaxCompletionTokens = openai.Int(n)
	} else {
		// What every compatible server understands.
		p.MaxTokens = openai.Int(n)
	}
	return p, nil
}

// openAIReply translates the library's answer into a Reply.
func openAIReply(res *openai.ChatCompletion) (*Reply, error) {
	if len(res.Choices) == 0 {
		return nil, errors.New("answer has no choices")
	}
	choice := res.Choices[0]
	msg := choice.Message
	reply := &Reply{Text: msg.Content, StopReason: choice.FinishReason, Model: res.Model}
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

// fail wraps an error of a completion with the backend, model and URL,
// with the API key taken out of its text.
func (b *openAIBackend) fail(err error) error {
	var apiErr *openai.Error
	detail := err.Error()
	if errors.As(err, &apiErr) {
		// Error() says only the status; the server's own message says why.
		detail = fmt.Sprintf("%d %s", apiErr.StatusCode, http.StatusText(apiErr.StatusCode))
		if apiErr.Message != "" {
			detail += ": " + apiErr.Message
		}
	}
	return newModelError(fmt.Sprintf("openai chat completion (model %s at %s): %s", b.model, b.url, detail), err, b.redact)
}

// modelError is the error of a model backend. Its text never holds the API
// key. It does not keep the client library's error: that error carries the
// HTTP request, whose headers hold the key, and may echo the server's
// answer, which may too. It unwraps only to context.Canceled or
// context.DeadlineExceeded, when the request ended for that reason.
type modelError struct {
	msg   string
	cause error
}

// newModelError returns a modelError with message msg (redacted) for the
// library error cause.
func newModelError(msg string, cause error, redact func(string) string) error {
	e := &modelError{msg: redact(msg)}
	switch {
	case errors.Is(cause, context.Canceled):
		e.cause = context.Canceled
	case errors.Is(cause, context.DeadlineExceeded):
		e.cause = context.DeadlineExceeded
	}
	return e
}

func (e *modelError) Error() string { return e.msg }
func (e *modelError) Unwrap() error { return e.cause }

// redactor returns a function that replaces every occurrence of key in a
// text with "[redacted]".
func redactor(key string) func(string) string {
	return func(s string) string {
		if key == "" {
			return s
		}
		return strings.ReplaceAll(s, key, "[redacted]")
	}
}

// maxTokens is the bound of one completion: the request's, capped by the
// configuration's, or a default.
func maxTokens(configured, requested int) int {
	n := requested
	if configured > 0 && (n <= 0 || n > configured) {
		n = configured
	}
	if n <= 0 {
		n = defaultMaxTokens
	}
	return n
}

// schemaObject decodes a tool's JSON Schema into a map; an empty schema is
// an object taking no properties.
func schemaObject(raw json.RawMessage) (map[string]any, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return map[string]any{"type": "object", "properties": map[string]any{}}, nil
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("input schema is not a JSON object: %w", err)
	}
	if _, ok := m["type"]; !ok {
		m["type"] = "object"
	}
	return m, nil
}
