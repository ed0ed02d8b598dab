package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
)

// Bad input exits 2, says what is wrong and how the command is used; no
// daemon is asked.
func TestUsageErrorsExit2WithTheUsageLine(t *testing.T) {
	home := t.TempDir()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"call", "12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp"}, "usage: mcpmesh call PEER TOOL [JSON-ARGS]"},
		{[]string{"call", "not-a-peer", "echo"}, `"not-a-peer" is not a peer ID`},
		{[]string{"tools", "12D3KooWA…"}, "is a placeholder, not a peer ID"},
		{[]string{"card", "12D3KooW..."}, "is a placeholder"},
		{[]string{"find", ""}, "empty query"},
		{[]string{"find", "event:"}, "empty query"},
		{[]string{"node", "--no-mdns", "--listen", "bogus"}, `--listen "bogus"`},
		{[]string{"tasks", "cancel"}, "usage: mcpmesh tasks cancel ID"},
		{[]string{"nosuchcommand"}, "unknown command"},
		{[]string{"peers", "--bogus"}, "unknown flag: --bogus"},
	}
	for _, c := range cases {
		_, stderr, code := run(t, append([]string{"--home", home}, c.args...)...)
		if code != 2 || !strings.Contains(stderr, c.want) || !strings.Contains(stderr, "usage: mcpmesh") {
			t.Errorf("mcpmesh %q: exit %d, stderr %q; want exit 2, %q and the usage line", c.args, code, stderr, c.want)
		}
	}
}

// 'mcpmesh id' answers from the key file when the daemon is not running;
// without a key it says that no daemon ever ran there.
func TestIDWithoutADaemon(t *testing.T) {
	a := startDaemon(t)
	a.stop(t)
	out, stderr, code := run(t, "--home", a.home, "id", "-q")
	if code != 0 || strings.TrimSpace(out) != a.id {
		t.Fatalf("id -q without a daemon: exit %d: %q %q; want %s", code, out, stderr, a.id)
	}
	out, _, code = run(t, "--home", a.home, "id")
	if code != 0 || !strings.HasPrefix(out, a.id+"\n") || !strings.Contains(out, "not running") {
		t.Fatalf("id without a daemon: exit %d: %s", code, out)
	}
	_, stderr, code = run(t, "--home", t.TempDir(), "id")
	if code != 1 || !strings.Contains(stderr, "no identity key yet") {
		t.Fatalf("id on a new home: exit %d: %s", code, stderr)
	}
}

// statusJSON is what the status tests read of 'status --json'.
type statusJSON struct {
	ID     string `json:"id"`
	Daemon struct {
		State  string `json:"state"`
		Policy string `json:"policy"`
		Mesh   string `json:"mesh"`
		DHT    bool   `json:"dht"`
		MDNS   bool   `json:"mdns"`
	} `json:"daemon"`
	Shares []struct {
		Name  string `json:"name"`
		State string `json:"state"`
		Tools int    `json:"tools"`
	} `json:"shares"`
}

func readStatus(t *testing.T, home string) statusJSON {
	t.Helper()
	out, stderr, code := run(t, "--home", home, "status", "--json")
	var st statusJSON
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("status --json: exit %d: %s %s", code, out, stderr)
	}
	return st
}

func (st statusJSON) share(name string) string {
	for _, s := range st.Shares {
		if s.Name == name {
			return fmt.Sprintf("%s %d", s.State, s.Tools)
		}
	}
	return "absent"
}

// The banner comes at once and the control API answers while a shared
// program starts: status says "starting", for the daemon and the share,
// and the share's first start is reported when it comes (here: never, the
// program speaks no MCP). Ctrl-C stops a daemon still starting.
func TestStatusWhileASharedProgramStarts(t *testing.T) {
	home := t.TempDir()
	cmd := exec.Command(binary, "--home", home, "node", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--open",
		"--share", "silent=sleep 600")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var banner []string
	deadline := time.After(20 * time.Second)
	for seen := false; !seen; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("daemon exited:\n%s", strings.Join(banner, "\n"))
			}
			banner = append(banner, l)
			seen = strings.HasPrefix(l, "share silent: starting")
		case <-deadline:
			t.Fatalf("no banner within 20s:\n%s", strings.Join(banner, "\n"))
		}
	}
	if !strings.Contains(strings.Join(banner, "\n"), "servers: node, silent (starting)") {
		t.Errorf("banner:\n%s", strings.Join(banner, "\n"))
	}
	st := readStatus(t, home)
	if st.Daemon.State != "starting" || st.share("silent") != "starting 0" || !strings.HasPrefix(st.Daemon.Policy, "OPEN") ||
		!strings.HasPrefix(st.Daemon.Mesh, "open mesh") || !st.Daemon.DHT || st.Daemon.MDNS {
		t.Fatalf("status while starting: %+v", st)
	}
	out, _, code := run(t, "--home", home, "id")
	if code != 0 || !strings.Contains(out, "daemon:  starting") || !strings.Contains(out, "share silent: starting") {
		t.Fatalf("id while starting: exit %d: %s", code, out)
	}
	out, _, code = run(t, "--home", home, "status")
	if code != 0 || !strings.Contains(out, "daemon:        starting") || !strings.Contains(out, "silent  starting") {
		t.Fatalf("status while starting: exit %d: %s", code, out)
	}
	// A second daemon on this home is refused while the first starts.
	if _, stderr, code := run(t, "--home", home, "node", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"); code == 0 || !strings.Contains(stderr, "already runs") {
		t.Fatalf("second daemon: exit %d: %s", code, stderr)
	}
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a daemon still starting did not stop within 10s of SIGINT")
	}
}

