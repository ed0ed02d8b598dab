// Package passthrough measures what the mesh adds to a call to a shared
// program, from the outside: the built binaries in processes of their own,
// a raw JSON-RPC client on stdin/stdout (issue 12). It needs no node
// internals, so it survives their moves.
//
//	go test ./bench/passthrough -run TestPassthroughCost -passthrough.cost -v -count=1
//	go test ./bench/passthrough -run XXX -bench . -benchtime 2000x
package passthrough

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// costRun turns TestPassthroughCost on. It compares wall times against
// absolute targets (50 µs a relay hop): on a shared machine, under the race
// detector or beside other packages' tests (go test ./..., CI) it fails for
// the machine's load, not the code's, so it runs only when asked.
var costRun = flag.Bool("passthrough.cost", false, "run TestPassthroughCost, a measurement of wall times (on a quiet machine)")

var (
	buildOnce  sync.Once
	buildErr   error
	binDir     string
	mcpmeshBin string
	fixtureBin string
)

// build builds mcpmesh and mcpmesh-fixture once, when first needed (so that
// `go test ./...` pays for it only when these run).
func build(tb testing.TB) {
	tb.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "mcpmesh-bench-passthrough")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "../../cmd/mcpmesh", "../../cmd/mcpmesh-fixture")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
		mcpmeshBin = filepath.Join(binDir, "mcpmesh")
		fixtureBin = filepath.Join(binDir, "mcpmesh-fixture")
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// daemon is a running `mcpmesh node`.
type daemon struct {
	home, id, addr string
	cmd            *exec.Cmd
}

func startDaemon(tb testing.TB, extra ...string) *daemon {
	tb.Helper()
	home := tb.TempDir()
	args := append([]string{"--home", home, "node", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--no-dht", "--open"}, extra...)
	cmd := exec.Command(mcpmeshBin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	d := &daemon{home: home, cmd: cmd}
	tb.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		ok := false
		for sc.Scan() {
			line := sc.Text()
			if ok {
				continue
			}
			if id, found := strings.CutPrefix(line, "mcpmesh node "); found {
				d.id = id
			}
			if a, found := strings.CutPrefix(strings.TrimSpace(line), "listen:"); found && d.addr == "" {
				d.addr = strings.TrimSpace(a)
			}
			if line == "ready; Ctrl-C to stop" {
				ok = true
				ready <- true
			}
		}
		if !ok {
			ready <- false
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			tb.Fatalf("mcpmesh %v exited before ready: %s", args, stderr.String())
		}
	case <-time.After(60 * time.Second):
		tb.Fatalf("mcpmesh %v: not ready after 60s", args)
	}
	return d
}

// client speaks newline-delimited JSON-RPC with a process on its stdio.
type client struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Reader
	id    int
	frame []byte
}

func startClient(tb testing.TB, args ...string) *client {
	tb.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	c := &client{cmd: cmd, in: in, out: bufio.NewReaderSize(out, 1<<20)}
	tb.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	if _, err := c.roundTrip("initialize", `{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}`); err != nil {
		tb.Fatalf("%v: initialize: %v", args, err)
	}
	if _, err := c.in.Write([]byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\n")); err != nil {
		tb.Fatal(err)
	}
	return c
}

// roundTrip sends one request and reads until its response (skipping
// notifications), and returns the response line.
func (c *client) roundTrip(method, params string) ([]byte, error) {
	c.id++
	c.frame = fmt.Appendf(c.frame[:0], `{"jsonrpc":"2.0","id":%d,"method":%q,"params":%s}`+"\n", c.id, method, params)
	if _, err := c.in.Write(c.frame); err != nil {
		return nil, err
	}
	want := fmt.Appendf(nil, `"id":%d`, c.id)
	for {
		line, err := c.out.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("reading the response: %w", err)
		}
		if bytes.Contains(line, want) && !bytes.Contains(line, []byte(`"method"`)) {
			if bytes.Contains(line, []byte(`"error"`)) || bytes.Contains(line, []byte(`"isError":true`)) {
				return nil, fmt.Errorf("error: %s", line)
			}
			return line, nil
		}
	}
}

const (
	fixtureCall = `{"name":"test_simple_text","arguments":{}}`
	echoCall    = `{"name":"echo","arguments":{"text":"hello, mesh"}}`
)

