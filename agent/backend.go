package agent

import (
	"context"
	"encoding/json"
)

// Role says who wrote a message of the conversation an agent keeps.
type Role string

// The roles of a conversation.
const (
	User      Role = "user"      // the task, and tool results
	Assistant Role = "assistant" // the model's turns
)

// Message is one turn of the conversation an agent keeps with its model.
// A user message carries text or tool results; an assistant message carries
// text, tool calls or both.
type Message struct {
	Role        Role         `json:"role"`
	Text        string       `json:"text,omitempty"`
	ToolCalls   []ToolCall   `json:"toolCalls,omitempty"`
	ToolResults []ToolResult `json:"toolResults,omitempty"`
}

// ToolCall is the model asking for one tool to be run.
type ToolCall struct {
	// ID names the call, so that its result can be matched to it.
	ID   string          `json:"id"`
	Name string          `json:"name"`
	Args json.RawMessage `json:"args,omitempty"` // a JSON object
}

// ToolResult is the outcome of one ToolCall, given back to the model.
type ToolResult struct {
	CallID  string `json:"callId"`
	Text    string `json:"text"`
	IsError bool   `json:"isError,omitempty"`
}

// ToolSpec is a tool offered to the model.
type ToolSpec struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	InputSchema json.RawMessage `json:"inputSchema"` // a JSON Schema object
}

// Request is one completion asked of a model.
type Request struct {
	System    string     `json:"system,omitempty"`
	Messages  []Message  `json:"messages"`
	Tools     []ToolSpec `json:"tools,omitempty"`
	MaxTokens int        `json:"maxTokens,omitempty"`
}

// Reply is the model's answer: text, tool calls, or both.
type Reply struct {
	Text      string     `json:"text,omitempty"`
	ToolCalls []ToolCall `json:"toolCalls,omitempty"`
	// StopReason is the backend's own word for why the model stopped
	// ("end_turn", "tool_use", "stop", "tool_calls", ...), for logs.
	StopReason string `json:"stopReason,omitempty"`
	// Model is the model that answered, as the backend reports it.
	Model string `json:"model,omitempty"`
}

// Backend is a model an agent thinks with.
//
// Complete must honour ctx (cancellation ends the request) and must never
// put an API key in an error or a log line.
type Backend interface {
	Complete(ctx context.Context, req *Request) (*Reply, error)
}

// ModelConfig chooses and configures an agent's model backend, as written
// in the node's configuration file.
type ModelConfig struct {
	// Backend is "openai" (any OpenAI-compatible chat-completions endpoint:
	// OpenAI, Ollama, vLLM, llama.cpp, LM Studio), "anthropic" (the Messages
	// API), "borrowed" (MCP sampling asked of the caller) or "scripted".
	Backend string `json:"backend"`
	// Model is the model name the endpoint knows ("gpt-4o-mini",
	// "llama3.1", "claude-sonnet-4-5", ...); for "borrowed", a hint.
	Model string `json:"model,omitempty"`
	// URL is the endpoint's base URL (for "openai" e.g.
	// http://localhost:11434/v1 for Ollama; empty: the vendor's own).
	URL string `json:"url,omitempty"`
	// APIKeyEnv names the environment variable holding the API key. The key
	// itself never goes in the file.
	APIKeyEnv string `json:"apiKeyEnv,omitempty"`
	// MaxTokens bounds each completion (0: a backend default).
	MaxTokens int `json:"maxTokens,omitempty"`
	// Script is the scripted backend's list of steps.
	Script []ScriptStep `json:"script,omitempty"`
}

// ScriptStep is one reply of the scripted backend.
type ScriptStep struct {
	// Call, if set, is a tool call the step makes: the tool's name and its
	// arguments. Args values may use "{{task}}" (the task text) and
	// "{{last}}" (the text of the last tool result).
	Call string         `json:"call,omitempty"`
	Args map[string]any `json:"args,omitempty"`
	// Answer, if set, ends the loop with this text (same substitutions).
	Answer string `json:"answer,omitempty"`
}
