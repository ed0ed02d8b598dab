package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
)

// buildMcpmesh builds the mcpmesh command into dir and returns its path.
func buildMcpmesh(dir string) (string, error) {
	bin := filepath.Join(dir, "mcpmesh")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/mcpmesh/mcpmesh/cmd/mcpmesh")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build mcpmesh: %w\n%s", err, out)
	}
	return bin, nil
}

// daemon is an `mcpmesh node` run as a child process: the target.
type daemon struct {
	cmd     *exec.Cmd
	home    string
	info    lpeer.AddrInfo // its identity and the address it printed first
	metrics string         // URL of its Prometheus endpoint
	done    chan struct{}  // closed once the process has exited
	stderr  *tail
	stop    func() // ends the process (SIGINT, then SIGKILL) and waits; idempotent
}

// daemonSpec is how an attack wants its target started.
type daemonSpec struct {
	args []string // after `node --open --no-mdns --metrics 127.0.0.1:0`
	env  []string // added to the environment (a shared program inherits it)
}

// startDaemon runs `mcpmesh --home home node --open ...` and waits until
// it says it is ready. It listens on a free loopback TCP port unless args
// give --listen. The error of a daemon that exits before it is ready
// carries the end of its stderr.
func startDaemon(ctx context.Context, bin, home string, spec daemonSpec) (*daemon, error) {
	args := []string{"--home", home, "node", "--open", "--no-mdns", "--metrics", "127.0.0.1:0"}
	if !slices.Contains(spec.args, "--listen") {
		args = append(args, "--listen", "/ip4/127.0.0.1/tcp/0")
	}
	args = append(args, spec.args...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), spec.env...)
	// The daemon must not outlive the suite, however the suite ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	d := &daemon{cmd: cmd, home: home, done: make(chan struct{}), stderr: newTail(64 << 10)}
	cmd.Stderr = d.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	var once sync.Once
	d.stop = func() {
		once.Do(func() {
			cmd.Process.Signal(os.Interrupt)
			select {
			case <-d.done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-d.done
			}
		})
	}

	type banner struct {
		id, addr, metrics string
		err               error
	}
	ready := make(chan banner, 1)
	go func() {
		defer close(d.done)
		var b banner
		sc := bufio.NewScanner(stdout)
		said := false
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if said {
				continue // drain: the daemon must never block on a full pipe
			}
			switch {
			case strings.HasPrefix(line, "mcpmesh node "):
				b.id = strings.TrimPrefix(line, "mcpmesh node ")
			case strings.HasPrefix(line, "metrics:"):
				b.metrics = strings.TrimSpace(strings.TrimPrefix(line, "metrics:"))
			case strings.HasPrefix(line, "listen:") && b.addr == "":
				b.addr = strings.TrimSpace(strings.TrimPrefix(line, "listen:"))
			case line == "ready; Ctrl-C to stop":
				said = true
				ready <- b
			}
		}
		io.Copy(io.Discard, stdout)
		err := cmd.Wait()
		if !said {
			ready <- banner{err: fmt.Errorf("exited before it was ready (%v): %s", err, d.stderr.String())}
		}
	}()

	select {
	case b := <-ready:
		if b.err != nil {
			return nil, b.err
		}
		info, err := lpeer.AddrInfoFromString(b.addr)
		if err != nil {
			d.stop()
			return nil, fmt.Errorf("the daemon's address %q: %w", b.addr, err)
		}
		if b.metrics == "" {
			d.stop()
			return nil, errors.New("the daemon printed no metrics URL")
		}
		d.info, d.metrics = *info, b.metrics
		return d, nil
	case <-ctx.Done():
		d.stop()
		return nil, fmt.Errorf("the daemon did not get ready: %w; stderr: %s", ctx.Err(), d.stderr.String())
	}
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

func (d *daemon) alive() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// kill ends the daemon at once (the RSS guard uses it).
func (d *daemon) kill() { d.cmd.Process.Kill() }

// exitStatus says how the daemon ended, with the end of its stderr.
func (d *daemon) exitStatus() string {
	st := d.cmd.ProcessState
	if st == nil {
		return "still running"
	}
	s := st.String()
	if e := lastLines(d.stderr.String(), 6); e != "" {
		s += "; stderr ends: " + e
	}
	return s
}

// goroutines reads go_goroutines from the daemon's metrics endpoint.
func (d *daemon) goroutines(ctx context.Context) (int, error) {
	v, err := d.metric(ctx, "go_goroutines")
	return int(v), err
}

// mcpStreamsMetric is the resource manager's count of inbound streams on
// the daemon's "node" server, as go-libp2p exports it.
const mcpStreamsMetric = `libp2p_rcmgr_streams{dir="inbound",protocol="/mcpmesh/mcp/1.0.0/node",scope="protocol"}`

// metric reads one sample (its name with labels, as exported) from the
// daemon's metrics endpoint.
func (d *daemon) metric(ctx context.Context, sample string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.metrics, nil)
	if err != nil {
		return 0, err
	}
	// Uncompressed: the suite reads the metrics every 250 ms under attack
	// only, and gzip made the reads a twentieth of the daemon's CPU there.
	req.Header.Set("Accept-Encoding", "identity")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("read the daemon's metrics: %w", err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("%s %q: %w", sample, v, err)
			}
			return f, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read the daemon's metrics: %w", err)
	}
	return 0, fmt.Errorf("no %s in the daemon's metrics", sample)
}

// procStatusKB reads a field in kB (VmRSS, VmHWM) of /proc/PID/status.
func procStatusKB(pid int, field string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// resetPeakRSS sets the process's VmHWM back to its current RSS (Linux
// 4.0 and later: "5" to /proc/PID/clear_refs), so that VmHWM read later is
// the peak since now.
func resetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// rssWatch samples a daemon's RSS while an attack runs: its peak, in case
// VmHWM cannot be reset, and a guard that kills the daemon past a bound so
// that an attack that works cannot take the machine down with it.
type rssWatch struct {
	mu     sync.Mutex
	peakKB int64
	killed bool
	stop   context.CancelFunc
	done   chan struct{}
}

func watchRSS(d *daemon, guardKB int64) *rssWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &rssWatch{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(25 * time.Millisecond)
		defer t.Stop()
		for {
			if kb, err := procStatusKB(d.pid(), "VmRSS"); err == nil {
				w.mu.Lock()
				w.peakKB = max(w.peakKB, kb)
				if guardKB > 0 && kb > guardKB && !w.killed {
					w.killed = true
					d.kill()
				}
				w.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-d.done:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

// end stops the sampling and returns the peak sampled and whether the
// guard killed the daemon.
func (w *rssWatch) end() (peakKB int64, killed bool) {
	w.stop()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peakKB, w.killed
}

// tail keeps the last bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func newTail(n int) *tail { return &tail{max: n} }

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// procCPU returns the CPU time (user and system) that process pid has
// used, from /proc/PID/stat (in clock ticks of 10 ms, Linux's USER_HZ).
func procCPU(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// pid (comm) state ppid ... utime stime: fields 14 and 15, the
	// 12th and 13th after the command's closing parenthesis.
	_, rest, ok := strings.Cut(string(data), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0
	}
	user, _ := strconv.ParseInt(f[11], 10, 64)
	sys, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(user+sys) * 10 * time.Millisecond
}
