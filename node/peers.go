package node

import (
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
)

// KeepConnected keeps the node connected to info for as long as it runs:
// it connects now, and whenever the connection drops it reconnects, waiting
// longer after each failure (1s doubling to 1 minute). Failures are logged.
func (n *Node) KeepConnected(info lpeer.AddrInfo) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.wg.Add(1)
	n.mu.Unlock()
	go func() {
		defer n.wg.Done()
		const minWait, maxWait = time.Second, time.Minute
		wait := minWait
		check := time.NewTicker(2 * time.Second)
		defer check.Stop()
		for {
			if n.host.Network().Connectedness(info.ID) != network.Connected {
				if err := n.ConnectAddr(n.ctx, info); err != nil {
					if n.ctx.Err() != nil {
						return
					}
					log.Warnf("peer %s: %v; retrying in %v", info.ID, err, wait)
					select {
					case <-time.After(wait):
					case <-n.ctx.Done():
						return
					}
					wait = min(2*wait, maxWait)
					continue
				}
				log.Infof("connected to peer %s", info.ID)
				wait = minWait
			}
			select {
			case <-check.C:
			case <-n.ctx.Done():
				return
			}
		}
	}()
}
