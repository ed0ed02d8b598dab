package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
)

// Config defines one agent, as written in the node's configuration file
// under "agents".
type Config struct {
	// Name is the name of the tool the agent is shared as: letters, digits,
	// '_', '-' and '.', at most 64.
	Name string `json:"name"`
	// Description is what callers see: what the agent is for and what to
	// ask it.
	Description string `json:"description"`
	// Instructions is the system prompt the agent's model works under.
	Instructions string `json:"instructions,omitempty"`
	// Tags are added to the tool's tags (it always has "agent"), for
	// discovery.
	Tags []string `json:"tags,omitempty"`
	// Model chooses the model the agent thinks with.
	Model ModelConfig `json:"model"`
	// Capabilities are the tools of the mesh the agent may find and call.
	Capabilities Capabilities `json:"capabilities"`
	// Budgets bound one run of the agent.
	Budgets Budgets `json:"budgets"`
}

// Capabilities say which tools of the mesh an agent may find and call. A
// tool is within them if it matches any entry: a name in Tools, a tag in
// Tags, a peer in Peers, or anything at all with Any. What the node's policy
// lets the agent's node call still applies on top. An agent with no
// capabilities gets no mesh tools: it answers from its model alone.
type Capabilities struct {
	// Tools are tool names or SERVER/TOOL references; each may be a pattern
	// as path.Match takes it ("translate", "docs/*", "*/search_*").
	Tools []string `json:"tools,omitempty"`
	// Tags admit every tool that has one of them (its own or its node's).
	Tags []string `json:"tags,omitempty"`
	// Peers admit every tool of these peers (peer IDs).
	Peers []string `json:"peers,omitempty"`
	// Any admits every tool the node may call.
	Any bool `json:"any,omitempty"`
}

// Budgets bound one run of an agent. Zero values take the defaults.
type Budgets struct {
	// MaxSteps is how many times the model is asked (default 10).
	MaxSteps int `json:"maxSteps,omitempty"`
	// MaxToolCalls is how many tools the model may run in all (default 20).
	MaxToolCalls int `json:"maxToolCalls,omitempty"`
	// Deadline bounds the run's time, as Go writes durations ("90s", "2m";
	// default 2m). The caller's own deadline, if sooner, wins.
	Deadline Duration `json:"deadline,omitempty"`
}

// The default budgets.
const (
	DefaultMaxSteps     = 10
	DefaultMaxToolCalls = 20
	DefaultDeadline     = 2 * time.Minute
)

// Duration is a time.Duration that reads and writes as Go's duration text
// ("2m", "90s") in JSON.
type Duration time.Duration

// MarshalJSON writes d as text.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads d from text like "2m".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want text like \"90s\" or \"2m\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// Backends are the model backends an agent can use.
var Backends = []string{"openai", "anthropic", "borrowed", "scripted"}

var (
	toolName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)
	envName  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// withDefaults returns c with its zero budgets set to the defaults.
func (c Config) withDefaults() Config {
	if c.Budgets.MaxSteps == 0 {
		c.Budgets.MaxSteps = DefaultMaxSteps
	}
	if c.Budgets.MaxToolCalls == 0 {
		c.Budgets.MaxToolCalls = DefaultMaxToolCalls
	}
	if c.Budgets.Deadline == 0 {
		c.Budgets.Deadline = Duration(DefaultDeadline)
	}
	return c
}

// Validate checks c and says what is wrong, naming the agent.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}
	if !toolName.MatchString(c.Name) {
		return fmt.Errorf("agent %q: name: want 1 to 64 letters, digits, '_', '-' or '.'", c.Name)
	}
	if strings.TrimSpace(c.Description) == "" {
		bad("description: say what the agent does, for its callers")
	}
	switch c.Model.Backend {
	case "openai", "anthropic":
		if c.Model.Model == "" {
			bad("model.model: name the model (e.g. %q)", map[string]string{"openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4-5"}[c.Model.Backend])
		}
	case "borrowed":
	case "scripted":
		if len(c.Model.Script) == 0 {
			bad("model.script: the scripted backend needs at least one step")
		}
		for i, s := range c.Model.Script {
			if (s.Call == "") == (s.Answer == "") {
				bad("model.script[%d]: give exactly one of call and answer", i)
			}
			if s.Call != "" && !isLoopTool(s.Call) {
				bad("model.script[%d]: call %q: want one of %s", i, s.Call, strings.Join(loopToolNames, ", "))
			}
		}
	case "":
		bad("model.backend: missing: want %s", orList(Backends))
	default:
		bad("model.backend %q: want %s", c.Model.Backend, orList(Backends))
	}
	if c.Model.APIKeyEnv != "" && !envName.MatchString(c.Model.APIKeyEnv) {
		bad("model.apiKeyEnv %q: want the name of an environment variable, not the key itself", c.Model.APIKeyEnv)
	}
	for _, p := range c.Capabilities.Tools {
		if _, err := path.Match(p, ""); err != nil || p == "" {
			bad("capabilities.tools: %q is not a valid name or pattern", p)
		}
	}
	for _, p := range c.Capabilities.Peers {
		if _, err := lpeer.Decode(p); err != nil {
			bad("capabilities.peers: %q is not a peer ID", p)
		}
	}
	if c.Budgets.MaxSteps < 0 || c.Budgets.MaxToolCalls < 0 || c.Budgets.Deadline < 0 {
		bad("budgets: want positive values (or none, for the defaults)")
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("agent %q: %w", c.Name, err)
	}
	return nil
}

func orList(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// empty reports whether c admits no tool at all.
func (c Capabilities) empty() bool {
	return !c.Any && len(c.Tools) == 0 && len(c.Tags) == 0 && len(c.Peers) == 0
}

// admits reports whether the tool server/tool on peer p, with tags, is
// within c.
func (c Capabilities) admits(p lpeer.ID, server, tool string, tags []string) bool {
	if c.Any {
		return true
	}
	for _, pat := range c.Tools {
		subject := tool
		if strings.Contains(pat, "/") {
			subject = server + "/" + tool
		}
		if ok, _ := path.Match(pat, subject); ok {
			return true
		}
	}
	for _, want := range c.Tags {
		for _, t := range tags {
			if strings.EqualFold(t, want) {
				return true
			}
		}
	}
	ps := p.String()
	for _, want := range c.Peers {
		if want == ps {
			return true
		}
	}
	return false
}
