package node_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/mcp/ask"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node"
)

const (
	directVersion = "2025-11-25" // the server asks its caller directly
	modernVersion = "2026-07-28" // the server asks through input requests in results
)

var nameSchema = map[string]any{
	"type": "object",
	"properties": map[string]any{
		"name": map[string]any{"type": "string", "description": "your name"},
	},
	"required": []any{"name"},
}

type askOut struct {
	Action  string `json:"action"`
	Name    string `json:"name"`
	Said    string `json:"said"`
	Model   string `json:"model"`
	Version string `json:"version"` // the protocol version of the session the tool saw
}

// addAskTool gives n a tool that asks its caller for a name (form
// elicitation) and for an LLM completion, and returns both answers. runs
// counts the handler's runs.
func addAskTool(n *node.Node, runs *atomic.Int32) {
	node.AddTool(n, &sdkmcp.Tool{Name: "ask", Description: "asks the caller"},
		func(ctx context.Context, req *sdkmcp.CallToolRequest, _ struct{}) (*sdkmcp.CallToolResult, askOut, error) {
			runs.Add(1)
			var out askOut
			if ip := req.Session.InitializeParams(); ip != nil {
				out.Version = ip.ProtocolVersion
			} else {
				out.Version = "no initialize"
			}
			er, err := ask.Elicit(ctx, &sdkmcp.ElicitParams{
				Mode:            "form",
				Message:         "What is your name?",
				RequestedSchema: nameSchema,
			})
			if err != nil {
				return nil, askOut{}, err
			}
			out.Action = er.Action
			out.Name, _ = er.Content["name"].(string)
			sr, err := ask.Sample(ctx, &sdkmcp.CreateMessageParams{
				MaxTokens: 50,
				Messages:  []*sdkmcp.SamplingMessage{{Role: "user", Content: &sdkmcp.TextContent{Text: "greet " + out.Name}}},
			})
			if err != nil {
				return nil, askOut{}, err
			}
			out.Model = sr.Model
			if tc, ok := sr.Content.(*sdkmcp.TextContent); ok {
				out.Said = tc.Text
			}
			return nil, out, nil
		})
}

// answering returns options that make a node answer questions as a user
// called Ada would, counting the questions.
func answering(t *testing.T, elicits, samples *atomic.Int32) []node.Option {
	return []node.Option{
		node.WithElicitationHandler(func(_ context.Context, req *sdkmcp.ElicitRequest) (*sdkmcp.ElicitResult, error) {
			elicits.Add(1)
			if req.Params.Message != "What is your name?" {
				t.Errorf("elicitation message %q", req.Params.Message)
			}
			schema, _ := json.Marshal(req.Params.RequestedSchema)
			if !strings.Contains(string(schema), `"name"`) {
				t.Errorf("elicitation lost its requested schema: %s", schema)
			}
			return &sdkmcp.ElicitResult{Action: "accept", Content: map[string]any{"name": "Ada"}}, nil
		}),
		node.WithSamplingHandler(func(_ context.Context, req *sdkmcp.CreateMessageRequest) (*sdkmcp.CreateMessageResult, error) {
			samples.Add(1)
			prompt := ""
			if len(req.Params.Messages) == 1 {
				if tc, ok := req.Params.Messages[0].Content.(*sdkmcp.TextContent); ok {
					prompt = tc.Text
				}
			}
			return &sdkmcp.CreateMessageResult{
				Model:   "test-model",
				Role:    "assistant",
				Content: &sdkmcp.TextContent{Text: "model answered: " + prompt},
			}, nil
		}),
	}
}

