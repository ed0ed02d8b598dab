package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
)

// askingProgramEnv set to 1 makes the test binary a stdio MCP program (see
// TestMain) whose tool "book" asks its caller for a booking (elicitation)
// and says what it got, and whose tool "think" asks for a model completion
// (sampling) and says how that went.
const askingProgramEnv = "MCPMESH_CLI_TEST_ASKING"

func runAskingProgram() int {
	s := sdkmcp.NewServer(&sdkmcp.Implementation{Name: "asking", Version: "1.0.0"}, nil)
	sdkmcp.AddTool(s, &sdkmcp.Tool{Name: "book", Description: "books a table, asking the caller for the details"},
		func(ctx context.Context, req *sdkmcp.CallToolRequest, _ any) (*sdkmcp.CallToolResult, any, error) {
			res, err := req.Session.Elicit(ctx, &sdkmcp.ElicitParams{Message: "Your booking?", RequestedSchema: map[string]any{
				"type": "object",
				"properties": map[string]any{
					"name":       map[string]any{"type": "string", "description": "whose name the table is in", "minLength": 2},
					"people":     map[string]any{"type": "integer", "default": 2, "minimum": 1, "maximum": 12},
					"seating":    map[string]any{"type": "string", "enum": []string{"inside", "outside"}, "default": "inside"},
					"newsletter": map[string]any{"type": "boolean", "title": "Newsletter"},
				},
				"required": []string{"name"},
			}})
			if err != nil {
				return nil, nil, err
			}
			text := "not booked: " + res.Action
			if res.Action == "accept" {
				c := res.Content
				text = fmt.Sprintf("booked for %v: %v people, %v, newsletter %v", c["name"], c["people"], c["seating"], c["newsletter"] == true)
			}
			return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: text}}}, nil, nil
		})
	sdkmcp.AddTool(s, &sdkmcp.Tool{Name: "think", Description: "asks the caller's model"},
		func(ctx context.Context, req *sdkmcp.CallToolRequest, _ any) (*sdkmcp.CallToolResult, any, error) {
			_, err := req.Session.CreateMessage(ctx, &sdkmcp.CreateMessageParams{MaxTokens: 64, Messages: []*sdkmcp.SamplingMessage{{Role: "user", Content: &sdkmcp.TextContent{Text: "Summarise the menu"}}}})
			text := "the model answered"
			if err != nil {
				text = "no model: " + err.Error()
			}
			return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: text}}}, nil, nil
		})
	if err := s.Run(context.Background(), &sdkmcp.StdioTransport{}); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "asking program:", err)
		return 1
	}
	return 0
}

// runIn runs the command with stdin as its standard input.
func runIn(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return stdout.String(), stderr.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), 0
}

// askingChain starts three daemons: C shares the asking program, B
// re-shares it (--share-peer far=C/asking), A knows only B. A call from A
// to B's far/book is answered by C's program, two hops away.
func askingChain(t *testing.T) (a, b, c *daemon) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c = startDaemon(t, "--share", fmt.Sprintf("asking=env %s=1 '%s'", askingProgramEnv, exe))
	b = startDaemon(t, "--peer", c.addr, "--share-peer", "far="+c.id+"/asking")
	a = startDaemon(t, "--peer", b.addr)
	return a, b, c
}

