package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	"github.com/mcpmesh/mcpmesh/agent"
	"github.com/mcpmesh/mcpmesh/audit"
	"github.com/mcpmesh/mcpmesh/events"
	"github.com/mcpmesh/mcpmesh/events/trigger"
	"github.com/mcpmesh/mcpmesh/mcp/ask"
	"github.com/mcpmesh/mcpmesh/mcp/relay"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/mcp/upstream"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/peer/identity"
	"github.com/mcpmesh/mcpmesh/peer/policy"
	"github.com/mcpmesh/mcpmesh/tasks"
	"github.com/mcpmesh/mcpmesh/tasks/tracker"
)

func newDemoCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "demo",
		Short: "Run three nodes in this process and show them calling each other",
		Long: `Start three nodes (alice, bob, carol) on loopback in this process and show, step
by step: alice and bob calling each other at the same time over one connection,
a tool on bob that calls carol (two hops), bob asking alice's user a
question (elicitation), an agent on alice that delegates to an agent on
bob, which calls a tool on carol (scripted models: no network, no key), with
the task tree of that request, carol closing up (delegation, audit), and a
trigger: carol shares a program whose resource changes, and alice runs an
agent each time it does, the event the cause of its task tree. Exits 0 if
every step worked.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			return runDemo(ctx, cmd.OutOrStdout())
		},
	}
}

type greetIn struct {
	Name string `json:"name" jsonschema:"who to greet"`
}

type cityIn struct {
	City string `json:"city" jsonschema:"a city"`
}

type bookIn struct {
	Restaurant string `json:"restaurant" jsonschema:"where to book"`
}

// text returns a tool result holding one text block.
func text(format string, args ...any) *sdkmcp.CallToolResult {
	return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: fmt.Sprintf(format, args...)}}}
}

// demoMesh holds the demo's nodes and prints the transcript.
type demoMesh struct {
	w                 io.Writer
	alice, bob, carol *node.Node
	names             map[string]string // peer ID → name
	mu                sync.Mutex
}

func (d *demoMesh) name(ctx context.Context) string {
	if p, ok := identity.Remote(ctx); ok {
		return d.names[p.String()]
	}
	return "?"
}

func (d *demoMesh) say(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.w, format+"\n", args...)
}

func runDemo(ctx context.Context, w io.Writer) (err error) {
	start := time.Now()
	d := &demoMesh{w: w, names: map[string]string{}}
	loopback := node.WithListenAddrs("/ip4/127.0.0.1/tcp/0")
	open := node.WithOpen() // the demo's nodes trust each other: no policy to write

	// alice's user, played by the demo, answers bob's question.
	answer := func(_ context.Context, req *sdkmcp.ElicitRequest) (*sdkmcp.ElicitResult, error) {
		d.say("          bob asks alice's user: %q", req.Params.Message)
		d.say("          alice's user answers: {\"people\": 4}")
		return &sdkmcp.ElicitResult{Action: "accept", Content: map[string]any{"people": 4}}, nil
	}
	var nodes []*node.Node
	defer func() {
		for _, n := range nodes {
			n.Close()
		}
	}()
	for _, spec := range []struct {
		name string
		ptr  **node.Node
		opts []node.Option
	}{
		{"alice", &d.alice, []node.Option{node.WithElicitationHandler(answer)}},
		{"bob", &d.bob, nil},
		{"carol", &d.carol, nil},
	} {
		n, err := node.New(append([]node.Option{loopback, open, node.WithName(spec.name)}, spec.opts...)...)
		if err != nil {
			return fmt.Errorf("start %s: %w", spec.name, err)
		}
		nodes = append(nodes, n)
		*spec.ptr = n
		d.names[n.ID().String()] = spec.name
	}

	greet := func(self string) sdkmcp.ToolHandlerFor[greetIn, any] {
		return func(ctx context.Context, _ *sdkmcp.CallToolRequest, in greetIn) (*sdkmcp.CallToolResult, any, error) {
			return text("hello %s, from %s (I see you as %s)", in.Name, self, d.name(ctx)), nil, nil
		}
	}
	node.AddTool(d.alice, &sdkmcp.Tool{Name: "greet", Description: "Greets the caller"}, greet("alice"))
	node.AddTool(d.bob, &sdkmcp.Tool{Name: "greet", Description: "Greets the caller"}, greet("bob"))
	node.AddTool(d.carol, &sdkmcp.Tool{Name: "weather", Description: "Today's weather in a city"},
		func(ctx context.Context, req *sdkmcp.CallToolRequest, in cityIn) (*sdkmcp.CallToolResult, any, error) {
			// Its steps, for a caller that reads progress.
			if tok := req.Params.GetProgressToken(); tok != nil {
				for i, step := range []string{"reading the stations near " + in.City, "forecasting"} {
					req.Session.NotifyProgress(ctx, &sdkmcp.ProgressNotificationParams{ProgressToken: tok,
						Progress: float64(i + 1), Total: 2, Message: fmt.Sprintf("weather: step %d/2: %s", i+1, step)})
				}
			}
			return text("sunny, 24°C in %s", in.City), nil, nil
		})
	node.AddTool(d.bob, &sdkmcp.Tool{Name: "plan_trip", Description: "Plans a trip, asking carol for the weather"},
		func(ctx context.Context, _ *sdkmcp.CallToolRequest, in cityIn) (*sdkmcp.CallToolResult, any, error) {
			d.say("          bob → carol  weather {\"city\":%q}", in.City)
			res, err := d.bob.CallTool(ctx, d.carol.ID(), "weather", in)
			if err != nil {
				return nil, nil, fmt.Errorf("ask carol: %w", err)
			}
			return text("trip to %s: pack sunglasses (carol says: %s)", in.City, resultText(res)), nil, nil
		})
	node.AddTool(d.bob, &sdkmcp.Tool{Name: "book_table", Description: "Books a table, asking the caller's user how many people"},
		func(ctx context.Context, _ *sdkmcp.CallToolRequest, in bookIn) (*sdkmcp.CallToolResult, any, error) {
			res, err := ask.Elicit(ctx, &sdkmcp.ElicitParams{
				Message: "Book a table for how many people?",
				RequestedSchema: map[string]any{
					"type":       "object",
					"properties": map[string]any{"people": map[string]any{"type": "integer", "minimum": 1}},
					"required":   []string{"people"},
				},
			})
			if err != nil {
				return nil, nil, err
			}
			if res.Action != "accept" {
				return text("not booked: the user chose %s", res.Action), nil, nil
			}
			return text("booked a table for %v at %s", res.Content["people"], in.Restaurant), nil, nil
		})

	if err := d.addAgents(); err != nil {
		return err
	}

	fmt.Fprintln(w, "mcpmesh demo: three nodes in this process, talking MCP over libp2p on loopback")
	fmt.Fprintln(w)
	for _, n := range nodes {
		fmt.Fprintf(w, "  %-6s %s\n", n.Name(), n.ID())
	}
	fmt.Fprintln(w)

	// bob knows alice and carol; alice and carol do not know each other.
	for _, other := range []*node.Node{d.alice, d.carol} {
		if _, err := d.bob.Connect(ctx, other.Addrs()[0].String()); err != nil {
			return fmt.Errorf("connect bob to %s: %w", other.Name(), err)
		}
	}

	fmt.Fprintln(w, "1. alice and bob call each other at the same time, over one connection")
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, pair := range [][2]*node.Node{{d.alice, d.bob}, {d.bob, d.alice}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from, to := pair[0], pair[1]
			t0 := time.Now()
			res, err := from.CallTool(ctx, to.ID(), "greet", greetIn{Name: from.Name()})
			if err == nil && res.IsError {
				err = fmt.Errorf("%s", resultText(res))
			}
			if err != nil {
				errs[i] = fmt.Errorf("%s → %s greet: %w", from.Name(), to.Name(), err)
				return
			}
			d.say("   %-5s → %-5s greet  ← %q (%v)", from.Name(), to.Name(), resultText(res), time.Since(t0).Round(10*time.Microsecond))
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	conns := len(d.alice.Host().Network().ConnsToPeer(d.bob.ID()))
	fmt.Fprintf(w, "   connections between alice and bob: %d\n\n", conns)
	if conns != 1 {
		return fmt.Errorf("alice and bob have %d connections, want 1", conns)
	}

	fmt.Fprintln(w, "2. alice calls a tool on bob that calls carol (two hops; alice does not know carol)")
	fmt.Fprintln(w, `   alice → bob   plan_trip {"city":"Lisbon"}`)
	var steps []string // plan_trip's progress, as alice receives it
	pctx := tasks.WithProgress(ctx, func(p *sdkmcp.ProgressNotificationParams) {
		d.mu.Lock()
		steps = append(steps, fmt.Sprintf("%v/%v %s", p.Progress, p.Total, p.Message))
		d.mu.Unlock()
	})
	res, err := d.alice.CallTool(pctx, d.bob.ID(), "plan_trip", cityIn{City: "Lisbon"})
	if err != nil {
		return fmt.Errorf("plan_trip: %w", err)
	}
	if res.IsError || !strings.Contains(resultText(res), "sunny") {
		return fmt.Errorf("plan_trip answered %q", resultText(res))
	}
	fmt.Fprintf(w, "   ← %q\n", resultText(res))
	// A call's progress comes before its result: all of it is here.
	d.mu.Lock()
	if len(steps) == 0 {
		d.mu.Unlock()
		return fmt.Errorf("alice received no progress from plan_trip")
	}
	fmt.Fprintln(w, "   plan_trip's progress, as alice received it (bob reports none of its own: carol's steps, passed up):")
	for _, s := range steps {
		fmt.Fprintln(w, "     "+s)
	}
	d.mu.Unlock()
	fmt.Fprintln(w)

	fmt.Fprintln(w, "3. a tool on bob asks alice's user a question (elicitation) and uses the answer")
	fmt.Fprintln(w, `   alice → bob   book_table {"restaurant":"Time Out Market"}`)
	res, err = d.alice.CallTool(ctx, d.bob.ID(), "book_table", bookIn{Restaurant: "Time Out Market"})
	if err != nil {
		return fmt.Errorf("book_table: %w", err)
	}
	if res.IsError || !strings.Contains(resultText(res), "for 4") {
		return fmt.Errorf("book_table answered %q", resultText(res))
	}
	fmt.Fprintf(w, "   ← %q\n\n", resultText(res))

	if err := d.agentStep(ctx); err != nil {
		return err
	}
	if err := d.trustStep(ctx); err != nil {
		return err
	}
	if err := d.triggerStep(ctx); err != nil {
		return err
	}

	fmt.Fprintf(w, "All steps passed in %v.\n\n", time.Since(start).Round(time.Millisecond))
	fmt.Fprint(w, `Next, two daemons on this machine (each command in its own terminal):

  go run ./cmd/mcpmesh node --home /tmp/mcpmesh-a --listen /ip4/127.0.0.1/tcp/4001 --open
  go run ./cmd/mcpmesh node --home /tmp/mcpmesh-b --listen /ip4/127.0.0.1/tcp/4002 --open \
      --peer /ip4/127.0.0.1/tcp/4001/p2p/<peer ID that the first node printed>
  go run ./cmd/mcpmesh --home /tmp/mcpmesh-b tools <that peer ID>
  go run ./cmd/mcpmesh --home /tmp/mcpmesh-b call <that peer ID> echo '{"text":"hello"}'
