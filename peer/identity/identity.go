// Package identity holds what a node knows about identities: its own
// persistent key, how peers are named on the command line and in messages,
// and the authenticated caller of a request.
package identity

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"
)

// KeyFile is the name of the identity key file inside a node's home folder.
const KeyFile = "identity.key"

// LoadOrCreate returns the node's Ed25519 private key stored in home,
// creating home (mode 0700) and the key (mode 0600) on first use.
//
// An existing key file that cannot be read or decoded is an error: the key is
// the node's identity, so it is never silently replaced.
func LoadOrCreate(home string) (crypto.PrivKey, error) {
	path := filepath.Join(home, KeyFile)
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		return decodeKey(path, data)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read identity %s: %w", path, err)
	}

	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, fmt.Errorf("create home %s: %w", home, err)
	}
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, fmt.Errorf("generate identity: %w", err)
	}
	data, err = crypto.MarshalPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode identity: %w", err)
	}
	// Write the key whole under a temporary name, then link it into place:
	// the key file appears complete or not at all, and when two daemons
	// start at once on a new home, the loser of the link reads the winner's
	// key instead of a half-written file.
	tmp, err := os.CreateTemp(home, ".identity-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("create identity in %s: %w", home, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("create identity %s: %w", path, err)
	}
	_, werr := tmp.Write(data)
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return nil, fmt.Errorf("write identity %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			data, err := os.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("read identity %s: %w", path, err)
			}
			return decodeKey(path, data)
		}
		return nil, fmt.Errorf("create identity %s: %w", path, err)
	}
	return key, nil
}

func decodeKey(path string, data []byte) (crypto.PrivKey, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("identity %s is empty: restore it from a backup, or move it away to create a new identity", path)
	}
	key, err := crypto.UnmarshalPrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("identity %s is corrupt (%v): restore it from a backup, or move it away to create a new identity", path, err)
	}
	if key.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("identity %s holds a %s key, want Ed25519", path, key.Type())
	}
	return key, nil
}
