// Package agent runs LLM agents on an mcpmesh node, each shared as one
// tool.
//
// A node owner defines an agent (Config): what it is for, the model it
// thinks with, the tools of the mesh it may use and its budgets. Add
// registers it on the node as a single MCP tool taking a task in natural
// language, so a caller pays the context of one tool instead of the whole
// toolbox behind it. When called, the agent's loop asks its model what to
// do; the model searches the mesh, reads the schema of the tool it chose,
// calls it (each call a child task of the agent's own task, so cancel,
// progress and the loop guards reach it), asks the human for what it cannot
// know (elicitation), and answers.
//
// The model is an OpenAI-compatible endpoint, the Anthropic Messages API,
// the caller's own model borrowed through MCP sampling, or a script, for
// tests and demos.
package agent

import (
	"context"
	"fmt"
	"os"
	"time"

	logging "github.com/ipfs/go-log/v2"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/discovery"
	"github.com/mcpmesh/mcpmesh/gateway"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node/iface"
)

var log = logging.Logger("mcpmesh/agent")

// Tag is the tag every agent's tool carries, so that agents can be found
// in the mesh ("tag:agent").
const Tag = "agent"

// Option changes how Add builds an agent.
type Option func(*options)

type options struct {
	backend       Backend
	lookupEnv     func(string) (string, bool)
	searchTimeout time.Duration
}

// WithBackend makes the agent think with b instead of the backend its
// configuration names (whose settings are then not used).
func WithBackend(b Backend) Option {
	return func(o *options) { o.backend = b }
}

// WithLookupEnv sets where the API key named by model.apiKeyEnv is read
// (default os.LookupEnv).
func WithLookupEnv(f func(string) (string, bool)) Option {
	return func(o *options) { o.lookupEnv = f }
}

// WithSearchTimeout bounds one search of the mesh by the agent (default 3s).
func WithSearchTimeout(d time.Duration) Option {
	return func(o *options) { o.searchTimeout = d }
}

// Input is the input of an agent's tool.
type Input struct {
	Task    string         `json:"task" jsonschema:"what to do, in natural language"`
	Context map[string]any `json:"context,omitempty" jsonschema:"structured data the task refers to (optional)"`
}

// Outcome is the structured content of an agent's answer: how the run went.
type Outcome struct {
	// Steps is how many times the model was asked.
	Steps int `json:"steps"`
	// ToolCalls is how many tools the model ran (search, describe, call and
	// ask_user alike); Calls lists the mesh tools it called, as
	// PEER/SERVER/TOOL.
	ToolCalls int      `json:"toolCalls"`
	Calls     []string `json:"calls,omitempty"`
	// StopReason is why the run ended: "answer" (the model answered), or the
	// budget that ran out: "maxSteps", "maxToolCalls", "deadline". Any but
	// "answer" means the text is a partial answer.
	StopReason string `json:"stopReason"`
	// Model is the model that answered last, as its backend reports it.
	Model string `json:"model,omitempty"`
}

// The reasons a run stops.
const (
	StopAnswer       = "answer"
	StopMaxSteps     = "maxSteps"
	StopMaxToolCalls = "maxToolCalls"
	StopDeadline     = "deadline"
)

// agent is one agent added to a node.
type agent struct {
	cfg     Config
	n       iface.Node // the mesh it searches and calls, the server where it is a tool
	backend Backend
	mesh    *gateway.Mesh // nil when the agent has no capabilities
	tools   []ToolSpec    // what the model is offered
}

