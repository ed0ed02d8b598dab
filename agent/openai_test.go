package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// testKey is an API key for the fake servers: distinctive, so that a search
// for it cannot hit anything else.
const testKey = "sk-test-7f3a9c1e5b2d4f6a8c0e"

// translateTool is the tool the model is offered in the backend tests.
var translateTool = ToolSpec{
	Name:        "translate",
	Description: "Translate text into another language.",
	InputSchema: []byte(`{"type":"object","properties":{"text":{"type":"string"},"to":{"type":"string"}},"required":["text","to"]}`),
}

// TestOpenAIToolConversation drives a whole tool-calling conversation through
// the OpenAI backend against a loopback server speaking its wire
// format: task → tool call → tool result → answer, checking what goes over
// the wire each way.
func TestOpenAIToolConversation(t *testing.T) {
	t.Setenv("OPENAI_API_KEY", "sk-from-the-environment-not-configured")
	t.Setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/never")
	t.Setenv("OPENAI_ORG_ID", "org-from-the-environment")
	api := newFakeOpenAI(t, func(n int, r *fakeRequest) fakeResponse {
		if n == 0 {
			return openAIToolCallAnswer("llama3.1", "call_abc123", "translate", `{"text":"hello","to":"fr"}`)
		}
		return openAITextAnswer("llama3.1", "hello is bonjour in French")
	})
	b, err := newOpenAI(ModelConfig{Backend: "openai", Model: "llama3.1", URL: api.baseURL(), MaxTokens: 500}, testKey)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// Turn 1: the task; the model calls a tool.
	req := &Request{
		System:   "You translate.",
		Messages: []Message{{Role: User, Text: "Say hello in French."}},
		Tools:    []ToolSpec{translateTool},
	}
	reply, err := b.Complete(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(reply.ToolCalls) != 1 || reply.ToolCalls[0].ID != "call_abc123" || reply.ToolCalls[0].Name != "translate" {
		t.Fatalf("reply tool calls = %+v, want one call_abc123 to translate", reply.ToolCalls)
	}
	if !jsonEqual(t, reply.ToolCalls[0].Args, `{"text":"hello","to":"fr"}`) {
		t.Errorf("args = %s", reply.ToolCalls[0].Args)
	}
	if reply.StopReason != "tool_calls" || reply.Model != "llama3.1" {
		t.Errorf("stop reason %q, model %q; want tool_calls, llama3.1", reply.StopReason, reply.Model)
	}

	got := api.requests()[0]
	if got.Path != "/v1/chat/completions" {
		t.Errorf("path = %s", got.Path)
	}
	if h := got.Header.Get("Authorization"); h != "Bearer "+testKey {
		t.Errorf("Authorization = %q, want the configured key", h)
	}
	if h := got.Header.Get("OpenAI-Organization"); h != "" {
		t.Errorf("OpenAI-Organization = %q: the environment leaked into the client", h)
	}
	if m := dig(got.Body, "model"); m != "llama3.1" {
		t.Errorf("model = %v", m)
	}
	if m := dig(got.Body, "max_tokens"); m != float64(500) {
		t.Errorf("max_tokens = %v, want 500 (a compatible server gets max_tokens)", m)
	}
	if r, c := dig(got.Body, "messages", 0, "role"), dig(got.Body, "messages", 0, "content"); r != "system" || c != "You translate." {
		t.Errorf("messages[0] = %v %v, want the system prompt", r, c)
	}
	if r, c := dig(got.Body, "messages", 1, "role"), dig(got.Body, "messages", 1, "content"); r != "user" || c != "Say hello in French." {
		t.Errorf("messages[1] = %v %v, want the task", r, c)
	}
	if typ, name := dig(got.Body, "tools", 0, "type"), dig(got.Body, "tools", 0, "function", "name"); typ != "function" || name != "translate" {
		t.Errorf("tools[0] = %v %v", typ, name)
	}
	if !jsonEqual(t, dig(got.Body, "tools", 0, "function", "parameters"), translateTool.InputSchema) {
		t.Errorf("tools[0] parameters = %v, want the input schema", dig(got.Body, "tools", 0, "function", "parameters"))
	}
	if d := dig(got.Body, "tools", 0, "function", "description"); d != translateTool.Description {
		t.Errorf("tools[0] description = %v", d)
	}

	// Turn 2: the tool's result goes back; the model answers.
	req.Messages = append(req.Messages,
		Message{Role: Assistant, ToolCalls: reply.ToolCalls},
		Message{Role: User, ToolResults: []ToolResult{{CallID: "call_abc123", Text: "bonjour"}}},
	)
	reply, err = b.Complete(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if reply.Text != "hello is bonjour in French" || len(reply.ToolCalls) != 0 || reply.StopReason != "stop" {
		t.Errorf("reply = %+v, want the text answer", reply)
	}
	got = api.requests()[1]
	msgs, _ := dig(got.Body, "messages").([]any)
	if len(msgs) != 4 {
		t.Fatalf("sent %d messages, want 4 (system, task, assistant tool call, tool result): %s", len(msgs), got.Raw)
	}
	if r := dig(msgs, 2, "role"); r != "assistant" {
		t.Errorf("messages[2] role = %v", r)
	}
	if id, name := dig(msgs, 2, "tool_calls", 0, "id"), dig(msgs, 2, "tool_calls", 0, "function", "name"); id != "call_abc123" || name != "translate" {
		t.Errorf("messages[2] tool call = %v %v", id, name)
	}
	args, _ := dig(msgs, 2, "tool_calls", 0, "function", "arguments").(string)
	if !jsonEqual(t, args, `{"text":"hello","to":"fr"}`) {
		t.Errorf("messages[2] arguments = %q, want the call's arguments as a JSON string", args)
	}
	if r, id, c := dig(msgs, 3, "role"), dig(msgs, 3, "tool_call_id"), dig(msgs, 3, "content"); r != "tool" || id != "call_abc123" || c != "bonjour" {
		t.Errorf("messages[3] = %v %v %v, want the tool result for call_abc123", r, id, c)
	}
}

// TestOpenAIOfficialEndpoint: with no URL the backend needs a key, and a
// request for OpenAI itself bounds the answer with max_completion_tokens.
func TestOpenAIOfficialEndpoint(t *testing.T) {
	_, err := newOpenAI(ModelConfig{Backend: "openai", Model: "gpt-4o-mini"}, "")
	if err == nil || !strings.Contains(err.Error(), "apiKeyEnv") {
		t.Fatalf("no key for api.openai.com: err = %v, want one naming apiKeyEnv", err)
	}
	b, err := newOpenAI(ModelConfig{Backend: "openai", Model: "gpt-4o-mini"}, testKey)
	if err != nil {
		t.Fatal(err)
	}
	p, err := b.(*openAIBackend).params(&Request{Messages: []Message{{Role: User, Text: "hi"}}})
	if err != nil {
		t.Fatal(err)
	}
	if p.MaxCompletionTokens != defaultMaxTokens || p.MaxTokens != 0 {
		t.Errorf("max_completion_tokens %v, max_tokens %v; want the default in max_completion_tokens only", p.MaxCompletionTokens, p.MaxTokens)
	}
	if _, err := newOpenAI(ModelConfig{Backend: "openai", URL: "http://127.0.0.1:1/v1"}, ""); err == nil || !strings.Contains(err.Error(), "model") {
		t.Errorf("no model: err = %v", err)
	}
}

// TestOpenAILocalServerNeedsNoKey: an Ollama-like server gets no
// Authorization header at all when no key is configured, even with
// OPENAI_API_KEY in the environment.
func TestOpenAILocalServerNeedsNoKey(t *testing.T) {
	t.Setenv("OPENAI_API_KEY", "sk-from-the-environment-not-configured")
	api := newFakeOpenAI(t, func(int, *fakeRequest) fakeResponse { return openAITextAnswer("llama3.1", "hi") })
	b, err := newOpenAI(ModelConfig{Backend: "openai", Model: "llama3.1", URL: api.baseURL()}, "")
	if err != nil {
		t.Fatal(err)
	}
	reply, err := b.Complete(context.Background(), &Request{Messages: []Message{{Role: User, Text: "hi"}}})
	if err != nil {
		t.Fatal(err)
	}
	if reply.Text != "hi" {
		t.Errorf("text = %q", reply.Text)
	}
	got := api.requests()[0]
	if h := got.Header.Get("Authorization"); h != "" {
		t.Errorf("Authorization = %q, want none", h)
	}
	if m := dig(got.Body, "max_tokens"); m != float64(defaultMaxTokens) {
		t.Errorf("max_tokens = %v, want the default %d", m, defaultMaxTokens)
	}
	if _, ok := got.Body["tools"]; ok {
		t.Errorf("tools sent though none were offered: %s", got.Raw)
	}
}

// TestOpenAIServerErrors: 500, 502 and 429 are retried a bounded number of
// times and end in an error naming backend, model, URL, status and the
// server's message (in OpenAI's shape, Ollama's, vLLM's, or a proxy's
// text); 401, 404 and 400 are not retried, nor a 429 asking for a longer
// wait than maxRetryWait, nor an answer saying x-should-retry: false; no
// error holds the key, even when the server echoes it.
func TestOpenAIServerErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		resp     fakeResponse
		attempts int
		want     string
	}{
		{"500", openAIError(500, "internal error"), 1 + modelRetries, "500 Internal Server Error: internal error"},
		{"429", openAIError(429, "Rate limit reached"), 1 + modelRetries, "429 Too Many Requests: Rate limit reached"},
		{"401 echoing the key", openAIError(401, "Incorrect API key provided: "+testKey+"."), 1, "401 Unauthorized: Incorrect API key provided: [redacted]."},
		{"ollama's string error", fakeResponse{Status: 404, Body: map[string]any{"error": `model "llama9" not found, try pulling it first`}}, 1,
			`404 Not Found: model "llama9" not found, try pulling it first`},
		{"vllm's top-level message", fakeResponse{Status: 400, Body: map[string]any{"object": "error", "message": "max_tokens is too large", "type": "BadRequestError", "code": 400}}, 1,
			"400 Bad Request: max_tokens is too large"},
		{"a proxy's HTML", fakeResponse{Status: 502, Header: map[string]string{"Retry-After-Ms": "1"}, Body: []byte("<html><body>\n<h1>502 Bad Gateway</h1>\n</body></html>")}, 1 + modelRetries,
			"502 Bad Gateway: <html><body> <h1>502 Bad Gateway</h1> </body></html>"},
		{"429 asking to wait a minute", fakeResponse{Status: 429, Header: map[string]string{"Retry-After": "60"}, Body: map[string]any{"error": map[string]any{"message": "Rate limit reached for requests", "type": "requests", "code": "rate_limit_exceeded"}}}, 1,
			"429 Too Many Requests: Rate limit reached for requests"},
		{"500 the server says not to retry", fakeResponse{Status: 500, Header: map[string]string{"X-Should-Retry": "false"}, Body: map[string]any{"error": map[string]any{"message": "The server had an error", "type": "server_error"}}}, 1,
			"500 Internal Server Error: The server had an error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := newFakeOpenAI(t, func(int, *fakeRequest) fakeResponse { return tc.resp })
			b, err := newOpenAI(ModelConfig{Backend: "openai", Model: "llama3.1", URL: api.baseURL()}, testKey)
			if err != nil {
				t.Fatal(err)
			}
			_, err = b.Complete(context.Background(), &Request{Messages: []Message{{Role: User, Text: "hi"}}})
			if err == nil {
				t.Fatal("no error")
			}
			want := "openai chat completion (model llama3.1 at " + api.baseURL() + "): " + tc.want
			if err.Error() != want {
				t.Errorf("error = %q\nwant    %q", err, want)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Errorf("error holds the key: %v", err)
			}
			if n := len(api.requests()); n != tc.attempts {
				t.Errorf("%d attempts, want %d", n, tc.attempts)
			}
			for _, r := range api.requests() {
				if r.Header.Get("Authorization") != "Bearer "+testKey {
					t.Errorf("the key did not reach the server: the test proves nothing")
				}
			}
			// The error unwraps to nothing that holds the exchange.
			var apiErr *apiError
			if errors.As(err, &apiErr) {
				t.Errorf("errors.As(*apiError) found the API's error: the backend error unwraps only to context errors")
			}
			for e := error(err); e != nil; e = errors.Unwrap(e) {
				if strings.Contains(e.Error(), testKey) {
					t.Errorf("an unwrapped error holds the key: %v", e)
				}
			}
		})
	}
}

