package passthrough

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The binaries under test, built once by TestMain.
var (
	mcpmeshBin string // cmd/mcpmesh
	fixtureBin string // cmd/mcpmesh-fixture
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mcpmesh-passthrough")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	mcpmeshBin = filepath.Join(dir, "mcpmesh")
	fixtureBin = filepath.Join(dir, "mcpmesh-fixture")
	// One go build for both: they share the compile work, and link in parallel.
	build := exec.Command("go", "build", "-o", dir+"/", "../../cmd/mcpmesh", "../../cmd/mcpmesh-fixture")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "build mcpmesh and mcpmesh-fixture: %v\n", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	// goleak.VerifyTestMain exits itself; remove the binaries first.
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// inCI reports whether the tests run in CI, where nothing may skip.
func inCI() bool { return os.Getenv("CI") != "" }

// skipOrFail skips the test on a developer's machine and fails it in CI.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if inCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// npmBin returns the absolute path of an executable an interop folder's npm
// packages install (interop/DIR/node_modules/.bin/NAME).
func npmBin(t *testing.T, dir, name string) string {
	t.Helper()
	bin, err := filepath.Abs(filepath.Join("..", dir, "node_modules", ".bin", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		skipOrFail(t, "npm packages of interop/%s not installed: run `npm install --no-package-lock --prefix interop/%s` (.ci/run does)", dir, dir)
	}
	if _, err := exec.LookPath("node"); err != nil {
		skipOrFail(t, "node is not installed")
	}
	return bin
}

// daemon is a running `mcpmesh node` in a process of its own.
type daemon struct {
	home string
	id   string
	addr string // first listen multiaddr, with /p2p/ID
	http string // the gateway's mesh-mode URL (…/mcp), with --http
	cmd  *exec.Cmd
	log  *syncBuffer // stdout and stderr
}

// startDaemon starts `mcpmesh node` on loopback, closed to the LAN and the
// DHT (--no-mdns --no-dht: the test chooses who connects to whom) and open
// to its peers, and waits until it is ready.
func startDaemon(t testing.TB, extra ...string) *daemon {
	t.Helper()
	home := t.TempDir()
	args := append([]string{"--home", home, "node", "--listen", "/ip4/127.0.0.1/tcp/0",
		"--no-mdns", "--no-dht", "--open", "--dial-timeout", "5s"}, extra...)
	cmd := exec.Command(mcpmeshBin, args...)
	d := &daemon{home: home, cmd: cmd, log: &syncBuffer{}}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = d.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.stop(t) })
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		said := false
		for sc.Scan() {
			line := sc.Text()
			d.log.Write([]byte(line + "\n"))
			if said {
				continue
			}
			trimmed := strings.TrimSpace(line)
			switch {
			case strings.HasPrefix(line, "mcpmesh node "):
				d.id = strings.TrimPrefix(line, "mcpmesh node ")
			case strings.HasPrefix(trimmed, "listen:"):
				d.addr = strings.TrimSpace(strings.TrimPrefix(trimmed, "listen:"))
			case strings.HasPrefix(trimmed, "http:") && d.http == "":
				d.http = strings.Fields(strings.TrimPrefix(trimmed, "http:"))[0]
			case line == "ready; Ctrl-C to stop":
				said = true
				ready <- nil
			}
		}
		if !said {
			ready <- errors.New("daemon exited before it was ready")
		}
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("mcpmesh %s: %v\n%s", strings.Join(args, " "), err, d.log)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("mcpmesh %s: not ready after 60s\n%s", strings.Join(args, " "), d.log)
	}
	return d
}

func (d *daemon) stop(t testing.TB) {
	if d.cmd.ProcessState != nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		d.cmd.Process.Kill()
		<-done
		t.Errorf("daemon %s did not stop within 15s of SIGINT", d.id)
	}
}

// mesh is the topology every path test uses: the host talks to A; A is
// connected to B only; B re-shares (--share-peer) every server C shares
// (--share, --share-http) under the same name. So a server reached as
// B/NAME from A is two libp2p hops from the host's node: A → B → C.
type mesh struct {
	a, b, c *daemon
}

// share is one server C shares: exactly one of command (a shell command
// line, for --share) and url (for --share-http).
type share struct {
	name, command, url string
}

func startMesh(t *testing.T, shares ...share) *mesh {
	t.Helper()
	var cArgs, bArgs []string
	for _, s := range shares {
		if s.url != "" {
			cArgs = append(cArgs, "--share-http", s.name+"="+s.url)
		} else {
			cArgs = append(cArgs, "--share", s.name+"="+s.command)
		}
	}
	c := startDaemon(t, append(cArgs, "--name", "node-c")...)
	for _, s := range shares {
		bArgs = append(bArgs, "--share-peer", s.name+"="+c.addr+"/"+s.name)
	}
	b := startDaemon(t, append(bArgs, "--name", "node-b", "--peer", c.addr)...)
	a := startDaemon(t, "--name", "node-a", "--peer", b.addr, "--http", "127.0.0.1:0")
	if a.http == "" {
		t.Fatalf("node A printed no gateway URL:\n%s", a.log)
	}
	return &mesh{a: a, b: b, c: c}
}

// target is the --to value (and the HTTP path) of server NAME two hops away.
func (m *mesh) target(name string) string { return m.b.id + "/" + name }

// url is the gateway's transparent URL of server NAME two hops away.
func (m *mesh) url(name string) string { return m.a.http + "/" + m.target(name) }

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

var _ io.Writer = (*syncBuffer)(nil)
