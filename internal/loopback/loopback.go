// Package loopback holds the checks shared by the daemon's local HTTP
// endpoints (the MCP gateway, the web console): they listen on loopback
// only, and refuse requests that a web page could have sent through DNS
// rebinding or from another origin.
package loopback

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// CheckRequest refuses requests that a web page could have sent through DNS
// rebinding or cross-origin: the Host must be a loopback name or address,
// and so must the Origin's host, if there is an Origin.
func CheckRequest(r *http.Request) error {
	if !IsHost(r.Host) {
		return fmt.Errorf("Host %q is not a loopback address (DNS-rebinding protection)", r.Host)
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		u, err := url.Parse(origin)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || !IsHost(u.Host) {
			return fmt.Errorf("Origin %q is not a loopback origin", origin)
		}
	}
	return nil
}

// IsHost reports whether hostport (a Host header, "HOST" or "HOST:PORT") is
// localhost or a loopback address.
func IsHost(hostport string) bool {
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

// CheckListenAddr accepts only a loopback HOST:PORT to listen on.
func CheckListenAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want HOST:PORT, e.g. 127.0.0.1:8080", addr)
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return fmt.Errorf("%q: not a loopback address (127.0.0.1, ::1, localhost)", addr)
	}
	return nil
}
