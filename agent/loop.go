package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/gateway"
	"github.com/mcpmesh/mcpmesh/mcp/ask"
)

// The tools the loop offers the model. search, describe and call work as
// the gateway's mesh_search, mesh_describe and mesh_call, within the
// agent's capabilities; ask_user asks the human at the root of the call
// tree (elicitation).
const (
	toolSearch   = "search"
	toolDescribe = "describe"
	toolCall     = "call"
	toolAskUser  = "ask_user"
)

var loopToolNames = []string{toolSearch, toolDescribe, toolCall, toolAskUser}

func isLoopTool(name string) bool { return slices.Contains(loopToolNames, name) }

// askIn is the input of ask_user.
type askIn struct {
	Question string `json:"question" jsonschema:"the question, for a person"`
}

// loopTools returns the tools offered to the model: the mesh's three (if
// the agent has capabilities) and ask_user.
func loopTools(mesh bool) []ToolSpec {
	var tools []ToolSpec
	if mesh {
		tools = append(tools,
			spec[gateway.SearchIn](toolSearch, "Search the mesh for tools by words and tags. Returns the refs (PEER/SERVER/TOOL) of tools you may call, with one line each, and those found that you may not, with why."),
			spec[gateway.RefIn](toolDescribe, "Get one tool's full description and input schema, by its ref from search."),
			spec[gateway.CallIn](toolCall, "Call a tool by its ref (PEER/SERVER/TOOL) with arguments as its input schema says, or by name on any peer that offers it (ref \"any/TOOL\")."),
		)
	}
	return append(tools, spec[askIn](toolAskUser, "Ask the user a question, when the task cannot be done without their answer. Returns their answer."))
}

func spec[T any](name, desc string) ToolSpec {
	s, err := jsonschema.For[T](nil)
	if err != nil {
		panic(fmt.Sprintf("agent: schema of %s: %v", name, err)) // the types are ours: a bug
	}
	raw, err := json.Marshal(s)
	if err != nil {
		panic(fmt.Sprintf("agent: schema of %s: %v", name, err))
	}
	return ToolSpec{Name: name, Description: desc, InputSchema: raw}
}

// contextMarker separates the task from its structured context in the
// first message.
const contextMarker = "\n\n<context>\n"

// maxResultText bounds the text of one tool result given to the model.
const maxResultText = 32 << 10

// progress reports a run's steps to the agent's caller, if it asked for
// progress.
type progress struct {
	session *sdkmcp.ServerSession
	token   any
}

func progressOf(req *sdkmcp.CallToolRequest) progress {
	if req == nil || req.Params == nil {
		return progress{}
	}
	return progress{session: req.Session, token: req.Params.GetProgressToken()}
}

func (p progress) report(ctx context.Context, step, total int, msg string) {
	if p.session == nil || p.token == nil {
		return
	}
	err := p.session.NotifyProgress(ctx, &sdkmcp.ProgressNotificationParams{
		ProgressToken: p.token, Progress: float64(step), Total: float64(total), Message: msg,
	})
	if err != nil {
		log.Debugw("report progress", "error", err)
	}
}

// run is one run of an agent's loop.
type run struct {
	a        *agent
	progress progress

	out      Outcome
	lastTool string // the text of the last tool result
	lastText string // the model's last words
}

