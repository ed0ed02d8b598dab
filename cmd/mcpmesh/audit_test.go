package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/audit"
)

func TestAuditShowsServedCalls(t *testing.T) {
	a := startDaemon(t)
	b := startDaemon(t, "--peer", a.addr)
	for range 2 {
		if _, stderr, code := run(t, "--home", b.home, "call", a.id, "echo", `{"text":"secret argument"}`); code != 0 {
			t.Fatalf("call: exit %d: %s", code, stderr)
		}
	}

	out, stderr, code := run(t, "--home", a.home, "audit", "--json")
	if code != 0 {
		t.Fatalf("audit --json: exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("audit --json: want one line per call, got:\n%s", out)
	}
	var r audit.Record
	if err := json.Unmarshal([]byte(lines[1]), &r); err != nil {
		t.Fatalf("audit --json line: %v: %s", err, lines[1])
	}
	if r.Caller != b.id || r.Server != "node" || r.Name != "echo" || r.Method != "tools/call" || r.Outcome != audit.OK || r.Duration <= 0 || time.Since(r.Time) > time.Minute {
		t.Fatalf("record: %+v", r)
	}
	if strings.Contains(out, "secret argument") {
		t.Fatalf("the audit trail holds an argument value:\n%s", out)
	}

	out, _, code = run(t, "--home", a.home, "audit")
	if code != 0 || !strings.Contains(out, "ok  node/echo  caller "+abbrev(b.id)) || len(strings.Split(strings.TrimSpace(out), "\n")) != 2 {
		t.Fatalf("audit: exit %d:\n%s", code, out)
	}

	// Filters, on the daemon.
	for _, c := range []struct {
		args []string
		want int
	}{
		{[]string{"--peer", b.id}, 2},
		{[]string{"--peer", a.id}, 0},
		{[]string{"--tool", "node/echo", "-n", "1"}, 1},
		{[]string{"--tool", "other"}, 0},
		{[]string{"--outcome", "refused"}, 0},
		{[]string{"--since", "1m"}, 2},
		{[]string{"--since", time.Now().Add(time.Hour).Format(time.RFC3339)}, 0},
	} {
		out, stderr, code := run(t, append([]string{"--home", a.home, "audit", "--json"}, c.args...)...)
		if n := countLines(out); code != 0 || n != c.want {
			t.Errorf("audit %v: exit %d, %d records, want %d: %s", c.args, code, n, c.want, stderr)
		}
	}
	if _, stderr, code := run(t, "--home", a.home, "audit", "--outcome", "maybe"); code != 2 || !strings.Contains(stderr, "want ok, error, refused or cancelled") {
		t.Errorf("bad --outcome: exit %d: %s", code, stderr)
	}

	// With the daemon stopped: the file.
	a.stop(t)
	if _, stderr, code := run(t, "--home", a.home, "audit"); code != 1 || !strings.Contains(stderr, "--file "+filepath.Join(a.home, "audit.log")) || strings.Count(stderr, "\n") != 1 {
		t.Errorf("audit without a daemon: exit %d: %s", code, stderr)
	}
	out, stderr, code = run(t, "--home", a.home, "audit", "--file", filepath.Join(a.home, "audit.log"), "--json", "--peer", b.id)
	if code != 0 || countLines(out) != 2 {
		t.Fatalf("audit --file: exit %d: %s%s", code, out, stderr)
	}
	if _, stderr, code := run(t, "audit", "--file", filepath.Join(t.TempDir(), "none")); code != 1 || !strings.Contains(stderr, "no such file") {
		t.Errorf("audit --file of a missing file: exit %d: %s", code, stderr)
	}
}

func TestPrintAuditAligns(t *testing.T) {
	at := time.Date(2026, 5, 1, 15, 4, 5, 0, time.Local)
	list := []audit.Record{
		{Time: at, Caller: "12D3KooWAAAAabcd", Server: "node", Method: "tools/call", Name: "echo", Outcome: audit.OK, Duration: 3210 * time.Microsecond, Task: "1a2b"},
		{Time: at.Add(time.Millisecond), Caller: "12D3KooWBBBBbcde", For: "12D3KooWCCCCef01", Server: "fs", Method: "resources/read", Name: "file:///x", Outcome: audit.Refused, Reason: "policy", Duration: 40 * time.Microsecond},
	}
	var b bytes.Buffer
	printAudit(&b, list)
	want := "" +
		"15:04:05.000  ok       node/echo                    caller 12D3…abcd                 3.2ms  task 1a2b\n" +
		"15:04:05.001  refused  resources/read fs/file:///x  caller 12D3…bcde  for 12D3…ef01   40µs  policy\n"
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	printAudit(&b, nil)
	if b.String() != "no records\n" {
		t.Errorf("empty: %q", b.String())
	}
}

func countLines(s string) int {
	if strings.TrimSpace(s) == "" {
		return 0
	}
	return len(strings.Split(strings.TrimSpace(s), "\n"))
}
