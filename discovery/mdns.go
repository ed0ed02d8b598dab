package discovery

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"strings"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
)

// PrivateMDNSService returns the mDNS service name that members of the
// private mesh with key psk announce under in place of service: an
// HMAC-SHA256 of service under the key, 72 bits of it in base32, shaped
// like a DNS-SD service type ("_xxxxxxxxxxxxxxx._udp"). Members compute the
// same name and find each other; an outsider cannot tell from the name
// which mesh it is, or that it is mcpmesh. The name itself is no secret
// (members ask for it in the clear, and DNS-SD enumeration lists it), and
// what mDNS carries does not change: anyone on the LAN sees each member's
// peer ID and addresses in its answers.
func PrivateMDNSService(psk []byte, service string) string {
	mac := hmac.New(sha256.New, psk)
	mac.Write([]byte("mcpmesh mDNS service name v1\x00" + service))
	sum := mac.Sum(nil)
	name := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:9])
	return "_" + strings.ToLower(name) + "._udp"
}

// mdnsNotifee connects to peers that mDNS finds.
type mdnsNotifee struct{ s *Service }

func (m *mdnsNotifee) HandlePeerFound(info lpeer.AddrInfo) {
	s := m.s
	if info.ID == s.h.ID() || s.ctx.Err() != nil {
		return
	}
	if len(s.h.Network().ConnsToPeer(info.ID)) > 0 {
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
		defer cancel()
		if err := s.h.Connect(ctx, info); err != nil {
			log.Debugw("connect to peer found by mDNS", "peer", info.ID, "error", err)
			return
		}
		log.Infow("found peer on the local network", "peer", info.ID)
	}()
}
