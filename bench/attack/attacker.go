package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	logging "github.com/ipfs/go-log/v2"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
)

// The attackers run in a process of their own: this executable again,
// told its role by the environment. In the suite's process they share a Go
// scheduler and a garbage collector with the good peers, and the good
// peers' latency measured the attackers' own work, which on a network is
// done on other machines, as much as the daemon's (README, "Whose process
// was slow"). At nice 19 (-attackers niced) they also leave the machine's
// cores to the daemon and the good peers first, which on a loaded machine
// slows the attack itself.
const roleAttacker = "attacker"

// attackerNice is the attacker process's nice value when it yields: the
// daemon and the good peers get the cores first, the attackers what is
// left (on a machine that is not saturated, all they want).
const attackerNice = 19

// attackerSpec is what the attacker process is told, as JSON on its stdin:
// the attack, its scale, and where the daemon is.
type attackerSpec struct {
	Nice   int // the process's nice value (0: the suite's)
	Attack string
	Target string // the daemon's /ip4/…/p2p/… address
	Home   string // the daemon's home (`mcpmesh tasks` reads it)
	Port   int
	Config configWire
}

// configWire is the part of config an attack reads.
type configWire struct {
	Bin, Self      string
	ReadyTimeout   time.Duration
	MaxMessage     int
	AmpInflight    int
	AmpIdentities  int
	AmpPerIdentity int
	IdleIdentities int
	IdleStreams    int
	Pipelined      int
	PipeIdentities int
	HalfClose      int
	PortDials      int
}

func (c *config) wire() configWire {
	return configWire{
		Bin: c.bin, Self: c.self, ReadyTimeout: c.readyTimeout, MaxMessage: c.maxMessage,
		AmpInflight: c.ampInflight, AmpIdentities: c.ampIdentities, AmpPerIdentity: c.ampPerIdentity,
		IdleIdentities: c.idleIdentities, IdleStreams: c.idleStreams,
		Pipelined: c.pipelined, PipeIdentities: c.pipeIdentities, HalfClose: c.halfClose, PortDials: c.portDials,
	}
}

func (w configWire) config() *config {
	c := defaultConfig()
	c.bin, c.self, c.readyTimeout, c.maxMessage = w.Bin, w.Self, w.ReadyTimeout, w.MaxMessage
	c.ampInflight, c.ampIdentities, c.ampPerIdentity = w.AmpInflight, w.AmpIdentities, w.AmpPerIdentity
	c.idleIdentities, c.idleStreams = w.IdleIdentities, w.IdleStreams
	c.pipelined, c.pipeIdentities, c.halfClose, c.portDials = w.Pipelined, w.PipeIdentities, w.HalfClose, w.PortDials
	return &c
}

// attackerEvent is one line the attacker process writes on its stdout.
type attackerEvent struct {
	Event  string `json:"event"` // "ready", "over", "done"
	Notes  []string
	Checks []checkWire
	IDs    []idCaseWire
	Err    string
}

type checkWire struct {
	What, Measured, Target string
	OK                     bool
}

type idCaseWire struct {
	Sent, Got, Due string
	OK             bool
}

// runAttacker is the attacker process: it reads its spec on stdin, runs
// the attack until stdin closes (or, for a one-shot attack, until it is
// done), and writes its progress and then what it saw on stdout.
func runAttacker() {
	logging.SetAllLoggers(logging.LevelError)
	signal.Ignore(os.Interrupt) // the suite ends the attack by closing stdin
	in := bufio.NewReader(os.Stdin)
	line, err := in.ReadBytes('\n')
	if err != nil {
		fmt.Fprintln(os.Stderr, "attacker: read the spec:", err)
		os.Exit(1)
	}
	var spec attackerSpec
	if err := json.Unmarshal(line, &spec); err != nil {
		fmt.Fprintln(os.Stderr, "attacker: the spec:", err)
		os.Exit(1)
	}
	if spec.Nice != 0 {
		if err := niceProcess(spec.Nice); err != nil {
			fmt.Fprintln(os.Stderr, "attacker:", err)
			os.Exit(1)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		io.Copy(io.Discard, in) // until the suite closes stdin, or dies
		cancel()
	}()
	out := json.NewEncoder(os.Stdout)
	var mu sync.Mutex
	emit := func(ev attackerEvent) {
		mu.Lock()
		defer mu.Unlock()
		out.Encode(ev)
	}
	rep := &report{}
	err = attackIn(ctx, spec, rep, stageFunc(func(event string) { emit(attackerEvent{Event: event}) }))
	done := attackerEvent{Event: "done", Notes: rep.notes}
	for _, c := range rep.checks {
		done.Checks = append(done.Checks, checkWire{c.what, c.measured, c.target, c.ok})
	}
	for _, c := range rep.ids {
		done.IDs = append(done.IDs, idCaseWire{c.sent, c.got, c.due, c.ok})
	}
	if err != nil {
		done.Err = err.Error()
	}
	emit(done)
}

// attackIn runs the attack spec names, telling tell "ready" and "over".
func attackIn(ctx context.Context, spec attackerSpec, rep *report, tell stageFunc) error {
	cfg := spec.Config.config()
	var a *attack
	for _, c := range attacks(cfg) {
		if c.name == spec.Attack {
			a = c
		}
	}
	if a == nil {
		return fmt.Errorf("no attack %q", spec.Attack)
	}
	target, err := lpeer.AddrInfoFromString(spec.Target)
	if err != nil {
		return fmt.Errorf("the target %q: %w", spec.Target, err)
	}
	st := newStage()
	go func() {
		select {
		case <-st.ready:
			tell("ready")
		case <-st.over:
		}
		<-st.over
		tell("over")
	}()
	e := &env{cfg: cfg, target: *target, home: spec.Home, port: spec.Port}
	defer st.Over()
	return a.run(ctx, e, rep, st)
}

// stageFunc tells the suite where the attack stands: "ready", "over".
type stageFunc func(event string)

// attackerProcess is an attack run in a child process.
type attackerProcess struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *tail
	done   chan struct{} // closed once the process has exited and its report is read
	err    error         // how the attack ended: its own error, or the process's
}