// Once its shares are up the daemon is ready: status says running, with
// each share's tools; the banner said when the share came up.
func TestStatusOfARunningDaemon(t *testing.T) {
	mesh := fmt.Sprintf("%s --home %s stdio --no-mdns", binary, t.TempDir())
	a := startDaemon(t, "--share", "mesh="+mesh)
	if !strings.Contains(a.out.String(), "share mesh: ready, 3 tools") {
		t.Errorf("banner says nothing of the share:\n%s", a.out)
	}
	st := readStatus(t, a.home)
	if st.ID != a.id || st.Daemon.State != "running" || st.share("mesh") != "running 3" || st.share("node") != "absent" {
		t.Fatalf("status: %+v", st)
	}
}

// Without a daemon, status says so (exit 3) and what the home holds: the
// identity, the configuration's warnings, a listen port another program
// holds.
func TestStatusWithoutADaemon(t *testing.T) {
	home := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	cfg := fmt.Sprintf(`{"listen": ["/ip4/127.0.0.1/tcp/%d"], "shares": {"gh": {"url": "http://127.0.0.1:1/mcp", "headers": {"Authorization": "Bearer ${MCPMESH_TEST_UNSET_TOKEN}"}}}}`, port)
	os.WriteFile(filepath.Join(home, "config.json"), []byte(cfg), 0o600)
	out, stderr, code := run(t, "--home", home, "status")
	if code != 3 || stderr != "" || !strings.Contains(out, "no daemon runs for home") || !strings.Contains(out, "identity:  none yet") ||
		!strings.Contains(out, "${MCPMESH_TEST_UNSET_TOKEN}, which is not set") || !strings.Contains(out, fmt.Sprintf("port %d is in use", port)) {
		t.Fatalf("status without a daemon: exit %d:\n%s\n%s", code, out, stderr)
	}
}

// config check reads the file as the daemon does: errors exit 1, and what
// parses but will not work is a warning.
func TestConfigCheck(t *testing.T) {
	home := t.TempDir()
	os.WriteFile(filepath.Join(home, "config.json"), []byte(`{"shares": {"gh": {"url": "http://127.0.0.1:1/mcp", "headers": {"Authorization": "Bearer ${MCPMESH_TEST_UNSET_TOKEN}"}}, "tool": {"command": "no-such-program-here --stdio"}}}`), 0o600)
	out, stderr, code := run(t, "--home", home, "config", "check")
	if code != 0 || !strings.Contains(out, "ok: 2 shares") ||
		!strings.Contains(out, `warning: share gh: header Authorization uses ${MCPMESH_TEST_UNSET_TOKEN}, which is not set: the server gets "Bearer"`) ||
		!strings.Contains(out, `warning: share tool: program "no-such-program-here" is not on PATH`) {
		t.Fatalf("config check: exit %d:\n%s%s", code, out, stderr)
	}
	// An agent's API key not set stops the node: check says so and fails,
	// so that 'config check && mcpmesh node' stops there.
	os.WriteFile(filepath.Join(home, "config.json"), []byte(`{"agents": [{"name": "x", "description": "d", "model": {"backend": "openai", "model": "m", "apiKeyEnv": "MCPMESH_TEST_UNSET_KEY"}}]}`), 0o600)
	out, stderr, code = run(t, "--home", home, "config", "check")
	if code != 1 || strings.Contains(out, "ok:") || !strings.Contains(out, "warning: agent x: environment variable MCPMESH_TEST_UNSET_KEY is not set") ||
		!strings.Contains(stderr, "a node will not start with it") {
		t.Fatalf("config check of an agent without its key: exit %d:\n%s%s", code, out, stderr)
	}
	os.WriteFile(filepath.Join(home, "config.json"), []byte(`{"peers": ["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWA…"]}`), 0o600)
	if _, stderr, code := run(t, "--home", home, "config", "check"); code != 1 || !strings.Contains(stderr, "placeholder") {
		t.Fatalf("config check of a placeholder peer: exit %d: %s", code, stderr)
	}
}

