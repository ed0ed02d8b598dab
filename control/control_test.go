package control_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/goleak"

	"github.com/mcpmesh/mcpmesh/control"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/tasks"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// libp2p keeps a few process-wide workers.
		goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/transport/quicreuse.(*reuse).gc"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

// daemon is a node with its control API, as `mcpmesh node` runs them.
type daemon struct {
	n     *node.Node
	srv   *control.Server
	home  string
	token string
}

func newDaemon(t *testing.T) *daemon {
	t.Helper()
	home := t.TempDir()
	n, err := node.New(node.WithListenAddrs("/ip4/127.0.0.1/tcp/0"), node.WithOpen(), node.WithName("daemon"))
	if err != nil {
		t.Fatal(err)
	}
	node.AddTool(n, &sdkmcp.Tool{Name: "echo"}, func(_ context.Context, _ *sdkmcp.CallToolRequest, in struct {
		Text string `json:"text"`
	}) (*sdkmcp.CallToolResult, any, error) {
		return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: in.Text}}}, nil, nil
	})
	srv, err := control.Listen(n, home, "127.0.0.1:0")
	if err != nil {
		n.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Close()
		n.Close()
	})
	data, err := os.ReadFile(filepath.Join(home, control.APIFile))
	if err != nil {
		t.Fatal(err)
	}
	var ep control.Endpoint
	if err := json.Unmarshal(data, &ep); err != nil {
		t.Fatal(err)
	}
	return &daemon{n: n, srv: srv, home: home, token: ep.Token}
}

