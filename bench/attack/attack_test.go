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
	where     = flag.String("attackers", "process", "where the attackers run: process (a process of their own), niced (the same at nice 19), inline (the test's process); a comma-separated list runs each attack once per mode (subtests NAME, NAME-niced, NAME-inline)")
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
	o := runAttack(context.Background(), cfg, control(), attackersApart, logWriter{t})
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

// TestRatiosAreTakenAgainstTheReference checks the latency targets' arithmetic:
// with a reference daemon, a ratio is the attacked daemon's divided by
// the reference's in the same windows; without one, the raw ratio.
func TestRatiosAreTakenAgainstTheReference(t *testing.T) {
	ms := time.Millisecond
	o := &outcome{
		clean:   latencies{ok: 100, p50: 10 * ms, p99: 100 * ms},
		under:   latencies{ok: 100, p50: 40 * ms, p99: 300 * ms},
		settled: true,
		rep:     &report{},
	}
	cfg := &config{maxRatio: 2, maxRSSMB: 256}
	if rs := o.ratios(); rs[0].ratio != 4 || rs[1].ratio != 3 {
		t.Errorf("no reference: ratios %+v, want ×4 and ×3", rs)
	}
	if f := strings.Join(o.failures(cfg), "\n"); !strings.Contains(f, "p50 ×4.0") || !strings.Contains(f, "p99 ×3.0") {
		t.Errorf("no reference: failures %q, want p50 ×4.0 and p99 ×3.0", f)
	}
	// The machine slowed both daemons ×4 at p50 and ×1.5 at p99.
	o.refClean = latencies{ok: 100, p50: 5 * ms, p99: 50 * ms}
	o.refUnder = latencies{ok: 100, p50: 20 * ms, p99: 75 * ms}
	rs := o.ratios()
	if rs[0].ratio != 1 || rs[1].ratio != 2 {
		t.Errorf("with a reference: ratios %+v, want ×1 and ×2", rs)
	}
	if f := o.failures(cfg); len(f) != 0 {
		t.Errorf("with a reference, within ×2: failures %q", f)
	}
	cfg.maxRatio = 1.5
	if f := strings.Join(o.failures(cfg), "\n"); strings.Contains(f, "p50") || !strings.Contains(f, "p99 ×2.0 (×3.0: ") || !strings.Contains(f, "reference daemon in the same windows ×1.5") {
		t.Errorf("with a reference, target ×1.5: failures %q, want p99 ×2.0 only, naming the raw ×3.0 and the reference's ×1.5", f)
	}
}

// TestAttackersRunApartAtLowPriority checks that an attack runs in a
// process of its own, every thread of it at nice 19, and that what it
// saw comes back: 3-hop-budget's check, made by the attacker process.
func TestAttackersRunApartAtLowPriority(t *testing.T) {
	defer goleak.VerifyNone(t, leakOptions...)
	defer checkNoChildren(t)
	cfg := testConfig(t)
	cfg.attackers = []attackerMode{attackersNiced}
	home := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, err := startDaemon(ctx, cfg.bin, home, daemonSpec{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.stop()
	rep, st := &report{}, newStage()
	p, err := startAttacker(cfg, hopBudget(), attackersNiced, &env{cfg: cfg, target: d.info, home: home}, rep, st)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		p.stop()
		<-p.done
	}()
	select {
	case <-st.ready:
	case <-ctx.Done():
		t.Fatalf("the attack was never in place: %s", p.stderr.String())
	}
	if p.pid() == os.Getpid() {
		t.Fatal("the attacker runs in the test's process")
	}
	nices := map[string]int{}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", p.pid()))
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // a thread that ended
		}
		// pid (comm) state ppid ...: nice is the 19th field, the 17th
		// after the command.
		_, rest, _ := strings.Cut(string(b), ") ")
		if fs := strings.Fields(rest); len(fs) > 16 {
			nices[fs[16]]++
		}
	}
	if len(nices) != 1 || nices[strconv.Itoa(attackerNice)] == 0 {
		t.Errorf("the attacker process's threads by nice value: %v; want all at %d", nices, attackerNice)
	}
	p.stop()
	<-p.done
	if p.err != nil {
		t.Errorf("the attack ended with: %v", p.err)
	}
	if len(rep.checks) != 1 || !rep.checks[0].ok {
		t.Errorf("the attacker's checks came back as %+v; want the hop budget's, met", rep.checks)
	}
}