func TestToolAsksTheCallerForInput(t *testing.T) {
	for _, tc := range []struct {
		version string
		runs    func(int32) bool
		want    string
	}{
		{directVersion, func(n int32) bool { return n == 1 }, "exactly once: the server asks the caller mid-call"},
		{modernVersion, func(n int32) bool { return n > 1 }, "more than once: each answer comes back in a new call"},
	} {
		t.Run(tc.version, func(t *testing.T) {
			var runs, elicits, samples atomic.Int32
			b := newNode(t)
			addAskTool(b, &runs)
			a := newNode(t, append(answering(t, &elicits, &samples), node.WithProtocolVersion(tc.version))...)
			connect(t, a, b)

			res, err := a.CallTool(ctxFor(t, 10*time.Second), b.ID(), "ask", nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.IsError {
				t.Fatalf("tool failed: %s", failure(res, nil))
			}
			out, _ := res.StructuredContent.(map[string]any)
			if out["action"] != "accept" || out["name"] != "Ada" {
				t.Errorf("elicitation answer reached the tool as %v", out)
			}
			if out["said"] != "model answered: greet Ada" || out["model"] != "test-model" {
				t.Errorf("sampling answer reached the tool as %v", out)
			}
			if tc.version == directVersion && out["version"] != directVersion {
				t.Errorf("tool ran in a session of version %v, want %s", out["version"], directVersion)
			}
			if tc.version == modernVersion && out["version"] != "no initialize" && out["version"].(string) < modernVersion {
				t.Errorf("tool ran in a session of version %v, want %s or later", out["version"], modernVersion)
			}
			if n := runs.Load(); !tc.runs(n) {
				t.Errorf("handler ran %d times, want %s", n, tc.want)
			}
			if e, s := elicits.Load(), samples.Load(); e != 1 || s != 1 {
				t.Errorf("the caller was asked %d questions and %d completions, want each once", e, s)
			}
			// The session stays usable.
			mustEcho(t, a, b, "after asking")
		})
	}
}

func TestCallerThatCannotAnswerGetsAClearError(t *testing.T) {
	for _, version := range []string{directVersion, modernVersion} {
		t.Run(version, func(t *testing.T) {
			var runs atomic.Int32
			b := newNode(t)
			addAskTool(b, &runs)
			a := newNode(t, node.WithProtocolVersion(version)) // no handlers
			connect(t, a, b)

			ctx := ctxFor(t, 10*time.Second)
			msg := failure(a.CallTool(ctx, b.ID(), "ask", nil))
			if msg == "" {
				t.Fatal("a tool that needs input succeeded with a caller that cannot answer")
			}
			if !strings.Contains(msg, "elicitation") {
				t.Errorf("failure %q: want it to say the caller does not support elicitation", msg)
			}
			if ctx.Err() != nil {
				t.Error("the call ran into its deadline instead of failing")
			}
			mustEcho(t, a, b, "after")
		})
	}
}

// rawClient is an SDK client session on its own libp2p host to the default
// server of n, at protocol 2026-07-28, that leaves input requests to the
// test instead of answering them.
func rawClient(t *testing.T, n *node.Node) *sdkmcp.ClientSession {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	ctx := ctxFor(t, 5*time.Second)
	if err := h.Connect(ctx, *host.InfoFromHost(n.Host())); err != nil {
		t.Fatal(err)
	}
	s, err := h.NewStream(ctx, n.ID(), transport.ProtocolID(transport.DefaultServer))
	if err != nil {
		t.Fatal(err)
	}
	c := sdkmcp.NewClient(&sdkmcp.Implementation{Name: "raw", Version: "1"}, &sdkmcp.ClientOptions{
		MultiRoundTrip: &sdkmcp.MultiRoundTripOptions{Disabled: true},
	})
	cs, err := c.Connect(ctx, &transport.StreamTransport{Stream: s}, &sdkmcp.ClientSessionOptions{ProtocolVersion: modernVersion})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// onlyRequest returns the one input request of res, and its ID.
func onlyRequest(t *testing.T, res *sdkmcp.CallToolResult) (string, sdkmcp.InputRequest) {
	t.Helper()
	if len(res.InputRequests) != 1 || res.RequestState == "" {
		t.Fatalf("want one input request and a request state, got %d requests, state %q (content %v)",
			len(res.InputRequests), res.RequestState, failure(res, nil))
	}
	for id, r := range res.InputRequests {
		return id, r
	}
	panic("unreachable")
}

func callAsk(cs *sdkmcp.ClientSession, responses sdkmcp.InputResponseMap, state string) (*sdkmcp.CallToolResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: "ask", InputResponses: responses, RequestState: state})
}

// forge returns state with its body changed by edit and its MAC kept.
func forge(t *testing.T, state string, edit func(map[string]json.RawMessage)) string {
	t.Helper()
	body, mac, ok := strings.Cut(state, ".")
	if !ok {
		t.Fatalf("request state %q is not BODY.MAC; update the test", state)
	}
	raw, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil {
		t.Fatal(err)
	}
	answers := map[string]json.RawMessage{}
	if err := json.Unmarshal(raw, &answers); err != nil {
		t.Fatal(err)
	}
	edit(answers)
	raw, err = json.Marshal(answers)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(raw) + "." + mac
}

