package limits

import (
	"errors"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/network"
	ma "github.com/multiformats/go-multiaddr"
)

// openConns opens n inbound connections from addr and keeps them open until
// the test ends; it returns how many were admitted and the first refusal.
func openConns(t *testing.T, rm network.ResourceManager, addr string, n int, keep bool) (int, error) {
	t.Helper()
	ep := ma.StringCast(addr)
	ok := 0
	var first error
	for range n {
		s, err := rm.OpenConnection(network.DirInbound, true, ep)
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		ok++
		if keep {
			t.Cleanup(s.Done)
		} else {
			s.Done()
		}
	}
	return ok, first
}

// A node restarted over and over on one LAN address must not be locked out
// (libp2p's own limiter refuses the 17th connection from one IP within a
// few seconds); a public address is still rate limited, and the refusal
// names the setting to change.
func TestConnectionLimitsPerIPNameTheirSetting(t *testing.T) {
	rm, err := ResourceManager(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer rm.Close()
	if got, err := openConns(t, rm, "/ip4/192.168.1.20/tcp/4001", 200, false); got != 200 {
		t.Errorf("a LAN address got %d of 200 connections in a row: %v", got, err)
	}
	if got, err := openConns(t, rm, "/ip4/203.0.113.7/tcp/4001", 64, false); got != 64 {
		t.Errorf("a public address got %d of a burst of 64: %v", got, err)
	}
	got, err := openConns(t, rm, "/ip4/203.0.113.7/tcp/4001", 10, false)
	if got > 2 || !errors.Is(err, ErrConnLimit) || !strings.Contains(err.Error(), "connRatePerIP") {
		t.Errorf("past its burst, a public address got %d more connections; refusal %v, want one naming connRatePerIP", got, err)
	}

	small, err := ResourceManager(Config{ConnsPerIP: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	got, err = openConns(t, small, "/ip4/10.0.0.9/tcp/4001", 5, true)
	if got != 3 || !errors.Is(err, ErrConnLimit) || !strings.Contains(err.Error(), "connsPerIP") {
		t.Errorf("got %d connections open at once from one address with connsPerIP 3; refusal %v, want one naming connsPerIP", got, err)
	}
}