`)
	return nil
}

// trustStep closes carol: bob may call her weather tool only when acting
// for alice, which bob proves with the delegation alice signed for her call.
func (d *demoMesh) trustStep(ctx context.Context) error {
	w := d.w
	fmt.Fprintln(w, "5. carol closes up: bob may call weather only when acting for alice")
	pol, err := policy.Parse(fmt.Appendf(nil, `{"grants": [{"peers": [%q], "for": [%q], "tools": ["weather"]}]}`, d.bob.ID(), d.alice.ID()))
	if err != nil {
		return err
	}
	d.carol.SetPolicy(pol)
	fmt.Fprintln(w, `   carol's policy: {"peers": [bob], "for": [alice], "tools": ["weather"]}`)
	fmt.Fprintln(w, `   alice → bob   plan_trip {"city":"Porto"}   (bob acts for alice: signed delegation alice → bob → carol)`)
	res, err := d.alice.CallTool(ctx, d.bob.ID(), "plan_trip", cityIn{City: "Porto"})
	if err != nil || res.IsError {
		return fmt.Errorf("plan_trip for alice under carol's policy: %v %s", err, resultText(res))
	}
	fmt.Fprintf(w, "   ← %q\n", resultText(res))
	_, err = d.bob.CallTool(ctx, d.carol.ID(), "node/weather", cityIn{City: "Porto"})
	if err == nil || !strings.Contains(err.Error(), "not permitted") {
		return fmt.Errorf("bob alone should have been refused, got %v", err)
	}
	msg := err.Error()
	if i := strings.Index(msg, "not permitted"); i >= 0 {
		msg = msg[i:]
	}
	if i := strings.Index(msg, " ["); i >= 0 {
		msg = msg[:i]
	}
	fmt.Fprintf(w, "   bob → carol weather, bob alone: refused (%s)\n", msg)
	fmt.Fprintln(w, "   carol's audit trail:")
	for _, r := range d.carol.Audit().Recent(audit.Filter{Tool: "weather", Limit: 2}) {
		who := d.names[r.Caller]
		if r.For != "" {
			who += " for " + d.names[r.For]
		}
		fmt.Fprintf(w, "     %s  %-8s weather  caller %s\n", r.Time.Format("15:04:05.000"), r.Outcome, who)
	}
	fmt.Fprintln(w)
	return nil
}

