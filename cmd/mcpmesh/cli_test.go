package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
)

var binary string // the mcpmesh command, built once for the CLI tests

func TestMain(m *testing.M) {
	if gate := os.Getenv(gatedProgramEnv); gate != "" {
		os.Exit(runGatedProgram(gate)) // a program a test's daemon shares
	}
	if os.Getenv(askingProgramEnv) == "1" {
		os.Exit(runAskingProgram()) // a program a test's daemon shares
	}
	if os.Getenv(demoProgramEnv) == "1" {
		runDemoProgram() // the demo's shared program: this test binary, run by the demo
		return
	}
	dir, err := os.MkdirTemp("", "mcpmesh-cli")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "mcpmesh")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		panic("build mcpmesh: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestDemoPasses(t *testing.T) {
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := runDemo(ctx, &out); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	for _, want := range []string{"connections between alice and bob: 1", "bob → carol", "alice's user answers",
		"(bob reports none of its own: carol's steps, passed up):\n     1/2 weather: step 1/2: reading the stations near Lisbon\n     2/2 weather: step 2/2: forecasting\n", "All steps passed", "mcpmesh node --home",
		"the event reached alice: mcp.resource.updated from carol", "event mcp.resource.updated from carol (trigger notes-changed)", "now says: pick up the bikes at six"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo transcript lacks %q:\n%s", want, out.String())
		}
	}
}

// run runs the command and returns its stdout, stderr and exit code.
func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

func TestEveryCommandHasHelp(t *testing.T) {
	for _, c := range []string{"node", "id", "peers", "status", "connect", "tools", "call", "find", "card", "stdio", "demo", "audit", "tasks", "init-mesh", "policy", "ui", "on", "events"} {
		out, _, code := run(t, c, "--help")
		if code != 0 || !strings.Contains(out, "Usage:") || !strings.Contains(out, "mcpmesh "+c) {
			t.Errorf("mcpmesh %s --help: exit %d\n%s", c, code, out)
		}
	}
}

// daemon is a running `mcpmesh node`.
type daemon struct {
	home  string
	id    string
	addr  string
	cmd   *exec.Cmd
	out   *bytes.Buffer
	later *lockedBuffer // what the daemon writes on stdout once ready
	errs  *lockedBuffer // all the daemon writes on stderr
}

func startDaemon(t *testing.T, extra ...string) *daemon {
	t.Helper()
	return startDaemonAt(t, t.TempDir(), extra...)
}

func startDaemonAt(t *testing.T, home string, extra ...string) *daemon {
	t.Helper()
	// --no-mdns: test daemons must not find each other, or a developer's own, on the LAN.
	args := []string{"--home", home, "node", "--listen", "/ip4/127.0.0.1/tcp/0", "--dial-timeout", "3s", "--no-mdns"}
	if !slices.Contains(extra, "--config") {
		args = append(args, "--open") // a daemon with a policy of its own is a test's choice
	}
	args = append(args, extra...)
	cmd := exec.Command(binary, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{home: home, cmd: cmd, out: &bytes.Buffer{}, later: &lockedBuffer{}, errs: stderr}
	t.Cleanup(func() { d.stop(t) })

	// The reader fills d (banner, id, addr) only until the daemon is ready:
	// the test reads d afterwards; what the daemon prints later goes to
	// d.later.
	ready := make(chan error, 1)
	go func() {
		defer io.Copy(d.later, stdout)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			d.out.WriteString(line + "\n")
			if id, ok := strings.CutPrefix(line, "mcpmesh node "); ok {
				d.id = id
			}
			if a, ok := strings.CutPrefix(strings.TrimSpace(line), "listen:"); ok {
				d.addr = strings.TrimSpace(a)
			}
			if line == "ready; Ctrl-C to stop" {
				ready <- nil
				for sc.Scan() {
					fmt.Fprintln(d.later, sc.Text())
				}
				return
			}
		}
		ready <- errors.New("daemon exited before it was ready")
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, d.out, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("daemon not ready after 20s:\n%s", d.out)
	}
	return d
}

func (d *daemon) stop(t *testing.T) {
	if d.cmd.ProcessState != nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("daemon exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-done
		t.Errorf("daemon did not stop within 10s of SIGINT")
	}
}

