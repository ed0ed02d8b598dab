package main

import (
	"fmt"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/peer/identity"
	"github.com/mcpmesh/mcpmesh/peer/reach"
)

// networkConfig is the "network" section of the configuration file: how the
// node is reached from other networks and how soon a lost peer is seen.
type networkConfig struct {
	Reachability string   `json:"reachability,omitempty"` // auto, public, private
	RelayService string   `json:"relayService,omitempty"` // auto, on, off
	Relays       []string `json:"relays,omitempty"`       // full multiaddrs of relays to reserve a slot with
	HolePunching *bool    `json:"holePunching,omitempty"` // default true
	PortMapping  *bool    `json:"portMapping,omitempty"`  // default true
	// RelayLimits bound what this node gives others as a relay.
	RelayLimits *relayLimitsConfig `json:"relayLimits,omitempty"`
	// LivenessInterval and LivenessTimeout: how often a peer with work in
	// flight is pinged, and how long it may stay silent ("off" as the
	// interval turns the checks off).
	LivenessInterval string `json:"livenessInterval,omitempty"`
	LivenessTimeout  string `json:"livenessTimeout,omitempty"`
}

// relayLimitsConfig is network.relayLimits; zero fields keep their default.
type relayLimitsConfig struct {
	Duration          string `json:"duration,omitempty"` // per relayed connection, e.g. "1h"
	Data              int64  `json:"data,omitempty"`     // bytes per direction per relayed connection
	Reservations      int    `json:"reservations,omitempty"`
	ReservationsPerIP int    `json:"reservationsPerIP,omitempty"`
	CircuitsPerPeer   int    `json:"circuitsPerPeer,omitempty"`
	BufferSize        int    `json:"bufferSize,omitempty"`
}

// networkFlags are the node command's flags for the network section.
type networkFlags struct {
	reachability, relayService string
	relays                     []string
	holePunching, portMapping  bool
}

func (f *networkFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.reachability, "reachability", reach.Auto, "auto (AutoNAT decides), public or private: whether peers on other networks can dial this node")
	fl.StringVar(&f.relayService, "relay-service", reach.RelayAuto, "auto (relay for others while publicly reachable), on (always: a node joining two networks) or off")
	fl.StringArrayVar(&f.relays, "relay", nil, "full multiaddr of a relay to reserve a slot with when this node cannot be dialed from outside (repeatable; relays among connected peers are found anyway)")
	fl.BoolVar(&f.holePunching, "hole-punching", true, "turn relayed connections into direct ones when both sides can (DCUtR)")
	fl.BoolVar(&f.portMapping, "port-mapping", true, "ask the router to forward the listen ports (UPnP, NAT-PMP)")
}

// networkOptions merges the file's network section with the flags (a flag
// given wins) into node options, with errors that name the field.
func networkOptions(cmd *cobra.Command, c *networkConfig, f *networkFlags) ([]node.Option, error) {
	if c == nil {
		c = &networkConfig{}
	}
	changed := cmd.Flags().Changed
	pick := func(flag, file, flagValue string) string {
		if changed(flag) || file == "" {
			return flagValue
		}
		return file
	}
	reachability := pick("reachability", c.Reachability, f.reachability)
	switch reachability {
	case reach.Auto, reach.Public, reach.Private:
	default:
		return nil, fmt.Errorf("%s %q: want auto, public or private", fieldName(changed("reachability"), "--reachability", "network.reachability"), reachability)
	}
	service := pick("relay-service", c.RelayService, f.relayService)
	switch service {
	case reach.RelayAuto, reach.RelayOn, reach.RelayOff:
	default:
		return nil, fmt.Errorf("%s %q: want auto, on or off", fieldName(changed("relay-service"), "--relay-service", "network.relayService"), service)
	}
	holePunching, portMapping := f.holePunching, f.portMapping
	if c.HolePunching != nil && !changed("hole-punching") {
		holePunching = *c.HolePunching
	}
	if c.PortMapping != nil && !changed("port-mapping") {
		portMapping = *c.PortMapping
	}
	opts := []node.Option{
		node.WithReachability(reachability),
		node.WithRelayService(service),
		node.WithHolePunching(holePunching),
		node.WithPortMapping(portMapping),
	}
	var relays []lpeer.AddrInfo
	for i, s := range c.Relays {
		info, err := relayAddr(s)
		if err != nil {
			return nil, fmt.Errorf("config network.relays[%d]: %w", i, err)
		}
		relays = append(relays, info)
	}
	for _, s := range f.relays {
		info, err := relayAddr(s)
		if err != nil {
			return nil, fmt.Errorf("--relay: %w", err)
		}
		relays = append(relays, info)
	}
	if len(relays) > 0 {
		opts = append(opts, node.WithRelays(relays...))
	}
	if l := c.RelayLimits; l != nil {
		limits := reach.DefaultRelayLimits()
		if l.Duration != "" {
			d, err := time.ParseDuration(l.Duration)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("config network.relayLimits.duration: %q is not a duration like \"1h\"", l.Duration)
			}
			limits.Duration = d
		}
		for _, v := range []struct {
			name string
			set  int64
			to   func(int64)
		}{
			{"data", l.Data, func(v int64) { limits.Data = v }},
			{"reservations", int64(l.Reservations), func(v int64) { limits.Reservations = int(v) }},
			{"reservationsPerIP", int64(l.ReservationsPerIP), func(v int64) { limits.ReservationsPerIP = int(v) }},
			{"circuitsPerPeer", int64(l.CircuitsPerPeer), func(v int64) { limits.CircuitsPerPeer = int(v) }},
			{"bufferSize", int64(l.BufferSize), func(v int64) { limits.BufferSize = int(v) }},
		} {
			if v.set < 0 {
				return nil, fmt.Errorf("config network.relayLimits.%s: %d must be positive", v.name, v.set)
			}
			if v.set > 0 {
				v.to(v.set)
			}
		}
		if err := limits.Validate(); err != nil {
			return nil, fmt.Errorf("config network.relayLimits: %w", err)
		}
		opts = append(opts, node.WithRelayLimits(limits))
	}
	switch c.LivenessInterval {
	case "":
	case "off":
		opts = append(opts, node.WithLivenessInterval(-1))
	default:
		d, err := optionalDuration("network.livenessInterval", c.LivenessInterval)
		if err != nil {
			return nil, fmt.Errorf("%w (or \"off\")", err)
		}
		opts = append(opts, node.WithLivenessInterval(d))
	}
	if d, err := optionalDuration("network.livenessTimeout", c.LivenessTimeout); err != nil {
		return nil, err
	} else if d > 0 {
		opts = append(opts, node.WithLivenessTimeout(d))
	}
	return opts, nil
}

func fieldName(flag bool, flagName, field string) string {
	if flag {
		return flagName
	}
	return "config " + field
}

// relayAddr reads a relay's full multiaddr (it must carry an address: a
// bare peer ID gives nothing to dial).
func relayAddr(s string) (lpeer.AddrInfo, error) {
	info, err := identity.ParseTarget(s)
	if err != nil {
		return info, err
	}
	if len(info.Addrs) == 0 {
		return info, fmt.Errorf("%q: give the relay's full multiaddr, ending in /p2p/%s", s, info.ID)
	}
	return info, nil
}
