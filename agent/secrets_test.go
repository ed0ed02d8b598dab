package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	stdlog "log"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	logging "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p/gologshim"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/mcpmesh/mcpmesh/discovery"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node"
)

// captureLogs sends every log line of the process to a file for the rest of
// the test, at debug level for every subsystem: go-log's loggers (mcpmesh's
// own, the MCP SDK's through go-log's slog bridge), libp2p's slog loggers
// not yet used, slog's default logger and the standard library's log
// package. It returns a function reading all that was logged.
func captureLogs(t *testing.T) func() []byte {
	t.Helper()
	file := filepath.Join(t.TempDir(), "all.log")
	prev := logging.GetConfig()
	logging.SetupLogging(logging.Config{Format: logging.JSONOutput, Level: logging.LevelDebug, File: file})
	logging.SetAllLoggers(logging.LevelDebug)
	gologshim.SetDefaultHandler(logging.SlogHandler())
	prevSlog := slog.Default()
	slog.SetDefault(slog.New(logging.SlogHandler()))
	var std bytes.Buffer // written by the log package under its own lock
	prevOut, prevFlags := stdlog.Writer(), stdlog.Flags()
	stdlog.SetOutput(&std)
	t.Cleanup(func() {
		stdlog.SetOutput(prevOut)
		stdlog.SetFlags(prevFlags)
		slog.SetDefault(prevSlog)
		logging.SetupLogging(prev)
	})
	return func() []byte {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("read the log: %v", err)
		}
		stdlog.SetOutput(prevOut) // no more writes to std
		return append(b, std.Bytes()...)
	}
}