// get sends GET /v1/id with the given token ("" for none), Host and Origin.
func (d *daemon) get(t *testing.T, token, host, origin string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+d.srv.Addr()+"/v1/id", nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if host != "" {
		req.Host = host
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestAPIFileIsPrivateAndNamesTheEndpoint(t *testing.T) {
	d := newDaemon(t)
	fi, err := os.Stat(filepath.Join(d.home, control.APIFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("api file mode %v, want 0600", fi.Mode().Perm())
	}
	c, err := control.Dial(context.Background(), d.home)
	if err != nil {
		t.Fatal(err)
	}
	id, err := c.ID(context.Background())
	if err != nil || id.ID != d.n.ID().String() || id.Name != "daemon" {
		t.Fatalf("ID = %+v, %v", id, err)
	}
	d.srv.Close()
	if _, err := os.Stat(filepath.Join(d.home, control.APIFile)); !os.IsNotExist(err) {
		t.Errorf("api file left after Close: %v", err)
	}
	if _, err := control.Dial(context.Background(), d.home); err == nil {
		t.Error("Dial found a daemon after Close")
	}
}

func TestRequestsWithoutTheRightTokenAreRefused(t *testing.T) {
	d := newDaemon(t)
	if code, body := d.get(t, "", "", ""); code != http.StatusUnauthorized || !strings.Contains(body, "token") {
		t.Errorf("no token: %d %s", code, body)
	}
	if code, body := d.get(t, strings.Repeat("0", len(d.token)), "", ""); code != http.StatusUnauthorized {
		t.Errorf("wrong token: %d %s", code, body)
	}
	if code, body := d.get(t, d.token[:len(d.token)-1], "", ""); code != http.StatusUnauthorized {
		t.Errorf("token cut short: %d %s", code, body)
	}
	if code, body := d.get(t, d.token, "", ""); code != http.StatusOK {
		t.Errorf("right token: %d %s", code, body)
	}
}

// A web page that rebinds a name of its own to 127.0.0.1 sends its Host,
// not a loopback one; a cross-origin request sends its Origin. Both are
// refused even with the token (a page could not know it, but the check
// does not rely on that). Loopback names pass in any letter case.
func TestRebindingHostAndForeignOriginAreRefused(t *testing.T) {
	d := newDaemon(t)
	_, port, _ := strings.Cut(d.srv.Addr(), ":")
	for _, tt := range []struct {
		host, origin string
		want         int
	}{
		{"attacker.example:" + port, "", http.StatusForbidden},
		{"127.0.0.1.nip.io:" + port, "", http.StatusForbidden},
		{"", "http://attacker.example", http.StatusForbidden},
		{"", "null", http.StatusForbidden},
		{"localhost:" + port, "", http.StatusOK},
		{"LOCALHOST:" + port, "http://LocalHost:" + port, http.StatusOK},
		{"[::1]:" + port, "", http.StatusOK},
	} {
		if code, body := d.get(t, d.token, tt.host, tt.origin); code != tt.want {
			t.Errorf("Host %q Origin %q: %d %s, want %d", tt.host, tt.origin, code, body, tt.want)
		}
	}
}

func TestListenOnlyOnLoopback(t *testing.T) {
	n, err := node.New(node.WithListenAddrs("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for _, addr := range []string{"0.0.0.0:0", "192.0.2.1:0", "example.com:0", "nonsense"} {
		if srv, err := control.Listen(n, t.TempDir(), addr); err == nil {
			srv.Close()
			t.Errorf("Listen(%q) accepted", addr)
		}
	}
	srv, err := control.Listen(n, t.TempDir(), "LOCALHOST:0")
	if err != nil {
		t.Fatalf("Listen on LOCALHOST: %v", err)
	}
	srv.Close()
}

// POST /v1/mcp switches the connection to an MCP session served by the
// daemon: mesh mode, or relayed to a peer's server (here the daemon's own).
func TestGatewayUpgradeCarriesAnMCPSession(t *testing.T) {
	d := newDaemon(t)
	c, err := control.Dial(context.Background(), d.home)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tt := range []struct {
		req  control.GatewayRequest
		tool string
	}{
		{control.GatewayRequest{}, "mesh_search"},
		{control.GatewayRequest{To: d.n.ID().String() + "/" + transport.DefaultServer}, "echo"},
	} {
		conn, err := c.OpenGateway(ctx, tt.req)
		if err != nil {
			t.Fatalf("%+v: %v", tt.req, err)
		}
		cs, err := sdkmcp.NewClient(&sdkmcp.Implementation{Name: "host", Version: "1"}, nil).Connect(ctx,
			&sdkmcp.IOTransport{Reader: conn, Writer: conn}, nil)
		if err != nil {
			conn.Close()
			t.Fatalf("%+v: %v", tt.req, err)
		}
		var names []string
		for tool, err := range cs.Tools(ctx, nil) {
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, tool.Name)
		}
		cs.Close()
		if !contains(names, tt.tool) {
			t.Errorf("%+v: tools %v, want %s among them", tt.req, names, tt.tool)
		}
	}
}

func TestGatewayRefusesBeforeSwitching(t *testing.T) {
	d := newDaemon(t)
	c, err := control.Dial(context.Background(), d.home)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tt := range []struct {
		req  control.GatewayRequest
		want string
	}{
		{control.GatewayRequest{To: "no-slash"}, "want PEER/SERVER"},
		{control.GatewayRequest{To: d.n.ID().String() + "/nosuch"}, `no server named "nosuch"`},
		{control.GatewayRequest{Pins: []string{"bad"}}, "pin"},
	} {
		conn, err := c.OpenGateway(ctx, tt.req)
		if err == nil {
			conn.Close()
			t.Errorf("%+v: switched", tt.req)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v, want %q", tt.req, err, tt.want)
		}
	}
	// Without the Upgrade header the request is not switched.
	req, _ := http.NewRequest(http.MethodPost, "http://"+d.srv.Addr()+"/v1/mcp", strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer "+d.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired {
		t.Errorf("POST /v1/mcp without Upgrade: %s, want 426", resp.Status)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// POST /v1/call with progress streams the call's progress as it comes (the
// tool waits until the client has seen its first step before going on: an
// answer held back until the end would never finish), then the result;
// failures come as the stream's last event. The root task the call makes
// records the latest progress. The tool calls another, on another node,
// which reports progress of its own: the stream holds the tool's steps
// alone (the other's are on its task).
func TestCallStreamsProgressAsItComes(t *testing.T) {
	d := newDaemon(t)
	deep, err := node.New(node.WithListenAddrs("/ip4/127.0.0.1/tcp/0"), node.WithOpen())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deep.Close() })
	node.AddTool(deep, &sdkmcp.Tool{Name: "deep"}, func(ctx context.Context, req *sdkmcp.CallToolRequest, _ any) (*sdkmcp.CallToolResult, any, error) {
		for i := 1; i <= 5; i++ {
			req.Session.NotifyProgress(ctx, &sdkmcp.ProgressNotificationParams{ProgressToken: req.Params.GetProgressToken(), Progress: float64(i), Total: 5, Message: "deep"})
		}
		return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "deep done"}}}, nil, nil
	})
	if _, err := d.n.Connect(context.Background(), deep.Addrs()[0].String()); err != nil {
		t.Fatal(err)
	}
	seen := make(chan struct{})
	node.AddTool(d.n, &sdkmcp.Tool{Name: "steps"}, func(ctx context.Context, req *sdkmcp.CallToolRequest, _ any) (*sdkmcp.CallToolResult, any, error) {
		tok := req.Params.GetProgressToken()
		for i := 1; i <= 3; i++ {
			req.Session.NotifyProgress(ctx, &sdkmcp.ProgressNotificationParams{ProgressToken: tok, Progress: float64(i), Total: 3, Message: "step"})
			if i == 1 {
				select {
				case <-seen:
				case <-ctx.Done():
					return nil, nil, ctx.Err()
				}
				if res, err := d.n.CallTool(ctx, deep.ID(), "node/deep", nil); err != nil || res.IsError {
					return nil, nil, fmt.Errorf("deep: %v", err)
				}
			}
		}
		return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "done"}}}, nil, nil
	})
	c, err := control.Dial(context.Background(), d.home)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []control.Progress
	res, err := c.CallProgress(ctx, d.n.ID().String(), "node/steps", nil, func(p control.Progress) {
		if len(got) == 0 {
			close(seen)
		}
		got = append(got, p)
	})
	if err != nil {
		t.Fatalf("call: %v (progress seen: %+v)", err, got)
	}
	if len(got) != 3 || got[0].Progress != 1 || got[1].Progress != 2 || got[1].Message != "step" || got[2].Progress != 3 || got[2].Total != 3 || got[2].Message != "step" {
		t.Errorf("progress %+v, want the tool's own steps 1, 2, 3 of 3", got)
	}
	if res.Result == nil || res.Result.Content[0].(*sdkmcp.TextContent).Text != "done" {
		t.Errorf("result %+v", res.Result)
	}
	var root bool
	for _, task := range d.n.Tasks() {
		if task.Role == "call" && task.Tool == "steps" {
			root = true
			if task.Progress == nil || task.Progress.Progress != 3 {
				t.Errorf("the call's task: progress %+v", task.Progress)
			}
		}
	}
	if !root {
		t.Errorf("no task for the call: %+v", d.n.Tasks())
	}

	_, err = c.CallProgress(ctx, d.n.ID().String(), "node/nosuch", nil, func(control.Progress) {})
	if err == nil || !strings.Contains(err.Error(), "nosuch") {
		t.Errorf("a failing call: %v", err)
	}
	_, err = c.CallProgress(ctx, d.n.ID().String(), "echo", json.RawMessage(`[1]`), nil)
	if err == nil || !strings.Contains(err.Error(), "JSON object") {
		t.Errorf("bad arguments: %v", err)
	}
}

