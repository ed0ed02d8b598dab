package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// readmeSkipped are the README's sections whose commands TestREADME does
// not run, and why; it runs every other section's, in order, in one shell
// environment (a variable set in one is seen by the next, as in a
// terminal).
var readmeSkipped = map[string]string{
	"Quick start":                    "the demo and the test suite: CI runs them itself",
	"Reaching peers across networks": "needs several networks and a public relay",
}

// readmeElsewhere are the programs of README commands that need more than
// this machine has (an MCP host, a model server): skipped, and said.
var readmeElsewhere = map[string]string{
	"claude": "an MCP host",
	"ollama": "a model server",
}

// readmeStep is one command of the README, with the output the README
// shows under it.
type readmeStep struct {
	line       int    // in README.md
	section    string // its heading
	cmd        string // continuation lines joined
	daemon     bool   // `mcpmesh node`: runs in the background until the test ends
	background bool   // --watch: runs until the test ends, and must not fail meanwhile
	want       []string
}

// readmeSteps reads the sh blocks of the sections not in skip. A comment line
// "#   TEXT" (three spaces) under a command is output it must print, "…"
// standing for anything and runs of spaces for any space; other comment
// lines are prose. Lines running the go tool are the reader's build steps:
// the test has built the command already.
func readmeSteps(readme string, skip map[string]string) ([]readmeStep, error) {
	var steps []readmeStep
	inSection, inBlock := false, false
	section := ""
	found := map[string]bool{}
	lines := strings.Split(readme, "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if h, ok := strings.CutPrefix(line, "## "); ok && !inBlock {
			section = strings.TrimSpace(h)
			_, skipped := skip[section]
			inSection, found[section] = !skipped, true
			continue
		}
		if strings.HasPrefix(line, "```") {
			inBlock = !inBlock && inSection && strings.TrimPrefix(line, "```") == "sh"
			continue
		}
		if !inBlock {
			continue
		}
		t := strings.TrimSpace(line)
		switch {
		case t == "":
		case strings.HasPrefix(t, "#   "):
			if len(steps) == 0 {
				return nil, fmt.Errorf("README.md:%d: output shown before any command", i+1)
			}
			steps[len(steps)-1].want = append(steps[len(steps)-1].want, strings.TrimSpace(t[1:]))
		case strings.HasPrefix(t, "#"):
		default:
			step := readmeStep{line: i + 1, section: section, cmd: t}
			for strings.HasSuffix(step.cmd, "\\") && i+1 < len(lines) {
				i++
				step.cmd = strings.TrimSuffix(step.cmd, "\\") + " " + strings.TrimSpace(lines[i])
			}
			if rest, ok := strings.CutPrefix(step.cmd, "go run ./cmd/mcpmesh "); ok {
				step.cmd = "mcpmesh " + rest // the same command, built once
			} else if strings.HasPrefix(step.cmd, "go ") {
				continue
			}
			step.daemon = regexp.MustCompile(`^mcpmesh (--home \S+ )?node\b`).MatchString(step.cmd)
			step.background = strings.Contains(step.cmd, " --watch")
			steps = append(steps, step)
		}
	}
	for s := range skip {
		if !found[s] {
			return nil, fmt.Errorf("README.md has no section %q (readmeSkipped names it)", s)
		}
	}
	return steps, nil
}

// shownOutput turns a line of output as the README shows it into a
// pattern: … for anything, a run of spaces for any.
func shownOutput(want string) *regexp.Regexp {
	var b strings.Builder
	for i, part := range strings.Split(want, "…") {
		if i > 0 {
			b.WriteString(".*")
		}
		words := strings.Fields(part)
		for j, w := range words {
			if j > 0 {
				b.WriteString(`\s+`)
			}
			b.WriteString(regexp.QuoteMeta(w))
		}
		if strings.HasSuffix(part, " ") && len(words) > 0 {
			b.WriteString(`\s+`)
		}
	}
	return regexp.MustCompile(b.String())
}

