package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/goleak"

	"github.com/mcpmesh/mcpmesh/agent"
	"github.com/mcpmesh/mcpmesh/discovery"
	"github.com/mcpmesh/mcpmesh/gateway"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/tasks"
	"github.com/mcpmesh/mcpmesh/tasks/tracker"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// libp2p and the DHT keep a few process-wide workers.
		goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/transport/quicreuse.(*reuse).gc"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

var fast = discovery.Config{CardTTL: 10 * time.Second, RepublishEvery: time.Second, Debounce: 10 * time.Millisecond}

// newNode starts an open node on loopback with discovery, closed when the
// test ends.
func newNode(t testing.TB, opts ...node.Option) *node.Node {
	t.Helper()
	n, err := node.New(append([]node.Option{
		node.WithListenAddrs("/ip4/127.0.0.1/tcp/0"), node.WithDialTimeout(3 * time.Second), node.WithOpen(),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func connect(t testing.TB, from, to *node.Node) {
	t.Helper()
	if _, err := from.Connect(context.Background(), to.Addrs()[0].String()); err != nil {
		t.Fatal(err)
	}
}

func text(res *sdkmcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*sdkmcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

func outcome(t testing.TB, res *sdkmcp.CallToolResult) agent.Outcome {
	t.Helper()
	var out agent.Outcome
	b, _ := json.Marshal(res.StructuredContent)
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("structured content %s: %v", b, err)
	}
	return out
}

type cityIn struct {
	City string `json:"city" jsonschema:"a city"`
}

// waitFound waits until n's view of the mesh finds query among the tools.
func waitFound(t testing.TB, n *node.Node, in gateway.SearchIn, want string) {
	t.Helper()
	m := gateway.NewMesh(n, gateway.MeshOptions{SearchTimeout: time.Second})
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := m.Search(context.Background(), in)
		if err == nil && slices.ContainsFunc(out.Hits, func(h gateway.Hit) bool { return strings.HasSuffix(h.Ref, "/"+want) }) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not find %s: %+v %v", n.ID(), want, out, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// delegation is the mesh of the delegation tests: A calls the planner agent
// on B, which finds and calls the forecaster agent on C, which finds and
// calls the plain tool weather on D.
type delegation struct {
	a, b, c, d *node.Node
}

func plannerConfig() agent.Config {
	return agent.Config{
		Name:         "planner",
		Description:  "Plans trips: give it a city.",
		Instructions: "You plan trips. Delegate the weather to an agent that knows it.",
		Model: agent.ModelConfig{Backend: "scripted", Script: []agent.ScriptStep{
			{Call: "search", Args: map[string]any{"query": "forecast", "tags": []any{"agent"}}},
			{Call: "call", Args: map[string]any{"ref": "{{last.hits.0.ref}}", "arguments": map[string]any{"task": "{{task}}"}}},
			{Answer: "plan for {{task}}: {{last}}"},
		}},
		Capabilities: agent.Capabilities{Tags: []string{"agent"}},
	}
}

func forecasterConfig() agent.Config {
	return agent.Config{
		Name:        "forecaster",
		Description: "Forecasts the weather in a city.",
		Model: agent.ModelConfig{Backend: "scripted", Script: []agent.ScriptStep{
			{Call: "search", Args: map[string]any{"query": "weather"}},
			{Call: "describe", Args: map[string]any{"ref": "{{last.hits.0.ref}}"}},
			{Call: "call", Args: map[string]any{"ref": "{{last.ref}}", "arguments": map[string]any{"city": "{{task}}"}}},
			{Answer: "forecast: {{last}}"},
		}},
		Capabilities: agent.Capabilities{Tools: []string{"weather"}},
	}
}

// newDelegation starts the delegation mesh, each node with opts too.
func newDelegation(t testing.TB, weather sdkmcp.ToolHandlerFor[cityIn, any], opts ...node.Option) *delegation {
	t.Helper()
	named := func(name string) []node.Option {
		return append([]node.Option{node.WithDiscovery(fast), node.WithName(name)}, opts...)
	}
	d := &delegation{a: newNode(t, named("alice")...), b: newNode(t, named("bob")...), c: newNode(t, named("carol")...), d: newNode(t, named("dave")...)}
	node.AddTool(d.d, &sdkmcp.Tool{Name: "weather", Description: "Today's weather in a city."}, weather)
	if err := agent.Add(d.b, plannerConfig()); err != nil {
		t.Fatal(err)
	}
	if err := agent.Add(d.c, forecasterConfig()); err != nil {
		t.Fatal(err)
	}
	connect(t, d.b, d.a)
	connect(t, d.c, d.b)
	connect(t, d.d, d.c)
	waitFound(t, d.b, gateway.SearchIn{Query: "forecast", Tags: []string{"agent"}}, "forecaster")
	waitFound(t, d.c, gateway.SearchIn{Query: "weather"}, "weather")
	return d
}

func sunny(_ context.Context, _ *sdkmcp.CallToolRequest, in cityIn) (*sdkmcp.CallToolResult, any, error) {
	return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "sunny in " + in.City}}}, nil, nil
}

func TestDelegationThreeHops(t *testing.T) {
	d := newDelegation(t, sunny)
	var mu sync.Mutex
	var progress []string
	ctx := tasks.WithProgress(context.Background(), func(p *sdkmcp.ProgressNotificationParams) {
		mu.Lock()
		progress = append(progress, p.Message)
		mu.Unlock()
	})
	res, err := d.a.CallTool(ctx, d.b.ID(), "planner", map[string]any{"task": "Lisbon"})
	if err != nil {
		t.Fatal(err)
	}
	if res.IsError || text(res) != "plan for Lisbon: forecast: sunny in Lisbon" {
		t.Fatalf("planner answered %q (error %v)", text(res), res.IsError)
	}
	out := outcome(t, res)
	if out.StopReason != agent.StopAnswer || out.Steps != 3 || out.ToolCalls != 2 || len(out.Calls) != 1 ||
		!strings.HasPrefix(out.Calls[0], d.c.ID().String()+"/"+transport.DefaultServer+"/forecaster") {
		t.Fatalf("outcome = %+v", out)
	}

	// The task tree, from the root on A, holds both agents and the leaf.
	var root string
	for _, tk := range d.a.Tasks() {
		if tk.Role == tasks.Call && tk.Tool == "planner" {
			root = tk.ID
		}
	}
	tree, err := d.a.TaskTree(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	planner := only(t, tree, "planner")
	if planner.Peer != d.b.ID().String() || planner.State != tasks.Completed {
		t.Fatalf("planner task = %+v", planner.Task)
	}
	forecaster := only(t, planner, "forecaster")
	if forecaster.Peer != d.c.ID().String() || forecaster.Parent != planner.ID {
		t.Fatalf("forecaster task = %+v", forecaster.Task)
	}
	weather := only(t, forecaster, "weather")
	if weather.Peer != d.d.ID().String() || weather.State != tasks.Completed || len(weather.Path) != 3 {
		t.Fatalf("weather task = %+v", weather.Task)
	}

	// Both agents reported their steps: A read the planner's, its call's
	// own work, before the result; the forecaster's are on its task.
	mu.Lock()
	got := slices.Clone(progress)
	mu.Unlock()
	want := []string{"planner: step 2/10: calling forecaster on peer " + short(d.c), "planner: step 3/10: answering"}
	if !hasAll(got, want) {
		t.Errorf("progress at A = %q, want messages starting %q", got, want)
	}
	for _, m := range got {
		if !strings.HasPrefix(m, "planner: ") {
			t.Errorf("progress at A = %q: %q is not the planner's own", got, m)
		}
	}
	if p := forecaster.Progress; p == nil || !strings.HasPrefix(p.Message, "forecaster: step ") {
		t.Errorf("forecaster task's progress = %+v, want its own steps", p)
	}
}

func short(n *node.Node) string {
	s := n.ID().String()
	return s[:4] + "…" + s[len(s)-4:]
}

func hasAll(got, prefixes []string) bool {
	for _, p := range prefixes {
		if !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, p) }) {
			return false
		}
	}
	return true
}

