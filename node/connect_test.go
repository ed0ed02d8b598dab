package node_test

import (
	"context"
	"strings"
	"testing"

	ma "github.com/multiformats/go-multiaddr"
)

// Dial of a peer the node is already connected to dials the address given
// all the same: where nothing listens, or where another peer answers, it
// fails saying so and keeps the connection it has; the connection's own
// address is "already".
func TestDialChecksTheAddressGivenWhenConnected(t *testing.T) {
	a, b, c := newNode(t), newNode(t), newNode(t)
	ctx := context.Background()
	if _, err := a.Connect(ctx, b.Addrs()[0].String()); err != nil {
		t.Fatal(err)
	}
	bAddr, _ := ma.SplitLast(b.Addrs()[0]) // without /p2p/ID

	d, err := a.Dial(ctx, "/ip4/127.0.0.1/tcp/1/p2p/"+b.ID().String())
	if err == nil || !strings.Contains(err.Error(), "did not answer at /ip4/127.0.0.1/tcp/1") || !strings.Contains(err.Error(), "already connected to it through "+bAddr.String()) {
		t.Errorf("dial of a wrong port: %+v, %v", d, err)
	}
	cAddr, _ := ma.SplitLast(c.Addrs()[0])
	d, err = a.Dial(ctx, cAddr.String()+"/p2p/"+b.ID().String())
	if err == nil || !strings.Contains(err.Error(), "did not answer at "+cAddr.String()) {
		t.Errorf("dial of another peer's address as b's: %+v, %v", d, err)
	}
	d, err = a.Dial(ctx, b.Addrs()[0].String())
	if err != nil || !d.Already || d.Tried || !d.Addr.Equal(bAddr) {
		t.Errorf("dial of the connection's address: %+v, %v", d, err)
	}
	// The connection a had is still there.
	if res, err := a.CallTool(ctx, b.ID(), "echo", map[string]any{"text": "still"}); err != nil || res.IsError {
		t.Errorf("call after the dials: %v %+v", err, res)
	}
}
