// Package reach is how a node reaches a peer and whether that peer is still
// there.
//
// Reaching: go-libp2p's own pieces, configured for a mesh that has no public
// IPFS peers to lean on. AutoNAT (v1 and v2, client and rate-limited
// service on every node, so members answer each other) decides whether the
// node is publicly reachable; a circuit relay v2 service lets reachable
// nodes (or any node told to) carry connections for others; AutoRelay keeps
// reservations with static relays and with relays found among connected
// peers; DCUtR hole punching turns relayed connections into direct ones;
// UPnP/NAT-PMP port mapping opens a port where a router offers it. See
// [Config.Options] and [Service].
//
// Still there: [Liveness] pings the peers this node has calls in flight to,
// or serves tasks for, and closes the connection to one that stops
// answering, so that every stream on it fails within seconds instead of the
// transport's idle timeout.
package reach

import (
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
)

// Reachability modes: how a node decides whether peers outside its own
// networks can dial it.
const (
	// Auto lets AutoNAT decide from peers' dial-backs (the default).
	Auto = "auto"
	// Public declares the node reachable: no relay reservations, and a
	// relay service in RelayService "auto".
	Public = "public"
	// Private declares the node unreachable: it takes relay reservations at
	// once and never serves as a relay in RelayService "auto".
	Private = "private"
)

// Relay service modes.
const (
	// RelayAuto serves as a relay only while AutoNAT says the node is
	// publicly reachable (libp2p's own behaviour).
	RelayAuto = "auto"
	// RelayOn always serves: for a node that joins two private networks.
	RelayOn = "on"
	// RelayOff never serves.
	RelayOff = "off"
)

// Config says how a node makes itself reachable. The zero value is not
// valid; start from DefaultConfig.
type Config struct {
	// Reachability is Auto, Public or Private.
	Reachability string
	// RelayService is RelayAuto, RelayOn or RelayOff.
	RelayService string
	// Relays are relays to reserve a slot with whenever the node is not
	// known to be publicly reachable, besides the relays found among
	// connected peers.
	Relays []peer.AddrInfo
	// HolePunching turns relayed connections into direct ones (DCUtR) when
	// both sides can: on by default.
	HolePunching bool
	// PortMapping asks the router for a port mapping (UPnP, NAT-PMP): on by
	// default.
	PortMapping bool
	// RelayLimits bound what this node gives others when it serves as a
	// relay.
	RelayLimits RelayLimits
	// Banned, if set, tells the relay service which peers to refuse
	// (reservations and relayed connections, from or to them).
	Banned func(peer.ID) bool
}

// RelayLimits bound the relay service. Every field must be positive.
type RelayLimits struct {
	// Duration and Data bound one relayed connection: it is reset after
	// Duration, or once Data bytes have passed in either direction; the next
	// call then opens a new one (or has moved to a direct connection).
	Duration time.Duration
	Data     int64
	// Reservations bounds the peers holding a slot at once;
	// ReservationsPerIP those behind one IP address (a NAT shares one among
	// many nodes).
	Reservations      int
	ReservationsPerIP int
	// CircuitsPerPeer bounds the relayed connections open at once from, and
	// apart, to one peer.
	CircuitsPerPeer int
	// BufferSize is the copy buffer of each direction of a relayed
	// connection, in bytes: the memory a connection holds.
	BufferSize int
}

// DefaultRelayLimits are sized for MCP traffic, where libp2p's defaults
// (128 KiB or 2 minutes per relayed connection) do not carry one 4 MiB frame:
//
//   - 64 MiB per direction and one hour per relayed connection: sixteen
//     frames of the largest size, thousands of ordinary calls, and an MCP
//     session that stays relayed (no direct path) is cut at most hourly;
//   - 128 reservations (libp2p's default), 32 per IP address (8 by default:
//     a NAT hides a team behind one address);
//   - 32 relayed connections per peer (16 by default), 16 KiB buffers (2 KiB
//     by default: an eighth of the copy loops for a large frame); memory is
//     bounded anyway by the resource manager's relay service scope.
func DefaultRelayLimits() RelayLimits {
	return RelayLimits{
		Duration:          time.Hour,
		Data:              64 << 20,
		Reservations:      128,
		ReservationsPerIP: 32,
		CircuitsPerPeer:   32,
		BufferSize:        16 << 10,
	}
}

// DefaultConfig is what a node gets unless told otherwise: reachability
// decided by AutoNAT, a relay service while publicly reachable, hole
// punching and port mapping on.
func DefaultConfig() Config {
	return Config{
		Reachability: Auto,
		RelayService: RelayAuto,
		HolePunching: true,
		PortMapping:  true,
		RelayLimits:  DefaultRelayLimits(),
	}
}

// Validate checks c, naming the field at fault.
func (c *Config) Validate() error {
	switch c.Reachability {
	case Auto, Public, Private:
	default:
		return fmt.Errorf("reachability %q: want auto, public or private", c.Reachability)
	}
	switch c.RelayService {
	case RelayAuto, RelayOn, RelayOff:
	default:
		return fmt.Errorf("relay service %q: want auto, on or off", c.RelayService)
	}
	for i, r := range c.Relays {
		if err := r.ID.Validate(); err != nil {
			return fmt.Errorf("relay %d: %w", i+1, err)
		}
	}
	return c.RelayLimits.Validate()
}

// Validate checks l, naming the field at fault.
func (l RelayLimits) Validate() error {
	for _, f := range []struct {
		name string
		ok   bool
	}{
		{"duration", l.Duration > 0},
		{"data", l.Data > 0},
		{"reservations", l.Reservations > 0},
		{"reservationsPerIP", l.ReservationsPerIP > 0},
		{"circuitsPerPeer", l.CircuitsPerPeer > 0},
		{"bufferSize", l.BufferSize >= 512},
	} {
		if !f.ok {
			return fmt.Errorf("relay limits: %s must be positive (bufferSize at least 512)", f.name)
		}
	}
	return nil
}

// resources are the relay service's resources for l.
func (l RelayLimits) resources() relayv2.Resources {
	rc := relayv2.DefaultResources()
	rc.Limit = &relayv2.RelayLimit{Duration: l.Duration, Data: l.Data}
	rc.MaxReservations = l.Reservations
	rc.MaxReservationsPerIP = l.ReservationsPerIP
	rc.MaxCircuits = l.CircuitsPerPeer
	rc.BufferSize = l.BufferSize
	return rc
}
