package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/control"
)

func status(t *testing.T, d *daemon) control.Status {
	t.Helper()
	out, stderr, code := run(t, "--home", d.home, "status", "--json")
	var st control.Status
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("status --json: exit %d: %s %s", code, out, stderr)
	}
	return st
}

// A daemon given a relay (--relay) reserves a slot there and says so; the
// relay (--relay-service on) says it relays; each lists the other as a
// direct peer.
func TestStatusShowsRelayReservationAndPeers(t *testing.T) {
	b := startDaemon(t, "--relay-service", "on")
	c := startDaemon(t, "--relay", b.addr, "--port-mapping=false")

	deadline := time.Now().Add(15 * time.Second)
	var st control.Status
	for {
		st = status(t, c)
		if len(st.Relays) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(st.Relays) != 1 || st.Relays[0].ID != b.id {
		t.Fatalf("c's relays: %+v, want %s", st.Relays, b.id)
	}
	if st.ID != c.id || st.Reachability != "unknown" || st.Mode != "auto" || st.PortMapping != "off" || !st.HolePunching {
		t.Errorf("c's status: id %s, reachability %s (%s), mode %s, port mapping %s, hole punching %v",
			st.ID, st.Reachability, st.DecidedBy, st.Mode, st.PortMapping, st.HolePunching)
	}
	circuit := false
	for _, a := range st.Announced {
		circuit = circuit || strings.Contains(a, "/p2p/"+b.id+"/p2p-circuit")
	}
	if !circuit {
		t.Errorf("c announces no address through b: %v", st.Announced)
	}
	if len(st.Peers) != 1 || st.Peers[0].ID != b.id || st.Peers[0].Relayed || st.Peers[0].Transport != "tcp" {
		t.Errorf("c's peers: %+v, want b, direct over tcp", st.Peers)
	}
	if st := status(t, b); !st.Relaying || st.RelayService != "on" {
		t.Errorf("b's relay service: %s, relaying %v; want on, relaying", st.RelayService, st.Relaying)
	}

	out, _, code := run(t, "--home", c.home, "status")
	for _, want := range []string{"reachability:  unknown", "relays:        " + b.id, "relay service: auto (not relaying)", "PEER", b.id} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("status: exit %d, lacks %q:\n%s", code, want, out)
		}
	}
}

func TestNetworkSettingsAreCheckedNamingTheField(t *testing.T) {
	for _, c := range []struct{ config, flag, want string }{
		{`{"network": {"relayService": "sometimes"}}`, "", "config network.relayService"},
		{`{"network": {"reachability": "maybe"}}`, "", "config network.reachability"},
		{`{"network": {"relayLimits": {"duration": "soon"}}}`, "", "config network.relayLimits.duration"},
		{`{"network": {"relayLimits": {"data": -1}}}`, "", "config network.relayLimits.data"},
		{`{"network": {"relays": ["12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"]}}`, "", "config network.relays[0]"},
		{`{"network": {"livenessInterval": "often"}}`, "", "config network.livenessInterval"},
		{`{}`, "--relay-service=sometimes", "--relay-service"},
	} {
		home := t.TempDir()
		cfg := filepath.Join(home, "config.json")
		if err := os.WriteFile(cfg, []byte(c.config), 0o600); err != nil {
			t.Fatal(err)
		}
		args := []string{"--home", home, "node", "--config", cfg, "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"}
		if c.flag != "" {
			args = append(args, c.flag)
		}
		_, stderr, code := run(t, args...)
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("%s %s: exit %d, %q; want exit 2 naming %s", c.config, c.flag, code, stderr, c.want)
		}
	}
}
