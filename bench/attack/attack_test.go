package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The targets, as flags of the test binary:
//
//	go test ./bench/attack -args -max-ratio 3
//
// By default the test asserts what does not depend on the machine's load
// (memory, the newcomer, goroutines back, the hop budget, ids, bans, the
// port) and prints the latency ratios; -max-ratio asserts them too, as
// `go run ./bench/attack` does (×2). Under CI's -race on two shared cores
// a 1.5 s window's ratio says more about the machine than about the node.
var (
	maxRatio  = flag.Float64("max-ratio", 0, "target: good peers' p50 and p99 under attack at most this times the clean run's; 0: printed, not asserted (the program's target is 2, at the issue's scale; 1.5 s windows on a shared machine need ×3)")
	maxRSS    = flag.Int64("max-rss", 256, "target: the daemon's peak RSS, in MB")
	settle    = flag.Duration("settle", 5*time.Second, "target: the daemon's goroutines back to baseline within this")
	prebuilt  = flag.String("mcpmesh", "", "the mcpmesh command to attack (default: built from ./cmd/mcpmesh), e.g. another checkout's, for a baseline")
	reference = flag.Bool("reference", false, "run a reference daemon, never attacked, and take the latency ratios against its own (as the program does)")
	where     = flag.String("attackers", "niced", "where the attackers run: niced (a process of their own at nice 19), process (a process of their own), inline (the test's process); a comma-separated list runs each attack once per mode (subtests NAME-process, NAME-inline, NAME)")
)

var mcpmeshBin string // built once by TestMain

func TestMain(m *testing.M) {
	if asSharedProgram() {
		return
	}
	flag.Parse()
	dir, err := os.MkdirTemp("", "mcpmesh-attack-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	mcpmeshBin = *prebuilt
	if mcpmeshBin == "" {
		mcpmeshBin, err = buildMcpmesh(dir)
	}
	if err != nil {
		os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// leakOptions are goroutines that outlive a libp2p host by design.
var leakOptions = []goleak.Option{
	goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
	goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/transport/quicreuse.(*reuse).gc"),
	goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
}

// testConfig is the suite at a small scale: 5 good peers and short
// windows. The attacks are the same; the idle-stream attack keeps its 40
// identities × 70 streams, which is what it takes to pass the daemon's
// 2048 streams per MCP server.
func testConfig(t *testing.T) *config {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := defaultConfig()
	cfg.bin, cfg.self = mcpmeshBin, self
	cfg.peers = 5
	cfg.interval = 10 * time.Millisecond // more samples for p99
	cfg.phase = 1500 * time.Millisecond
	cfg.ampInflight = 4
	cfg.ampIdentities, cfg.ampPerIdentity = 4, 1
	cfg.portDials = 10
	cfg.pipeIdentities = 4
	cfg.rssGuardMB = 2048
	cfg.maxRatio, cfg.maxRSSMB, cfg.settle = *maxRatio, *maxRSS, *settle
	cfg.reference = *reference
	if cfg.attackers, err = parseAttackerModes(*where); err != nil {
		t.Fatal(err)
	}
	return &cfg
}

// TestAttacks runs each attack of the suite, as a subtest of its own, and
// fails it with every target it missed, the value measured beside the
// target. Today most of them fail: that is the baseline of issue 14, to be
// brought down attack by attack (`go test ./bench/attack -run
// 'TestAttacks/2-idle'`).
func TestAttacks(t *testing.T) {
	cfg := testConfig(t)
	for _, a := range attacks(cfg) {
		if a.name == "0-control" {
			continue // TestControlPassesAndTargetsBite
		}
		for _, where := range cfg.attackers {
			t.Run(a.name+where.suffix(), func(t *testing.T) {
				defer goleak.VerifyNone(t, append([]goleak.Option{goleak.IgnoreCurrent()}, leakOptions...)...)
				defer checkNoChildren(t)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				defer cancel()
				o := runAttack(ctx, cfg, a, where, logWriter{t})
				var table bytes.Buffer
				printTable(&table, cfg, []*outcome{o})
				t.Log("\n" + table.String())
				if o.err != nil {
					t.Fatal(o.err)
				}
				for _, f := range o.failures(cfg) {
					t.Errorf("%s: %s", o.name(), f)
				}
			})
		}
	}
}

// TestControlPassesAndTargetsBite checks the suite itself: with no attack,
// every target is met; with the targets made impossible, the same run
// reports each as missed, with its value.
func TestControlPassesAndTargetsBite(t *testing.T) {
	defer goleak.VerifyNone(t, leakOptions...)
	defer checkNoChildren(t)
	cfg := testConfig(t)
	// The control run checks the suite, not the machine: it must not
	// invent an attack's effect (today's attacks cost the good peers ×4 to
	// ×25 at p50), but a shared machine's noise reaches ×3 at p99.
	cfg.maxRatio = 5
	o := runAttack(context.Background(), cfg, control(), attackersNiced, logWriter{t})
	if o.err != nil {
		t.Fatal(o.err)
	}
	if f := o.failures(cfg); len(f) > 0 {
		t.Errorf("the control run missed targets: %q", f)
	}
	if o.clean.ok == 0 || o.under.ok == 0 || o.gBase <= 0 || o.peakKB <= 0 {
		t.Errorf("nothing measured: %+v", o)
	}
	strict := *cfg
	strict.maxRatio, strict.maxRSSMB = 0.01, 1
	unsettled := *o
	unsettled.settled = false // as if the goroutines had not come back
	f := strings.Join(unsettled.failures(&strict), "\n")
	for _, want := range []string{"p50 ×", "p99 ×", "peak RSS", "goroutines"} {
		if !strings.Contains(f, want) {
			t.Errorf("impossible targets, yet no failure mentions %q:\n%s", want, f)
		}
	}
}

// checkNoChildren fails t if a process started by the test still runs.
func checkNoChildren(t *testing.T) {
	t.Helper()
	me := strconv.Itoa(os.Getpid())
	deadline := time.Now().Add(15 * time.Second)
	for {
		var left []string
		stats, _ := filepath.Glob("/proc/[0-9]*/stat")
		for _, p := range stats {
			b, err := os.ReadFile(p)
			if err != nil {
				continue
			}
			// pid (comm) state ppid ...
			_, rest, ok := strings.Cut(string(b), ") ")
			if f := strings.Fields(rest); ok && len(f) > 1 && f[1] == me && f[0] != "Z" {
				left = append(left, strings.TrimSpace(string(b[:strings.Index(string(b), ")")+1])))
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("processes left running: %v", left)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// logWriter sends the suite's progress lines to the test log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
