package agent_test

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/agent"
)

func TestValidateSaysWhatIsWrong(t *testing.T) {
	ok := agent.Config{Name: "x", Description: "does x", Model: agent.ModelConfig{Backend: "borrowed"}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		change func(*agent.Config)
		want   string
	}{
		{func(c *agent.Config) { c.Model.Backend = "foo" }, `agent "x": model.backend "foo": want openai, anthropic, borrowed or scripted`},
		{func(c *agent.Config) { c.Model.Backend = "" }, `agent "x": model.backend: missing`},
		{func(c *agent.Config) { c.Name = "two words" }, `agent "two words": name: want 1 to 64 letters`},
		{func(c *agent.Config) { c.Description = "" }, `agent "x": description: say what the agent does`},
		{func(c *agent.Config) { c.Model = agent.ModelConfig{Backend: "openai"} }, `agent "x": model.model: name the model`},
		{func(c *agent.Config) { c.Model.APIKeyEnv = "sk-proj-abc123" }, `model.apiKeyEnv "sk-proj-abc123": want the name of an environment variable`},
		{func(c *agent.Config) { c.Model = agent.ModelConfig{Backend: "scripted"} }, `model.script: the scripted backend needs at least one step`},
		{func(c *agent.Config) {
			c.Model = agent.ModelConfig{Backend: "scripted", Script: []agent.ScriptStep{{Call: "fly"}}}
		}, `model.script[0]: call "fly": want one of search, describe, call, ask_user`},
		{func(c *agent.Config) {
			c.Model = agent.ModelConfig{Backend: "scripted", Script: []agent.ScriptStep{{Call: "search", Answer: "both"}}}
		}, `model.script[0]: give exactly one of call and answer`},
		{func(c *agent.Config) { c.Capabilities.Peers = []string{"bob"} }, `capabilities.peers: "bob" is not a peer ID`},
		{func(c *agent.Config) { c.Capabilities.Tools = []string{"[x"} }, `capabilities.tools: "[x" is not a valid name or pattern`},
		{func(c *agent.Config) { c.Budgets.MaxSteps = -1 }, `budgets: want positive values`},
	} {
		c := ok
		tc.change(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want %q", c, err, tc.want)
		}
	}
}

func TestAPIKeyFromEnvironment(t *testing.T) {
	n := newNode(t)
	cfg := agent.Config{Name: "x", Description: "does x", Model: agent.ModelConfig{Backend: "openai", Model: "m", APIKeyEnv: "MESH_TEST_KEY"}}
	none := agent.WithLookupEnv(func(string) (string, bool) { return "", false })
	err := agent.Add(n, cfg, none)
	if err == nil || err.Error() != `agent "x": environment variable MESH_TEST_KEY is not set` {
		t.Fatalf("Add without the key: %v", err)
	}
	key := agent.WithLookupEnv(func(name string) (string, bool) { return "sk-test-" + name, name == "MESH_TEST_KEY" })
	if err := agent.Add(n, cfg, key); err != nil {
		t.Fatalf("Add with the key: %v", err)
	}
}

func TestDurationJSON(t *testing.T) {
	var b agent.Budgets
	if err := json.Unmarshal([]byte(`{"deadline":"90s"}`), &b); err != nil || time.Duration(b.Deadline) != 90*time.Second {
		t.Fatalf("90s: %v %v", b.Deadline, err)
	}
	if err := json.Unmarshal([]byte(`{"deadline":90}`), &b); err == nil {
		t.Fatal("a bare number was taken as a duration")
	}
	out, _ := json.Marshal(agent.Budgets{Deadline: agent.Duration(2 * time.Minute)})
	if string(out) != `{"deadline":"2m0s"}` {
		t.Fatalf("marshal: %s", out)
	}
}

// TestExampleConfig checks that the example in examples/agents reads and
// validates as the node reads it (unknown fields refused).
func TestExampleConfig(t *testing.T) {
	data, err := os.ReadFile("../examples/agents/config.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Agents json.RawMessage `json:"agents"`
	}
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	var agents []agent.Config
	dec := json.NewDecoder(bytes.NewReader(file.Agents))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&agents); err != nil {
		t.Fatal(err)
	}
	backends := map[string]bool{}
	for _, a := range agents {
		if err := a.Validate(); err != nil {
			t.Error(err)
		}
		backends[a.Model.Backend] = true
	}
	if len(backends) != len(agent.Backends) {
		t.Errorf("the example shows backends %v, want all of %v", backends, agent.Backends)
	}
}