// only returns the one child of t that called tool.
func only(t *testing.T, tree *tracker.TaskTree, tool string) *tracker.TaskTree {
	t.Helper()
	var found []*tracker.TaskTree
	for _, c := range tree.Children {
		if c.Tool == tool {
			found = append(found, c)
		}
	}
	if len(found) != 1 {
		var have []string
		for _, c := range tree.Children {
			have = append(have, c.Tool)
		}
		t.Fatalf("task %s/%s: %d children calling %s (children: %v)", tree.Server, tree.Tool, len(found), tool, have)
	}
	return found[0]
}

func TestCancelAtRootStopsBothAgentsAndLeaf(t *testing.T) {
	started := make(chan struct{})
	stopped := make(chan error, 1)
	d := newDelegation(t, func(ctx context.Context, _ *sdkmcp.CallToolRequest, in cityIn) (*sdkmcp.CallToolResult, any, error) {
		close(started)
		<-ctx.Done()
		stopped <- ctx.Err()
		return nil, nil, ctx.Err()
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := d.a.CallTool(ctx, d.b.ID(), "planner", map[string]any{"task": "Porto"})
		done <- err
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("the call ended before the leaf started: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("the leaf tool never started")
	}
	cancel()
	select {
	case err := <-stopped:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("leaf stopped with %v, want cancelled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the leaf tool was not cancelled")
	}
	if err := <-done; err == nil {
		t.Fatal("the cancelled call returned no error")
	}
	for _, n := range []struct {
		node *node.Node
		tool string
	}{{d.b, "planner"}, {d.c, "forecaster"}, {d.d, "weather"}} {
		waitState(t, n.node, n.tool, tasks.Cancelled)
	}
}

// waitState waits until n's served task of tool is in state want.
func waitState(t *testing.T, n *node.Node, tool string, want tasks.State) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var got []tasks.State
		for _, tk := range n.Tasks() {
			if tk.Role == tasks.Served && tk.Tool == tool {
				got = append(got, tk.State)
			}
		}
		if len(got) == 1 && got[0] == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s tasks on %s: %v, want one %s", tool, n.Name(), got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestBudgetStopsAtMaxSteps(t *testing.T) {
	n := newNode(t)
	node.AddTool(n, &sdkmcp.Tool{Name: "weather", Description: "Today's weather in a city."}, sunny)
	loop := agent.ScriptStep{Call: "call", Args: map[string]any{"ref": n.ID().String() + "/weather", "arguments": map[string]any{"city": "Faro"}}}
	cfg := agent.Config{
		Name:         "looper",
		Description:  "Never finishes.",
		Model:        agent.ModelConfig{Backend: "scripted", Script: []agent.ScriptStep{loop, loop, loop, loop, loop, {Answer: "done"}}},
		Capabilities: agent.Capabilities{Tools: []string{"weather"}},
		Budgets:      agent.Budgets{MaxSteps: 3},
	}
	if err := agent.Add(n, cfg); err != nil {
		t.Fatal(err)
	}
	calls := cfg
	calls.Name, calls.Budgets = "caller", agent.Budgets{MaxToolCalls: 2}
	if err := agent.Add(n, calls); err != nil {
		t.Fatal(err)
	}
	res, err := n.CallTool(context.Background(), n.ID(), "looper", map[string]any{"task": "go"})
	if err != nil {
		t.Fatal(err)
	}
	out := outcome(t, res)
	if res.IsError || out.StopReason != agent.StopMaxSteps || out.Steps != 3 || out.ToolCalls != 3 {
		t.Fatalf("outcome = %+v (error %v)", out, res.IsError)
	}
	if want := `Partial answer: agent "looper" stopped after 3 steps (maxSteps) without a final answer.`; !strings.HasPrefix(text(res), want) ||
		!strings.Contains(text(res), "Last tool result: sunny in Faro") {
		t.Fatalf("answer = %q, want it to start %q and give the last result", text(res), want)
	}

	res, err = n.CallTool(context.Background(), n.ID(), "caller", map[string]any{"task": "go"})
	if err != nil {
		t.Fatal(err)
	}
	if out := outcome(t, res); out.StopReason != agent.StopMaxToolCalls || out.ToolCalls != 2 || out.Steps != 3 {
		t.Fatalf("outcome = %+v", out)
	}
}

func TestDeadlineGivesPartialAnswer(t *testing.T) {
	n := newNode(t)
	node.AddTool(n, &sdkmcp.Tool{Name: "slow", Description: "Takes its time."},
		func(ctx context.Context, _ *sdkmcp.CallToolRequest, _ struct{}) (*sdkmcp.CallToolResult, any, error) {
			<-ctx.Done()
			time.Sleep(50 * time.Millisecond) // its caller's deadline, a hair earlier, ends the call first
			return nil, nil, ctx.Err()
		})
	cfg := agent.Config{
		Name:        "hasty",
		Description: "Gives up soon.",
		Model: agent.ModelConfig{Backend: "scripted", Script: []agent.ScriptStep{
			{Call: "call", Args: map[string]any{"ref": n.ID().String() + "/slow"}},
			{Answer: "never"},
		}},
		Capabilities: agent.Capabilities{Any: true},
		Budgets:      agent.Budgets{Deadline: agent.Duration(200 * time.Millisecond)},
	}
	if err := agent.Add(n, cfg); err != nil {
		t.Fatal(err)
	}
	res, err := n.CallTool(context.Background(), n.ID(), "hasty", map[string]any{"task": "go"})
	if err != nil {
		t.Fatal(err)
	}
	if out := outcome(t, res); res.IsError || out.StopReason != agent.StopDeadline || !strings.Contains(text(res), "at its deadline (200ms)") {
		t.Fatalf("answer %q, outcome %+v", text(res), out)
	}
}

func TestCapabilitiesBoundWhatTheAgentReaches(t *testing.T) {
	n := newNode(t, node.WithDiscovery(fast))
	node.AddTool(n, &sdkmcp.Tool{Name: "weather", Description: "Today's weather in a city."}, sunny)
	node.AddTool(n, &sdkmcp.Tool{Name: "secret_weather", Description: "The weather nobody may know."}, sunny)
	script := []agent.ScriptStep{
		{Call: "search", Args: map[string]any{"query": "weather"}},
		{Call: "call", Args: map[string]any{"ref": n.ID().String() + "/secret_weather", "arguments": map[string]any{"city": "Braga"}}},
		{Call: "describe", Args: map[string]any{"ref": n.ID().String() + "/bounded"}},
		{Call: "call", Args: map[string]any{"ref": n.ID().String() + "/weather", "arguments": map[string]any{"city": "Braga"}}},
	}
	cfg := agent.Config{
		Name:         "bounded",
		Description:  "May read the weather, not the secret.",
		Model:        agent.ModelConfig{Backend: "scripted", Script: script},
		Capabilities: agent.Capabilities{Tools: []string{"weather", "bounded"}},
	}
	// The same script, played by a backend that records what the model is
	// shown.
	var mu sync.Mutex
	var seen []string
	rec := backendFunc(func(ctx context.Context, req *agent.Request) (*agent.Reply, error) {
		if last := req.Messages[len(req.Messages)-1]; len(last.ToolResults) > 0 {
			mu.Lock()
			seen = append(seen, last.ToolResults[0].Text)
			mu.Unlock()
		}
		step := (len(req.Messages) - 1) / 2
		if step >= len(script) {
			return &agent.Reply{Text: "end"}, nil
		}
		args, _ := json.Marshal(script[step].Args)
		return &agent.Reply{ToolCalls: []agent.ToolCall{{ID: fmt.Sprint(step), Name: script[step].Call, Args: args}}}, nil
	})
	if err := agent.Add(n, cfg, agent.WithBackend(rec)); err != nil {
		t.Fatal(err)
	}
	// Once the node's card lists the agent, its own view of its tools does.
	waitFound(t, n, gateway.SearchIn{Query: "weather"}, "secret_weather")
	waitFound(t, n, gateway.SearchIn{Query: "weather"}, "bounded")

	res, err := n.CallTool(context.Background(), n.ID(), "bounded", map[string]any{"task": "x"})
	if err != nil {
		t.Fatal(err)
	}
	if res.IsError || text(res) != "end" || len(seen) != 4 {
		t.Fatalf("answer %q; results seen: %q", text(res), seen)
	}
	var found gateway.SearchOut
	json.Unmarshal([]byte(seen[0]), &found)
	if len(found.Hits) != 1 || !strings.HasSuffix(found.Hits[0].Ref, "/weather") {
		t.Fatalf("search found %s, want weather only", seen[0])
	}
	if want := `secret_weather on peer ` + n.ID().String() + ` is outside agent "bounded"'s capabilities`; !strings.Contains(seen[1], want) {
		t.Fatalf("call outside the capabilities answered %q", seen[1])
	}
	if !strings.Contains(seen[2], `agent "bounded" does not call itself`) {
		t.Fatalf("describe of the agent itself answered %q", seen[2])
	}
	if seen[3] != "sunny in Braga" {
		t.Fatalf("call within the capabilities answered %q", seen[3])
	}
}

type backendFunc func(context.Context, *agent.Request) (*agent.Reply, error)

func (f backendFunc) Complete(ctx context.Context, req *agent.Request) (*agent.Reply, error) {
	return f(ctx, req)
}

func TestAskUserGoesUpAsElicitation(t *testing.T) {
	a := newNode(t, node.WithElicitationHandler(func(_ context.Context, req *sdkmcp.ElicitRequest) (*sdkmcp.ElicitResult, error) {
		if req.Params.Message != "Which city?" {
			return nil, fmt.Errorf("unexpected question %q", req.Params.Message)
		}
		return &sdkmcp.ElicitResult{Action: "accept", Content: map[string]any{"answer": "Coimbra"}}, nil
	}))
	b := newNode(t)
	cfg := agent.Config{
		Name:        "curious",
		Description: "Asks.",
		Model: agent.ModelConfig{Backend: "scripted", Script: []agent.ScriptStep{
			{Call: "ask_user", Args: map[string]any{"question": "Which city?"}},
			{Answer: "going to {{last}}"},
		}},
	}
	if err := agent.Add(b, cfg); err != nil {
		t.Fatal(err)
	}
	connect(t, a, b)
	res, err := a.CallTool(context.Background(), b.ID(), "curious", map[string]any{"task": "travel"})
	if err != nil {
		t.Fatal(err)
	}
	if text(res) != "going to Coimbra" {
		t.Fatalf("answer = %q", text(res))
	}
}

func TestBorrowedModelTwoHopsUp(t *testing.T) {
	var mu sync.Mutex
	var asked []*sdkmcp.CreateMessageWithToolsParams
	var echoRef string
	// A's owner answers sampling with a fake model: it calls echo, then
	// answers with what echo said.
	model := func(_ context.Context, req *sdkmcp.CreateMessageWithToolsRequest) (*sdkmcp.CreateMessageWithToolsResult, error) {
		mu.Lock()
		asked = append(asked, req.Params)
		mu.Unlock()
		last := req.Params.Messages[len(req.Params.Messages)-1]
		if r, ok := last.Content[0].(*sdkmcp.ToolResultContent); ok {
			said := r.Content[0].(*sdkmcp.TextContent).Text
			return &sdkmcp.CreateMessageWithToolsResult{Role: "assistant", Model: "fake-1", StopReason: "endTurn",
				Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "the echo said " + said}}}, nil
		}
		return &sdkmcp.CreateMessageWithToolsResult{Role: "assistant", Model: "fake-1", StopReason: "toolUse",
			Content: []sdkmcp.Content{
				&sdkmcp.TextContent{Text: "Let me call echo."},
				&sdkmcp.ToolUseContent{ID: "t1", Name: "call", Input: map[string]any{"ref": echoRef, "arguments": map[string]any{"text": "hi"}}},
			}}, nil
	}
	a := newNode(t, node.WithSamplingWithToolsHandler(model))
	b := newNode(t)
	c := newNode(t)
	echoRef = c.ID().String() + "/" + transport.DefaultServer + "/echo"
	node.AddTool(c, &sdkmcp.Tool{Name: "echo", Description: "Echoes text."},
		func(_ context.Context, _ *sdkmcp.CallToolRequest, in struct {
			Text string `json:"text"`
		}) (*sdkmcp.CallToolResult, any, error) {
			return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: in.Text}}}, nil, nil
		})
	cfg := agent.Config{
		Name:         "modelless",
		Description:  "Runs on its caller's model.",
		Instructions: "Be brief.",
		Model:        agent.ModelConfig{Backend: "borrowed", Model: "any-good-model"},
		Capabilities: agent.Capabilities{Tools: []string{"echo"}},
	}
	if err := agent.Add(c, cfg); err != nil {
		t.Fatal(err)
	}
	// B, in the middle, has a plain tool that calls the agent on C.
	node.AddTool(b, &sdkmcp.Tool{Name: "relay", Description: "Asks C's agent."},
		func(ctx context.Context, _ *sdkmcp.CallToolRequest, in agent.Input) (*sdkmcp.CallToolResult, any, error) {
			res, err := b.CallTool(ctx, c.ID(), "modelless", in)
			return res, nil, err
		})
	connect(t, a, b)
	connect(t, b, c)

	res, err := a.CallTool(context.Background(), b.ID(), "relay", map[string]any{"task": "say hi"})
	if err != nil {
		t.Fatal(err)
	}
	if res.IsError || text(res) != "the echo said hi" {
		t.Fatalf("answer = %q (error %v)", text(res), res.IsError)
	}
	if out := outcome(t, res); out.Model != "fake-1" || out.Steps != 2 || len(out.Calls) != 1 {
		t.Fatalf("outcome = %+v", out)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 2 {
		t.Fatalf("A's model was asked %d times, want 2", len(asked))
	}
	p := asked[0]
	var names []string
	for _, tool := range p.Tools {
		names = append(names, tool.Name)
	}
	if p.SystemPrompt != "Be brief." || !slices.Equal(names, []string{"search", "describe", "call", "ask_user"}) ||
		p.ModelPreferences == nil || p.ModelPreferences.Hints[0].Name != "any-good-model" {
		t.Fatalf("first sampling request: system %q, tools %v, prefs %+v", p.SystemPrompt, names, p.ModelPreferences)
	}
	if second := asked[1].Messages; len(second) != 3 || len(second[1].Content) != 2 {
		t.Fatalf("second sampling request has %d messages (want task, tool use, tool result)", len(second))
	}
}

