package netns

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Transport selects the transports a daemon listens on.
type Transport int

const (
	TCP Transport = 1 << iota
	QUIC
	Both = TCP | QUIC
)

func (tr Transport) String() string {
	switch tr {
	case TCP:
		return "tcp"
	case QUIC:
		return "quic"
	}
	return "tcp+quic"
}

// Port is the port daemons listen on by default, in every namespace (each
// has its own addresses, so they never collide): a restarted daemon comes
// back at the same address.
const Port = 4001

// Listen returns the --listen flags for tr on every interface, port Port.
func Listen(tr Transport) []string {
	var args []string
	if tr&TCP != 0 {
		args = append(args, "--listen", fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", Port))
	}
	if tr&QUIC != 0 {
		args = append(args, "--listen", fmt.Sprintf("/ip4/0.0.0.0/udp/%d/quic-v1", Port))
	}
	return args
}

// ReadyTimeout bounds how long a daemon may take to print "ready".
const ReadyTimeout = 30 * time.Second

// Daemon is an `mcpmesh node` running in a host's namespace. Its home
// outlives the process: Restart brings the same identity back.
type Daemon struct {
	lab     *Lab
	host    *Host
	name    string
	home    string
	args    []string // the node command's flags
	logPath string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when the current process has exited
	reading sync.WaitGroup
	id      string
	addrs   []string
	log     bytes.Buffer // everything every run printed
	runs    int
}

// Start runs `mcpmesh node` on h with the given flags and waits until it is
// ready; the test ends if it does not start. Unless the flags say
// otherwise, it listens with Listen(Both), names itself after the host, and
// runs --open (a lab) unless --config is given. Its home is a fresh folder.
func (h *Host) Start(args ...string) *Daemon {
	h.lab.t.Helper()
	return h.StartAt("", args...)
}

// StartAt is Start with the given home folder (to share a key file, or to
// start a second daemon with another's identity); "" is a fresh one.
func (h *Host) StartAt(home string, args ...string) *Daemon {
	l := h.lab
	l.t.Helper()
	if l.opts.Binary == "" {
		l.t.Fatal("netns: Options.Binary is not set: no mcpmesh command to run")
	}
	if !slices.Contains(args, "--listen") {
		args = append(Listen(Both), args...)
	}
	if !slices.Contains(args, "--name") {
		args = append([]string{"--name", h.name}, args...)
	}
	if !slices.Contains(args, "--config") && !slices.Contains(args, "--open=false") {
		args = append([]string{"--open"}, args...)
	}
	l.mu.Lock()
	d := &Daemon{lab: l, host: h, name: fmt.Sprintf("%s#%d", h.name, len(l.daemons)), home: home, args: args}
	file := strings.ReplaceAll(d.name, "#", "-")
	d.logPath = filepath.Join(l.dirFor("logs"), file+".log")
	if home == "" {
		d.home = l.dirFor("homes", file)
	}
	l.daemons = append(l.daemons, d)
	l.mu.Unlock()
	if err := d.start(); err != nil {
		l.t.Fatalf("netns: %v", err)
	}
	return d
}

// start runs the process and waits for its banner and "ready".
func (d *Daemon) start() error {
	d.mu.Lock()
	d.runs++
	fmt.Fprintf(&d.log, "=== %s run %d: mcpmesh --home %s node %s\n", d.name, d.runs, d.home, strings.Join(d.args, " "))
	d.id, d.addrs = "", nil
	d.mu.Unlock()

	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	args := append([]string{"netns", "exec", d.host.ns, d.lab.opts.Binary, "--home", d.home, "node"}, d.args...)
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.Env = append(os.Environ(), d.lab.opts.Env...)
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return fmt.Errorf("start %s: %w", d.name, err)
	}
	w.Close() // the child holds it now
	done := make(chan struct{})
	d.mu.Lock()
	d.cmd, d.done = cmd, done
	d.mu.Unlock()
	go func() {
		cmd.Wait()
		close(done)
	}()

	ready := make(chan struct{})
	d.reading.Add(1)
	go d.read(r, ready) // ends when every holder of the pipe's write end has exited

	select {
	case <-ready:
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.id == "" || len(d.addrs) == 0 {
			return fmt.Errorf("%s is ready but printed no peer ID or address:\n%s", d.name, d.log.String())
		}
		return nil
	case <-done:
		d.waitRead()
		return fmt.Errorf("%s exited before it was ready (%v):\n%s", d.name, cmd.ProcessState, d.Tail(40))
	case <-time.After(ReadyTimeout):
		return fmt.Errorf("%s not ready after %v:\n%s", d.name, ReadyTimeout, d.Tail(40))
	}
}

