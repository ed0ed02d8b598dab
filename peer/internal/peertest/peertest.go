// Package peertest makes deterministic peer identities for the tests of the
// peer packages.
package peertest

import (
	"bytes"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
)

// Key returns a deterministic Ed25519 key, one per seed, and its peer ID.
func Key(tb testing.TB, seed int) (crypto.PrivKey, lpeer.ID) {
	tb.Helper()
	var b [32]byte
	b[0], b[1] = byte(seed), byte(seed>>8)
	b[31] = 0x5a
	k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(b[:]))
	if err != nil {
		tb.Fatal(err)
	}
	id, err := lpeer.IDFromPrivateKey(k)
	if err != nil {
		tb.Fatal(err)
	}
	return k, id
}

// ID returns the peer ID of Key(tb, seed).
func ID(tb testing.TB, seed int) lpeer.ID {
	_, id := Key(tb, seed)
	return id
}
