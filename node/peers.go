package node

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"

	"github.com/mcpmesh/mcpmesh/internal/retry"
)

// KeepConnected keeps the node connected to info for as long as it runs:
// it connects now, and whenever the connection drops (libp2p's
// connectedness events say so) it reconnects, waiting longer after each
// failure (1s doubling to 1 minute, with jitter). Failures are logged.
func (n *Node) KeepConnected(info lpeer.AddrInfo) {
	n.KeepConnectedWhile(n.ctx, info)
}

// KeepConnectedWhile is KeepConnected until ctx ends (or the node closes):
// for a peer needed only while something lasts, such as a re-shared
// server of it.
func (n *Node) KeepConnectedWhile(ctx context.Context, info lpeer.AddrInfo) {
	ctx, cancel := context.WithCancel(ctx)
	stopAfter := context.AfterFunc(n.ctx, cancel)
	sub, err := n.host.EventBus().Subscribe(new(event.EvtPeerConnectednessChanged), eventbus.Name("mcpmesh-keep-connected"))
	if err != nil {
		stopAfter()
		cancel()
		log.Warnf("peer %s: watch connectedness: %v", info.ID, err)
		return
	}
	// The bus must never wait for us: its events go to a goroutine that
	// keeps only the news that info's connectedness changed.
	changed := make(chan struct{}, 1)
	forwarding := n.group.Go(func() {
		defer sub.Close()
		for {
			select {
			case e, ok := <-sub.Out():
				if !ok {
					return
				}
				if e.(event.EvtPeerConnectednessChanged).Peer == info.ID {
					select {
					case changed <- struct{}{}:
					default:
					}
				}
			case <-ctx.Done():
				return
			}
		}
	})
	if !forwarding {
		stopAfter()
		cancel()
		sub.Close()
		return
	}
	if !n.group.Go(func() {
		defer stopAfter()
		defer cancel() // the forwarding goroutine's end
		n.keepConnected(ctx, info, changed)
	}) {
		stopAfter()
		cancel()
	}
}

// keepConnected is KeepConnected's loop; changed is signalled when info's
// connectedness may have changed.
func (n *Node) keepConnected(ctx context.Context, info lpeer.AddrInfo, changed <-chan struct{}) {
	backoff := retry.Backoff(time.Second, time.Minute)
	wait := func(d time.Duration) bool { // until changed, d (0: no limit) or the node's end
		var timeout <-chan time.Time
		if d > 0 {
			t := time.NewTimer(d)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-changed:
		case <-timeout:
		case <-ctx.Done():
			return false
		}
		return true
	}
	for {
		if n.host.Network().Connectedness(info.ID) == network.Connected {
			if !wait(0) {
				return
			}
			continue
		}
		// This loop paces its own attempts. The swarm's dial backoff (5 s
		// and more after a failed dial) would otherwise turn the first
		// attempts after the peer comes back into instant "dial backoff"
		// failures, and reconnecting would wait on both schedules.
		if sw, ok := n.host.Network().(interface{ Backoff() *swarm.DialBackoff }); ok {
			sw.Backoff().Clear(info.ID)
		}
		err := n.ConnectAddr(ctx, info)
		if err == nil {
			log.Infof("connected to peer %s", info.ID)
			backoff.Reset()
			continue
		}
		if ctx.Err() != nil {
			return
		}
		d := backoff.Delay()
		log.Warnf("peer %s: %v; retrying in %v", info.ID, err, d.Round(time.Millisecond))
		if !wait(d) {
			return
		}
	}
}
