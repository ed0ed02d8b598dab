package identity_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/mcpmesh/mcpmesh/peer/identity"
)

func TestIdentityIsCreatedOnFirstStartInANewHomeWithPrivateModes(t *testing.T) {
	home := filepath.Join(t.TempDir(), "not", "yet", "there")

	key, err := identity.LoadOrCreate(home)
	if err != nil {
		t.Fatal(err)
	}
	if key.Type() != crypto.Ed25519 {
		t.Errorf("key type %s, want Ed25519", key.Type())
	}
	dir, err := os.Stat(home)
	if err != nil {
		t.Fatalf("home folder not created: %v", err)
	}
	if !dir.IsDir() {
		t.Fatalf("%s is not a folder", home)
	}
	if perm := dir.Mode().Perm(); perm&0o077 != 0 {
		t.Errorf("home folder mode %v: readable by others", perm)
	}
	fi, err := os.Stat(filepath.Join(home, identity.KeyFile))
	if err != nil {
		t.Fatalf("key file not created: %v", err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode %v, want 0600", perm)
	}
	data, err := os.ReadFile(filepath.Join(home, identity.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	stored, err := crypto.UnmarshalPrivateKey(data)
	if err != nil {
		t.Fatalf("key file does not hold a libp2p private key: %v", err)
	}
	if !stored.Equals(key) {
		t.Error("key file holds another key than the one returned")
	}
}

func TestIdentityIsTheSameKeyOnSecondStart(t *testing.T) {
	home := t.TempDir()
	first, err := identity.LoadOrCreate(home)
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(filepath.Join(home, identity.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	second, err := identity.LoadOrCreate(home)
	if err != nil {
		t.Fatal(err)
	}
	if !first.Equals(second) {
		t.Fatal("second start loaded another identity")
	}
	after, err := os.ReadFile(filepath.Join(home, identity.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("second start rewrote the key file")
	}
}

// Two daemons starting at once on a new home must end up with one identity.
func TestIdentityCreatedConcurrentlyIsOneKey(t *testing.T) {
	for round := range 50 {
		home := filepath.Join(t.TempDir(), "home")
		const n = 8
		keys := make([]crypto.PrivKey, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				keys[i], errs[i] = identity.LoadOrCreate(home)
			}()
		}
		close(start)
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("round %d, starter %d: %v", round, i, errs[i])
			}
			if !keys[i].Equals(keys[0]) {
				t.Fatalf("round %d: starters got different identities", round)
			}
		}
	}
}

// writeKeyFile puts data in a new home's key file and returns the file's path.
func writeKeyFile(t *testing.T, data []byte) string {
	t.Helper()
	home := t.TempDir()
	path := filepath.Join(home, identity.KeyFile)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// assertRefusedAndKept checks that loading the identity in path's folder
// fails with an error naming the file and containing want, and that the file
// still holds data.
func assertRefusedAndKept(t *testing.T, path string, data []byte, want string) {
	t.Helper()
	key, err := identity.LoadOrCreate(filepath.Dir(path))
	if err == nil {
		t.Fatalf("loaded identity %v from a bad key file, want an error", key)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), want) {
		t.Errorf("error %q: want it to name %s and say %q", err, path, want)
	}
	after, rerr := os.ReadFile(path)
	if rerr != nil {
		t.Fatalf("key file gone after a refused load: %v", rerr)
	}
	if !bytes.Equal(after, data) {
		t.Errorf("key file replaced: was %q, now %q", data, after)
	}
}

func TestIdentityCorruptFileIsRefusedAndKept(t *testing.T) {
	data := []byte("\x00\xffnot a key at all\n\x13\x37")
	assertRefusedAndKept(t, writeKeyFile(t, data), data, "corrupt")
}

func TestIdentityTruncatedKeyIsRefusedAndKept(t *testing.T) {
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	full, err := crypto.MarshalPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	data := full[:len(full)/2]
	assertRefusedAndKept(t, writeKeyFile(t, data), data, "corrupt")
}

func TestIdentityEmptyFileIsRefusedAndKept(t *testing.T) {
	assertRefusedAndKept(t, writeKeyFile(t, []byte{}), []byte{}, "empty")
}

func TestIdentityUnreadableFileIsRefusedAndKept(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root: a mode 000 file is still readable")
	}
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := crypto.MarshalPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	path := writeKeyFile(t, data)
	if err := os.Chmod(path, 0); err != nil {
		t.Fatal(err)
	}
	_, err = identity.LoadOrCreate(filepath.Dir(path))
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("error %v: want it to name %s and say permission denied", err, path)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(after, data) {
		t.Errorf("key file changed after a refused load (err %v)", err)
	}
}

// Whatever keeps an existing key file from being read (here: it is a folder,
// which root cannot read either) is an error, never a reason for a new key.
func TestIdentityKeyFileThatCannotBeReadIsRefusedAndKept(t *testing.T) {
	home := t.TempDir()
	path := filepath.Join(home, identity.KeyFile)
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := identity.LoadOrCreate(home)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("error %v: want one naming %s", err, path)
	}
	fi, err := os.Stat(path)
	if err != nil || !fi.IsDir() {
		t.Errorf("key path replaced after a refused load (stat err %v)", err)
	}
}

func TestIdentityNonEd25519KeyIsRefused(t *testing.T) {
	key, _, err := crypto.GenerateSecp256k1Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := crypto.MarshalPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	assertRefusedAndKept(t, writeKeyFile(t, data), data, "want Ed25519")
}