func TestTwoDaemonsCallEachOther(t *testing.T) {
	a := startDaemon(t)
	b := startDaemon(t, "--peer", a.addr)

	out, _, code := run(t, "--home", b.home, "id", "--json")
	var id struct {
		ID      string   `json:"id"`
		Servers []string `json:"servers"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &id) != nil || id.ID != b.id {
		t.Fatalf("id --json: exit %d: %s", code, out)
	}

	out, _, code = run(t, "--home", b.home, "peers")
	if code != 0 || !strings.Contains(out, a.id) {
		t.Fatalf("peers: exit %d: %s", code, out)
	}

	out, _, code = run(t, "--home", b.home, "tools", a.id)
	if code != 0 || !strings.Contains(out, "node/echo") {
		t.Fatalf("tools: exit %d: %s", code, out)
	}

	// Both ways, by peer ID and by multiaddr.
	out, stderr, code := run(t, "--home", b.home, "call", a.id, "echo", `{"text":"hello from b"}`)
	if code != 0 || strings.TrimSpace(out) != "hello from b" {
		t.Fatalf("call b→a: exit %d: %q %q", code, out, stderr)
	}
	out, stderr, code = run(t, "--home", a.home, "call", b.addr, "node/echo", `{"text":"hello from a"}`)
	if code != 0 || strings.TrimSpace(out) != "hello from a" {
		t.Fatalf("call a→b: exit %d: %q %q", code, out, stderr)
	}
	out, _, code = run(t, "--home", b.home, "call", a.id, "echo", `{"text":"x"}`, "--json")
	var raw map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &raw) != nil || raw["structuredContent"].(map[string]any)["caller"] != b.id {
		t.Fatalf("call --json: exit %d: %s", code, out)
	}
}

func TestCallFailuresExitNonZeroWithOneLine(t *testing.T) {
	a := startDaemon(t)
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown tool", []string{"call", a.id, "nope"}, 1, `no tool named "nope"`},
		{"schema mismatch", []string{"call", a.id, "echo", `{"text":5}`}, 1, "failed"},
		{"args not an object", []string{"call", a.id, "echo", `[1]`}, 2, "JSON object"},
		{"bad peer", []string{"call", "not-a-peer", "echo"}, 2, "is not a peer ID"},
		{"unreachable peer", []string{"call", "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp", "echo"}, 1, "unreachable"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			_, stderr, code := run(t, append([]string{"--home", a.home}, c.args...)...)
			// Bad input (exit 2) adds the usage line and where to read more.
			lines := 1
			if c.code == 2 {
				lines = 3
			}
			if code != c.code || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != lines-1 {
				t.Errorf("exit %d, stderr %q; want exit %d and %d lines with %q", code, stderr, c.code, lines, c.want)
			}
			if time.Since(start) > 10*time.Second {
				t.Errorf("took %v", time.Since(start))
			}
		})
	}
}

func TestNoDaemonIsAClearError(t *testing.T) {
	_, stderr, code := run(t, "--home", t.TempDir(), "peers")
	if code == 0 || !strings.Contains(stderr, "no mcpmesh daemon is running") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}

func TestSecondDaemonOnSameHomeRefused(t *testing.T) {
	a := startDaemon(t)
	_, stderr, code := run(t, "--home", a.home, "node", "--listen", "/ip4/127.0.0.1/tcp/0")
	if code == 0 || !strings.Contains(stderr, "already runs") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}

func TestCorruptIdentityRefused(t *testing.T) {
	home := t.TempDir()
	key := filepath.Join(home, "identity.key")
	os.WriteFile(key, []byte("garbage"), 0o600)
	_, stderr, code := run(t, "--home", home, "node", "--listen", "/ip4/127.0.0.1/tcp/0")
	if code == 0 || !strings.Contains(stderr, "corrupt") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if b, _ := os.ReadFile(key); string(b) != "garbage" {
		t.Fatal("corrupt identity was replaced")
	}
}

func TestDaemonRemovesAPIFileOnStop(t *testing.T) {
	a := startDaemon(t)
	if _, err := os.Stat(filepath.Join(a.home, "api")); err != nil {
		t.Fatal(err)
	}
	a.stop(t)
	if _, err := os.Stat(filepath.Join(a.home, "api")); !os.IsNotExist(err) {
		t.Fatalf("api file still there after stop: %v", err)
	}
}

func TestFindCardAndCallAnyAcrossThreeDaemons(t *testing.T) {
	a := startDaemon(t, "--no-mdns", "--name", "alpha")
	b := startDaemon(t, "--no-mdns", "--peer", a.addr)
	c := startDaemon(t, "--no-mdns", "--peer", b.addr, "--name", "gamma", "--tag", "weather", "--description", "the weather node")

	// A knows only B; C joined through B. A finds C by its tag.
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, _, code := run(t, "--home", a.home, "find", "tag:weather", "--timeout", "3s")
		if code == 0 && strings.Contains(out, c.id) && strings.Contains(out, "gamma") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("find tag:weather: exit %d:\n%s", code, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Every node offers echo; all three are found once they have provided it.
	var out string
	var code int
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		out, _, code = run(t, "--home", a.home, "find", "echo", "--json", "--timeout", "3s")
		if code == 0 && strings.Count(out, "\n") == 3 && strings.Contains(out, `"tool":"echo"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("find echo --json: exit %d:\n%s", code, out)
		}
	}
	// Words, as mesh_search takes them: a word of a description, or part of
	// a name, finds the tool too, on every node.
	for _, query := range []string{"authenticated", "ech"} {
		out, _, code = run(t, "--home", a.home, "find", query, "--timeout", "3s")
		if code != 0 || strings.Count(out, "node/echo") != 3 || !strings.Contains(out, c.id+"  gamma") {
			t.Fatalf("find %s: exit %d:\n%s", query, code, out)
		}
	}
	out, _, code = run(t, "--home", a.home, "card", c.id)
	if code != 0 || !strings.Contains(out, "gamma") || !strings.Contains(out, "the weather node") || !strings.Contains(out, "tool echo") {
		t.Fatalf("card: exit %d:\n%s", code, out)
	}
	out, stderr, code := run(t, "--home", a.home, "call", "any", "echo", `{"text":"anyone?"}`)
	if code != 0 || strings.TrimSpace(out) != "anyone?" || !strings.Contains(stderr, "answered by") {
		t.Fatalf("call any: exit %d: %q %q", code, out, stderr)
	}
	_, stderr, code = run(t, "--home", a.home, "call", "any", "no_such_tool")
	if code != 1 || !strings.Contains(stderr, "no peer in the mesh offers") {
		t.Fatalf("call any unknown: exit %d: %q", code, stderr)
	}
	// The lookup ends when the DHT has answered, long before --timeout:
	// the error says how long it took, not the timeout, and what find matches.
	_, stderr, code = run(t, "--home", a.home, "find", "no_such_tool", "--timeout", "1m")
	if code != 1 || !strings.Contains(stderr, "no peer offers") || strings.Contains(stderr, "1m0s") || !strings.Contains(stderr, "words match") {
		t.Fatalf("find unknown: exit %d: %q", code, stderr)
	}
}

