package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPolicyFromConfigReloadsWithoutRestart runs a closed daemon, sees a
// peer refused, grants it in the configuration file, and sees the call go
// through without a restart; refusals and calls are in the audit trail.
func TestPolicyFromConfigReloadsWithoutRestart(t *testing.T) {
	home := t.TempDir()
	cfg := filepath.Join(home, "config.json")
	if err := os.WriteFile(cfg, []byte(`{"policy": {"grants": []}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startDaemonAt(t, home, "--config", cfg)
	if !strings.Contains(a.out.String(), "policy:  closed") {
		t.Fatalf("a closed daemon does not say so:\n%s", a.out)
	}
	b := startDaemon(t)
	if !strings.Contains(b.out.String(), "policy:  OPEN") {
		t.Fatalf("an --open daemon does not say so:\n%s", b.out)
	}

	out, _, code := run(t, "--home", b.home, "tools", a.addr)
	if code != 0 || !strings.Contains(out, "lists no tools") {
		t.Fatalf("tools of a closed daemon: exit %d\n%s", code, out)
	}
	_, stderr, code := run(t, "--home", b.home, "call", a.addr, "node/echo", `{"text":"let me in"}`)
	if code != 1 || !strings.Contains(stderr, "not permitted") {
		t.Fatalf("closed daemon: exit %d, stderr %q", code, stderr)
	}

	grant := fmt.Sprintf(`{"policy": {"groups": {"friends": [%q]}, "grants": [{"peers": ["friends"], "tools": ["echo"]}]}}`, b.id)
	if err := os.WriteFile(cfg, []byte(grant), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, stderr, code := run(t, "--home", b.home, "call", a.id, "node/echo", `{"text":"hello"}`)
		if code == 0 && strings.Contains(out, "hello") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("grant not applied within 10s: exit %d, %s %s", code, out, stderr)
		}
		time.Sleep(300 * time.Millisecond)
	}

	out, _, code = run(t, "--home", a.home, "policy")
	if code != 0 || !strings.Contains(out, "1 grant, 1 group") || !strings.Contains(out, b.id) {
		t.Fatalf("policy: exit %d\n%s", code, out)
	}
	if st := readStatus(t, a.home); !strings.Contains(st.Daemon.Policy, "1 grant") {
		t.Fatalf("status after the policy was reloaded says %q", st.Daemon.Policy)
	}
	out, _, code = run(t, "--home", a.home, "policy", "check", b.id, "node/echo")
	if code != 0 || !strings.Contains(out, "allowed node/echo; listed to it") {
		t.Fatalf("policy check echo: exit %d\n%s", code, out)
	}
	out, stderr, code = run(t, "--home", a.home, "policy", "check", b.id, "node/pay")
	if code != 1 || !strings.Contains(out, "refused (not permitted) node/pay; not listed to it") || !strings.Contains(stderr, "not permitted") {
		t.Fatalf("policy check pay: exit %d\n%s%s", code, out, stderr)
	}

	// A file that does not parse leaves the policy as it was.
	if err := os.WriteFile(cfg, []byte(`{"policy": {"grants": [{"peers": ["nobody-we-know"], "tools": ["*"]}]}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	// The daemon says it kept the old policy (it polls the file every 2 s).
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(a.errs.String(), "config not reloaded, nothing applied (the running configuration stays)"); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not refuse the bad file within 20s; its stderr:\n%s", a.errs)
		}
	}
	if out, stderr, code := run(t, "--home", b.home, "call", a.id, "node/echo", `{"text":"still"}`); code != 0 {
		t.Fatalf("a bad file changed the policy: exit %d, %s %s", code, out, stderr)
	}

	out, _, code = run(t, "--home", a.home, "audit", "--json")
	if code != 0 || !strings.Contains(out, `"outcome":"refused"`) || !strings.Contains(out, `"outcome":"ok"`) {
		t.Fatalf("audit: exit %d\n%s", code, out)
	}
}

func TestTrustConfigErrorsNameTheField(t *testing.T) {
	for _, c := range []struct{ file, want string }{
		{`{"delegation": {"ttl": "soon"}}`, `delegation.ttl: "soon" is not a duration`},
		{`{"limits": {"banFor": "-1m"}}`, `limits.banFor`},
		{`{"limits": {"windowPerSession": 16, "idleTimeout": "soon"}}`, `limits.idleTimeout: "soon" is not a duration`},
		{`{"limits": {"handshakeTimeout": "0s"}}`, `limits.handshakeTimeout`},
		{`{"policy": {"grants": [{"peers": ["friends"], "tools": ["*"]}]}}`, `grant 1`},
		{`{"policy": {"grants": [{"peers": ["*"]}]}}`, `grant 1`},
	} {
		home := t.TempDir()
		cfg := filepath.Join(home, "config.json")
		if err := os.WriteFile(cfg, []byte(c.file), 0o600); err != nil {
			t.Fatal(err)
		}
		_, stderr, code := run(t, "--home", home, "node", "--config", cfg, "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns")
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("%s: exit %d, stderr %q, want 2 and %q", c.file, code, stderr, c.want)
		}
	}
}

// A reload applies the policy only; the sections it leaves alone are named.
func TestChangedSectionsIgnoresThePolicy(t *testing.T) {
	before := []byte(`{"name": "a", "policy": {"grants": []}, "shares": {"x": {"command": "a"}}}`)
	after := []byte(`{"name": "a", "policy": {"grants": [{"peers": ["*"]}]}, "shares": {"x": {"command": "b"}}, "agents": []}`)
	if got := changedSections(before, after); strings.Join(got, ",") != "agents,shares" {
		t.Fatalf("changed: %q, want agents and shares", got)
	}
	if got := changedSections(before, before); len(got) != 0 {
		t.Fatalf("unchanged file: %q", got)
	}
}
