package identity_test

import (
	"context"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	lpeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/mcpmesh/mcpmesh/peer/identity"
)

func newPeerID(t *testing.T) lpeer.ID {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := lpeer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestParseTargetAcceptsABarePeerID(t *testing.T) {
	id := newPeerID(t)
	info, err := identity.ParseTarget("  " + id.String() + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if info.ID != id || len(info.Addrs) != 0 {
		t.Errorf("got %v, want ID %s and no address", info, id)
	}
}

func TestParseTargetAcceptsAFullMultiaddr(t *testing.T) {
	id := newPeerID(t)
	for _, transport := range []string{"/ip4/127.0.0.1/tcp/4001", "/ip6/::1/udp/4001/quic-v1", "/dns4/example.com/tcp/443/wss"} {
		info, err := identity.ParseTarget(transport + "/p2p/" + id.String())
		if err != nil {
			t.Errorf("%s: %v", transport, err)
			continue
		}
		if info.ID != id {
			t.Errorf("%s: ID %s, want %s", transport, info.ID, id)
		}
		if len(info.Addrs) != 1 || info.Addrs[0].String() != transport {
			t.Errorf("%s: addrs %v, want just the transport part", transport, info.Addrs)
		}
	}
}

func TestParseTargetRefusesAMultiaddrWithoutPeerID(t *testing.T) {
	_, err := identity.ParseTarget("/ip4/127.0.0.1/tcp/4001")
	if err == nil {
		t.Fatal("no error for a multiaddr without /p2p/")
	}
	if !strings.Contains(err.Error(), "/p2p/") {
		t.Errorf("error %q does not tell the user to add /p2p/<peer ID>", err)
	}
}

func TestParseTargetRefusesGarbage(t *testing.T) {
	for _, s := range []string{
		"",
		"   ",
		"hello",
		"12D3KooWnotreallyapeerid",
		"/ip4/999.0.0.1/tcp/1",
		"/not/a/multiaddr",
		"/ip4/127.0.0.1/tcp/4001/p2p/notapeerid",
	} {
		if info, err := identity.ParseTarget(s); err == nil {
			t.Errorf("ParseTarget(%q) = %v, want an error", s, info)
		} else if err.Error() == "" {
			t.Errorf("ParseTarget(%q): empty error message", s)
		}
	}
}

func TestRemoteIsOnlyWhatWithRemoteSet(t *testing.T) {
	if p, ok := identity.Remote(context.Background()); ok {
		t.Errorf("Remote of a bare context = %s, true; want false", p)
	}
	id := newPeerID(t)
	p, ok := identity.Remote(identity.WithRemote(context.Background(), id))
	if !ok || p != id {
		t.Errorf("Remote = %s, %v; want %s, true", p, ok, id)
	}
}