// TestOpenAICancelHangingRequest: cancelling the context ends a request the
// server never answers.
func TestOpenAICancelHangingRequest(t *testing.T) {
	api := newFakeOpenAI(t, func(int, *fakeRequest) fakeResponse { return fakeResponse{Hang: true} })
	b, err := newOpenAI(ModelConfig{Backend: "openai", Model: "llama3.1", URL: api.baseURL()}, testKey)
	if err != nil {
		t.Fatal(err)
	}
	testCancelHanging(t, api, b)
}

// testCancelHanging starts a completion on b, waits for api to receive it,
// cancels, and checks the completion ends with a cancellation error.
func testCancelHanging(t *testing.T, api *fakeAPI, b Backend) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := b.Complete(ctx, &Request{Messages: []Message{{Role: User, Text: "hi"}}})
		done <- err
	}()
	select {
	case <-api.arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the server")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
		if err != nil && strings.Contains(err.Error(), testKey) {
			t.Errorf("error holds the key: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Complete still running after its context was cancelled")
	}
	if n := len(api.requests()); n != 1 {
		t.Errorf("%d attempts, want 1: a cancelled request is not retried", n)
	}
}

// TestOpenAIBadArguments: a model whose tool call arguments are not JSON
// gets a clear error, not a Reply the loop cannot use.
func TestOpenAIBadArguments(t *testing.T) {
	api := newFakeOpenAI(t, func(int, *fakeRequest) fakeResponse {
		return openAIToolCallAnswer("llama3.1", "call_1", "translate", `{"text": "hel`)
	})
	b, err := newOpenAI(ModelConfig{Backend: "openai", Model: "llama3.1", URL: api.baseURL()}, "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Complete(context.Background(), &Request{Messages: []Message{{Role: User, Text: "hi"}}, Tools: []ToolSpec{translateTool}})
	if err == nil || !strings.Contains(err.Error(), "translate") || !strings.Contains(err.Error(), "not valid JSON") {
		t.Errorf("err = %v, want one naming the tool and the bad JSON", err)
	}
}

// TestOpenAIToolErrorAndText: each tool result goes back as its own tool
// message, a failed one marked as an error, and text sent with the results
// follows them as a user message.
func TestOpenAIToolErrorAndText(t *testing.T) {
	api := newFakeOpenAI(t, func(int, *fakeRequest) fakeResponse { return openAITextAnswer("m", "ok") })
	b, err := newOpenAI(ModelConfig{Backend: "openai", Model: "m", URL: api.baseURL()}, "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Complete(context.Background(), &Request{Messages: []Message{
		{Role: User, Text: "translate hello twice"},
		{Role: Assistant, Text: "On it.", ToolCalls: []ToolCall{{ID: "c1", Name: "translate"}, {ID: "c2", Name: "translate", Args: []byte(`{"text":"hello"}`)}}},
		{Role: User, Text: "please hurry", ToolResults: []ToolResult{{CallID: "c1", Text: "peer unreachable", IsError: true}, {CallID: "c2", Text: "bonjour"}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	msgs, _ := dig(api.requests()[0].Body, "messages").([]any)
	if len(msgs) != 5 {
		t.Fatalf("sent %d messages, want 5: %s", len(msgs), api.requests()[0].Raw)
	}
	if c, a := dig(msgs, 1, "content"), dig(msgs, 1, "tool_calls", 0, "function", "arguments"); c != "On it." || a != "{}" {
		t.Errorf("assistant message: content %v, first call's arguments %v; want the text and {}", c, a)
	}
	if id, c := dig(msgs, 2, "tool_call_id"), dig(msgs, 2, "content"); id != "c1" || c != "error: peer unreachable" {
		t.Errorf("messages[2] = %v %v, want c1's failure", id, c)
	}
	if id, c := dig(msgs, 3, "tool_call_id"), dig(msgs, 3, "content"); id != "c2" || c != "bonjour" {
		t.Errorf("messages[3] = %v %v, want c2's result", id, c)
	}
	if r, c := dig(msgs, 4, "role"), dig(msgs, 4, "content"); r != "user" || c != "please hurry" {
		t.Errorf("messages[4] = %v %v, want the user's text after the results", r, c)
	}
}

// TestOpenAIAnswerNotJSON: a 200 whose body is not the API's JSON is an
// error saying so, with the start of what came.
func TestOpenAIAnswerNotJSON(t *testing.T) {
	api := newFakeOpenAI(t, func(int, *fakeRequest) fakeResponse { return fakeResponse{Body: []byte("not a completion")} })
	b, err := newOpenAI(ModelConfig{Backend: "openai", Model: "m", URL: api.baseURL()}, "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Complete(context.Background(), &Request{Messages: []Message{{Role: User, Text: "hi"}}})
	if err == nil || !strings.Contains(err.Error(), "not the API's JSON") || !strings.Contains(err.Error(), "not a completion") {
		t.Errorf("err = %v, want one saying the answer is not the API's JSON, quoting it", err)
	}
}
