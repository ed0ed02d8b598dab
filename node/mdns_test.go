package node_test

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/zeroconf/v2"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/mcpmesh/mcpmesh/discovery"
	"github.com/mcpmesh/mcpmesh/node"
)

// mdnsListener browses an mDNS service name as any program on the LAN
// can, without a key, and collects the peer IDs in the answers' TXT
// records (libp2p's "dnsaddr=/.../p2p/ID").
type mdnsListener struct {
	mu   sync.Mutex
	seen map[lpeer.ID]bool
	stop context.CancelFunc
	done chan struct{}
}

func listenMDNS(t *testing.T, service string) *mdnsListener {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &mdnsListener{seen: map[lpeer.ID]bool{}, stop: cancel, done: make(chan struct{})}
	entries := make(chan *zeroconf.ServiceEntry, 16)
	go func() {
		defer close(l.done)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range entries {
				for _, txt := range e.Text {
					a, err := ma.NewMultiaddr(strings.TrimPrefix(txt, "dnsaddr="))
					if err != nil {
						continue
					}
					if info, err := lpeer.AddrInfoFromP2pAddr(a); err == nil {
						l.mu.Lock()
						l.seen[info.ID] = true
						l.mu.Unlock()
					}
				}
			}
		}()
		if err := zeroconf.Browse(ctx, service, "local", entries); err != nil && ctx.Err() == nil {
			t.Errorf("browse %s: %v", service, err)
		}
		wg.Wait()
	}()
	t.Cleanup(l.close)
	return l
}

func (l *mdnsListener) saw(p lpeer.ID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen[p]
}

func (l *mdnsListener) close() {
	l.stop()
	<-l.done
}

// A member of a private mesh with mDNS on announces only under a name
// derived from the mesh key: a listener without the key, asking for the
// default name, hears an open node (so mDNS works here) and never the
// member; members find each other under the derived name.
func TestPrivateMeshNotOnMDNSUnderTheDefaultName(t *testing.T) {
	key := meshKey(t)
	cfg := fastDiscovery
	cfg.MDNS = true
	// Private to this test run, so that other processes on the machine
	// do not answer; the derived name depends on it as on the key.
	cfg.MDNSService = "mcpmesh-test-" + strings.ReplaceAll(time.Now().Format("150405.000000"), ".", "")
	everyone := listenMDNS(t, cfg.MDNSService)
	members := listenMDNS(t, discovery.PrivateMDNSService(key, cfg.MDNSService))

	lan := node.WithListenAddrs("/ip4/0.0.0.0/tcp/0")
	open := newNode(t, node.WithDiscovery(cfg), lan)
	a := newNode(t, node.WithPrivateNetwork(key), node.WithDiscovery(cfg), lan)
	b := newNode(t, node.WithPrivateNetwork(key), node.WithDiscovery(cfg), lan)

	deadline := time.Now().Add(10 * time.Second)
	for !everyone.saw(open.ID()) {
		if time.Now().After(deadline) {
			if os.Getenv("CI") != "" { // CI's machine carries multicast
				t.Fatal("mDNS heard nothing in 10s")
			}
			t.Skip("mDNS heard nothing in 10s: this machine may not carry multicast")
		}
		time.Sleep(50 * time.Millisecond)
	}
	eventually(t, 10*time.Second, "the members heard, under either name", func() bool {
		return members.saw(a.ID()) && members.saw(b.ID()) || everyone.saw(a.ID()) || everyone.saw(b.ID())
	})
	// Every query of the default name since the start was answered by the
	// open node; a member announcing under it would have answered too.
	if everyone.saw(a.ID()) || everyone.saw(b.ID()) {
		t.Fatal("a member of a private mesh answered mDNS under the default service name")
	}
	eventually(t, 10*time.Second, "the members connect through mDNS", func() bool {
		return len(a.Host().Network().ConnsToPeer(b.ID())) > 0
	})
	if members.saw(open.ID()) {
		t.Fatal("the open node answered under the private mesh's name")
	}
}
