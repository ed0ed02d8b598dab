package identity

import (
	"context"
	"fmt"
	"strings"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// ParseTarget reads a peer as users write it: a bare peer ID
// ("12D3KooW..."), or a full multiaddr that ends in /p2p/<id>.
func ParseTarget(s string) (lpeer.AddrInfo, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return lpeer.AddrInfo{}, fmt.Errorf("empty peer: want a peer ID or a multiaddr ending in /p2p/<peer ID>")
	}
	if strings.Contains(s, "…") || strings.Contains(s, "...") {
		// Copied from documentation, where peer IDs are written 12D3KooWA….
		return lpeer.AddrInfo{}, fmt.Errorf("%q is a placeholder, not a peer ID: put a real one there (a daemon prints its own at start, in its first line; 'mcpmesh id' and 'mcpmesh peers' list them)", s)
	}
	if strings.HasPrefix(s, "/") {
		addr, err := ma.NewMultiaddr(s)
		if err != nil {
			return lpeer.AddrInfo{}, fmt.Errorf("parse multiaddr %q: %w", s, err)
		}
		info, err := lpeer.AddrInfoFromP2pAddr(addr)
		if err != nil {
			return lpeer.AddrInfo{}, fmt.Errorf("multiaddr %q: %w (it must end in /p2p/<peer ID>)", s, err)
		}
		return *info, nil
	}
	id, err := lpeer.Decode(s)
	if err != nil {
		return lpeer.AddrInfo{}, fmt.Errorf("%q is not a peer ID (%w): want a peer ID such as 12D3KooW… (52 characters), or a multiaddr ending in /p2p/<peer ID>", s, err)
	}
	return lpeer.AddrInfo{ID: id}, nil
}

type remoteKey struct{}

// WithRemote returns a context that names p as the authenticated remote peer
// of the MCP session it belongs to.
func WithRemote(ctx context.Context, p lpeer.ID) context.Context {
	return context.WithValue(ctx, remoteKey{}, p)
}

// Remote returns the authenticated peer on the other end of the MCP session
// that ctx belongs to. In a tool, resource or prompt handler it is the
// caller, taken from the libp2p connection's verified key, never from
// anything the caller claims. ok is false outside a mesh session (for
// example a call made in-process).
func Remote(ctx context.Context) (p lpeer.ID, ok bool) {
	p, ok = ctx.Value(remoteKey{}).(lpeer.ID)
	return p, ok
}