// mcpmesh call of a thin wrapper (a tool that reports no progress of its
// own and calls a tool on another node) streams the other tool's steps as
// they come (it waits until the client has seen its first before going
// on), then the result; the root task and the wrapper's record the last.
// Before, the stream held nothing while the tool below worked (issue 15:
// silence on a slow call).
func TestCallStreamsAThinWrappersProgress(t *testing.T) {
	d := newDaemon(t)
	deep, err := node.New(node.WithListenAddrs("/ip4/127.0.0.1/tcp/0"), node.WithOpen())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deep.Close() })
	seen := make(chan struct{})
	node.AddTool(deep, &sdkmcp.Tool{Name: "deep"}, func(ctx context.Context, req *sdkmcp.CallToolRequest, _ any) (*sdkmcp.CallToolResult, any, error) {
		for i := 1; i <= 3; i++ {
			req.Session.NotifyProgress(ctx, &sdkmcp.ProgressNotificationParams{ProgressToken: req.Params.GetProgressToken(), Progress: float64(i), Total: 3, Message: fmt.Sprintf("deep %d", i)})
			if i == 1 {
				select {
				case <-seen:
				case <-ctx.Done():
					return nil, nil, ctx.Err()
				}
			}
		}
		return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: "deep done"}}}, nil, nil
	})
	if _, err := d.n.Connect(context.Background(), deep.Addrs()[0].String()); err != nil {
		t.Fatal(err)
	}
	node.AddTool(d.n, &sdkmcp.Tool{Name: "wrap"}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, _ any) (*sdkmcp.CallToolResult, any, error) {
		res, err := d.n.CallTool(ctx, deep.ID(), "node/deep", nil)
		return res, nil, err
	})
	c, err := control.Dial(context.Background(), d.home)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []string
	res, err := c.CallProgress(ctx, d.n.ID().String(), "node/wrap", nil, func(p control.Progress) {
		if len(got) == 0 {
			close(seen)
		}
		got = append(got, fmt.Sprintf("%v/%v %s", p.Progress, p.Total, p.Message))
	})
	if err != nil {
		t.Fatalf("call: %v (progress seen: %q)", err, got)
	}
	if want := "1/3 deep 1, 2/3 deep 2, 3/3 deep 3"; strings.Join(got, ", ") != want {
		t.Errorf("progress %q, want the deep tool's steps %s", got, want)
	}
	if res.Result == nil || res.Result.Content[0].(*sdkmcp.TextContent).Text != "deep done" {
		t.Errorf("result %+v", res.Result)
	}
	var root, wrapper bool
	for _, task := range d.n.Tasks() {
		if task.Tool != "wrap" {
			continue
		}
		root, wrapper = root || task.Role == tasks.Call, wrapper || task.Role == tasks.Served
		if task.Progress == nil || task.Progress.Progress != 3 || task.Progress.Message != "deep 3" {
			t.Errorf("the %s task: progress %+v", task.Role, task.Progress)
		}
	}
	if !root || !wrapper {
		t.Errorf("no task for the call or the wrapper: %+v", d.n.Tasks())
	}
}

