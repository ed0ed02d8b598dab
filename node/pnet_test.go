package node_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/pnet"

	"github.com/mcpmesh/mcpmesh/node"
)

func meshKey(t *testing.T) pnet.PSK {
	t.Helper()
	path := filepath.Join(t.TempDir(), node.MeshKeyFile)
	if err := node.WriteMeshKey(path, false); err != nil {
		t.Fatal(err)
	}
	psk, err := node.ReadMeshKey(path)
	if err != nil {
		t.Fatal(err)
	}
	return psk
}

func echoes(t *testing.T, from, to *node.Node) {
	t.Helper()
	res, err := from.CallTool(context.Background(), to.ID(), "echo", map[string]any{"text": "psst"})
	if err != nil {
		t.Fatalf("%s → %s: %v", from.ID(), to.ID(), err)
	}
	if out, _ := res.StructuredContent.(map[string]any); res.IsError || out["text"] != "psst" {
		t.Fatalf("%s → %s: %+v", from.ID(), to.ID(), res.StructuredContent)
	}
}

func TestPrivateMeshNodesCallEachOther(t *testing.T) {
	key := meshKey(t)
	a := newNode(t, node.WithPrivateNetwork(key))
	b := newNode(t, node.WithPrivateNetwork(key))
	connect(t, a, b)
	echoes(t, a, b)
	echoes(t, b, a)
}

// A node outside the mesh — no key, or another mesh's — cannot complete a
// connection either way, and finds out within its dial timeout (3 s here):
// at once when the listener has a key the dialer lacks; a member dialing a
// node without a key waits for bytes that never come until the timeout.
func TestPrivateMeshRefusesOutsiders(t *testing.T) {
	key := meshKey(t)
	member := newNode(t, node.WithPrivateNetwork(key))
	for _, tc := range []struct {
		name string
		opts []node.Option
	}{
		{"no key", nil},
		{"another key", []node.Option{node.WithPrivateNetwork(meshKey(t))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			outsider := newNode(t, tc.opts...)
			for _, pair := range [][2]*node.Node{{outsider, member}, {member, outsider}} {
				from, to := pair[0], pair[1]
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				start := time.Now()
				_, err := from.Connect(ctx, to.Addrs()[0].String())
				cancel()
				if err == nil {
					t.Fatalf("%s connected to %s", from.ID(), to.ID())
				}
				if d := time.Since(start); d > 4500*time.Millisecond {
					t.Errorf("refused only after %v", d)
				}
				t.Logf("refused in %v: %v", time.Since(start).Round(time.Millisecond), err)
				// Either side's error points at the mesh's key, not only at
				// a handshake or a message size.
				if !strings.Contains(err.Error(), "private mesh") {
					t.Errorf("%s → %s: the error does not say private mesh: %v", from.ID(), to.ID(), err)
				}
				if n := len(from.Host().Network().ConnsToPeer(to.ID())); n != 0 {
					t.Errorf("%d connections after a refused dial", n)
				}
			}
			if _, err := outsider.CallTool(context.Background(), member.ID(), "echo", map[string]any{"text": "x"}); err == nil {
				t.Error("an outsider called a member's tool")
			}
		})
	}
}

func TestPrivateMeshDropsQUIC(t *testing.T) {
	kept, dropped := node.PrivateNetworkAddrs(node.DefaultListenAddrs)
	if !slices.Equal(kept, []string{"/ip4/0.0.0.0/tcp/0", "/ip6/::/tcp/0"}) ||
		!slices.Equal(dropped, []string{"/ip4/0.0.0.0/udp/0/quic-v1", "/ip6/::/udp/0/quic-v1"}) {
		t.Errorf("kept %v, dropped %v", kept, dropped)
	}
	key := meshKey(t)
	n := newNode(t, node.WithPrivateNetwork(key),
		node.WithListenAddrs("/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1", "/ip4/127.0.0.1/tcp/0/ws"))
	for _, a := range n.Addrs() {
		if strings.Contains(a.String(), "/udp/") {
			t.Errorf("a private node listens on %s", a)
		}
	}
	if len(n.Addrs()) != 2 {
		t.Errorf("addresses %v, want TCP and WebSocket", n.Addrs())
	}
	// Options in either order: the listen addresses are filtered at start.
	if _, err := node.New(node.WithListenAddrs("/ip4/127.0.0.1/udp/0/quic-v1"), node.WithPrivateNetwork(key)); err == nil {
		t.Error("a private node started with only a QUIC address")
	}
	if _, err := node.New(node.WithPrivateNetwork(pnet.PSK("short"))); err == nil {
		t.Error("a 5-byte key accepted")
	}
}

func TestMeshKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", node.MeshKeyFile)
	if err := node.WriteMeshKey(path, false); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), "/key/swarm/psk/1.0.0/\n/base16/\n") {
		t.Errorf("key file %q", data)
	}
	first, err := node.ReadMeshKey(path)
	if err != nil || len(first) != 32 {
		t.Fatalf("read back: %d bytes, %v", len(first), err)
	}
	if err := node.WriteMeshKey(path, false); !errors.Is(err, node.ErrMeshKeyExists) {
		t.Fatalf("overwrite without force: %v", err)
	}
	if again, _ := node.ReadMeshKey(path); !slices.Equal(again, first) {
		t.Fatal("a refused overwrite changed the key")
	}
	os.Chmod(path, 0o644)
	if err := node.WriteMeshKey(path, true); err != nil {
		t.Fatal(err)
	}
	if again, _ := node.ReadMeshKey(path); slices.Equal(again, first) {
		t.Error("--force kept the old key")
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode after --force %v, want 0600", st.Mode().Perm())
	}
	os.WriteFile(path, []byte("not a key"), 0o600)
	if _, err := node.ReadMeshKey(path); err == nil {
		t.Error("a bad key file read")
	}
}
