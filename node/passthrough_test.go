package node_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node"
)

// openShare opens a session of a's own (not the pooled one) to b's server
// name: a caller session of the passthrough, which the test ends.
func openShare(t *testing.T, ctx context.Context, a, b *node.Node, name string) *sdkmcp.ClientSession {
	t.Helper()
	s, err := a.Host().NewStream(ctx, b.ID(), transport.ProtocolID(name))
	if err != nil {
		t.Fatal(err)
	}
	c := sdkmcp.NewClient(&sdkmcp.Implementation{Name: "test"}, nil)
	cs, err := c.Connect(ctx, &transport.StreamTransport{Stream: s}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// sessionPID calls calc's add on cs and returns the pid of the process that
// answered.
func sessionPID(t *testing.T, ctx context.Context, cs *sdkmcp.ClientSession) int {
	t.Helper()
	res, err := cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: "add", Arguments: map[string]int{"a": 1, "b": 2}})
	if err != nil || res.IsError {
		t.Fatalf("add: %v %+v", err, res)
	}
	return int(res.StructuredContent.(map[string]any)["pid"].(float64))
}

// exists reports whether process pid exists, a zombie included (a process
// that exited and was never waited for is left behind too).
func exists(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// children lists the processes whose parent is this test process.
func children(t *testing.T) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skip("no /proc")
	}
	self := os.Getpid()
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, the last ')' ends it.
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(self) {
			out = append(out, pid)
		}
	}
	return out
}

// A caller session of an isolated share has a process of its own, which
// ends (and is waited for) when the session ends; the node's own process
// (its index) stays. Closing the node ends every process it started: the
// index, the spares, the callers' sessions.
func TestIsolatedProgramProcessEndsWithItsSession(t *testing.T) {
	a, b := newNode(t), newNode(t)
	shareCalc(t, b, &syncBuffer{})
	connect(t, a, b)
	ctx := ctxFor(t, 30*time.Second)
	index := status(t, b, "calc").PID

	cs := openShare(t, ctx, a, b, "calc")
	pid := sessionPID(t, ctx, cs)
	if pid == index {
		t.Fatal("a caller's session runs on the node's own process")
	}
	cs.Close()
	eventually(t, 10*time.Second, "the session's process ended", func() bool { return !exists(pid) })
	if !exists(index) {
		t.Fatal("the node's own process ended with a caller's session")
	}

	cs = openShare(t, ctx, a, b, "calc")
	pid = sessionPID(t, ctx, cs)
	eventually(t, 10*time.Second, "a spare started", func() bool { return status(t, b, "calc").Spares > 0 })
	if len(children(t)) < 3 {
		t.Fatalf("processes of the share: %v, want the index, a session's and a spare", children(t))
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if left := children(t); len(left) > 0 {
		t.Fatalf("processes left after the node closed: %v (a session's was %d, the index %d)", left, pid, index)
	}
	cs.Close()
}

// Trust holds on the passthrough: a caller sees and calls only what it is
// granted, and is refused the rest with a JSON-RPC error that names what it
// lacks, before the program sees it; a caller with no grant on the share
// cannot use it, and is told so.
func TestSharedProgramPolicyHoldsOnThePassthrough(t *testing.T) {
	a, b, d := newNode(t), newNode(t), newNode(t)
	stderr := &syncBuffer{}
	shareCalc(t, b, stderr)
	connect(t, a, b)
	connect(t, d, b)
	b.SetPolicy(mustPolicy(t, `{"grants":[{"peers":["%s"],"server":"calc","tools":["add"]}]}`, a.ID()))
	ctx := ctxFor(t, 30*time.Second)

	cs := openShare(t, ctx, a, b, "calc")
	defer cs.Close()
	lt, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(lt.Tools) != 1 || lt.Tools[0].Name != "add" {
		t.Fatalf("A lists %d tools, want only add: %+v", len(lt.Tools), lt.Tools)
	}
	sessionPID(t, ctx, cs)
	res, err := a.CallTool(ctx, b.ID(), "calc/crash", nil)
	notPermitted(t, err, res)
	if !strings.Contains(err.Error(), "calc/crash") {
		t.Errorf("refusal %q does not name the tool refused", err)
	}
	if strings.Contains(stderr.String(), "crashing on purpose") {
		t.Fatal("a refused call reached the program")
	}

	_, err = d.CallTool(ctx, b.ID(), "calc/add", map[string]int{"a": 1, "b": 2})
	if err == nil || !strings.Contains(err.Error(), "not permitted") || !strings.Contains(err.Error(), "calc") {
		t.Fatalf("a caller with no grant on the share: %v, want a refusal naming the share", err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("a caller with no grant waited for its refusal")
	}
}