// A task is named by the start of its ID when no other task starts so; a
// start two tasks share is refused with both named.
func TestTaskIDsByPrefix(t *testing.T) {
	d := newDaemon(t)
	b, err := node.New(node.WithListenAddrs("/ip4/127.0.0.1/tcp/0"), node.WithOpen())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	if _, err := b.Connect(ctx, d.n.Addrs()[0].String()+"/p2p/"+d.n.ID().String()); err != nil {
		t.Fatal(err)
	}
	// 17 tasks: two of them start with the same hex digit.
	for range 17 {
		if _, err := b.CallTool(ctx, d.n.ID(), "echo", map[string]any{"text": "hi"}); err != nil {
			t.Fatal(err)
		}
	}
	c, err := control.Dial(ctx, d.home)
	if err != nil {
		t.Fatal(err)
	}
	byFirst := map[byte][]string{}
	for _, task := range d.n.Tasks() {
		byFirst[task.ID[0]] = append(byFirst[task.ID[0]], task.ID)
	}
	for first, ids := range byFirst {
		if len(ids) == 1 {
			got, err := c.Task(ctx, ids[0][:6]+"…")
			if err != nil || got.ID != ids[0] {
				t.Errorf("task %s…: %v %v", ids[0][:6], got.ID, err)
			}
			continue
		}
		_, err := c.Task(ctx, string(first))
		if err == nil || !strings.Contains(err.Error(), "tasks start with "+string(first)) || !strings.Contains(err.Error(), ids[0]) {
			t.Errorf("ambiguous %c: %v", first, err)
		}
	}
	if _, err := c.TaskTree(ctx, "zz"); err == nil || !strings.Contains(err.Error(), "no task zz") {
		t.Errorf("unknown task: %v", err)
	}
}