// loop runs the agent on one task and returns its answer. It returns an
// error only when the run cannot go on at all: the caller cancelled, the
// model failed, or a question must go up first (ask.ErrInputRequired).
func (r *run) loop(ctx context.Context, in Input) (string, *Outcome, error) {
	cfg := r.a.cfg
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, time.Duration(cfg.Budgets.Deadline))
	defer cancel()

	first := in.Task
	if len(in.Context) > 0 {
		b, err := json.Marshal(in.Context)
		if err != nil {
			return "", nil, fmt.Errorf("context: %w", err)
		}
		first += contextMarker + string(b) + "\n</context>"
	}
	req := &Request{
		System:   cfg.Instructions,
		Messages: []Message{{Role: User, Text: first}},
		Tools:    r.a.tools,
	}
	maxSteps := cfg.Budgets.MaxSteps
	// over reports whether the run's deadline has passed, by the clock: a
	// context's timer may fire a little after its deadline (on a busy
	// machine, tens of milliseconds), and a reply or a tool result that
	// came in that gap came too late.
	over := func() bool {
		d, _ := ctx.Deadline()
		return parent.Err() == nil && (ctx.Err() != nil || !time.Now().Before(d))
	}
	for {
		if r.out.Steps >= maxSteps {
			return r.partial(StopMaxSteps)
		}
		if over() {
			return r.partial(StopDeadline)
		}
		r.out.Steps++
		step := r.out.Steps
		// Replayed on a 2026-07-28 retry after a question: the model's
		// earlier replies, not new ones (see ask.Replay).
		reply, err := ask.Replay(ctx, fmt.Sprintf("model step %d", step), func() (*Reply, error) {
			return r.a.backend.Complete(ctx, req)
		})
		if err != nil {
			switch {
			case parent.Err() != nil:
				return "", nil, parent.Err()
			case over():
				return r.partial(StopDeadline)
			case errors.Is(err, ask.ErrInputRequired):
				return "", nil, err
			}
			return "", nil, fmt.Errorf("agent %q: step %d: model: %w", cfg.Name, step, err)
		}
		if reply.Model != "" {
			r.out.Model = reply.Model
		}
		if reply.Text != "" {
			r.lastText = reply.Text
		}
		req.Messages = append(req.Messages, Message{Role: Assistant, Text: reply.Text, ToolCalls: reply.ToolCalls})
		if over() {
			return r.partial(StopDeadline) // the reply came after the deadline
		}
		if len(reply.ToolCalls) == 0 {
			r.progress.report(ctx, step, maxSteps, fmt.Sprintf("%s: step %d/%d: answering", cfg.Name, step, maxSteps))
			r.out.StopReason = StopAnswer
			return reply.Text, &r.out, nil
		}
		r.progress.report(ctx, step, maxSteps, fmt.Sprintf("%s: step %d/%d: %s", cfg.Name, step, maxSteps, r.describeStep(reply.ToolCalls)))
		results := make([]ToolResult, 0, len(reply.ToolCalls))
		outOfCalls := false
		for _, c := range reply.ToolCalls {
			if r.out.ToolCalls >= cfg.Budgets.MaxToolCalls {
				outOfCalls = true
				results = append(results, ToolResult{CallID: c.ID, IsError: true,
					Text: fmt.Sprintf("not run: the agent has made its %d tool calls (maxToolCalls)", cfg.Budgets.MaxToolCalls)})
				continue
			}
			r.out.ToolCalls++
			res, err := r.runTool(ctx, c)
			switch {
			case parent.Err() != nil:
				return "", nil, parent.Err()
			case over():
				return r.partial(StopDeadline)
			case err != nil:
				return "", nil, err // a question must go up first
			}
			res.CallID = c.ID
			results = append(results, res)
			r.lastTool = res.Text
		}
		req.Messages = append(req.Messages, Message{Role: User, ToolResults: results})
		if outOfCalls {
			return r.partial(StopMaxToolCalls)
		}
	}
}

