package node_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	logging "github.com/ipfs/go-log/v2"
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
// after it, and reaches it again after the peer restarts. Each of its
// attempts is a real dial: none is refused by the swarm's own dial backoff
// (5 s and more after a failure), which once held reconnecting back for up
// to 15 s on top of KeepConnected's schedule.
func TestKeepConnectedReconnectsWithBackoff(t *testing.T) {
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := lpeer.IDFromPrivateKey(key)
	port := freePort(t)
	listen := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)
	addr, _ := ma.NewMultiaddr(listen)
	warnings := nodeWarnings(t)

	// knocked listens where b will, and returns once a has knocked there
	// (and been turned away): a is failing and backing off.
	knocked := func(what string) {
		t.Helper()
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatalf("%s: listen where b will: %v", what, err)
		}
		defer l.Close()
		l.(*net.TCPListener).SetDeadline(time.Now().Add(30 * time.Second))
		c, err := l.Accept()
		if err != nil {
			t.Fatalf("%s: a did not try to reach b: %v", what, err)
		}
		c.Close()
	}

	a := newNode(t)
	a.KeepConnected(lpeer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{addr}})
	connected := func() bool { return len(a.Host().Network().ConnsToPeer(id)) > 0 }
	for round := range 2 {
		knocked(fmt.Sprintf("round %d", round))
		b, err := node.New(node.WithIdentity(key), node.WithListenAddrs(listen), node.WithOpen())
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, fmt.Sprintf("round %d: a reaches b", round), connected)
		b.Close()
		eventually(t, 10*time.Second, "a sees b gone", func() bool { return !connected() })
	}
	var refused []string
	for _, w := range warnings() {
		if strings.Contains(w, "dial backoff") {
			refused = append(refused, w)
		}
	}
	if len(refused) > 0 {
		t.Errorf("%d attempts to reach b were refused by the swarm's dial backoff; the first: %s", len(refused), refused[0])
	}
}

// nodeWarnings collects what the node package logs at warning level and
// above while the test runs; the function it returns gives the lines so far.
func nodeWarnings(t *testing.T) func() []string {
	t.Helper()
	const subsystem = "mcpmesh/node"
	was, err := logging.SubsystemLevelName(subsystem)
	if err != nil {
		t.Fatal(err)
	}
	if err := logging.SetLogLevel(subsystem, "warn"); err != nil {
		t.Fatal(err)
	}
	pr := logging.NewPipeReader(logging.PipeFormat(logging.PlaintextOutput), logging.PipeLevel(logging.LevelWarn))
	var (
		mu    sync.Mutex
		lines []string
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), subsystem) {
				mu.Lock()
				lines = append(lines, sc.Text())
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		pr.Close()
		<-done
		logging.SetLogLevel(subsystem, was)
	})
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), lines...)
	}
}

// KeepConnectedWhile stops trying when its context ends: a removed
// re-share leaves no loop reconnecting to its peer behind.
func TestKeepConnectedWhileStopsWithItsContext(t *testing.T) {
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := lpeer.IDFromPrivateKey(key)
	addr, _ := ma.NewMultiaddr(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", freePort(t))) // nobody listens
	a := newNode(t)
	// Its goroutines, by the functions they run (the host starts others of
	// its own meanwhile).
	loops := func() int {
		buf := make([]byte, 8<<20)
		n := 0
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "node.(*Node).KeepConnectedWhile.func") {
				n++
			}
		}
		return n
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.KeepConnectedWhile(ctx, lpeer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{addr}})
	eventually(t, 5*time.Second, "the loop and its watch run", func() bool { return loops() == 2 })
	cancel()
	eventually(t, 5*time.Second, "the loop ends with its context", func() bool { return loops() == 0 })
}