// moodyModel stands for a real model: its wording and call IDs differ on
// every completion. It pays, then asks the user to confirm, then answers.
type moodyModel struct {
	payRef string
	calls  atomic.Int32
}

func (m *moodyModel) Complete(_ context.Context, req *agent.Request) (*agent.Reply, error) {
	n := m.calls.Add(1)
	id := fmt.Sprintf("c%d", n)
	last := req.Messages[len(req.Messages)-1]
	switch {
	case len(req.Messages) == 1:
		return &agent.Reply{Text: fmt.Sprintf("paying (take %d)", n), ToolCalls: []agent.ToolCall{
			{ID: id, Name: "call", Args: json.RawMessage(`{"ref":"` + m.payRef + `"}`)}}}, nil
	case len(req.Messages) == 3:
		return &agent.Reply{ToolCalls: []agent.ToolCall{
			{ID: id, Name: "ask_user", Args: json.RawMessage(fmt.Sprintf(`{"question":"Paid (take %d). Anything else?"}`, n))}}}, nil
	default:
		return &agent.Reply{Text: "done; the user said " + last.ToolResults[0].Text}, nil
	}
}

// TestAskingAgentIsNotRunTwice: on protocol 2026-07-28 a question goes up
// in the result, and the agent runs again once it is answered. That second
// run replays the model's replies and the tool results of the first (pay
// runs once, the model is asked three times in all) instead of doing them
// again, and the user's answer reaches the question it answers.
func TestAskingAgentIsNotRunTwice(t *testing.T) {
	for _, version := range []string{"2025-11-25", "2026-07-28"} {
		t.Run(version, func(t *testing.T) {
			var questions []string
			var mu sync.Mutex
			a := newNode(t, node.WithProtocolVersion(version), node.WithElicitationHandler(
				func(_ context.Context, req *sdkmcp.ElicitRequest) (*sdkmcp.ElicitResult, error) {
					mu.Lock()
					questions = append(questions, req.Params.Message)
					mu.Unlock()
					return &sdkmcp.ElicitResult{Action: "accept", Content: map[string]any{"answer": "no, thanks"}}, nil
				}))
			b, c := newNode(t), newNode(t)
			var paid atomic.Int32
			node.AddTool(c, &sdkmcp.Tool{Name: "pay", Description: "Pays."},
				func(context.Context, *sdkmcp.CallToolRequest, struct{}) (*sdkmcp.CallToolResult, any, error) {
					paid.Add(1)
					return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "paid"}}}, nil, nil
				})
			model := &moodyModel{payRef: c.ID().String() + "/" + transport.DefaultServer + "/pay"}
			cfg := agent.Config{Name: "payer", Description: "Pays.", Model: agent.ModelConfig{Backend: "borrowed"}, // replaced by model
				Capabilities: agent.Capabilities{Tools: []string{"pay"}}}
			if err := agent.Add(b, cfg, agent.WithBackend(model)); err != nil {
				t.Fatal(err)
			}
			connect(t, a, b)
			connect(t, b, c)

			res, err := a.CallTool(context.Background(), b.ID(), "payer", map[string]any{"task": "pay the bill"})
			if err != nil {
				t.Fatal(err)
			}
			if res.IsError || text(res) != "done; the user said no, thanks" {
				t.Fatalf("answer = %q (error %v)", text(res), res.IsError)
			}
			mu.Lock()
			defer mu.Unlock()
			if paid.Load() != 1 || model.calls.Load() != 3 {
				t.Errorf("pay ran %d times and the model was asked %d times, want 1 and 3", paid.Load(), model.calls.Load())
			}
			if len(questions) != 1 || questions[0] != "Paid (take 2). Anything else?" {
				t.Errorf("the user was asked %q, want the model's one question", questions)
			}
			if out := outcome(t, res); len(out.Calls) != 1 || out.Steps != 3 {
				t.Errorf("outcome = %+v", out)
			}
		})
	}
}