// addAgents adds the agents of the demo's agent step: alice's concierge
// delegates the weather to bob's forecaster, which reads the schema of
// carol's weather tool and calls it. Both think with scripted models.
func (d *demoMesh) addAgents() error {
	bobRef := d.bob.ID().String() + "/" + transport.DefaultServer + "/forecaster"
	carolRef := d.carol.ID().String() + "/" + transport.DefaultServer + "/weather"
	concierge := agent.Config{
		Name:        "concierge",
		Description: "Answers travel questions, delegating to agents that know more.",
		Model: agent.ModelConfig{Backend: "scripted", Script: []agent.ScriptStep{
			{Call: "call", Args: map[string]any{"ref": bobRef, "arguments": map[string]any{"task": "{{task}}"}}},
			{Answer: "For your trip to {{task}}: {{last}}"},
		}},
		Capabilities: agent.Capabilities{Tags: []string{agent.Tag}},
	}
	forecaster := agent.Config{
		Name:        "forecaster",
		Description: "Forecasts the weather in a city.",
		Model: agent.ModelConfig{Backend: "scripted", Script: []agent.ScriptStep{
			{Call: "describe", Args: map[string]any{"ref": carolRef}},
			{Call: "call", Args: map[string]any{"ref": "{{last.ref}}", "arguments": map[string]any{"city": "{{task}}"}}},
			{Answer: "the forecast says {{last}}"},
		}},
		Capabilities: agent.Capabilities{Tools: []string{"weather"}},
	}
	if err := agent.Add(d.alice, concierge); err != nil {
		return fmt.Errorf("add concierge: %w", err)
	}
	if err := agent.Add(d.bob, forecaster); err != nil {
		return fmt.Errorf("add forecaster: %w", err)
	}
	return nil
}

