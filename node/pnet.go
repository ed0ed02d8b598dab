package node

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/pnet"
	ma "github.com/multiformats/go-multiaddr"
)

// MeshKeyFile is the name of a mesh secret in a node's home folder: a node
// started with that home uses it unless told otherwise.
const MeshKeyFile = "swarm.key"

// applyPrivateNetwork turns a private network key into the host's options
// and listen addresses, once all options are known (WithListenAddrs may come
// after WithPrivateNetwork).
func (c *config) applyPrivateNetwork() error {
	if c.psk == nil {
		return nil
	}
	kept, _ := PrivateNetworkAddrs(c.listen)
	if len(kept) == 0 {
		return fmt.Errorf("private network: none of the listen addresses %v is TCP or WebSocket (a private network cannot use QUIC)", c.listen)
	}
	c.listen = kept
	c.libp2pOpts = append(c.libp2pOpts, libp2p.PrivateNetwork(c.psk))
	return nil
}

// PrivateNetworkAddrs splits listen addresses into those a private network
// can use (TCP, WebSocket) and those it cannot (QUIC, WebTransport, WebRTC,
// anything over UDP). An address that does not parse is kept, so that the
// host reports it as it would without a key.
func PrivateNetworkAddrs(addrs []string) (kept, dropped []string) {
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err == nil && usesUDP(a) {
			dropped = append(dropped, s)
			continue
		}
		kept = append(kept, s)
	}
	return kept, dropped
}

func usesUDP(a ma.Multiaddr) bool {
	for _, c := range a {
		if c.Protocol().Code == ma.P_UDP {
			return true
		}
	}
	return false
}

// NewMeshKey returns a fresh private network key (32 random bytes) in the
// text form libp2p reads (pnet.DecodeV1PSK): the "/key/swarm/psk/1.0.0/"
// header, the "/base16/" encoding and the key in hex.
func NewMeshKey() ([]byte, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("mesh key: %w", err)
	}
	return []byte("/key/swarm/psk/1.0.0/\n/base16/\n" + hex.EncodeToString(key) + "\n"), nil
}

// ErrMeshKeyExists is returned by WriteMeshKey when the file exists.
var ErrMeshKeyExists = errors.New("a mesh key already exists")

// WriteMeshKey writes a new mesh key to path (mode 0600, its folder created
// with mode 0700 if missing). It refuses to replace an existing file unless
// force is set: nodes that hold the old key could no longer reach this one.
func WriteMeshKey(path string, force bool) error {
	data, err := NewMeshKey()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%w at %s (--force replaces it; nodes with the old key then cannot reach this one)", ErrMeshKeyExists, path)
	}
	if err != nil {
		return err
	}
	if err := f.Chmod(0o600); err != nil { // an existing file kept its mode
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ReadMeshKey reads a mesh key file as libp2p does (pnet.DecodeV1PSK).
func ReadMeshKey(path string) (pnet.PSK, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	psk, err := pnet.DecodeV1PSK(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("mesh key %s: %w", path, err)
	}
	return psk, nil
}