// read copies the daemon's output to its log, reading the banner.
func (d *Daemon) read(r *os.File, ready chan<- struct{}) {
	defer d.reading.Done()
	defer r.Close()
	f, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		f = nil
	}
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	isReady := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		d.mu.Lock()
		d.log.WriteString(line + "\n")
		if !isReady {
			if id, ok := strings.CutPrefix(line, "mcpmesh node "); ok {
				d.id = strings.TrimSpace(id)
			}
			t := strings.TrimSpace(line)
			if a, ok := strings.CutPrefix(t, "listen:"); ok {
				t = strings.TrimSpace(a)
			}
			if strings.HasPrefix(t, "/ip4/") || strings.HasPrefix(t, "/ip6/") {
				d.addrs = append(d.addrs, t)
			}
		}
		d.mu.Unlock()
		if f != nil {
			f.WriteString(line + "\n")
		}
		if !isReady && strings.HasPrefix(line, "ready") {
			isReady = true
			close(ready)
		}
	}
}

func (d *Daemon) waitRead() {
	done := make(chan struct{})
	go func() { d.reading.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second): // a child holds the pipe; the lab's cleanup kills it
	}
}

// ID is the daemon's peer ID.
func (d *Daemon) ID() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.id
}

// Name is the daemon's name in logs: host#n.
func (d *Daemon) Name() string { return d.name }

// Home is the daemon's home folder.
func (d *Daemon) Home() string { return d.home }

// Host is where the daemon runs.
func (d *Daemon) Host() *Host { return d.host }

// Addrs are the full multiaddrs the daemon printed at its last start.
func (d *Daemon) Addrs() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.addrs)
}

// Addr is the daemon's full multiaddr on lan over tr (TCP or QUIC), built
// from what it printed; the test ends if it has none.
func (d *Daemon) Addr(lan *LAN, tr Transport) string {
	d.lab.t.Helper()
	ip := d.host.Addr(lan)
	want := "/tcp/"
	if tr == QUIC {
		want = "/quic-v1/"
	}
	for _, a := range d.Addrs() {
		if strings.HasPrefix(a, "/ip4/"+ip.String()+"/") && strings.Contains(a, want) && !strings.Contains(a, "p2p-circuit") {
			return a
		}
	}
	d.lab.t.Fatalf("netns: %s has no %s address on %s (%s); it printed %v", d.name, tr, lan.name, ip, d.Addrs())
	return ""
}

// Log is everything the daemon printed, over all its runs.
func (d *Daemon) Log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.log.String()
}

// Tail is the last n lines of the daemon's output.
func (d *Daemon) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(d.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Running reports whether the daemon's process runs.
func (d *Daemon) Running() bool {
	d.mu.Lock()
	done := d.done
	d.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Kill ends the daemon with SIGKILL, as a crash or a power cut would (its
// sockets are closed by the kernel: TCP peers get a reset, QUIC peers hear
// nothing), and waits until it is gone.
func (d *Daemon) Kill() {
	d.signal(syscall.SIGKILL, 10*time.Second)
}

// Stop asks the daemon to stop (SIGINT) and waits up to grace, then kills
// it.
func (d *Daemon) Stop() { d.stop(10 * time.Second) }

func (d *Daemon) stop(grace time.Duration) {
	if !d.signal(syscall.SIGINT, grace) {
		d.signal(syscall.SIGKILL, 10*time.Second)
	}
}

// signal sends sig and reports whether the process exited within wait.
func (d *Daemon) signal(sig syscall.Signal, wait time.Duration) bool {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.mu.Unlock()
	if cmd == nil {
		return true
	}
	select {
	case <-done:
		return true
	default:
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
		d.waitRead()
		return true
	case <-time.After(wait):
		return false
	}
}

// Restart stops the daemon if it runs (SIGINT) and starts it again with the
// same home and flags: the same peer ID, at the same addresses.
func (d *Daemon) Restart() {
	d.lab.t.Helper()
	d.Stop()
	if err := d.start(); err != nil {
		d.lab.t.Fatalf("netns: restart: %v", err)
	}
}

// Result is what a CLI command did.
type Result struct {
	Args   []string
	Stdout string
	Stderr string
	Code   int // exit code; -1 if it did not run to an exit
	Took   time.Duration
}

// OK reports whether the command exited 0.
func (r Result) OK() bool { return r.Code == 0 }

func (r Result) String() string {
	return fmt.Sprintf("mcpmesh %s: exit %d after %v\nstdout: %s\nstderr: %s",
		strings.Join(r.Args, " "), r.Code, r.Took.Round(time.Millisecond), strings.TrimSpace(r.Stdout), strings.TrimSpace(r.Stderr))
}

// CLI runs `mcpmesh --home HOME ARGS...` in the daemon's namespace (its
// control API listens on the namespace's loopback).
func (d *Daemon) CLI(ctx context.Context, args ...string) Result {
	full := append([]string{"netns", "exec", d.host.ns, d.lab.opts.Binary, "--home", d.home}, args...)
	cmd := exec.CommandContext(ctx, "ip", full...)
	cmd.Env = append(os.Environ(), d.lab.opts.Env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	res := Result{Args: args, Stdout: stdout.String(), Stderr: stderr.String(), Took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		res.Code = ee.ExitCode()
	default:
		res.Code = -1
		res.Stderr += fmt.Sprintf("\n(%v)", err)
	}
	return res
}
