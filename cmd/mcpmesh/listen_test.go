package main

import (
	"strings"
	"sync"
	"testing"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	ma "github.com/multiformats/go-multiaddr"
)

func tcpPort(t *testing.T, h host.Host) string {
	t.Helper()
	for _, a := range h.Addrs() {
		if p, err := a.ValueForProtocol(ma.P_TCP); err == nil {
			return p
		}
	}
	t.Fatalf("no TCP address in %v", h.Addrs())
	return ""
}

func listenHost(t *testing.T, addr string) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings(addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// An explicit port that another process holds is refused, naming the port,
// though libp2p itself would share it (SO_REUSEPORT): the issue 14 daemon
// started silently on a port in use, and dials then reached either node.
func TestListenOnAPortInUseIsRefused(t *testing.T) {
	first := listenHost(t, "/ip4/127.0.0.1/tcp/0")
	port := tcpPort(t, first)
	// What the check is for: libp2p alone shares the port.
	if second, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/" + port)); err == nil {
		second.Close()
	} else {
		t.Logf("libp2p no longer shares a port in use (%v): the check is a second guard", err)
	}
	for _, addr := range []string{"/ip4/127.0.0.1/tcp/" + port, "/ip4/0.0.0.0/tcp/" + port, "/ip4/127.0.0.1/tcp/" + port + "/ws"} {
		err := checkListenPorts([]string{"/ip4/127.0.0.1/udp/0/quic-v1", addr})
		if err == nil || !strings.Contains(err.Error(), "tcp port "+port+" is in use") {
			t.Errorf("%s: %v, want an error naming port %s", addr, err, port)
		}
	}
	// A port of nobody's passes, and is free again for libp2p.
	free := listenHost(t, "/ip4/127.0.0.1/tcp/0")
	port = tcpPort(t, free)
	free.Close()
	addr := "/ip4/127.0.0.1/tcp/" + port
	if err := checkListenPorts([]string{addr}); err != nil {
		t.Fatalf("a free port: %v", err)
	}
	listenHost(t, addr)
}

// Port 0 needs no check: the kernel never gives a port in use, even to
// listeners that set SO_REUSEPORT as libp2p's do.
func TestFreePortsDoNotCollide(t *testing.T) {
	const n = 24
	hosts := make([]host.Host, n)
	var wg sync.WaitGroup
	for i := range hosts {
		wg.Go(func() {
			h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
			if err != nil {
				t.Error(err)
				return
			}
			hosts[i] = h
		})
	}
	wg.Wait()
	seen := map[string]int{}
	for i, h := range hosts {
		if h == nil {
			continue
		}
		defer h.Close()
		p := tcpPort(t, h)
		if j, dup := seen[p]; dup {
			t.Errorf("hosts %d and %d both listen on port %s", j, i, p)
		}
		seen[p] = i
	}
	if err := checkListenPorts([]string{"/ip4/127.0.0.1/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"}); err != nil {
		t.Errorf("port 0: %v", err)
	}
}