// partial ends a run that ran out of a budget, with what it has.
func (r *run) partial(reason string) (string, *Outcome, error) {
	r.out.StopReason = reason
	var what string
	switch reason {
	case StopMaxSteps:
		what = fmt.Sprintf("after %d steps (maxSteps)", r.out.Steps)
	case StopMaxToolCalls:
		what = fmt.Sprintf("after %d tool calls (maxToolCalls)", r.out.ToolCalls)
	default:
		what = fmt.Sprintf("at its deadline (%v) after %d steps", time.Duration(r.a.cfg.Budgets.Deadline), r.out.Steps)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Partial answer: agent %q stopped %s without a final answer.", r.a.cfg.Name, what)
	if r.lastText != "" {
		fmt.Fprintf(&b, "\nIts last words: %s", clip(r.lastText, 2000))
	}
	if r.lastTool != "" {
		fmt.Fprintf(&b, "\nLast tool result: %s", clip(r.lastTool, 2000))
	}
	return b.String(), &r.out, nil
}

// describeStep says what a step's tool calls do, for progress.
func (r *run) describeStep(calls []ToolCall) string {
	s := describeCall(calls[0])
	if len(calls) > 1 {
		s += fmt.Sprintf(" (and %d more)", len(calls)-1)
	}
	return s
}

func describeCall(c ToolCall) string {
	var args struct {
		Query    string `json:"query"`
		Ref      string `json:"ref"`
		Question string `json:"question"`
	}
	json.Unmarshal(c.Args, &args)
	switch c.Name {
	case toolSearch:
		return fmt.Sprintf("searching the mesh for %q", args.Query)
	case toolDescribe:
		return "reading the schema of " + refText(args.Ref)
	case toolCall:
		return "calling " + refText(args.Ref)
	case toolAskUser:
		return "asking the user"
	default:
		return "calling unknown tool " + c.Name
	}
}

// refText shows a ref as "translate on peer 12D3…abcd".
func refText(ref string) string {
	ps, rest, ok := strings.Cut(ref, "/")
	if !ok {
		return ref
	}
	tool := rest
	if i := strings.LastIndexByte(rest, '/'); i >= 0 {
		tool = rest[i+1:]
	}
	if ps == "any" {
		return tool + " on any peer"
	}
	return tool + " on peer " + shortPeer(ps)
}

func shortPeer(p string) string {
	if len(p) <= 12 {
		return p
	}
	return p[:4] + "…" + p[len(p)-4:]
}

// runTool runs one tool call of the model. A failure is the tool's result,
// given back to the model; err is for what must end the run.
func (r *run) runTool(ctx context.Context, c ToolCall) (ToolResult, error) {
	fail := func(format string, args ...any) (ToolResult, error) {
		return ToolResult{Text: fmt.Sprintf(format, args...), IsError: true}, nil
	}
	args := c.Args
	if len(args) == 0 {
		args = json.RawMessage("{}")
	}
	mesh := r.a.mesh
	if mesh == nil && c.Name != toolAskUser {
		return fail("no tool named %q: this agent may only use %s", c.Name, toolAskUser)
	}
	switch c.Name {
	case toolSearch:
		var in gateway.SearchIn
		if err := json.Unmarshal(args, &in); err != nil {
			return fail("search: bad arguments: %v", err)
		}
		out, err := ask.Replay(ctx, "search "+string(args), func() (gateway.SearchOut, error) { return mesh.Search(ctx, in) })
		if err != nil {
			return fail("search: %v", err)
		}
		return jsonResult(out)
	case toolDescribe:
		var in gateway.RefIn
		if err := json.Unmarshal(args, &in); err != nil {
			return fail("describe: bad arguments: %v", err)
		}
		out, err := ask.Replay(ctx, "describe "+in.Ref, func() (gateway.DescribeOut, error) { return mesh.Describe(ctx, in.Ref) })
		if err != nil {
			return fail("describe %s: %v", in.Ref, err)
		}
		return jsonResult(out)
	case toolCall:
		var in gateway.CallIn
		if err := json.Unmarshal(args, &in); err != nil {
			return fail("call: bad arguments: %v", err)
		}
		var callArgs any
		if in.Arguments != nil {
			callArgs = in.Arguments
		}
		// Never twice for one run, retries after a question included.
		res, err := ask.Replay(ctx, "call "+in.Ref+" "+string(args), func() (*sdkmcp.CallToolResult, error) {
			return mesh.Call(ctx, in.Ref, callArgs)
		})
		if err != nil {
			if ctx.Err() != nil {
				return ToolResult{}, ctx.Err()
			}
			return fail("call %s: %v", in.Ref, err)
		}
		r.out.Calls = append(r.out.Calls, in.Ref)
		return ToolResult{Text: clip(resultText(res), maxResultText), IsError: res.IsError}, nil
	case toolAskUser:
		var in askIn
		if err := json.Unmarshal(args, &in); err != nil || in.Question == "" {
			return fail("ask_user: give a question")
		}
		return r.askUser(ctx, in.Question)
	default:
		return fail("no tool named %q: the tools are %s", c.Name, strings.Join(loopToolNames, ", "))
	}
}

// askUser asks the human at the root of the call tree, through the
// agent's caller (elicitation, relayed up the tree).
func (r *run) askUser(ctx context.Context, question string) (ToolResult, error) {
	res, err := ask.Elicit(ctx, &sdkmcp.ElicitParams{
		Message: question,
		RequestedSchema: map[string]any{
			"type":       "object",
			"properties": map[string]any{"answer": map[string]any{"type": "string", "description": "your answer"}},
			"required":   []string{"answer"},
		},
	})
	switch {
	case errors.Is(err, ask.ErrInputRequired):
		return ToolResult{}, err
	case err != nil:
		return ToolResult{Text: fmt.Sprintf("ask_user: no answer: %v", err), IsError: true}, nil
	case res.Action != "accept":
		return ToolResult{Text: fmt.Sprintf("the user did not answer (%s)", res.Action)}, nil
	}
	if s, ok := res.Content["answer"].(string); ok {
		return ToolResult{Text: s}, nil
	}
	b, _ := json.Marshal(res.Content)
	return ToolResult{Text: string(b)}, nil
}

func jsonResult(v any) (ToolResult, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return ToolResult{Text: err.Error(), IsError: true}, nil
	}
	return ToolResult{Text: string(b)}, nil
}

// resultText is what the model reads of a tool's result: its text blocks,
// else its structured content as JSON.
func resultText(res *sdkmcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		switch c := c.(type) {
		case *sdkmcp.TextContent:
			parts = append(parts, c.Text)
		case *sdkmcp.ImageContent:
			parts = append(parts, "[image "+c.MIMEType+"]")
		case *sdkmcp.AudioContent:
			parts = append(parts, "[audio "+c.MIMEType+"]")
		case *sdkmcp.ResourceLink:
			parts = append(parts, "[resource "+c.URI+"]")
		case *sdkmcp.EmbeddedResource:
			if c.Resource != nil && c.Resource.Text != "" {
				parts = append(parts, c.Resource.Text)
			}
		}
	}
	if len(parts) == 0 && res.StructuredContent != nil {
		if b, err := json.Marshal(res.StructuredContent); err == nil {
			return string(b)
		}
	}
	return strings.Join(parts, "\n")
}
