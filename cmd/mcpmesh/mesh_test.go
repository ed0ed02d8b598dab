package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/pnet"
)

func TestInitMeshWritesAKeyOnce(t *testing.T) {
	home := t.TempDir()
	out, stderr, code := run(t, "--home", home, "init-mesh")
	path := filepath.Join(home, "swarm.key")
	if code != 0 || !strings.Contains(out, path) || !strings.Contains(out, "--mesh-key") {
		t.Fatalf("init-mesh: exit %d: %s %s", code, out, stderr)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", st, err)
	}
	data, _ := os.ReadFile(path)
	psk, err := pnet.DecodeV1PSK(bytes.NewReader(data))
	if err != nil || len(psk) != 32 {
		t.Fatalf("DecodeV1PSK: %d bytes, %v", len(psk), err)
	}

	_, stderr, code = run(t, "--home", home, "init-mesh")
	if code == 0 || !strings.Contains(stderr, "already exists") || !strings.Contains(stderr, "--force") {
		t.Fatalf("second init-mesh: exit %d: %s", code, stderr)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(again, data) {
		t.Fatal("a refused init-mesh changed the key")
	}
	if _, _, code = run(t, "--home", home, "init-mesh", "--force"); code != 0 {
		t.Fatalf("init-mesh --force: exit %d", code)
	}
	if again, _ := os.ReadFile(path); bytes.Equal(again, data) {
		t.Fatal("init-mesh --force kept the old key")
	}

	other := filepath.Join(t.TempDir(), "team.key")
	if out, _, code = run(t, "init-mesh", "--out", other); code != 0 || !strings.Contains(out, other) {
		t.Fatalf("init-mesh --out: exit %d: %s", code, out)
	}
	if st, err := os.Stat(other); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("--out file: %v, %v", st, err)
	}
}

// Three daemons: a and b hold the same key (a in its home, b by
// --mesh-key), c none. a and b call each other; c cannot reach a.
func TestPrivateMeshDaemons(t *testing.T) {
	homeA := t.TempDir()
	if _, _, code := run(t, "--home", homeA, "init-mesh"); code != 0 {
		t.Fatal("init-mesh failed")
	}
	key := filepath.Join(homeA, "swarm.key")
	a, banner := startBanner(t, homeA)
	if !strings.Contains(banner, "private mesh: key "+key) || !strings.Contains(banner, "mDNS off") {
		t.Errorf("daemon a does not say it uses the home's key, mDNS off:\n%s", banner)
	}
	b, banner := startBanner(t, t.TempDir(), "--mesh-key", key, "--peer", a.addr, "--listen", "/ip4/127.0.0.1/udp/0/quic-v1")
	if !strings.Contains(banner, "not listening on /ip4/127.0.0.1/udp/0/quic-v1") {
		t.Errorf("daemon b does not say it drops QUIC:\n%s", banner)
	}
	out, stderr, code := run(t, "--home", b.home, "call", a.id, "echo", `{"text":"members only"}`)
	if code != 0 || strings.TrimSpace(out) != "members only" {
		t.Fatalf("call b→a: exit %d: %q %q", code, out, stderr)
	}
	out, stderr, code = run(t, "--home", a.home, "call", b.id, "echo", `{"text":"and back"}`)
	if code != 0 || strings.TrimSpace(out) != "and back" {
		t.Fatalf("call a→b: exit %d: %q %q", code, out, stderr)
	}

	c, banner := startBanner(t, t.TempDir())
	if strings.Contains(banner, "private mesh") {
		t.Errorf("a daemon without a key says it is private:\n%s", banner)
	}
	_, stderr, code = run(t, "--home", c.home, "call", a.addr, "echo", `{"text":"let me in"}`)
	if code == 0 || !strings.Contains(stderr, "unreachable") {
		t.Fatalf("call c→a: exit %d: %q", code, stderr)
	}

	if _, stderr, code = run(t, "--home", t.TempDir(), "node", "--mesh-key", filepath.Join(t.TempDir(), "missing.key")); code != 2 || !strings.Contains(stderr, "mesh key") {
		t.Errorf("node with a missing key file: exit %d: %q", code, stderr)
	}
}

// startBanner starts a daemon and returns it with what it printed up to
// "ready".
func startBanner(t *testing.T, home string, extra ...string) (*daemon, string) {
	t.Helper()
	d := startDaemonAt(t, home, extra...)
	return d, d.out.String()
}

// mDNS is on by default, but in a private mesh; a flag wins over the
// configuration file, and the two flags together are a usage error.
func TestMDNSOffByDefaultInAPrivateMesh(t *testing.T) {
	yes, no := true, false
	for _, tc := range []struct {
		on, off, private bool
		file             *bool
		want             bool
	}{
		{want: true},
		{private: true, want: false},
		{private: true, on: true, want: true},
		{off: true, want: false},
		{private: true, file: &yes, want: true},
		{file: &no, want: false},
		{file: &no, on: true, want: true},
		{file: &yes, off: true, want: false},
	} {
		got, err := mdnsOn(tc.on, tc.off, tc.file, tc.private)
		if err != nil || got != tc.want {
			t.Errorf("mdnsOn(on %v, off %v, file %v, private %v) = %v, %v; want %v", tc.on, tc.off, tc.file, tc.private, got, err, tc.want)
		}
	}
	if _, stderr, code := run(t, "--home", t.TempDir(), "node", "--mdns", "--no-mdns"); code != 2 || !strings.Contains(stderr, "--mdns and --no-mdns") {
		t.Errorf("node --mdns --no-mdns: exit %d: %q", code, stderr)
	}
}