// paths are the ways a host reaches the fixture (a Go program on the
// official SDK, shared with --share), each a client ready to call:
//
//	direct    the program itself on the client's stdio
//	hops-0    mcpmesh stdio --to A/fixture: A's own share (no libp2p hop)
//	hops-1    mcpmesh stdio --to C/fixture through A: A → C
//	hops-2    mcpmesh stdio --to B/fixture through A: A → B (--share-peer) → C
//	echo-1    mcpmesh stdio --to C/node through A, the node's built-in echo:
//	          the mesh's own call cost, for the target of hops-1
type paths map[string]struct {
	c    *client
	call string
}

var pathNames = []string{"direct", "hops-0", "hops-1", "hops-2", "echo-1"}

func startPaths(tb testing.TB) paths {
	build(tb)
	share := "fixture=" + fixtureBin + " --stdio --update-every 1h"
	c := startDaemon(tb, "--share", share)
	b := startDaemon(tb, "--peer", c.addr, "--share-peer", "fixture="+c.addr+"/fixture")
	a := startDaemon(tb, "--peer", b.addr, "--peer", c.addr, "--share", share)
	stdio := func(to string) *client {
		return startClient(tb, mcpmeshBin, "--home", a.home, "stdio", "--to", to)
	}
	return paths{
		"direct": {startClient(tb, fixtureBin, "--stdio", "--update-every", "1h"), fixtureCall},
		"hops-0": {stdio(a.id + "/fixture"), fixtureCall},
		"hops-1": {stdio(c.id + "/fixture"), fixtureCall},
		"hops-2": {stdio(b.id + "/fixture"), fixtureCall},
		"echo-1": {stdio(c.id + "/node"), echoCall},
	}
}

// BenchmarkPassthrough times one tools/call on each path; compare the
// paths' ns/op (TestPassthroughCost prints them as ratios to direct).
func BenchmarkPassthrough(b *testing.B) {
	ps := startPaths(b)
	for _, name := range pathNames {
		p := ps[name]
		b.Run(name, func(b *testing.B) {
			if _, err := p.c.roundTrip("tools/call", p.call); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := p.c.roundTrip("tools/call", p.call); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestPassthroughCost measures the paths side by side in one run (rounds of
// one call on each path in turn, medians), prints each as a ratio to a
// direct call, and checks issue 12's targets with slack:
//
//   - one hop to a shared program costs at most a direct call plus the
//     mesh's own call (echo-1), ×1.25;
//   - a --share-peer relay hop costs at most ×0.75 of one hop more: two
//     hops through a relay (hops-2) at most ×1.75 one hop (hops-1).
//
// Issue 12's absolute targets for a relay hop (+50 µs, +4 KB over a direct
// hop) are not timed here, on shared machines: bench.TestAllocationBudgets
// and bench.TestRelayHopCPU hold its allocations and CPU time, in-process.
func TestPassthroughCost(t *testing.T) {
	if !*costRun {
		t.Skip("a measurement of wall times: run with -passthrough.cost, on a quiet machine")
	}
	ps := startPaths(t)
	const rounds = 300
	times := map[string][]time.Duration{}
	for i := range rounds + 20 {
		for _, name := range pathNames {
			p := ps[name]
			start := time.Now()
			if _, err := p.c.roundTrip("tools/call", p.call); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if i >= 20 { // warm-up
				times[name] = append(times[name], time.Since(start))
			}
		}
	}
	median := map[string]time.Duration{}
	for name, ts := range times {
		slices.Sort(ts)
		median[name] = ts[len(ts)/2]
	}
	direct := median["direct"]
	var line []string
	for _, name := range pathNames {
		line = append(line, fmt.Sprintf("%s %v (%.1f×)", name, median[name].Round(time.Microsecond), float64(median[name])/float64(direct)))
	}
	relay := median["hops-2"] - median["hops-1"]
	t.Logf("medians of %d calls each: %s; relay hop %+v", rounds, strings.Join(line, ", "), relay.Round(time.Microsecond))

	var errs []error
	if limit := time.Duration(1.25 * float64(direct+median["echo-1"])); median["hops-1"] > limit {
		errs = append(errs, fmt.Errorf("one hop to a shared program: %v, over direct %v + the mesh's own call %v (×1.25 = %v)",
			median["hops-1"].Round(time.Microsecond), direct.Round(time.Microsecond), median["echo-1"].Round(time.Microsecond), limit.Round(time.Microsecond)))
	}
	if ratio := float64(median["hops-2"]) / float64(median["hops-1"]); ratio > 1.75 {
		errs = append(errs, fmt.Errorf("two hops through a relay cost ×%.2f one hop (%v vs %v), over ×1.75",
			ratio, median["hops-2"].Round(time.Microsecond), median["hops-1"].Round(time.Microsecond)))
	}
	if err := errors.Join(errs...); err != nil {
		t.Error(err)
	}
}
