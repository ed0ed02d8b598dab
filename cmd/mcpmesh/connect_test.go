package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// connect to a peer the daemon is already connected to dials the address
// given all the same: a wrong one fails, naming the connection kept, and
// another that answers says so; the connection's own address says it was
// there already.
func TestConnectDialsTheAddressGivenWhenAlreadyConnected(t *testing.T) {
	a := startDaemon(t, "--listen", "/ip4/127.0.0.1/udp/0/quic-v1")
	var id struct{ Addrs []string }
	out, _, code := run(t, "--home", a.home, "id", "--json")
	if err := json.Unmarshal([]byte(out), &id); code != 0 || err != nil {
		t.Fatalf("id --json: exit %d, %v: %s", code, err, out)
	}
	var tcp, quic string
	for _, addr := range id.Addrs {
		switch {
		case strings.Contains(addr, "/tcp/"):
			tcp = addr
		case strings.Contains(addr, "/quic-v1/"):
			quic = addr
		}
	}
	if tcp == "" || quic == "" {
		t.Fatalf("a listens on %v: want TCP and QUIC", id.Addrs)
	}
	b := startDaemon(t, "--peer", tcp)
	tcpAddr, _, _ := strings.Cut(tcp, "/p2p/")

	_, stderr, code := run(t, "--home", b.home, "connect", "/ip4/127.0.0.1/tcp/1/p2p/"+a.id)
	if code != 1 || !strings.Contains(stderr, "did not answer at /ip4/127.0.0.1/tcp/1") || !strings.Contains(stderr, "already connected to it through "+tcpAddr) {
		t.Errorf("connect to a wrong port: exit %d, %q; want 1, naming the address and the connection kept", code, stderr)
	}
	out, stderr, code = run(t, "--home", b.home, "connect", tcp)
	if code != 0 || strings.TrimSpace(out) != "already connected to "+a.id+" at "+tcpAddr {
		t.Errorf("connect to the connection's address: exit %d, %q %q", code, out, stderr)
	}
	out, stderr, code = run(t, "--home", b.home, "connect", quic)
	if code != 0 || !strings.Contains(out, "already connected to "+a.id+" through another address") || !strings.Contains(out, "answers too") {
		t.Errorf("connect to another address that answers: exit %d, %q %q", code, out, stderr)
	}
	// The connection b had is still there.
	if out, _, _ := run(t, "--home", b.home, "call", a.id, "echo", `{"text":"still"}`); strings.TrimSpace(out) != "still" {
		t.Errorf("call after the connects: %q", out)
	}
}
