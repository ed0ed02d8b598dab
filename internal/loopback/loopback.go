// Package loopback is the one check of "is this loopback" for the local
// HTTP endpoints of a daemon (the control API, the MCP gateway): the
// addresses they listen on, and the Host and Origin of the requests they
// take, which refuses a web page that reaches them through DNS rebinding
// or a cross-origin request.
package loopback

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// Host reports whether hostport, a host with or without a port (a Host
// header, a listen address), names this machine over loopback: "localhost"
// in any letter case and with or without a trailing dot, or a loopback IP
// address (IPv4-mapped IPv6 too).
func Host(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// CheckRequest refuses a request that a web page could have sent through
// DNS rebinding or cross-origin: its Host must be a loopback name or
// address, and so must its Origin's host, if it has an Origin.
func CheckRequest(r *http.Request) error {
	if !Host(r.Host) {
		return fmt.Errorf("Host %q is not a loopback address (DNS-rebinding protection)", r.Host)
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		u, err := url.Parse(origin)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || !Host(u.Host) {
			return fmt.Errorf("Origin %q is not a loopback origin", origin)
		}
	}
	return nil
}