// TestAPIKeyNeverLeaks runs an agent on a real OpenAI-compatible backend (a
// loopback server speaking the API, through the backend),
// with its key in an environment variable, on real nodes, called from
// another node: once to a tool call and an answer, once to the server
// refusing the key with an answer that quotes it. The key must reach the
// server and nothing else: no log line at any level, no card, no tool
// definition, no error, no task record, no tool result, no request body.
func TestAPIKeyNeverLeaks(t *testing.T) {
	var buf [16]byte
	rand.Read(buf[:])
	key := "sk-mesh-secret-" + hex.EncodeToString(buf[:])
	const keyEnv = "MCPMESH_TEST_OPENAI_KEY"
	t.Setenv(keyEnv, key)
	readLogs := captureLogs(t)

	fast := discovery.Config{CardTTL: 10 * time.Second, RepublishEvery: time.Second, Debounce: 10 * time.Millisecond}
	newNode := func(name string) *node.Node {
		n, err := node.New(node.WithListenAddrs("/ip4/127.0.0.1/tcp/0"), node.WithDialTimeout(3*time.Second),
			node.WithOpen(), node.WithDiscovery(fast), node.WithName(name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	caller, host, leaf := newNode("caller"), newNode("host"), newNode("leaf")
	node.AddTool(leaf, &sdkmcp.Tool{Name: "weather", Description: "Today's weather in a city."},
		func(_ context.Context, _ *sdkmcp.CallToolRequest, in struct {
			City string `json:"city"`
		}) (*sdkmcp.CallToolResult, any, error) {
			return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "sunny in " + in.City}}}, nil, nil
		})
	weatherRef := fmt.Sprintf("%s/%s/weather", leaf.ID(), transport.DefaultServer)

	// The model: search, then call the weather tool, then answer with its
	// result; a task saying "refuse" gets a 401 quoting the key, as some
	// servers do.
	api := newFakeOpenAI(t, func(n int, r *fakeRequest) fakeResponse {
		msgs, _ := dig(r.Body, "messages").([]any)
		task, _ := dig(msgs, 1, "content").(string)
		last := dig(msgs, len(msgs)-1)
		switch {
		case strings.Contains(task, "refuse"):
			return openAIError(401, "Incorrect API key provided: "+key+". You can find your API key in your account.")
		case len(msgs) == 2:
			return openAIToolCallAnswer("llama3.1", "call_s1", "search", `{"query":"weather"}`)
		case len(msgs) == 4:
			return openAIToolCallAnswer("llama3.1", "call_c1", "call", fmt.Sprintf(`{"ref":%q,"arguments":{"city":"Paris"}}`, weatherRef))
		default:
			return openAITextAnswer("llama3.1", fmt.Sprintf("The weather: %v", dig(last, "content")))
		}
	})
	cfg := Config{
		Name:         "weatherman",
		Description:  "Tells the weather.",
		Instructions: "Find a weather tool in the mesh and use it.",
		Model:        ModelConfig{Backend: "openai", Model: "llama3.1", URL: api.baseURL(), APIKeyEnv: keyEnv},
		Capabilities: Capabilities{Tools: []string{"weather"}},
	}
	if err := Add(host, cfg, WithSearchTimeout(time.Second)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, c := range [][2]*node.Node{{host, caller}, {leaf, host}} {
		if _, err := c[0].Connect(ctx, c[1].Addrs()[0].String()); err != nil {
			t.Fatal(err)
		}
	}

	var corpus []string // everything the key must not be in
	add := func(what string, v any) {
		switch x := v.(type) {
		case string:
			corpus = append(corpus, what+": "+x)
		case []byte:
			corpus = append(corpus, what+": "+string(x))
		default:
			b, err := json.Marshal(v)
			if err != nil {
				t.Fatalf("marshal %s: %v", what, err)
			}
			corpus = append(corpus, what+": "+string(b))
		}
	}

	// 1. The agent works: a tool call, its result, an answer.
	res, err := caller.CallTool(ctx, host.ID(), "weatherman", map[string]any{"task": "What is the weather in Paris?"})
	if err != nil {
		t.Fatal(err)
	}
	add("answer", res)
	if res.IsError || !strings.Contains(resultText(res), "sunny in Paris") {
		t.Fatalf("agent answered %q (error %v), want the weather", resultText(res), res.IsError)
	}

	// 2. The server refuses the key, quoting it.
	res, err = caller.CallTool(ctx, host.ID(), "weatherman", map[string]any{"task": "Please refuse me."})
	if err != nil {
		add("error", err.Error())
	} else {
		add("failed answer", res)
	}
	if err == nil && !res.IsError {
		t.Fatalf("the refused call succeeded: %q", resultText(res))
	}
	failure := fmt.Sprint(err)
	if res != nil {
		failure = resultText(res)
	}
	if !strings.Contains(failure, "401") || !strings.Contains(failure, "[redacted]") {
		t.Errorf("the refusal reads %q: want the status and the redacted key", failure)
	}
	// 3. A backend built directly, for its own error values.
	b, err := newBackend(cfg, os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Complete(ctx, &Request{Messages: []Message{{Role: User, Text: "hi"}, {Role: User, Text: "refuse"}}}); err != nil {
		add("backend error", err.Error())
		add("backend error %+v", fmt.Sprintf("%+v %#v", err, err))
	}
	// ... and the error when the variable is not set.
	cfgUnset := cfg
	cfgUnset.Model.APIKeyEnv = "MCPMESH_TEST_UNSET_KEY"
	if err := Add(host, Config{Name: "unset", Description: "x", Model: cfgUnset.Model}); err == nil {
		t.Error("Add succeeded with no key in the environment")
	} else {
		add("unset key error", err.Error())
	}

	// The key did reach the server: the searches below can find it.
	reqs := api.requests()
	if len(reqs) < 4 {
		t.Fatalf("the model was asked %d times, want at least 4", len(reqs))
	}
	for _, r := range reqs {
		if r.Header.Get("Authorization") != "Bearer "+key {
			t.Fatalf("request to the model without the key: the test proves nothing")
		}
		add("request body to the model", r.Raw)
	}
	if !strings.Contains(string(reqs[2].Raw), "sunny in Paris") {
		t.Errorf("the weather tool's result did not go back to the model: %s", reqs[2].Raw)
	}

	// The host's card, as the caller sees it in the DHT, and the agent's
	// tool definition.
	var card *discovery.Card
	deadline := time.Now().Add(15 * time.Second)
	for {
		card, err = caller.Card(ctx, host.ID())
		if err == nil && strings.Contains(protojson.Format(card.Card), "weatherman") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the host's card never showed the agent: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	add("card", protojson.Format(card.Card))
	add("signed card", card.Raw)
	tools, err := caller.ListTools(ctx, host.ID())
	if err != nil {
		t.Fatal(err)
	}
	add("tools", tools)

	// Every task record on every node, with results, and the trees.
	for _, n := range []*node.Node{caller, host, leaf} {
		for _, tk := range n.Tasks() {
			full, _ := n.Task(tk.ID)
			add("task on "+n.Name(), full)
			if tree, err := n.TaskTree(ctx, tk.ID); err == nil {
				add("task tree on "+n.Name(), tree)
			}
		}
	}
	if len(host.Tasks()) < 2 {
		t.Errorf("the host holds %d tasks, want the two agent runs", len(host.Tasks()))
	}

	logs := readLogs()
	add("logs", logs)
	if !bytes.Contains(logs, []byte("weatherman")) || !bytes.Contains(logs, []byte(`"level":"debug"`)) {
		t.Errorf("the log capture holds no debug line about the agent: it proves nothing (%d bytes)", len(logs))
	}

	for _, c := range corpus {
		if i := strings.Index(c, key); i >= 0 {
			what, _, _ := strings.Cut(c, ": ")
			lo, hi := max(0, i-120), min(len(c), i+len(key)+40)
			t.Errorf("the API key appears %d times in %s, first: …%s…", strings.Count(c, key), what, strings.ReplaceAll(c[lo:hi], key, "<KEY>"))
		}
	}
}