// A model that answers after the agent's deadline has passed gives a
// partial answer that says so, not an answer: the stop reason is exact
// (issue 14: it said "answer" when the deadline passed mid-script).
func TestDeadlinePassedDuringTheModelsReply(t *testing.T) {
	n := newNode(t)
	const deadline = 50 * time.Millisecond
	late := backendFunc(func(ctx context.Context, req *agent.Request) (*agent.Reply, error) {
		time.Sleep(2 * deadline) // a reply that ignores the deadline
		return &agent.Reply{Text: "late words"}, nil
	})
	cfg := agent.Config{
		Name: "slowthinker", Description: "Thinks past its deadline.",
		Model:   agent.ModelConfig{Backend: "scripted", Script: []agent.ScriptStep{{Answer: "unused"}}},
		Budgets: agent.Budgets{Deadline: agent.Duration(deadline)},
	}
	if err := agent.Add(n, cfg, agent.WithBackend(late)); err != nil {
		t.Fatal(err)
	}
	res, err := n.CallTool(context.Background(), n.ID(), "slowthinker", map[string]any{"task": "go"})
	if err != nil {
		t.Fatal(err)
	}
	out := outcome(t, res)
	if res.IsError || out.StopReason != agent.StopDeadline || !strings.Contains(text(res), "Its last words: late words") {
		t.Fatalf("answer %q, outcome %+v; want a partial answer at the deadline with the model's late words", text(res), out)
	}
}
