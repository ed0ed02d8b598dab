package main

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"

	ma "github.com/multiformats/go-multiaddr"
)

// checkListenPorts refuses listen addresses whose explicit port another
// process holds. libp2p's TCP transport binds with SO_REUSEPORT, so a
// second node (or any program that sets it too) would share the port with
// the first, and the kernel would hand each new connection to one of them
// at random: dials to the first fail with "peer id mismatch" half of the
// time. A plain bind, without the option, fails when anyone holds the
// port; a free port is released at once for libp2p to take. Port 0 needs
// no check: the kernel never picks a port in use for it, with or without
// the option.
func checkListenPorts(addrs []string) error {
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			continue // libp2p says what is wrong with it
		}
		network, hostport, ok := explicitPort(a)
		if !ok {
			continue
		}
		if err := tryBind(network, hostport); err != nil {
			_, port, _ := net.SplitHostPort(hostport)
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("listen %s: %s port %s is in use (another mcpmesh node, or another program, listens on it): stop it, or choose another --listen port (0 picks a free one)", s, network, port)
			}
			return fmt.Errorf("listen %s: %w", s, err)
		}
	}
	return nil
}

// explicitPort returns the network ("tcp" or "udp") and the host:port of a
// listen address with an IP and a port other than 0.
func explicitPort(a ma.Multiaddr) (network, hostport string, ok bool) {
	var ip, port string
	ma.ForEach(a, func(c ma.Component) bool {
		switch c.Protocol().Code {
		case ma.P_IP4, ma.P_IP6:
			if ip == "" {
				ip = c.Value()
			}
		case ma.P_TCP, ma.P_UDP:
			if network == "" {
				network, port = c.Protocol().Name, c.Value()
			}
		}
		return true
	})
	if ip == "" || network == "" || port == "0" {
		return "", "", false
	}
	if _, err := strconv.Atoi(port); err != nil {
		return "", "", false
	}
	return network, net.JoinHostPort(ip, port), true
}

func tryBind(network, hostport string) error {
	if network == "tcp" {
		l, err := net.Listen("tcp", hostport)
		if err != nil {
			return err
		}
		return l.Close()
	}
	c, err := net.ListenPacket("udp", hostport)
	if err != nil {
		return err
	}
	return c.Close()
}
