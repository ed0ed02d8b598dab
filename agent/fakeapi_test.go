package agent

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// fakeAPI is a model API on loopback: an HTTP server speaking the wire
// format of the OpenAI chat-completions API or of the Anthropic Messages
// API, answering with whatever its respond function says. It records every
// request it receives, so tests can check what the backends sent.
// It is the only stand-in for a model the tests use: no outside network is
// reachable.
type fakeAPI struct {
	srv  *httptest.Server
	path string // the one path it serves: /v1/chat/completions or /v1/messages
	// respond answers the n-th request (from 0) to path.
	respond func(n int, r *fakeRequest) fakeResponse
	done    chan struct{} // closed at cleanup: ends hanging answers

	mu   sync.Mutex
	reqs []*fakeRequest
	// arrived gets each request as it arrives (buffered, never blocks).
	arrived chan *fakeRequest
}

// fakeRequest is a request the fake API received.
type fakeRequest struct {
	Method string
	Path   string
	Header http.Header
	Raw    []byte
	Body   map[string]any
}

// fakeResponse is what the fake API answers.
type fakeResponse struct {
	Status int               // 0: 200
	Header map[string]string // extra headers
	Body   any               // marshalled as JSON; a []byte is sent as it is
	Hang   bool              // never answer (until the client goes away)
}

// newFakeOpenAI starts a fake OpenAI-compatible server. Its base URL (for
// ModelConfig.URL) is baseURL(), ending in /v1 like Ollama's.
func newFakeOpenAI(t *testing.T, respond func(n int, r *fakeRequest) fakeResponse) *fakeAPI {
	return newFakeAPI(t, "/v1/chat/completions", respond)
}

// newFakeAnthropic starts a fake Anthropic Messages API server. Its base URL
// is baseURL() (the backend adds /v1/messages).
func newFakeAnthropic(t *testing.T, respond func(n int, r *fakeRequest) fakeResponse) *fakeAPI {
	return newFakeAPI(t, "/v1/messages", respond)
}

func newFakeAPI(t *testing.T, path string, respond func(n int, r *fakeRequest) fakeResponse) *fakeAPI {
	t.Helper()
	f := &fakeAPI{path: path, respond: respond, done: make(chan struct{}), arrived: make(chan *fakeRequest, 100)}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(func() {
		close(f.done)
		f.srv.Close()
	})
	return f
}

// baseURL is the URL to configure a backend with.
func (f *fakeAPI) baseURL() string {
	if f.path == "/v1/chat/completions" {
		return f.srv.URL + "/v1"
	}
	return f.srv.URL
}

// requests returns the requests received so far.
func (f *fakeAPI) requests() []*fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*fakeRequest(nil), f.reqs...)
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	req := &fakeRequest{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Raw: raw}
	_ = json.Unmarshal(raw, &req.Body)
	f.mu.Lock()
	n := len(f.reqs)
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()
	select {
	case f.arrived <- req:
	default:
	}
	if r.Method != http.MethodPost || r.URL.Path != f.path {
		writeJSON(w, http.StatusNotFound, nil, map[string]any{"error": map[string]any{"message": "no route " + r.Method + " " + r.URL.Path}})
		return
	}
	resp := f.respond(n, req)
	if resp.Hang {
		select {
		case <-r.Context().Done():
		case <-f.done:
		}
		return
	}
	writeJSON(w, resp.Status, resp.Header, resp.Body)
}

func writeJSON(w http.ResponseWriter, status int, header map[string]string, body any) {
	if status == 0 {
		status = http.StatusOK
	}
	for k, v := range header {
		w.Header().Set(k, v)
	}
	if raw, ok := body.([]byte); ok {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(status)
		_, _ = w.Write(raw)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// OpenAI wire format.

// openAIToolCallAnswer is a chat completion whose answer is one tool call.
func openAIToolCallAnswer(model, id, name, args string) fakeResponse {
	return fakeResponse{Body: map[string]any{
		"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": model,
		"choices": []any{map[string]any{
			"index": 0, "finish_reason": "tool_calls",
			"message": map[string]any{
				"role": "assistant", "content": nil,
				"tool_calls": []any{map[string]any{
					"id": id, "type": "function",
					"function": map[string]any{"name": name, "arguments": args},
				}},
			},
		}},
		"usage": map[string]any{"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
	}}
}

// openAITextAnswer is a chat completion whose answer is text.
func openAITextAnswer(model, text string) fakeResponse {
	return fakeResponse{Body: map[string]any{
		"id": "chatcmpl-2", "object": "chat.completion", "created": 1700000001, "model": model,
		"choices": []any{map[string]any{
			"index": 0, "finish_reason": "stop",
			"message": map[string]any{"role": "assistant", "content": text},
		}},
		"usage": map[string]any{"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
	}}
}

// openAIError is an error answer in OpenAI's format.
func openAIError(status int, message string) fakeResponse {
	return fakeResponse{
		Status: status,
		Header: map[string]string{"Retry-After-Ms": "1"},
		Body: map[string]any{"error": map[string]any{
			"message": message, "type": "invalid_request_error", "param": nil, "code": fmt.Sprint(status),
		}},
	}
}

// Anthropic wire format.

// anthropicToolUseAnswer is a message whose content is a text block then a
// tool_use block.
func anthropicToolUseAnswer(model, id, name string, input map[string]any) fakeResponse {
	return fakeResponse{Body: map[string]any{
		"id": "msg_01", "type": "message", "role": "assistant", "model": model,
		"content": []any{
			map[string]any{"type": "text", "text": "I will translate it."},
			map[string]any{"type": "tool_use", "id": id, "name": name, "input": input},
		},
		"stop_reason": "tool_use", "stop_sequence": nil,
		"usage": map[string]any{"input_tokens": 10, "output_tokens": 5},
	}}
}

// anthropicTextAnswer is a message whose content is text.
func anthropicTextAnswer(model, text string) fakeResponse {
	return fakeResponse{Body: map[string]any{
		"id": "msg_02", "type": "message", "role": "assistant", "model": model,
		"content":     []any{map[string]any{"type": "text", "text": text}},
		"stop_reason": "end_turn", "stop_sequence": nil,
		"usage": map[string]any{"input_tokens": 20, "output_tokens": 5},
	}}
}

// anthropicError is an error answer in Anthropic's format.
func anthropicError(status int, typ, message string) fakeResponse {
	return fakeResponse{
		Status: status,
		Header: map[string]string{"Retry-After-Ms": "1", "Request-Id": "req_fake"},
		Body: map[string]any{
			"type":  "error",
			"error": map[string]any{"type": typ, "message": message},
		},
	}
}

// Helpers to read JSON bodies in tests.

// dig walks m along keys (strings for objects, ints for arrays).
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			s, ok := v.([]any)
			if !ok || k >= len(s) {
				return nil
			}
			v = s[k]
		}
	}
	return v
}

// jsonEqual reports whether a and b are the same JSON value.
func jsonEqual(t *testing.T, a, b any) bool {
	t.Helper()
	norm := func(v any) string {
		var raw []byte
		switch x := v.(type) {
		case json.RawMessage:
			raw = x
		case []byte:
			raw = x
		case string:
			raw = []byte(x)
		default:
			var err error
			if raw, err = json.Marshal(v); err != nil {
				t.Fatalf("marshal %v: %v", v, err)
			}
		}
		var out any
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("unmarshal %s: %v", raw, err)
		}
		b, _ := json.Marshal(out)
		return string(b)
	}
	return norm(a) == norm(b)
}