// agentStep runs the demo's agent step (see addAgents).
func (d *demoMesh) agentStep(ctx context.Context) error {
	w := d.w
	fmt.Fprintln(w, "4. an agent on alice delegates to an agent on bob, which calls a tool on carol")
	fmt.Fprintln(w, `   alice → alice concierge {"task":"Lisbon"}   (alice's caller sees one tool, not the toolbox behind it)`)
	var mu sync.Mutex
	var steps []string
	pctx := tasks.WithProgress(ctx, func(p *sdkmcp.ProgressNotificationParams) {
		mu.Lock()
		steps = append(steps, p.Message)
		mu.Unlock()
	})
	res, err := d.alice.CallTool(pctx, d.alice.ID(), "concierge", agent.Input{Task: "Lisbon"})
	if err != nil {
		return fmt.Errorf("concierge: %w", err)
	}
	if res.IsError || !strings.Contains(resultText(res), "sunny") {
		return fmt.Errorf("concierge answered %q", resultText(res))
	}
	fmt.Fprintf(w, "   ← %q\n", resultText(res))
	// A call's progress comes before its result: all of it is here. It is
	// the concierge's own; the forecaster's steps are on its task, in the
	// tree below.
	mu.Lock()
	fmt.Fprintln(w, "   the concierge's progress, as alice received it (each task's own steps show on it in the tree):")
	for _, s := range steps {
		for id, name := range d.names {
			s = strings.ReplaceAll(s, shortPeer(id), name)
		}
		fmt.Fprintln(w, "     "+s)
	}
	mu.Unlock()
	var root string
	for _, t := range d.alice.Tasks() {
		if t.Role == tasks.Call && t.Tool == "concierge" {
			root = t.ID
		}
	}
	tree, err := d.alice.TaskTree(ctx, root)
	if err != nil {
		return fmt.Errorf("task tree: %w", err)
	}
	if depth(tree) != 4 {
		return fmt.Errorf("the task tree is %d levels deep, want 4 (call, concierge, forecaster, weather)", depth(tree))
	}
	var b strings.Builder
	drawTree(&b, tree)
	out := b.String()
	for id, name := range d.names {
		out = strings.ReplaceAll(out, id, name)
	}
	fmt.Fprintln(w, "   the task tree of that request, across the three nodes:")
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		fmt.Fprintln(w, "     "+line)
	}
	fmt.Fprintln(w)
	return nil
}

