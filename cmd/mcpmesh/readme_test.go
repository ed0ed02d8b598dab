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
	"testing"
	"time"
)

// readmeSections are the README's sections whose commands TestREADME runs,
// in order, in one shell environment (a variable set in one is seen by the
// next, as in a terminal).
var readmeSections = []string{"Two daemons on one machine", "Finding capabilities"}

// readmeStep is one command of the README, with the output the README
// shows under it.
type readmeStep struct {
	line   int    // in README.md
	cmd    string // continuation lines joined
	daemon bool   // `mcpmesh node`: runs in the background until the test ends
	want   []string
}

// readmeSteps reads the sh blocks of the given sections. A comment line
// "#   TEXT" (three spaces) under a command is output it must print, "…"
// standing for anything and runs of spaces for any space; other comment
// lines are prose. Lines running the go tool are the reader's build steps:
// the test has built the command already.
func readmeSteps(readme string, sections []string) ([]readmeStep, error) {
	var steps []readmeStep
	inSection, inBlock := false, false
	found := map[string]bool{}
	lines := strings.Split(readme, "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if h, ok := strings.CutPrefix(line, "## "); ok && !inBlock {
			inSection = false
			for _, s := range sections {
				if strings.TrimSpace(h) == s {
					inSection, found[s] = true, true
				}
			}
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
			step := readmeStep{line: i + 1, cmd: t}
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
			steps = append(steps, step)
		}
	}
	for _, s := range sections {
		if !found[s] {
			return nil, fmt.Errorf("README.md has no section %q", s)
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
// home folders (/tmp/… becomes a temporary folder) and the ports (4001,
// 4002 become free ones) change; npx runs where the interop packages are
// installed, so it needs no network.
func TestREADME(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	steps, err := readmeSteps(string(readme), readmeSections)
	if err != nil {
		t.Fatal(err)
	}
	workdir := interopDir(t, "everything") // npx finds the server here
	tmp := t.TempDir()
	subst := strings.NewReplacer("/tmp/mcpmesh-", tmp+"/mcpmesh-", "tcp/4001", "tcp/"+freePort(t), "tcp/4002", "tcp/"+freePort(t))
	env := append(os.Environ(), "PATH="+filepath.Dir(binary)+string(os.PathListSeparator)+os.Getenv("PATH"), "MCPMESH_HOME="+filepath.Join(tmp, "default-home"))
	envFile := filepath.Join(tmp, "env")

	for _, step := range steps {
		cmdline := subst.Replace(step.cmd)
		where := fmt.Sprintf("README.md:%d: %s", step.line, step.cmd)
		if step.daemon {
			out := startREADMEDaemon(t, where, cmdline, workdir, env)
			checkShown(t, where, out, substAll(subst, step.want))
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
// the test ends and returns what it printed until it was ready.
func startREADMEDaemon(t *testing.T, where, cmdline, dir string, env []string) string {
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
	t.Cleanup(func() {
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
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("%s\n%v\nstdout:\n%s\nstderr:\n%s", where, err, out.String(), stderr.String())
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("%s\nnot ready after 90s\nstdout:\n%s\nstderr:\n%s", where, out.String(), stderr.String())
	}
	return out.String()
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
	steps, err := readmeSteps(md, []string{"Two daemons on one machine"})
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 2 || !steps[0].daemon || steps[0].cmd != "mcpmesh node --home /tmp/mcpmesh-a  --open" ||
		len(steps[0].want) != 1 || steps[1].daemon || steps[1].cmd != "A=$(mcpmesh id -q)  # note" {
		t.Fatalf("steps: %+v", steps)
	}
	if _, err := readmeSteps(md, []string{"Missing"}); err == nil {
		t.Fatal("a missing section is no error")
	}
	if !shownOutput("12D3KooW… alice node/echo Sends …").MatchString("12D3KooWabc  alice        node/echo  Sends the text") {
		t.Fatal("… and spaces do not match")
	}
	if shownOutput("Echo: hi").MatchString("Echo: ho") {
		t.Fatal("a different output matches")
	}
}
