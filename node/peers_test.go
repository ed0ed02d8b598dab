package node_test

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/mcpmesh/mcpmesh/node"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// A node keeps trying its bootstrap peer: it reaches a peer that starts
// after it, and reaches it again after the peer restarts.
func TestKeepConnectedReconnectsWithBackoff(t *testing.T) {
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := lpeer.IDFromPrivateKey(key)
	listen := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", freePort(t))
	addr, _ := ma.NewMultiaddr(listen)

	a := newNode(t)
	a.KeepConnected(lpeer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{addr}})

	connected := func() bool { return len(a.Host().Network().ConnsToPeer(id)) > 0 }
	for round := range 2 {
		time.Sleep(300 * time.Millisecond) // a is already failing and backing off
		b, err := node.New(node.WithIdentity(key), node.WithListenAddrs(listen), node.WithOpen())
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, fmt.Sprintf("round %d: a reaches b", round), connected)
		b.Close()
		eventually(t, 5*time.Second, "a sees b gone", func() bool { return !connected() })
	}
}