// TestREADME runs the README's commands as written, against the built
// command, each daemon in a process of its own, and fails on a command
// that fails or does not print what the README shows under it. Only the
// home folders (/tmp/… becomes a temporary folder, and so does HOME), and
// the ports (4001, 4002, 8780 become free ones) change; npx runs where the
// interop packages are installed, so it needs no network. A daemon started
// on a home where one of the README's runs already is stops that one
// first, as its reader would.
func TestREADME(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	steps, err := readmeSteps(string(readme), readmeSkipped)
	if err != nil {
		t.Fatal(err)
	}
	workdir := interopDir(t, "everything") // npx finds the server here
	tmp := t.TempDir()
	subst := strings.NewReplacer("/tmp/mcpmesh-", tmp+"/mcpmesh-", "tcp/4001", "tcp/"+freePort(t), "tcp/4002", "tcp/"+freePort(t),
		"127.0.0.1:8780", "127.0.0.1:"+freePort(t))
	home, defaultHome := filepath.Join(tmp, "home"), filepath.Join(tmp, "default-home")
	os.MkdirAll(home, 0o700)
	env := append(os.Environ(), "PATH="+filepath.Dir(binary)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"MCPMESH_HOME="+defaultHome, "HOME="+home)
	envFile := filepath.Join(tmp, "env")
	daemons := map[string]func(){} // by home: stops the README's daemon there

	for _, step := range steps {
		cmdline := subst.Replace(step.cmd)
		where := fmt.Sprintf("README.md:%d (%s): %s", step.line, step.section, step.cmd)
		if prog := programOf(cmdline); readmeElsewhere[prog] != "" {
			t.Logf("%s\nnot run: %s is %s", where, prog, readmeElsewhere[prog])
			continue
		}
		if step.daemon {
			at := defaultHome
			if m := regexp.MustCompile(`--home (\S+)`).FindStringSubmatch(cmdline); m != nil {
				at = strings.Replace(m[1], "~", home, 1)
			}
			if stop := daemons[at]; stop != nil {
				stop()
			}
			out, stop := startREADMEDaemon(t, where, cmdline, workdir, env)
			daemons[at] = stop
			checkShown(t, where, out, substAll(subst, step.want))
			continue
		}
		if step.background {
			runREADMEBackground(t, where, cmdline, workdir, env)
			continue
		}
		// set -a: the variables a line sets reach the next lines, as in
		// one terminal; env -0 hands them over.
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		c := exec.CommandContext(ctx, "bash", "-c", "set -a -o pipefail\n"+cmdline+"\nstatus=$?; env -0 > "+envFile+"; exit $status")
		c.Dir, c.Env = workdir, env
		var stdout, stderr bytes.Buffer
		c.Stdout, c.Stderr = &stdout, &stderr
		err := c.Run()
		cancel()
		if err != nil {
			t.Fatalf("%s\nfailed: %v\nstdout:\n%s\nstderr:\n%s", where, err, stdout.String(), stderr.String())
		}
		checkShown(t, where, stdout.String()+stderr.String(), substAll(subst, step.want))
		if data, err := os.ReadFile(envFile); err == nil {
			env = strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
		}
	}
}

// programOf is the program a README command line runs (after VAR=value).
func programOf(cmdline string) string {
	for _, w := range strings.Fields(cmdline) {
		if !regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`).MatchString(w) {
			return w
		}
	}
	return ""
}

// runREADMEBackground runs a command that runs until stopped (--watch)
// until the test ends; it fails the test if it ends on its own meanwhile.
func runREADMEBackground(t *testing.T, where, cmdline, dir string, env []string) {
	t.Helper()
	c := exec.Command("bash", "-c", "set -a\nexec "+cmdline)
	c.Dir, c.Env = dir, env
	var out lockedBuffer
	c.Stdout, c.Stderr = &out, &out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }()
	t.Cleanup(func() {
		select {
		case err := <-exited:
			t.Errorf("%s\nended before the test did: %v\n%s", where, err, out.String())
			return
		default:
		}
		c.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			c.Process.Kill()
			<-exited
		}
	})
}

func substAll(r *strings.Replacer, lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = r.Replace(l)
	}
	return out
}

func checkShown(t *testing.T, where, out string, want []string) {
	t.Helper()
	for _, w := range want {
		if !shownOutput(w).MatchString(out) {
			t.Errorf("%s\nprinted no line like %q:\n%s", where, w, out)
		}
	}
}

// startREADMEDaemon runs a daemon's command line in the background until
// the test ends, or stop, and returns what it printed until it was ready.
func startREADMEDaemon(t *testing.T, where, cmdline, dir string, env []string) (printed string, stop func()) {
	t.Helper()
	c := exec.Command("bash", "-c", "set -a\nexec "+cmdline)
	c.Dir, c.Env = dir, env
	stdout, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	var out lockedBuffer
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			out.Write([]byte(sc.Text() + "\n"))
			if strings.HasPrefix(sc.Text(), "ready") {
				ready <- nil
				io.Copy(io.Discard, stdout)
				return
			}
		}
		ready <- errors.New("exited before it was ready")
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			c.Process.Signal(os.Interrupt)
			done := make(chan struct{})
			go func() { c.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				c.Process.Kill()
				<-done
			}
		})
	}
	t.Cleanup(stop)
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("%s\n%v\nstdout:\n%s\nstderr:\n%s", where, err, out.String(), stderr.String())
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("%s\nnot ready after 90s\nstdout:\n%s\nstderr:\n%s", where, out.String(), stderr.String())
	}
	return out.String(), stop
}

// freePort returns a TCP port free on loopback now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
}

func TestREADMEStepsParse(t *testing.T) {
	md := "## Two daemons on one machine\n\n```sh\n# a comment\nmcpmesh node --home /tmp/mcpmesh-a \\\n    --open\n#   ready; Ctrl-C to stop\ngo install ./cmd/mcpmesh\nA=$(mcpmesh id -q)  # note\n```\n\n## Other\n\n```sh\nmcpmesh peers\n```\n"
	steps, err := readmeSteps(md, map[string]string{"Other": "elsewhere"})
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 2 || !steps[0].daemon || steps[0].cmd != "mcpmesh node --home /tmp/mcpmesh-a  --open" ||
		len(steps[0].want) != 1 || steps[1].daemon || steps[1].cmd != "A=$(mcpmesh id -q)  # note" {
		t.Fatalf("steps: %+v", steps)
	}
	if _, err := readmeSteps(md, map[string]string{"Missing": "why"}); err == nil {
		t.Fatal("skipping a section the README does not have is no error")
	}
	if !shownOutput("12D3KooW… alice node/echo Sends …").MatchString("12D3KooWabc  alice        node/echo  Sends the text") {
		t.Fatal("… and spaces do not match")
	}
	if shownOutput("Echo: hi").MatchString("Echo: ho") {
		t.Fatal("a different output matches")
	}
}