func TestInputRoundTripByHandAndTamperedRequestState(t *testing.T) {
	var runs atomic.Int32
	b := newNode(t)
	addAskTool(b, &runs)
	cs := rawClient(t, b)

	// Round 1: the tool asks for a name.
	res, err := callAsk(cs, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	id1, req1 := onlyRequest(t, res)
	if ep, ok := req1.(*sdkmcp.ElicitParams); !ok || ep.Message != "What is your name?" || ep.RequestedSchema == nil {
		t.Fatalf("first input request: %#v, want the elicitation with its schema", req1)
	}
	name := sdkmcp.InputResponseMap{id1: &sdkmcp.ElicitResult{Action: "accept", Content: map[string]any{"name": "Eve"}}}

	// Round 2: with the name, the tool asks for a completion.
	res, err = callAsk(cs, name, res.RequestState)
	if err != nil {
		t.Fatal(err)
	}
	state2 := res.RequestState
	id2, req2 := onlyRequest(t, res)
	if id2 == id1 {
		t.Fatalf("second question reuses the ID %q of the first", id1)
	}
	if _, ok := req2.(*sdkmcp.CreateMessageWithToolsParams); !ok {
		t.Fatalf("second input request: %#v, want sampling", req2)
	}
	completion := sdkmcp.InputResponseMap{id2: &sdkmcp.CreateMessageResult{
		Model: "m", Role: "assistant", Content: &sdkmcp.TextContent{Text: "hello Eve"},
	}}

	// Tampered states are refused, whatever else the call carries.
	other := newNode(t)
	addAskTool(other, new(atomic.Int32))
	foreign, err := callAsk(rawClient(t, other), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	for name, state := range map[string]string{
		"changed answer": forge(t, state2, func(a map[string]json.RawMessage) {
			a[id1] = json.RawMessage(`{"action":"accept","content":{"name":"Mallory"}}`)
		}),
		"added answer": forge(t, state2, func(a map[string]json.RawMessage) {
			a["mcpmesh-99"] = json.RawMessage(`{"action":"decline"}`)
		}),
		"garbage":            "not a request state",
		"no MAC":             strings.Split(state2, ".")[0],
		"from another node":  foreign.RequestState,
		"truncated MAC":      state2[:len(state2)-4],
		"MAC of other state": strings.Split(state2, ".")[0] + "." + strings.Split(foreign.RequestState, ".")[1],
	} {
		runsBefore := runs.Load()
		res, err := callAsk(cs, completion, state)
		if err == nil {
			t.Errorf("%s: request state accepted (result %+v)", name, res.StructuredContent)
			continue
		}
		if !strings.Contains(err.Error(), "requestState") {
			t.Errorf("%s: error %q does not name the request state", name, err)
		}
		if runs.Load() != runsBefore {
			t.Errorf("%s: the handler ran on a refused request state", name)
		}
	}

	// Round 3, honest: the tool completes with the answers given.
	res, err = callAsk(cs, completion, state2)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.InputRequests) != 0 || res.IsError {
		t.Fatalf("final round: %d input requests, error %q", len(res.InputRequests), failure(res, nil))
	}
	out, _ := res.StructuredContent.(map[string]any)
	if out["name"] != "Eve" || out["said"] != "hello Eve" {
		t.Errorf("final answer %v, want the name and completion given", out)
	}
}

// In 2026-07-28 a result that asks for input must say so: resultType
// "input_required". A client other than this SDK's own (which looks at
// inputRequests alone) otherwise takes the empty result as the tool's answer.
func TestInputRequiredResultIsMarkedAsSuch(t *testing.T) {
	b := newNode(t)
	addAskTool(b, new(atomic.Int32))
	cs := rawClient(t, b)
	res, err := callAsk(cs, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	onlyRequest(t, res)
	if !res.NeedsInput() {
		t.Error(`result with input requests lacks resultType "input_required"`)
	}
}

// Before 2026-07-28 the SDK checks an accepted answer against the requested
// schema before Elicit returns it; ask.Elicit promises the same whichever
// version the session speaks, so a tool never sees an answer of the wrong
// shape.
func TestElicitAnswerOutsideTheRequestedSchemaIsRefused(t *testing.T) {
	var runs atomic.Int32
	b := newNode(t)
	addAskTool(b, &runs)
	cs := rawClient(t, b)

	res, err := callAsk(cs, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	id, _ := onlyRequest(t, res)
	for name, content := range map[string]map[string]any{
		"wrong type":       {"name": 42},
		"missing required": {"nickname": "Eve"},
	} {
		answer := sdkmcp.InputResponseMap{id: &sdkmcp.ElicitResult{Action: "accept", Content: content}}
		next, err := callAsk(cs, answer, res.RequestState)
		if msg := failure(next, err); msg == "" {
			t.Errorf("%s: answer %v accepted: the tool went on (%d more input requests)", name, content, len(next.InputRequests))
		} else if !strings.Contains(msg, "schema") {
			t.Errorf("%s: refused with %q, want it to name the schema", name, msg)
		}
	}
}
