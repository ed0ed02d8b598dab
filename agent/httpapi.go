package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Defaults shared by the HTTP model backends.
const (
	// defaultMaxTokens bounds a completion when neither the configuration
	// nor the request says how long it may be. The Anthropic API requires a
	// bound; for OpenAI-compatible servers it stops a runaway local model.
	defaultMaxTokens = 4096
	// modelRetries is how many times a failed request (connection error,
	// 408, 409, 429, 5xx) is retried.
	modelRetries = 2
	// maxRetryWait bounds the wait between retries accepted from a server
	// (Retry-After-Ms, Retry-After); a longer one ends the retries and the
	// server's error is returned at once.
	maxRetryWait = 10 * time.Second
	// maxBackoff bounds the wait between retries the server did not time.
	maxBackoff = 8 * time.Second
	// maxAnswerBytes bounds a model API's answer: a completion is bounded
	// by its max_tokens, so anything near this is not an answer.
	maxAnswerBytes = 16 << 20
	// maxErrorBytes bounds how much of an error answer is read.
	maxErrorBytes = 64 << 10
)

// apiClient posts JSON to one model API and decodes its JSON answers. It
// does what the vendors' client libraries did for the two calls the
// backends make: bounded retries with the server's Retry-After, the
// context's deadline, the API's own error message.
type apiClient struct {
	http   *http.Client
	header http.Header // sent with every request (auth, version)
	// parseError reads an error answer's body into an apiError.
	parseError func(status int, header http.Header, body []byte) *apiError
}

// apiError is an answer of a model API with an error status. It holds only
// what the server said, never the request (whose headers hold the key).
type apiError struct {
	Status    int
	Type      string // the API's error type, if it says one
	Message   string // the API's message, or the start of a body that is not its JSON
	RequestID string
}

func (e *apiError) Error() string {
	s := strconv.Itoa(e.Status)
	if text := http.StatusText(e.Status); text != "" {
		s += " " + text
	}
	if e.Type != "" {
		s += ": " + e.Type
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.RequestID != "" {
		s += " (request-id " + e.RequestID + ")"
	}
	return s
}

// post sends body as JSON to url and decodes the answer into out, retrying
// what is worth retrying. Its errors are an *apiError for an answer with an
// error status, or the transport's or the context's error.
func (c *apiClient) post(ctx context.Context, url string, body, out any) error {
	payload, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	for attempt := 0; ; attempt++ {
		res, err := c.send(ctx, url, payload)
		if err != nil {
			if ctx.Err() != nil || attempt >= modelRetries {
				return err
			}
			if err := sleepCtx(ctx, backoff(attempt)); err != nil {
				return err
			}
			continue
		}
		if res.StatusCode < 300 {
			return decodeAnswer(res, out)
		}
		errBody, _ := io.ReadAll(io.LimitReader(res.Body, maxErrorBytes))
		res.Body.Close()
		apiErr := c.parseError(res.StatusCode, res.Header, errBody)
		if attempt >= modelRetries || !retryable(res) {
			return apiErr
		}
		wait, ok := retryWait(res.Header, attempt)
		if !ok {
			return apiErr // the server asks for a longer wait than we give
		}
		if err := sleepCtx(ctx, wait); err != nil {
			return err
		}
	}
}

// send makes one attempt.
func (c *apiClient) send(ctx context.Context, url string, payload []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(payload))
	if err != nil {
		return nil, err
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "mcpmesh")
	return c.http.Do(req)
}

// decodeAnswer decodes a successful answer's JSON body into out.
func decodeAnswer(res *http.Response, out any) error {
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxAnswerBytes+1))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if len(body) > maxAnswerBytes {
		return fmt.Errorf("answer larger than %d bytes", maxAnswerBytes)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("answer (%d, %s) is not the API's JSON: %w: %s", res.StatusCode, res.Header.Get("Content-Type"), err, snippet(body))
	}
	return nil
}

// retryable reports whether an error answer is worth another attempt: the
// server's x-should-retry header if it sets one, else 408, 409, 429, 5xx.
func retryable(res *http.Response) bool {
	switch res.Header.Get("X-Should-Retry") {
	case "true":
		return true
	case "false":
		return false
	}
	s := res.StatusCode
	return s == http.StatusRequestTimeout || s == http.StatusConflict || s == http.StatusTooManyRequests || s >= 500
}

// retryWait is the wait before retry attempt+1: the server's (Retry-After-Ms,
// Retry-After in seconds or as a date), if it says one no longer than
// maxRetryWait (ok false if longer), else an exponential backoff.
func retryWait(h http.Header, attempt int) (wait time.Duration, ok bool) {
	if v := h.Get("Retry-After-Ms"); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil {
			return serverWait(time.Duration(ms * float64(time.Millisecond)))
		}
	}
	if v := h.Get("Retry-After"); v != "" {
		if s, err := strconv.ParseFloat(v, 64); err == nil {
			return serverWait(time.Duration(s * float64(time.Second)))
		}
		if t, err := http.ParseTime(v); err == nil {
			return serverWait(time.Until(t))
		}
	}
	return backoff(attempt), true
}

func serverWait(d time.Duration) (time.Duration, bool) {
	if d > maxRetryWait {
		return 0, false
	}
	return max(d, 0), true
}

// backoff is 0.5 s doubled per attempt, at most maxBackoff, less up to a
// quarter of jitter.
func backoff(attempt int) time.Duration {
	d := maxBackoff
	if attempt < 10 {
		d = min(time.Duration(500*float64(time.Millisecond)*float64(int(1)<<attempt)), maxBackoff)
	}
	return d - rand.N(d/4+1)
}

// sleepCtx waits d, or until ctx is done (its error).
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// snippet is the start of a body that is not the JSON expected, for an
// error message: one line, at most 200 bytes.
func snippet(body []byte) string {
	s := strings.Join(strings.Fields(string(body)), " ")
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "") + "…"
	}
	return s
}

// errorMessage reads the message and type out of an error body in the
// shapes the APIs use: {"error": {"message", "type"}} (OpenAI, Anthropic),
// {"error": "message"} (Ollama, llama.cpp) or {"message", "type"} (older
// vLLM). A body in none of them gives its start as the message.
func errorMessage(body []byte) (message, typ string) {
	var e struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
		Type    string          `json:"type"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		return snippet(body), ""
	}
	var obj struct {
		Message string `json:"message"`
		Type    string `json:"type"`
	}
	var str string
	switch {
	case json.Unmarshal(e.Error, &obj) == nil && (obj.Message != "" || obj.Type != ""):
		return obj.Message, obj.Type
	case json.Unmarshal(e.Error, &str) == nil && str != "":
		return str, ""
	case e.Message != "":
		return e.Message, e.Type
	}
	return snippet(body), ""
}

// modelError is the error of a model backend. Its text never holds the API
// key: it is redacted from everything the server said. It unwraps only to
// context.Canceled or context.DeadlineExceeded, when the request ended for
// that reason.
type modelError struct {
	msg   string
	cause error
}

// newModelError returns a modelError with message msg (redacted) for the
// error cause.
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