// startAttacker starts a's attack on e's daemon in a child process (this
// executable, told its role by the environment), relaying its progress to
// st and what it saw to rep. The attack runs until stop is called (or,
// for a one-shot attack, until it is done); done is closed once the
// process has ended, and err then says how the attack ended.
func startAttacker(cfg *config, a *attack, where attackerMode, e *env, rep *report, st *stage) (*attackerProcess, error) {
	nice := 0
	if where == attackersNiced {
		nice = attackerNice
	}
	spec, err := json.Marshal(attackerSpec{Nice: nice, Attack: a.name, Target: addrString(e.target), Home: e.home, Port: e.port, Config: cfg.wire()})
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(cfg.self)
	cmd.Env = append(os.Environ(), roleEnv+"="+roleAttacker)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &attackerProcess{cmd: cmd, stderr: newTail(16 << 10), done: make(chan struct{})}
	cmd.Stderr = p.stderr
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the attacker process: %w", err)
	}
	if _, err := p.stdin.Write(append(spec, '\n')); err != nil {
		p.stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("give the attacker process its spec: %w", err)
	}
	go func() {
		defer close(p.done)
		defer st.Over()
		var last *attackerEvent
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			var ev attackerEvent
			if json.Unmarshal(sc.Bytes(), &ev) != nil {
				continue
			}
			switch ev.Event {
			case "ready":
				st.Ready()
			case "over":
				st.Over()
			case "done":
				last = &ev
			}
		}
		io.Copy(io.Discard, stdout)
		waitErr := cmd.Wait()
		if last == nil {
			p.err = fmt.Errorf("the attacker process ended without a report (%v): %s", waitErr, lastLines(p.stderr.String(), 6))
			return
		}
		rep.mu.Lock()
		rep.notes = append(rep.notes, last.Notes...)
		for _, c := range last.Checks {
			rep.checks = append(rep.checks, check{c.What, c.Measured, c.Target, c.OK})
		}
		for _, c := range last.IDs {
			rep.ids = append(rep.ids, idCase{c.Sent, c.Got, c.Due, c.OK})
		}
		rep.mu.Unlock()
		if last.Err != "" {
			p.err = errors.New(last.Err)
		}
	}()
	return p, nil
}

func (p *attackerProcess) pid() int { return p.cmd.Process.Pid }

// stop tells the attack to end (it closes its hosts, then reports).
func (p *attackerProcess) stop() { p.stdin.Close() }

// kill ends the process at once.
func (p *attackerProcess) kill() { p.cmd.Process.Kill() }

func addrString(ai lpeer.AddrInfo) string {
	addrs, err := lpeer.AddrInfoToP2pAddrs(&ai)
	if err != nil || len(addrs) == 0 {
		return ""
	}
	return addrs[0].String()
}

// niceProcess sets the nice value of every thread of this process: on
// Linux it is a thread's, and a new thread takes its creator's, so once
// every thread has it, so will the Go runtime's later threads.
func niceProcess(nice int) error {
	done := map[int]bool{}
	for {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("nice: %w", err)
		}
		more := false
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil || done[tid] {
				continue
			}
			if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, nice); err != nil {
				return fmt.Errorf("nice thread %d: %w", tid, err)
			}
			done[tid], more = true, true
		}
		if !more {
			return nil
		}
	}
}

// attackerMode is where the attackers of one run of an attack are.
type attackerMode string

const (
	attackersApart  attackerMode = "process" // a process of their own, at the suite's priority (the default)
	attackersNiced  attackerMode = "niced"   // a process of their own, at nice 19
	attackersInline attackerMode = "inline"  // the suite's process, beside the good peers (as first measured)
)

// parseAttackerModes reads -attackers: a comma-separated list of modes,
// each attack run once per mode, in that order.
func parseAttackerModes(s string) ([]attackerMode, error) {
	var modes []attackerMode
	for f := range strings.SplitSeq(s, ",") {
		switch m := attackerMode(strings.TrimSpace(f)); m {
		case attackersNiced, attackersApart, attackersInline:
			if !slices.Contains(modes, m) {
				modes = append(modes, m)
			}
		default:
			return nil, fmt.Errorf("-attackers %q: want a list of process, niced, inline", s)
		}
	}
	return modes, nil
}

// suffix marks a run's name with its mode, the default's unmarked.
func (m attackerMode) suffix() string {
	if m == attackersApart {
		return ""
	}
	return "-" + string(m)
}

func (m attackerMode) String() string {
	switch m {
	case attackersInline:
		return "in the suite's process, beside the good peers"
	case attackersNiced:
		return fmt.Sprintf("a process of their own, at nice %d", attackerNice)
	}
	return "a process of their own"
}

func modesString(modes []attackerMode) string {
	var s []string
	for _, m := range modes {
		if m.suffix() == "" {
			s = append(s, m.String())
		} else {
			s = append(s, fmt.Sprintf("%s (rows %s)", m, m.suffix()))
		}
	}
	return strings.Join(s, "; ")
}
