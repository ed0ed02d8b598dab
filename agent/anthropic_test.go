package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestAnthropicToolConversation drives a whole tool-using conversation
// through the Anthropic backend against a loopback server speaking
// the Messages API: task → tool_use → tool_result → answer, checking what
// goes over the wire each way.
func TestAnthropicToolConversation(t *testing.T) {
	t.Setenv("ANTHROPIC_API_KEY", "sk-ant-from-the-environment-not-configured")
	t.Setenv("ANTHROPIC_AUTH_TOKEN", "token-from-the-environment")
	t.Setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:1/never")
	const model = "claude-sonnet-4-5"
	api := newFakeAnthropic(t, func(n int, r *fakeRequest) fakeResponse {
		if n == 0 {
			return anthropicToolUseAnswer(model, "toolu_01A", "translate", map[string]any{"text": "hello", "to": "fr"})
		}
		return anthropicTextAnswer(model, "hello is bonjour in French")
	})
	b, err := newAnthropic(ModelConfig{Backend: "anthropic", Model: model, URL: api.baseURL()}, testKey)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// Turn 1: the task; the model answers with text and a tool_use block.
	req := &Request{
		System:    "You translate.",
		Messages:  []Message{{Role: User, Text: "Say hello in French."}},
		Tools:     []ToolSpec{translateTool},
		MaxTokens: 1000,
	}
	reply, err := b.Complete(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(reply.ToolCalls) != 1 || reply.ToolCalls[0].ID != "toolu_01A" || reply.ToolCalls[0].Name != "translate" {
		t.Fatalf("reply tool calls = %+v, want one toolu_01A to translate", reply.ToolCalls)
	}
	if !jsonEqual(t, reply.ToolCalls[0].Args, `{"text":"hello","to":"fr"}`) {
		t.Errorf("args = %s", reply.ToolCalls[0].Args)
	}
	if reply.Text != "I will translate it." || reply.StopReason != "tool_use" || reply.Model != model {
		t.Errorf("reply = %+v", reply)
	}

	got := api.requests()[0]
	if got.Path != "/v1/messages" {
		t.Errorf("path = %s", got.Path)
	}
	// The key goes as a bearer token, as anthropic-sdk-go v2 sent it, not
	// in x-api-key; either way it must be the configured key, not one from
	// ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN.
	if h := got.Header.Get("Authorization"); h != "Bearer "+testKey {
		t.Errorf("Authorization = %q, want the configured key", h)
	}
	if h := got.Header.Get("X-Api-Key"); h != "" {
		t.Errorf("x-api-key = %q: the environment leaked into the client", h)
	}
	if h := got.Header.Get("Anthropic-Version"); h != anthropicVersion {
		t.Errorf("anthropic-version = %q, want %q", h, anthropicVersion)
	}
	if m := dig(got.Body, "model"); m != model {
		t.Errorf("model = %v", m)
	}
	if m := dig(got.Body, "max_tokens"); m != float64(1000) {
		t.Errorf("max_tokens = %v, want the request's 1000", m)
	}
	if s := dig(got.Body, "system", 0, "text"); s != "You translate." {
		t.Errorf("system = %v", dig(got.Body, "system"))
	}
	if r, c := dig(got.Body, "messages", 0, "role"), dig(got.Body, "messages", 0, "content", 0, "text"); r != "user" || c != "Say hello in French." {
		t.Errorf("messages[0] = %v %v, want the task", r, c)
	}
	if name := dig(got.Body, "tools", 0, "name"); name != "translate" {
		t.Errorf("tools[0] name = %v", name)
	}
	if !jsonEqual(t, dig(got.Body, "tools", 0, "input_schema"), translateTool.InputSchema) {
		t.Errorf("tools[0] input_schema = %v, want the input schema", dig(got.Body, "tools", 0, "input_schema"))
	}
	if d := dig(got.Body, "tools", 0, "description"); d != translateTool.Description {
		t.Errorf("tools[0] description = %v", d)
	}

	// Turn 2: the tool's result goes back (one ok, one failed); the model
	// answers.
	req.Messages = append(req.Messages,
		Message{Role: Assistant, Text: reply.Text, ToolCalls: reply.ToolCalls},
		Message{Role: User, ToolResults: []ToolResult{{CallID: "toolu_01A", Text: "bonjour"}}},
	)
	reply, err = b.Complete(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if reply.Text != "hello is bonjour in French" || len(reply.ToolCalls) != 0 || reply.StopReason != "end_turn" {
		t.Errorf("reply = %+v, want the text answer", reply)
	}
	got = api.requests()[1]
	msgs, _ := dig(got.Body, "messages").([]any)
	if len(msgs) != 3 {
		t.Fatalf("sent %d messages, want 3 (task, assistant tool_use, tool_result): %s", len(msgs), got.Raw)
	}
	if r, typ, txt := dig(msgs, 1, "role"), dig(msgs, 1, "content", 0, "type"), dig(msgs, 1, "content", 0, "text"); r != "assistant" || typ != "text" || txt != "I will translate it." {
		t.Errorf("messages[1] content[0] = %v %v %v", r, typ, txt)
	}
	if typ, id, name := dig(msgs, 1, "content", 1, "type"), dig(msgs, 1, "content", 1, "id"), dig(msgs, 1, "content", 1, "name"); typ != "tool_use" || id != "toolu_01A" || name != "translate" {
		t.Errorf("messages[1] content[1] = %v %v %v, want the tool_use block", typ, id, name)
	}
	if !jsonEqual(t, dig(msgs, 1, "content", 1, "input"), `{"text":"hello","to":"fr"}`) {
		t.Errorf("tool_use input = %v, want the call's arguments as an object", dig(msgs, 1, "content", 1, "input"))
	}
	if r, typ, id := dig(msgs, 2, "role"), dig(msgs, 2, "content", 0, "type"), dig(msgs, 2, "content", 0, "tool_use_id"); r != "user" || typ != "tool_result" || id != "toolu_01A" {
		t.Errorf("messages[2] = %v %v %v, want a tool_result for toolu_01A", r, typ, id)
	}
	if txt := dig(msgs, 2, "content", 0, "content", 0, "text"); txt != "bonjour" {
		t.Errorf("tool_result content = %v", dig(msgs, 2, "content", 0, "content"))
	}
	if e := dig(msgs, 2, "content", 0, "is_error"); e == true {
		t.Errorf("tool_result is_error = %v, want false", e)
	}
}

// TestAnthropicToolError: a failed tool result goes back as a tool_result
// block with is_error set, next to the user's text.
func TestAnthropicToolError(t *testing.T) {
	api := newFakeAnthropic(t, func(int, *fakeRequest) fakeResponse { return anthropicTextAnswer("claude-x", "sorry") })
	// A URL written with /v1, as for OpenAI, works too.
	b, err := newAnthropic(ModelConfig{Backend: "anthropic", Model: "claude-x", URL: api.baseURL() + "/v1/", MaxTokens: 300}, testKey)
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Complete(context.Background(), &Request{
		MaxTokens: 2000, // more than the configuration allows
		Messages: []Message{
			{Role: User, Text: "translate hello"},
			{Role: Assistant, ToolCalls: []ToolCall{{ID: "toolu_1", Name: "translate"}}},
			{Role: User, Text: "please hurry", ToolResults: []ToolResult{{CallID: "toolu_1", Text: "peer unreachable", IsError: true}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := api.requests()[0]
	if m := dig(got.Body, "max_tokens"); m != float64(300) {
		t.Errorf("max_tokens = %v, want the configuration's bound 300", m)
	}
	if !jsonEqual(t, dig(got.Body, "messages", 1, "content", 0, "input"), `{}`) {
		t.Errorf("tool_use input = %v, want {} for a call without arguments", dig(got.Body, "messages", 1, "content", 0, "input"))
	}
	user := dig(got.Body, "messages", 2, "content")
	if typ, e := dig(user, 0, "type"), dig(user, 0, "is_error"); typ != "tool_result" || e != true {
		t.Errorf("content[0] = %v is_error %v, want a failed tool_result", typ, e)
	}
	if typ, txt := dig(user, 1, "type"), dig(user, 1, "text"); typ != "text" || txt != "please hurry" {
		t.Errorf("content[1] = %v %v, want the text after the tool result", typ, txt)
	}
}

// TestAnthropicConfig: model and key are required, and the error for a
// missing key names the configuration field, not a value.
func TestAnthropicConfig(t *testing.T) {
	t.Setenv("ANTHROPIC_API_KEY", "sk-ant-from-the-environment-not-configured")
	if _, err := newAnthropic(ModelConfig{Backend: "anthropic", Model: "claude-x"}, ""); err == nil || !strings.Contains(err.Error(), "apiKeyEnv") {
		t.Errorf("no key: err = %v, want one naming apiKeyEnv", err)
	}
	if _, err := newAnthropic(ModelConfig{Backend: "anthropic"}, testKey); err == nil || !strings.Contains(err.Error(), "model") {
		t.Errorf("no model: err = %v", err)
	}
}

// TestAnthropicServerErrors: 500, 529 and 429 are retried a bounded number
// of times and end in an error naming backend, model, URL, status and the
// API's error type and message (or a proxy's text); 401, 400 and a 429
// asking for a longer wait than maxRetryWait are not retried; no error
// holds the key, even when the server echoes it.
func TestAnthropicServerErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		resp     fakeResponse
		attempts int
		want     string
	}{
		{"500", anthropicError(500, "api_error", "Internal server error"), 1 + modelRetries, "500 Internal Server Error: api_error: Internal server error (request-id req_fake)"},
		{"529", anthropicError(529, "overloaded_error", "Overloaded"), 1 + modelRetries, "529: overloaded_error: Overloaded (request-id req_fake)"},
		{"429", anthropicError(429, "rate_limit_error", "Rate limited"), 1 + modelRetries, "429 Too Many Requests: rate_limit_error: Rate limited (request-id req_fake)"},
		{"401 echoing the key", anthropicError(401, "authentication_error", "invalid x-api-key "+testKey), 1, "401 Unauthorized: authentication_error: invalid x-api-key [redacted] (request-id req_fake)"},
		{"429 asking to wait a minute", fakeResponse{Status: 429, Header: map[string]string{"Retry-After": "60", "Request-Id": "req_1"},
			Body: map[string]any{"type": "error", "error": map[string]any{"type": "rate_limit_error", "message": "Number of request tokens has exceeded your per-minute rate limit"}}}, 1,
			"429 Too Many Requests: rate_limit_error: Number of request tokens has exceeded your per-minute rate limit (request-id req_1)"},
		{"400 invalid request", fakeResponse{Status: 400, Body: map[string]any{"type": "error", "error": map[string]any{"type": "invalid_request_error", "message": "max_tokens: Field required"}}}, 1,
			"400 Bad Request: invalid_request_error: max_tokens: Field required"},
		{"a proxy's text", fakeResponse{Status: 503, Header: map[string]string{"Retry-After-Ms": "1"}, Body: []byte("upstream connect error")}, 1 + modelRetries,
			"503 Service Unavailable: upstream connect error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := newFakeAnthropic(t, func(int, *fakeRequest) fakeResponse { return tc.resp })
			b, err := newAnthropic(ModelConfig{Backend: "anthropic", Model: "claude-x", URL: api.baseURL()}, testKey)
			if err != nil {
				t.Fatal(err)
			}
			_, err = b.Complete(context.Background(), &Request{Messages: []Message{{Role: User, Text: "hi"}}})
			if err == nil {
				t.Fatal("no error")
			}
			want := "anthropic messages (model claude-x at " + api.baseURL() + "): " + tc.want
			if err.Error() != want {
				t.Errorf("error = %q\nwant    %q", err, want)
			}
			if n := len(api.requests()); n != tc.attempts {
				t.Errorf("%d attempts, want %d", n, tc.attempts)
			}
			for _, r := range api.requests() {
				if r.Header.Get("Authorization") != "Bearer "+testKey {
					t.Errorf("the key did not reach the server: the test proves nothing")
				}
			}
			var apiErr *apiError
			if errors.As(err, &apiErr) {
				t.Errorf("errors.As(*apiError) found the API's error: the backend error unwraps only to context errors")
			}
			for e := error(err); e != nil; e = errors.Unwrap(e) {
				if strings.Contains(e.Error(), testKey) {
					t.Errorf("error holds the key: %v", e)
				}
			}
		})
	}
}

// TestAnthropicCancelHangingRequest: cancelling the context ends a request
// the server never answers.
func TestAnthropicCancelHangingRequest(t *testing.T) {
	api := newFakeAnthropic(t, func(int, *fakeRequest) fakeResponse { return fakeResponse{Hang: true} })
	b, err := newAnthropic(ModelConfig{Backend: "anthropic", Model: "claude-x", URL: api.baseURL()}, testKey)
	if err != nil {
		t.Fatal(err)
	}
	testCancelHanging(t, api, b)
}