// depth counts the levels of a task tree.
func depth(t *tracker.TaskTree) int {
	most := 0
	for _, c := range t.Children {
		most = max(most, depth(c))
	}
	return most + 1
}

// shortPeer is how agents name a peer in their progress: "12D3…abcd".
func shortPeer(id string) string { return id[:4] + "…" + id[len(id)-4:] }

// triggerStep: carol shares a program whose resource changes; alice
// subscribes to carol's resource updates with a trigger that runs an agent
// (scripted) on each; bob changes the resource; the agent's task tree on
// alice names the event as its cause.
func (d *demoMesh) triggerStep(ctx context.Context) error {
	w := d.w
	fmt.Fprintln(w, "6. carol shares a program whose resource changes; a trigger on alice runs an agent when it does")
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	program := upstream.Command{Args: []string{exe}, Env: append(os.Environ(), demoProgramEnv+"=1"), Line: "mcpmesh (as a notes program)"}
	// Shared mode: one notes process for every caller, so that bob's change
	// is the resource carol's node watches (isolated, each caller would
	// write notes of its own).
	if err := d.carol.ShareCommand(ctx, "notes", program, node.ShareMode(relay.Shared)); err != nil {
		return fmt.Errorf("share the notes program: %w", err)
	}
	fmt.Fprintln(w, `   carol shares "notes", a stdio program (this binary, started as one) with a resource notes://today, one process for every caller (--share-mode notes=shared)`)
	pol, err := policy.Parse(fmt.Appendf(nil, `{"grants": [
		{"peers": [%[1]q], "for": [%[2]q], "tools": ["weather"]},
		{"peers": [%[2]q], "events": ["mcp.resource.updated"]},
		{"peers": [%[2]q], "server": "notes", "tools": ["read_note"], "resources": ["notes://*"]},
		{"peers": [%[1]q], "server": "notes", "tools": ["write_note"]}]}`, d.bob.ID(), d.alice.ID()))
	if err != nil {
		return err
	}
	d.carol.SetPolicy(pol)
	fmt.Fprintln(w, `   carol's policy adds: alice may subscribe to mcp.resource.updated and read notes; bob may write them`)
	if _, err := d.alice.Connect(ctx, d.carol.Addrs()[0].String()); err != nil {
		return fmt.Errorf("connect alice to carol: %w", err)
	}
	notetaker := agent.Config{
		Name:        "notetaker",
		Description: "Reads a note that changed and keeps what it says.",
		Model: agent.ModelConfig{Backend: "scripted", Script: []agent.ScriptStep{
			{Call: "call", Args: map[string]any{"ref": d.carol.ID().String() + "/notes/read_note", "arguments": map[string]any{"uri": "{{task}}"}}},
			{Answer: "noted, {{task}} now says: {{last}}"},
		}},
		Capabilities: agent.Capabilities{Tools: []string{"notes/read_note"}},
	}
	if err := agent.Add(d.alice, notetaker); err != nil {
		return fmt.Errorf("add notetaker: %w", err)
	}
	triggers := trigger.New(d.alice, trigger.Options{})
	defer triggers.Close()
	rule := trigger.Rule{Name: "notes-changed", Event: events.ResourceUpdated, From: []string{d.carol.ID().String()},
		Where: json.RawMessage(`{"server":"notes"}`), Agent: "notetaker", Task: "{{event.data.uri}}"}
	if err := triggers.Add(rule); err != nil {
		return err
	}
	fmt.Fprintln(w, `   alice: mcpmesh on mcp.resource.updated --from carol --where server=notes --agent notetaker --task '{{event.data.uri}}'`)
	// The trigger's subscription is in place, and carol watches the
	// program's resource (the node subscribes to it through the mirror).
	for ready := false; !ready; {
		st := triggers.List()[0]
		ready = len(st.Subscriptions) == 1 && st.Subscriptions[0].Connected && d.carol.WatchedResources("notes") > 0
		if !ready {
			select {
			case <-ctx.Done():
				return fmt.Errorf("the trigger's subscription to carol: %+v (carol watches %d resources of notes)", st, d.carol.WatchedResources("notes"))
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	fmt.Fprintln(w, `   bob → carol  notes/write_note {"text":"pick up the bikes at six"}   (the program updates notes://today)`)
	t0 := time.Now()
	res, err := d.bob.CallServerTool(ctx, d.carol.ID(), "notes", "write_note", noteIn{Text: "pick up the bikes at six"})
	if err != nil || res.IsError {
		return fmt.Errorf("write_note: %v %s", err, resultText(res))
	}
	var root tasks.Task
	for root.ID == "" || !root.State.Terminal() {
		for _, t := range d.alice.Tasks() {
			if t.Cause != nil && t.Cause.Trigger == rule.Name {
				root = t
			}
		}
		if root.State.Terminal() {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the trigger did not run the agent: %+v", triggers.List())
		case <-time.After(5 * time.Millisecond):
		}
	}
	full, _ := d.alice.Task(root.ID)
	var out sdkmcp.CallToolResult
	if err := json.Unmarshal(full.Result, &out); err != nil || root.State != tasks.Completed || !strings.Contains(resultText(&out), "bikes") {
		return fmt.Errorf("the agent's run: %s %s %v", root.State, full.Result, err)
	}
	fmt.Fprintf(w, "   the event reached alice: %s from carol [%s]; the agent ran (%v after the write)\n", root.Cause.Event, root.Cause.ID, time.Since(t0).Round(100*time.Microsecond))
	fmt.Fprintf(w, "   ← notetaker: %q\n", resultText(&out))
	tree, err := d.alice.TaskTree(ctx, root.ID)
	if err != nil {
		return fmt.Errorf("task tree: %w", err)
	}
	if tree.Cause == nil || depth(tree) != 3 {
		return fmt.Errorf("the tree has cause %v and %d levels, want the event and 3 (call, notetaker, read_note)", tree.Cause, depth(tree))
	}
	var b strings.Builder
	drawTree(&b, tree)
	text := b.String()
	for id, name := range d.names {
		text = strings.ReplaceAll(text, id, name)
		text = strings.ReplaceAll(text, shortText(id), name)
	}
	fmt.Fprintln(w, "   alice's task tree of the firing, with its cause (mcpmesh tasks --tree ID):")
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		fmt.Fprintln(w, "     "+line)
	}
	fmt.Fprintln(w)
	return nil
}