// libp2p listens with SO_REUSEPORT, so a second daemon on a taken port
// would start and share it with the first; the daemon refuses instead.
func TestListenPortInUseRefused(t *testing.T) {
	a := startDaemon(t)
	port := a.addr[strings.Index(a.addr, "/tcp/")+5:]
	port = port[:strings.Index(port, "/")]
	_, stderr, code := run(t, "--home", t.TempDir(), "node", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/"+port)
	if code != 1 || !strings.Contains(stderr, "port "+port+" is in use") {
		t.Fatalf("second daemon on port %s: exit %d: %s", port, code, stderr)
	}
}

// A closed node lists nothing to a peer it grants nothing: a call by tool
// name says that its policy may be why, not "it has: " and nothing.
func TestCallToAClosedNodeNamesThePolicy(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "closed.json")
	os.WriteFile(cfg, []byte(`{}`), 0o600)
	a := startDaemon(t, "--config", cfg)
	b := startDaemon(t, "--peer", a.addr)
	_, stderr, code := run(t, "--home", b.home, "call", a.id, "echo", `{"text":"hi"}`)
	if code != 1 || !strings.Contains(stderr, "lists no tools to this node") || !strings.Contains(stderr, "policy") {
		t.Fatalf("call to a closed node: exit %d: %s", code, stderr)
	}
	// By PEER/SERVER/TOOL through mesh_call too (the ref mesh_search and
	// agents' searches give).
	cs := stdioClient(t, "--home", b.home, "stdio")
	res, err := cs.CallTool(context.Background(), &sdkmcp.CallToolParams{Name: "mesh_call", Arguments: map[string]any{"ref": a.id + "/node/echo", "arguments": map[string]any{"text": "hi"}}})
	if err != nil {
		t.Fatal(err)
	}
	if text := res.Content[0].(*sdkmcp.TextContent).Text; !res.IsError || !strings.Contains(text, `lists no tool named "echo" to this node`) || !strings.Contains(text, "policy check "+b.id+" node/echo") {
		t.Fatalf("mesh_call of node/echo on a closed node: %s", text)
	}
}

// 'mcpmesh stdio' without a daemon joins the mesh before it answers the
// host: the host's very first search finds the --peer node.
func TestStdioWithoutADaemonJoinsBeforeServing(t *testing.T) {
	a := startDaemon(t, "--name", "alpha")
	cs := stdioClient(t, "--home", t.TempDir(), "stdio", "--no-mdns", "--peer", a.addr)
	if found := callText(t, cs, "mesh_search", map[string]any{"query": "echo"}); !strings.Contains(found, a.id) {
		t.Fatalf("the first search found nothing of the --peer node: %s", found)
	}
}

// A peer that restarts is called at once: a person's connect or call does
// not wait out the dial backoff that the failed dials while it was down
// left behind ("dial backoff" for 5 s and more).
func TestCallAPeerThatRestartedAtOnce(t *testing.T) {
	a := startDaemon(t)
	b := startDaemon(t)
	if _, stderr, code := run(t, "--home", b.home, "connect", a.addr); code != 0 {
		t.Fatalf("connect: exit %d: %s", code, stderr)
	}
	a.stop(t)
	if _, _, code := run(t, "--home", b.home, "call", a.addr, "echo", `{"text":"down"}`); code == 0 {
		t.Fatal("a call to a stopped daemon succeeded")
	}
	port := a.addr[strings.Index(a.addr, "/tcp/")+5:]
	port = port[:strings.Index(port, "/")]
	startDaemonAt(t, a.home, "--listen", "/ip4/127.0.0.1/tcp/"+port)
	out, stderr, code := run(t, "--home", b.home, "call", a.addr, "echo", `{"text":"back"}`)
	if code != 0 || strings.TrimSpace(out) != "back" {
		t.Fatalf("call after the restart: exit %d: %q %s", code, out, stderr)
	}
}

