package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"
)

// `mcpmesh stdio --pin` lists a pinned tool as LABEL.TOOL, LABEL the
// peer's name, and says on stderr what became of each pin: a misspelt
// one with why and the near name; the daemon's --http-pin says it in the
// daemon's log.
func TestStdioPinsNamedAndSaid(t *testing.T) {
	a := startDaemon(t, "--name", "alpha")
	stderr := &lockedBuffer{}
	cs := stdioClientTo(t, stderr, "--home", t.TempDir(), "stdio", "--no-mdns", "--peer", a.addr,
		"--pin", a.id+"/echo", "--pin", a.id+"/ecko")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	deadline := time.Now().Add(20 * time.Second)
	for {
		list, err := cs.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tool := range list.Tools {
			names = append(names, tool.Name)
		}
		said := stderr.String()
		if slices.Contains(names, "alpha.echo") && strings.Contains(said, "/ecko: not listed") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the host lists %v, want alpha.echo; stderr:\n%s", names, said)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := callText(t, cs, "alpha.echo", map[string]any{"text": "pinned"}); got != "pinned" {
		t.Fatalf("alpha.echo = %q", got)
	}
	said := stderr.String()
	for _, want := range []string{"mcpmesh stdio: pin " + a.id + "/echo: listed as alpha.echo", `no tool named "ecko"`, `did you mean "echo"?`} {
		if !strings.Contains(said, want) {
			t.Errorf("stderr does not say %q:\n%s", want, said)
		}
	}

	b := startDaemon(t, "--peer", a.addr, "--http", "127.0.0.1:0", "--http-pin", a.id+"/ecko")
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(b.errs.String(), `did you mean "echo"?`); {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon's log does not say why its --http-pin is not listed:\n%s", b.errs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Through a daemon, `mcpmesh stdio` says on its own stderr (which the host
// shows) what became of each pin, as it does without one.
func TestStdioThroughADaemonSaysWhatBecameOfItsPins(t *testing.T) {
	a := startDaemon(t, "--name", "alpha")
	b := startDaemon(t, "--peer", a.addr)
	stderr := &lockedBuffer{}
	cs := stdioClientTo(t, stderr, "--home", b.home, "stdio", "--pin", a.id+"/echo", "--pin", a.id+"/ecko")
	wants := []string{
		"through the daemon of " + b.home,
		"mcpmesh stdio: pin " + a.id + "/echo: listed as alpha.echo",
		"mcpmesh stdio: pin " + a.id + `/ecko: not listed: `,
		`did you mean "echo"?`,
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		said, missing := stderr.String(), ""
		for _, w := range wants {
			if !strings.Contains(said, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stderr does not say %q within 20s:\n%s", missing, said)
		}
	}
	if got := callText(t, cs, "alpha.echo", map[string]any{"text": "pinned"}); got != "pinned" {
		t.Fatalf("alpha.echo = %q", got)
	}
}

// A host's first tools/list holds the pinned tools, with a daemon and
// without: it waits for each pin's first try, since many hosts list tools
// once and ignore list_changed.
func TestStdioFirstToolsListHasThePins(t *testing.T) {
	a := startDaemon(t, "--name", "alpha")
	b := startDaemon(t, "--peer", a.addr)
	for _, args := range [][]string{
		{"--home", b.home, "stdio"},
		{"--home", t.TempDir(), "stdio", "--no-mdns", "--peer", a.addr},
	} {
		cs := stdioClientTo(t, &lockedBuffer{}, append(args, "--pin", a.id+"/echo")...)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		list, err := cs.ListTools(ctx, nil)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tool := range list.Tools {
			names = append(names, tool.Name)
		}
		if !slices.Contains(names, "alpha.echo") {
			t.Errorf("mcpmesh %s: the first tools/list has %v, want alpha.echo", strings.Join(args, " "), names)
		}
	}
}