// Add validates cfg and registers the agent on n's default server as one
// tool named cfg.Name, tagged "agent" (and cfg.Tags), which then appears in
// the node's card like any tool. An API key named by cfg.Model.APIKeyEnv is
// read now, and kept only inside the backend's client.
func Add(n iface.Node, cfg Config, opts ...Option) error {
	o := options{lookupEnv: os.LookupEnv}
	for _, opt := range opts {
		opt(&o)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	a := &agent{cfg: cfg, n: n, backend: o.backend}
	if a.backend == nil {
		b, err := newBackend(cfg, o.lookupEnv)
		if err != nil {
			return err
		}
		a.backend = b
	}
	if !cfg.Capabilities.empty() {
		a.mesh = gateway.NewMesh(n, gateway.MeshOptions{SearchTimeout: o.searchTimeout, Allow: a.allow, Callable: true})
	}
	a.tools = loopTools(a.mesh != nil)
	tags := append([]string{Tag}, cfg.Tags...)
	sdkmcp.AddTool(n.Server(), &sdkmcp.Tool{
		Name:        cfg.Name,
		Description: cfg.Description,
		Meta:        sdkmcp.Meta{discovery.TagsMetaKey: tags},
	}, a.handle)
	log.Infow("agent added", "agent", cfg.Name, "backend", cfg.Model.Backend, "model", cfg.Model.Model)
	return nil
}

// Check validates cfg and builds its backend as Add would (reading the API
// key its model names), without adding the agent: a daemon reloading its
// configuration applies nothing of a file with an agent that would fail.
func Check(cfg Config, opts ...Option) error {
	o := options{lookupEnv: os.LookupEnv}
	for _, opt := range opts {
		opt(&o)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if o.backend != nil {
		return nil
	}
	_, err := newBackend(cfg.withDefaults(), o.lookupEnv)
	return err
}

// Remove takes the agent called name off n's default server: callers' tool
// lists change (the SDK tells their sessions), and its calls in flight
// finish. Adding an agent of the same name again replaces it.
func Remove(n iface.Node, name string) {
	n.Server().RemoveTools(name)
	log.Infow("agent removed", "agent", name)
}

// MissingKeyError is Add's error for an agent whose model's API key is not
// in the environment: a node can start without that agent.
type MissingKeyError struct {
	Agent string // the agent's name
	Env   string // the variable its model's apiKeyEnv names
}

func (e *MissingKeyError) Error() string {
	return fmt.Sprintf("agent %q: environment variable %s is not set", e.Agent, e.Env)
}

// newBackend builds the backend cfg names, reading its API key.
func newBackend(cfg Config, lookupEnv func(string) (string, bool)) (Backend, error) {
	m := cfg.Model
	switch m.Backend {
	case "scripted":
		return newScripted(m.Script), nil
	case "borrowed":
		return newBorrowed(m), nil
	}
	var key string
	if m.APIKeyEnv != "" {
		v, ok := lookupEnv(m.APIKeyEnv)
		if !ok || v == "" {
			return nil, &MissingKeyError{Agent: cfg.Name, Env: m.APIKeyEnv}
		}
		key = v
	}
	var b Backend
	var err error
	switch m.Backend {
	case "openai":
		b, err = newOpenAI(m, key)
	case "anthropic":
		b, err = newAnthropic(m, key)
	default: // Validate has refused it
		err = fmt.Errorf("unknown backend %q", m.Backend)
	}
	if err != nil {
		return nil, fmt.Errorf("agent %q: model: %w", cfg.Name, err)
	}
	return b, nil
}

// allow keeps the agent's searches and calls within its capabilities, and
// away from itself.
func (a *agent) allow(t gateway.ToolInfo) error {
	if t.Peer == a.n.ID() && t.Server == transport.DefaultServer && t.Tool == a.cfg.Name {
		return fmt.Errorf("agent %q does not call itself", a.cfg.Name)
	}
	if !a.cfg.Capabilities.admits(t.Peer, t.Server, t.Tool, t.Tags) {
		return fmt.Errorf("%s/%s on peer %s is outside agent %q's capabilities", t.Server, t.Tool, t.Peer, a.cfg.Name)
	}
	return nil
}

// handle serves one call of the agent's tool.
func (a *agent) handle(ctx context.Context, req *sdkmcp.CallToolRequest, in Input) (*sdkmcp.CallToolResult, any, error) {
	if in.Task == "" {
		return nil, nil, fmt.Errorf("give a task: what the agent should do, in natural language")
	}
	r := &run{a: a, progress: progressOf(req)}
	text, out, err := r.loop(ctx, in)
	if err != nil {
		return nil, nil, err
	}
	return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: text}}}, out, nil
}
