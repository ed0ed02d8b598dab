package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/transport"
	ma "github.com/multiformats/go-multiaddr"
	madns "github.com/multiformats/go-multiaddr-dns"

	"github.com/mcpmesh/mcpmesh/peer/identity"
)

// Dialed describes what Dial found.
type Dialed struct {
	ID lpeer.ID
	// Addr is the remote address of the node's connection to the peer.
	Addr ma.Multiaddr
	// Already says the node was connected to the peer before; Tried, that
	// it dialed the addresses given anyway (none was the connection's),
	// and one answered as the peer.
	Already, Tried bool
}

// Dial connects to a peer given as a peer ID or a full multiaddr, as
// Connect does, and also when the node is already connected to the peer
// through another address: libp2p returns the connection it has without
// dialing, so a wrong address would pass for a right one. Then the node
// dials the addresses given (a connection of their own, closed at once:
// the one it has stays), and fails if none answers as the peer.
func (n *Node) Dial(ctx context.Context, target string) (Dialed, error) {
	info, err := identity.ParseTarget(target)
	if err != nil {
		return Dialed{}, err
	}
	r := Dialed{ID: info.ID}
	if info.ID == n.host.ID() {
		return r, nil
	}
	conns := n.host.Network().ConnsToPeer(info.ID)
	r.Already = n.host.Network().Connectedness(info.ID) == network.Connected
	if !r.Already || len(info.Addrs) == 0 {
		if err := n.ConnectAddr(ctx, info); err != nil {
			return r, err
		}
		r.Addr = remoteAddr(n.host.Network().ConnsToPeer(info.ID), info.Addrs)
		return r, nil
	}
	addrs, errs := n.resolve(ctx, info.Addrs)
	if r.Addr = connAt(conns, addrs); r.Addr != nil {
		return r, nil
	}
	for _, a := range addrs {
		err := n.probe(ctx, info.ID, a)
		if err == nil {
			r.Addr, r.Tried = a, true
			return r, nil
		}
		errs = append(errs, fmt.Sprintf("%s: %v", a, oneLine{err}))
	}
	return r, fmt.Errorf("peer %s did not answer at %s (this node is already connected to it %s, and keeps that connection)",
		info.ID, strings.Join(errs, "; "), through(conns))
}

// through says how conns reach their peer: the addresses dialed, or else
// where the peer's own connections come from.
func through(conns []network.Conn) string {
	var out, in []string
	for _, c := range conns {
		a := c.RemoteMultiaddr().String()
		switch {
		case slices.Contains(out, a) || slices.Contains(in, a):
		case c.Stat().Direction == network.DirOutbound:
			out = append(out, a)
		default:
			in = append(in, a)
		}
	}
	if len(out) > 0 {
		return "through " + strings.Join(out, ", ")
	}
	return "through a connection it opened from " + strings.Join(in, ", ")
}

// resolve returns addrs with their DNS names looked up (as libp2p's swarm
// does before it dials), and why those that failed did.
func (n *Node) resolve(ctx context.Context, addrs []ma.Multiaddr) (out []ma.Multiaddr, errs []string) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.dialTimeout)
	defer cancel()
	for _, a := range addrs {
		if !madns.Matches(a) {
			out = append(out, a)
			continue
		}
		resolved, err := madns.Resolve(ctx, a)
		if err == nil && len(resolved) == 0 {
			err = errors.New("the name has no address")
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", a, err))
			continue
		}
		for _, r := range resolved {
			if t, _ := lpeer.SplitAddr(r); t != nil {
				out = append(out, t)
			}
		}
	}
	return out, errs
}

// probe dials p at addr with the transport that dials it, within the
// node's dial timeout, and closes the connection once it is up and p
// authenticated: it never joins the swarm.
func (n *Node) probe(ctx context.Context, p lpeer.ID, addr ma.Multiaddr) error {
	sw, ok := n.host.Network().(interface {
		TransportForDialing(ma.Multiaddr) transport.Transport
	})
	if !ok {
		return errors.New("this node's network cannot dial an address of its own choosing")
	}
	t := sw.TransportForDialing(addr)
	if t == nil {
		return errors.New("no transport of this node dials it")
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.dialTimeout)
	defer cancel()
	c, err := t.Dial(ctx, addr, p)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("no answer within %v", n.cfg.dialTimeout)
		}
		return err
	}
	return c.Close()
}

// remoteAddr is the remote address of the connection among conns that
// went to one of addrs, else of the first.
func remoteAddr(conns []network.Conn, addrs []ma.Multiaddr) ma.Multiaddr {
	if a := connAt(conns, addrs); a != nil {
		return a
	}
	if len(conns) > 0 {
		return conns[0].RemoteMultiaddr()
	}
	return nil
}

// connAt returns the remote address of the connection among conns that
// went to one of addrs, nil if none did.
func connAt(conns []network.Conn, addrs []ma.Multiaddr) ma.Multiaddr {
	for _, c := range conns {
		if slices.ContainsFunc(addrs, c.RemoteMultiaddr().Equal) {
			return c.RemoteMultiaddr()
		}
	}
	return nil
}
