package netns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// Do runs f on an OS thread that has entered the host's network namespace:
// sockets f opens belong to the host (and stay there when used from other
// goroutines afterwards). The thread goes back to its own namespace
// afterwards, or, if it cannot, is never used again.
func (h *Host) Do(f func() error) error { return doIn(h.ns, h.name, f) }

func doIn(ns, what string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		own, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open own namespace: %w", err)
			return
		}
		defer unix.Close(own)
		fd, err := unix.Open("/var/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open namespace of %s: %w", what, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace of %s: %w", what, err)
			return
		}
		err = f()
		if unix.Setns(own, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		} // else: still locked, so the thread ends with this goroutine
		errc <- err
	}()
	return <-errc
}

// DialContext dials from inside the host's namespace: give it to an
// http.Transport to reach a daemon's loopback-only endpoints (--http,
// --metrics) from the test.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() error {
		var err error
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// MDNSPort and MDNSGroup are where mDNS speaks (RFC 6762).
const MDNSPort = 5353

var MDNSGroup = netip.MustParseAddr("224.0.0.251")

// Sniffer listens to mDNS on a LAN as any host there can, without taking
// part in any mesh: it joins the multicast group, records every message,
// and asks what any curious host would (DNS-SD service enumeration, then
// every service type and instance it hears of).
type Sniffer struct {
	host *Host
	conn *net.UDPConn
	self netip.Addr

	mu      sync.Mutex
	packets []Packet
	asked   map[string]bool // names already queried

	stop chan struct{}
	done sync.WaitGroup
}

// Packet is one mDNS message heard.
type Packet struct {
	From netip.AddrPort
	Msg  *dns.Msg
	At   time.Time
}

// SniffMDNS starts a sniffer on h's first link; Close stops it (the lab
// does not).
func (h *Host) SniffMDNS() (*Sniffer, error) {
	h.mu.Lock()
	if len(h.links) == 0 {
		h.mu.Unlock()
		return nil, fmt.Errorf("%s has no link to sniff on", h.name)
	}
	link := h.links[0]
	h.mu.Unlock()
	s := &Sniffer{host: h, self: link.addr, asked: map[string]bool{}, stop: make(chan struct{})}
	err := h.Do(func() error {
		ifi, err := net.InterfaceByName(link.iface)
		if err != nil {
			return err
		}
		s.conn, err = net.ListenMulticastUDP("udp4", ifi, &net.UDPAddr{IP: MDNSGroup.AsSlice(), Port: MDNSPort})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sniff mDNS on %s: %w", h.name, err)
	}
	s.done.Add(2)
	go s.listen()
	go s.query()
	return s, nil
}

func (s *Sniffer) listen() {
	defer s.done.Done()
	buf := make([]byte, 9000)
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return // closed
		}
		if from.Addr().Unmap() == s.self {
			continue // our own queries, looped back
		}
		m := new(dns.Msg)
		if m.Unpack(buf[:n]) != nil {
			continue
		}
		s.mu.Lock()
		s.packets = append(s.packets, Packet{From: netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), Msg: m, At: time.Now()})
		s.mu.Unlock()
	}
}

// query asks, every 500 ms, for the service types on the LAN, libp2p's
// default service, and every service type and instance heard of so far.
func (s *Sniffer) query() {
	defer s.done.Done()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		names := []string{"_services._dns-sd._udp.local.", "_p2p._udp.local."}
		s.mu.Lock()
		for _, p := range s.packets {
			for _, rr := range records(p.Msg) {
				switch rr := rr.(type) {
				case *dns.PTR:
					names = append(names, rr.Hdr.Name, rr.Ptr)
				case *dns.SRV:
					names = append(names, rr.Target)
				}
			}
		}
		s.mu.Unlock()
		slices.Sort(names)
		for _, name := range slices.Compact(names) {
			s.send(name)
		}
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

func (s *Sniffer) send(name string) {
	m := new(dns.Msg)
	m.Question = []dns.Question{{Name: dns.Fqdn(name), Qtype: dns.TypeANY, Qclass: dns.ClassINET}}
	if strings.HasPrefix(name, "_") {
		m.Question[0].Qtype = dns.TypePTR
	}
	b, err := m.Pack()
	if err != nil {
		return
	}
	s.conn.WriteToUDPAddrPort(b, netip.AddrPortFrom(MDNSGroup, MDNSPort))
}

func records(m *dns.Msg) []dns.RR {
	return slices.Concat(m.Answer, m.Ns, m.Extra)
}

// Packets is every message heard so far (from others).
func (s *Sniffer) Packets() []Packet {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.packets)
}

// Leaks returns, for each secret (a peer ID, an address) that appears in a
// record of a message heard, one line saying where. Records are read as
// text, so a peer ID in a TXT dnsaddr, an address in an A record or a TXT
// all count.
func (s *Sniffer) Leaks(secrets ...string) []string {
	var out []string
	for _, p := range s.Packets() {
		for _, rr := range records(p.Msg) {
			text := rr.String()
			for _, sec := range secrets {
				if sec != "" && strings.Contains(text, sec) {
					out = append(out, fmt.Sprintf("%s in a record from %s: %s", sec, p.From.Addr(), text))
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Services are the service names the sniffer saw asked for or announced.
func (s *Sniffer) Services() []string {
	var out []string
	for _, p := range s.Packets() {
		for _, q := range p.Msg.Question {
			out = append(out, q.Name)
		}
		for _, rr := range records(p.Msg) {
			if ptr, ok := rr.(*dns.PTR); ok {
				out = append(out, ptr.Hdr.Name)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Close stops the sniffer.
func (s *Sniffer) Close() {
	select {
	case <-s.stop:
		return
	default:
	}
	close(s.stop)
	s.conn.Close()
	s.done.Wait()
}