// Without --name, a node is named after its machine, in its banner, its
// status and its peers' lists; the configuration file's name still wins.
func TestDefaultNodeNameIsTheHostName(t *testing.T) {
	want := defaultNodeName()
	if h, _ := os.Hostname(); want != sanitizeNodeName(h) {
		t.Fatalf("default name %q, host name %q", want, h)
	}
	a := startDaemon(t)
	if !strings.Contains(a.out.String(), "  name:    "+want+"\n") {
		t.Errorf("banner:\n%s", a.out)
	}
	out, _, code := run(t, "--home", a.home, "status")
	if code != 0 || !strings.Contains(out, "("+want+" ") {
		t.Errorf("status: exit %d:\n%s", code, out)
	}
	home := t.TempDir()
	os.WriteFile(filepath.Join(home, "config.json"), []byte(`{"name": "carol"}`), 0o600)
	b := startDaemonAt(t, home, "--peer", a.addr)
	if !strings.Contains(b.out.String(), "  name:    carol\n") {
		t.Errorf("banner with a name in config.json:\n%s", b.out)
	}
	run(t, "--home", b.home, "call", a.id, "echo", `{"text":"hi"}`)
	out, _, code = run(t, "--home", b.home, "peers")
	if code != 0 || !regexp.MustCompile(a.id+`\s+`+regexp.QuoteMeta(want)+`\s`).MatchString(out) {
		t.Errorf("peers: exit %d:\n%s", code, out)
	}
}

func TestSanitizeNodeName(t *testing.T) {
	for in, want := range map[string]string{
		"build-07.corp.example.com": "build-07",
		"Ana's MacBook Pro":         "Ana-s-MacBook-Pro",
		"":                          "mcpmesh",
		"localhost":                 "mcpmesh",
		"...":                       "mcpmesh",
		strings.Repeat("x", 80):     strings.Repeat("x", 32),
	} {
		if got := sanitizeNodeName(in); got != want {
			t.Errorf("sanitizeNodeName(%q) = %q, want %q", in, got, want)
		}
	}
}

// The agents example starts with no API key at all: the agents that need
// one are named and skipped, and the scripted one finds the node's echo
// and answers.
func TestAgentsExampleStartsWithoutKeys(t *testing.T) {
	t.Setenv("OPENAI_API_KEY", "")
	t.Setenv("ANTHROPIC_API_KEY", "")
	config, err := filepath.Abs(filepath.Join("..", "..", "examples", "agents", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	a := startDaemon(t, "--config", config)
	for _, want := range []string{`agent "translator": environment variable OPENAI_API_KEY is not set: the agent is skipped`, `agent "reviewer": environment variable ANTHROPIC_API_KEY is not set`} {
		if !strings.Contains(a.errs.String(), want) {
			t.Errorf("stderr says nothing like %q:\n%s", want, a.errs.String())
		}
	}
	out, stderr, code := run(t, "--home", a.home, "call", a.id, "echo-desk", `{"task":"hello from the example"}`)
	if code != 0 || strings.TrimSpace(out) != "hello from the example" {
		t.Fatalf("echo-desk: exit %d: %q\n%s", code, out, stderr)
	}
}

// Small things a new user trips on: --open warns once; a --share command
// may start with NAME=value assignments, as in a shell; an error over the
// message size limit says "mcpmesh:" once; a card shows when it was issued,
// not a 19-digit sequence number.
func TestOpenEnvAssignmentsLimitErrorAndCardSeq(t *testing.T) {
	a := startDaemon(t, "--share", "notes="+demoProgramEnv+"=1 "+binary, "--max-message-size", "1024")
	if n := strings.Count(a.errs.String(), "every peer that connects may see and call everything"); n != 1 {
		t.Errorf("--open warned %d times:\n%s", n, a.errs.String())
	}
	if !strings.Contains(a.out.String(), "share notes: ready, 2 tools") {
		t.Errorf("a share with NAME=value before its program did not start:\nstdout:\n%s\nstderr:\n%s", a.out, a.errs.String())
	}
	b := startDaemon(t, "--peer", a.addr)
	_, stderr, code := run(t, "--home", a.home, "call", b.id, "echo", `{"text":"`+strings.Repeat("x", 2000)+`"}`)
	if code == 0 || strings.Count(stderr, "mcpmesh:") != 1 || !strings.Contains(stderr, "over the message size limit") {
		t.Errorf("call over the limit: exit %d, want one mcpmesh: prefix:\n%s", code, stderr)
	}
	out, _, code := run(t, "--home", b.home, "card", b.id)
	if code != 0 || !regexp.MustCompile(`\(card issued \d\d:\d\d:\d\d, valid until \d\d:\d\d:\d\d\)`).MatchString(out) {
		t.Errorf("card: exit %d:\n%s", code, out)
	}
}