// `mcpmesh call` answers, at its prompt, the question a program two hops
// away asks mid-call, and the program's result holds the answer.
func TestCallAnswersAQuestionTwoHopsAway(t *testing.T) {
	a, b, _ := askingChain(t)
	// accept; name; newsletter; people ("many" is no number: asked again);
	// seating by its number.
	stdin := "\nAda\ny\nmany\n4\n2\n"
	out, stderr, code := runIn(t, stdin, "--home", a.home, "call", b.id, "far/book", "--prompt")
	if code != 0 || strings.TrimSpace(out) != "booked for Ada: 4 people, outside, newsletter true" {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, stderr)
	}
	for _, want := range []string{
		"The tool asks: Your booking?",
		"name — whose name the table is in (string, at least 2 characters, required)",
		"Newsletter [newsletter] (yes or no)",
		"people (integer, 1 to 12, default 2)",
		`"many" is not a whole number`,
		"seating (one of 1=inside, 2=outside, default inside)",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}

	// A value the schema refuses is asked again; Enter takes the defaults.
	out, stderr, code = runIn(t, "a\nA\nAl\n\n\n\n", "--home", a.home, "call", b.id, "far/book", "--prompt")
	if code != 0 || strings.TrimSpace(out) != "booked for Al: 2 people, inside, newsletter false" || !strings.Contains(stderr, `minLength: "A"`) {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, stderr)
	}
	// Decline; and the end of the input cancels.
	out, _, code = runIn(t, "d\n", "--home", a.home, "call", b.id, "far/book", "--prompt")
	if code != 0 || strings.TrimSpace(out) != "not booked: decline" {
		t.Fatalf("declined: exit %d: %s", code, out)
	}
	out, stderr, code = runIn(t, "a\n", "--home", a.home, "call", b.id, "far/book", "--prompt")
	if code != 0 || strings.TrimSpace(out) != "not booked: cancel" || !strings.Contains(stderr, "the input ended") {
		t.Fatalf("input ended: exit %d: %s %s", code, out, stderr)
	}

	// --answer gives the answer beforehand, checked against the schema.
	out, _, code = runIn(t, "", "--home", a.home, "call", b.id, "far/book", "--answer", `{"name":"Bo","seating":"outside"}`)
	if code != 0 || strings.TrimSpace(out) != "booked for Bo: 2 people, outside, newsletter false" {
		t.Fatalf("--answer: exit %d: %s", code, out)
	}
	out, stderr, code = runIn(t, "", "--home", a.home, "call", b.id, "far/book", "--answer", "decline", "--answer", "cancel")
	if code != 0 || strings.TrimSpace(out) != "not booked: decline" || !strings.Contains(stderr, "1 --answer value(s) went unused") {
		t.Fatalf("--answer decline: exit %d: %s %s", code, out, stderr)
	}
	_, stderr, code = runIn(t, "", "--home", a.home, "call", b.id, "far/book", "--answer", `{"name":"Bo","people":40}`)
	if code != 2 || !strings.Contains(stderr, "does not answer the question") || !strings.Contains(stderr, "people") {
		t.Fatalf("--answer out of range: exit %d: %s", code, stderr)
	}
}

// Without a terminal (or with --json, --no-input) a question is declined,
// and stderr says what was asked and how to answer it; a sampling request
// is declined, saying what it asked for.
func TestCallDeclinesQuestionsItCannotAsk(t *testing.T) {
	a, b, _ := askingChain(t)
	for _, c := range []struct {
		flags    []string
		why, fix string
	}{
		{nil, "standard input is not a terminal", "run the call in a terminal"},
		{[]string{"--json"}, "--json output is for scripts", "call without --json"},
		{[]string{"--no-input"}, "--no-input was given", "call without --no-input"},
	} {
		out, stderr, code := runIn(t, "", append([]string{"--home", a.home, "call", b.id, "far/book"}, c.flags...)...)
		if code != 0 || !strings.Contains(out, "not booked: decline") {
			t.Errorf("%v: exit %d: %s %s", c.flags, code, out, stderr)
		}
		for _, want := range []string{`declined the tool's question "Your booking?"`, "name (string, at least 2 characters, required)", c.why, c.fix, `--answer '{"name":"…"}'`, "--prompt"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("%v: stderr lacks %q:\n%s", c.flags, want, stderr)
			}
		}
	}
	out, stderr, code := runIn(t, "", "--home", a.home, "call", b.id, "far/think")
	if code != 0 || !strings.Contains(out, "no model") || !strings.Contains(out, "cannot answer sampling requests") {
		t.Errorf("sampling: exit %d: %s", code, out)
	}
	if !strings.Contains(stderr, "declined a sampling request") || !strings.Contains(stderr, `"Summarise the menu"`) || !strings.Contains(stderr, "at most 64 tokens") {
		t.Errorf("sampling: stderr %s", stderr)
	}
}

// Ctrl-C while a question waits for its answer cancels the call: its task
// on the calling daemon and the program's task two hops away.
func TestCtrlCAtAQuestionCancelsTheCall(t *testing.T) {
	a, b, c := askingChain(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	call := exec.CommandContext(ctx, binary, "--home", a.home, "call", b.id, "far/book", "--prompt")
	stdin, err := call.StdinPipe() // kept open: the prompt waits
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stderr := &lockedBuffer{}
	call.Stderr = stderr
	if err := call.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- call.Wait() }()
	for !strings.Contains(stderr.String(), "(a)ccept") {
		select {
		case err := <-done:
			t.Fatalf("call ended before its question (%v): %s", err, stderr)
		case <-ctx.Done():
			t.Fatalf("no question on stderr: %s", stderr)
		case <-time.After(20 * time.Millisecond):
		}
	}
	call.Process.Signal(syscall.SIGINT)
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("call still runs after SIGINT")
	}
	// state waits until `mcpmesh tasks` on home shows the task of tool in
	// state want.
	state := func(home, tool, want string) {
		t.Helper()
		var out string
		for ctx.Err() == nil {
			out, _, _ = run(t, "--home", home, "tasks", "--json")
			var list []struct{ Tool, State string }
			json.Unmarshal([]byte(out), &list)
			for _, task := range list {
				if task.Tool == tool && task.State == want {
					return
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("no task of %s %s on %s: %s", tool, want, home, out)
	}
	state(a.home, "book", "cancelled")
	state(c.home, "book", "cancelled")
}