// stdioClient starts `mcpmesh stdio` with args as an MCP host would and
// connects an SDK client to it.
func stdioClient(t *testing.T, args ...string) *sdkmcp.ClientSession {
	t.Helper()
	return stdioClientTo(t, os.Stderr, args...)
}

// stdioClientTo is stdioClient with the command's stderr going to stderr.
func stdioClientTo(t *testing.T, stderr io.Writer, args ...string) *sdkmcp.ClientSession {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Stderr = stderr
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := sdkmcp.NewClient(&sdkmcp.Implementation{Name: "test-host"}, nil).Connect(ctx, &sdkmcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func callText(t *testing.T, cs *sdkmcp.ClientSession, tool string, args map[string]any) string {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &sdkmcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatal(err)
	}
	text := res.Content[0].(*sdkmcp.TextContent).Text
	if res.IsError {
		t.Fatalf("%s: %s", tool, text)
	}
	return text
}

func TestStdioGatewayMeshAndTransparent(t *testing.T) {
	a := startDaemon(t)
	b := startDaemon(t, "--peer", a.addr)
	c := startDaemon(t, "--peer", b.addr, "--name", "gamma")

	// Mesh mode through A's daemon: three tools; C's echo found and called.
	cs := stdioClient(t, "--home", a.home, "stdio")
	list, err := cs.ListTools(context.Background(), nil)
	if err != nil || len(list.Tools) != 3 {
		t.Fatalf("mesh mode tools: %v, %v", list, err)
	}
	deadline := time.Now().Add(15 * time.Second)
	var found string
	for !strings.Contains(found, c.id) {
		if time.Now().After(deadline) {
			t.Fatalf("search never found C: %s", found)
		}
		found = callText(t, cs, "mesh_search", map[string]any{"query": "echo"})
		time.Sleep(200 * time.Millisecond)
	}
	got := callText(t, cs, "mesh_call", map[string]any{"ref": c.id + "/node/echo", "arguments": map[string]any{"text": "via the gateway"}})
	if got != "via the gateway" {
		t.Fatalf("mesh_call = %q", got)
	}

	// Transparent mode: exactly C's server.
	tc := stdioClient(t, "--home", a.home, "stdio", "--to", c.addr+"/node")
	list, err = tc.ListTools(context.Background(), nil)
	if err != nil || len(list.Tools) != 1 || list.Tools[0].Name != "echo" {
		t.Fatalf("transparent tools: %+v, %v", list, err)
	}
	if got := callText(t, tc, "echo", map[string]any{"text": "direct"}); got != "direct" {
		t.Fatalf("echo = %q", got)
	}
	if tc.InitializeResult().ServerInfo.Name != "gamma" { // C's own server, name and all
		t.Fatalf("server info = %+v", tc.InitializeResult().ServerInfo)
	}
}

// TestHTTPGatewayWithPins: a daemon's --http gateway serves mesh mode to an
// MCP host over Streamable HTTP, with --http-pin tools listed as its own.
func TestHTTPGatewayWithPins(t *testing.T) {
	b := startDaemon(t)
	a := startDaemon(t, "--peer", b.addr, "--http", "127.0.0.1:0", "--http-pin", "shout="+b.id+"/node/echo")
	var url string
	for _, line := range strings.Split(a.out.String(), "\n") {
		if u, ok := strings.CutPrefix(line, "  http:"); ok {
			url, _, _ = strings.Cut(strings.TrimSpace(u), " ")
		}
	}
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("no gateway URL in the banner:\n%s", a.out)
	}
	client := sdkmcp.NewClient(&sdkmcp.Implementation{Name: "host"}, nil)
	cs, err := client.Connect(context.Background(), &sdkmcp.StreamableClientTransport{Endpoint: url}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	// A pin is added once its peer answers (and the host told list_changed).
	var names []string
	for deadline := time.Now().Add(15 * time.Second); !slices.Contains(names, "shout"); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gateway tools = %v, want the three mesh tools and shout", names)
		}
		list, err := cs.ListTools(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		names = names[:0]
		for _, tl := range list.Tools {
			names = append(names, tl.Name)
		}
	}
	if len(names) != 4 || !slices.Contains(names, "mesh_call") {
		t.Fatalf("gateway tools = %v, want the three mesh tools and shout", names)
	}
	if got := callText(t, cs, "shout", map[string]any{"text": "pinned"}); got != "pinned" {
		t.Fatalf("shout = %q", got)
	}

	// A pin without --http, or a bad one, is a usage error.
	for _, args := range [][]string{{"--http-pin", b.id + "/node/echo"}, {"--http", "127.0.0.1:0", "--http-pin", "nobody/echo"}} {
		out, err := exec.Command(binary, append([]string{"--home", t.TempDir(), "node", "--open", "--no-mdns"}, args...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "--http-pin") {
			t.Fatalf("%v: want a usage error naming --http-pin, got %v:\n%s", args, err, out)
		}
	}
}

func TestStdioGatewayWithoutDaemonRunsItsOwnNode(t *testing.T) {
	a := startDaemon(t, "--name", "alpha")
	cs := stdioClient(t, "--home", t.TempDir(), "stdio", "--no-mdns", "--peer", a.addr)
	deadline := time.Now().Add(15 * time.Second)
	for {
		found := callText(t, cs, "mesh_search", map[string]any{"query": "echo"})
		if strings.Contains(found, a.id) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("embedded node never found A: %s", found)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := callText(t, cs, "mesh_call", map[string]any{"ref": a.id + "/echo", "arguments": map[string]any{"text": "embedded"}}); got != "embedded" {
		t.Fatalf("mesh_call = %q", got)
	}
}

// interopDir returns the folder of an interop client with its npm packages
// installed. Missing packages skip the test on a developer's machine; in CI
// (.ci/run installs them) they fail it.
func interopDir(t *testing.T, name string) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "interop", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules")); err != nil {
		msg := fmt.Sprintf("npm packages of interop/%s not installed: run `npm install --no-package-lock --prefix interop/%s`", name, name)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if _, err := exec.LookPath("node"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("node (Node.js) not installed: CI must have it")
		}
		t.Skip("node not installed")
	}
	return dir
}

// A host on the official TypeScript SDK uses `mcpmesh stdio` in mesh mode:
// it finds a tool on a node two hops away and calls it.
func TestTypeScriptHostThroughStdioMeshMode(t *testing.T) {
	dir := interopDir(t, "tsclient")
	a := startDaemon(t)
	b := startDaemon(t, "--peer", a.addr)
	c := startDaemon(t, "--peer", b.addr) // two hops from A
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", filepath.Join(dir, "client.mjs"), binary, a.home, "echo", `{"text":"from typescript"}`, c.id)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ts client: %v\n%s", err, stderr.String())
	}
	var got struct {
		Tools  []string `json:"tools"`
		Ref    string   `json:"ref"`
		Answer string   `json:"answer"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("ts client printed %q: %v", out, err)
	}
	if strings.Join(got.Tools, ",") != "mesh_call,mesh_describe,mesh_search" || got.Answer != "from typescript" || !strings.HasPrefix(got.Ref, c.id) {
		t.Fatalf("ts client saw %+v", got)
	}
}

func TestConfigFileSharesServers(t *testing.T) {
	a := startDaemon(t, "--name", "far")
	home := t.TempDir()
	cfg := fmt.Sprintf(`{
  "name": "configured",
  "tags": ["from-file"],
  "peers": [%q],
  "shares": {
    "relayed": {"peer": %q}
  }
}`, a.addr, a.id+"/node")
	if err := os.WriteFile(filepath.Join(home, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	b := startDaemonAt(t, home)
	out, _, code := run(t, "--home", b.home, "id", "--json")
	var id struct {
		Name    string   `json:"name"`
		Servers []string `json:"servers"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &id) != nil || id.Name != "configured" || strings.Join(id.Servers, ",") != "node,relayed" {
		t.Fatalf("id: exit %d: %s", code, out)
	}
	// The re-shared server answers with A's tools.
	out, _, code = run(t, "--home", b.home, "call", b.id, "relayed/echo", `{"text":"through the file"}`)
	if code != 0 || strings.TrimSpace(out) != "through the file" {
		t.Fatalf("call relayed/echo: exit %d: %s", code, out)
	}

	// A bad file is a clear error, not a silent default.
	os.WriteFile(filepath.Join(home, "bad.json"), []byte(`{"shares": {"x": {"command": "a", "url": "http://b"}}}`), 0o600)
	_, stderr, code := run(t, "--home", t.TempDir(), "node", "--config", filepath.Join(home, "bad.json"))
	if code != 2 || !strings.Contains(stderr, "exactly one of") {
		t.Fatalf("bad config: exit %d: %s", code, stderr)
	}
	os.WriteFile(filepath.Join(home, "typo.json"), []byte(`{"sahres": {}}`), 0o600)
	_, stderr, code = run(t, "--home", t.TempDir(), "node", "--config", filepath.Join(home, "typo.json"))
	if code != 2 || !strings.Contains(stderr, "unknown field") {
		t.Fatalf("typo in config: exit %d: %s", code, stderr)
	}
}

// When the server's side of `mcpmesh stdio --to` ends while the host is
// still there (here the peer stops), the command says so on stderr and
// exits 1: a host shows a stdio server's stderr and exit status, and
// nothing else.
func TestStdioSaysWhenTheSessionToThePeerEnds(t *testing.T) {
	a := startDaemon(t)
	c := startDaemon(t, "--peer", a.addr)
	cmd := exec.Command(binary, "--home", a.home, "stdio", "--to", c.id+"/node")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	io.WriteString(stdin, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"h","version":"1"}}}`+"\n")
	out := bufio.NewReader(stdout)
	if line, err := out.ReadString('\n'); err != nil || !strings.Contains(line, `"serverInfo"`) {
		t.Fatalf("initialize through mcpmesh stdio: %q %v; stderr %q", line, err, stderr.String())
	}
	exited := make(chan error, 1)
	go func() {
		io.Copy(io.Discard, out)
		exited <- cmd.Wait()
	}()
	c.stop(t)
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "the session to "+c.id+"/node ended") {
			t.Fatalf("mcpmesh stdio after its peer stopped: %v, stderr %q; want exit 1 saying the session ended", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("mcpmesh stdio still running 15s after its peer stopped; stderr %q", stderr.String())
	}
}
