// Package netns builds small networks of Linux network namespaces — hosts,
// LANs (bridges), NAT routers, links that can be cut — and runs real mcpmesh
// daemons on them, so that tests see what loopback hides: separate
// addresses, networks that do not route to each other, NAT, partitions.
//
// A Lab belongs to one test. Everything it makes is named after the test
// process (mmlab-PID-…) and removed in the test's cleanup, even when the
// test fails; namespaces of an earlier run that was killed are removed by
// RemoveStale. Building a Lab needs root, iproute2's ip and nftables' nft.
//
//	lab := netns.New(t, netns.Options{Binary: mcpmeshBinary})
//	inet := lab.LAN("inet", "16.0.0.0/24")                         // "internet": public-looking
//	home := lab.NATLAN("home", "192.168.1.0/24", inet, netns.PortPreserving)
//	r := lab.Host("r", inet).Start("--relay-service", "on")
//	c := lab.Host("c", home).Start("--peer", r.Addr(netns.TCP))
//	lab.Link(c, home).Cut() // a silent partition: packets dropped, link up
//
// The package's tests are the scenarios of issue 11; see README.md.
package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Prefix starts the name of every namespace a Lab makes, followed by the
// PID of the process that made it.
const Prefix = "mmlab-"

// Options configure a Lab.
type Options struct {
	// Binary is the mcpmesh command the lab's daemons run (required to
	// start daemons; see Build).
	Binary string
	// Env is added to every daemon's environment (e.g. GOLOG_LOG_LEVEL).
	Env []string
}

// Lab is one test's set of namespaces, links and daemons.
type Lab struct {
	t    testing.TB
	opts Options
	id   string // mmlab-PID-N
	dir  string // homes and logs

	mu      sync.Mutex
	nss     []string // every namespace made, in order
	lans    map[string]*LAN
	hosts   map[string]*Host
	ports   int // bridge ports made
	daemons []*Daemon
	cables  []*cable
}

var labSeq atomic.Int64 // unique lab numbers within this process

// Available reports why labs cannot be built here, or nil if they can:
// root, ip and nft are needed.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root (run the tests as root, e.g. in CI)")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed (apt-get install iproute2 nftables)", tool)
		}
	}
	return nil
}

// New makes an empty lab for t, or ends t if labs cannot be built here:
// t.Skip on a developer's machine, t.Fatal when CI=true (CI must not hide a
// missing prerequisite).
func New(t testing.TB, opts Options) *Lab {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("netns: %v (CI=true: a missing prerequisite fails)", err)
		}
		t.Skipf("netns: %v", err)
	}
	l := &Lab{
		t:     t,
		opts:  opts,
		id:    fmt.Sprintf("%s%d-%d", Prefix, os.Getpid(), labSeq.Add(1)),
		dir:   t.TempDir(),
		lans:  map[string]*LAN{},
		hosts: map[string]*Host{},
	}
	// The switch: one namespace holding every LAN's bridge, so that the
	// test touches nothing in the machine's own namespace.
	l.addNS(l.switchNS())
	t.Cleanup(l.close)
	return l
}

// Dir is the folder holding the lab's homes and logs (removed after the
// test).
func (l *Lab) Dir() string { return l.dir }

func (l *Lab) switchNS() string { return l.id + "-sw" }

func (l *Lab) addNS(ns string) {
	l.t.Helper()
	l.must("ip", "netns", "add", ns)
	l.mu.Lock()
	l.nss = append(l.nss, ns)
	l.mu.Unlock()
	l.must("ip", "-n", ns, "link", "set", "lo", "up")
}

// must runs a command and ends the test if it fails.
func (l *Lab) must(name string, args ...string) string {
	l.t.Helper()
	out, err := run(name, args...)
	if err != nil {
		l.t.Fatalf("netns: %v", err)
	}
	return out
}

// nft loads an nftables script into namespace ns.
func (l *Lab) nft(ns, script string) error {
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %v: %s\nscript:\n%s", ns, err, bytes.TrimSpace(out), script)
	}
	return nil
}

func run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// close stops every daemon, kills whatever still runs in the lab's
// namespaces (programs a killed daemon left behind) and deletes them.
func (l *Lab) close() {
	l.mu.Lock()
	daemons, nss, cables := l.daemons, l.nss, l.cables
	l.mu.Unlock()
	if l.t.Failed() {
		for _, d := range daemons {
			l.t.Logf("--- log of %s (%s), last lines:\n%s", d.name, d.logPath, d.Tail(40))
		}
	}
	var wg sync.WaitGroup
	for _, d := range daemons {
		wg.Add(1)
		go func() { defer wg.Done(); d.stop(3 * time.Second) }()
	}
	wg.Wait()
	for _, c := range cables {
		c.close()
	}
	for i := len(nss) - 1; i >= 0; i-- {
		if err := removeNS(nss[i]); err != nil {
			l.t.Errorf("netns cleanup: %v", err)
		}
	}
}

// removeNS kills every process in ns and deletes it.
func removeNS(ns string) error {
	out, _ := run("ip", "netns", "pids", ns)
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	// The processes die asynchronously; deleting the name works at once
	// either way (the namespace goes with its last process).
	_, err := run("ip", "netns", "del", ns)
	return err
}

// RemoveStale deletes the namespaces (and kills their processes) left by
// labs of processes that no longer run: a test run killed before its
// cleanup. It returns what it removed.
func RemoveStale() ([]string, error) {
	out, err := run("ip", "netns", "list")
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, line := range strings.Split(out, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || !strings.HasPrefix(fields[0], Prefix) {
			continue
		}
		ns := fields[0]
		pid, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(ns, Prefix), "-", 2)[0])
		if err == nil && processAlive(pid) {
			continue // another run's lab, in use
		}
		if err := removeNS(ns); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, ns)
	}
	return removed, errors.Join(errs...)
}

// processAlive reports whether pid runs a Go test binary (a lab's owner);
// a reused PID running something else counts as gone.
func processAlive(pid int) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return false
	}
	return strings.HasSuffix(strings.TrimSuffix(exe, " (deleted)"), ".test")
}

// LAN is a broadcast segment: a bridge in the lab's switch namespace.
type LAN struct {
	lab     *Lab
	name    string
	bridge  string
	prefix  netip.Prefix
	next    netip.Addr // the next address to hand out
	gateway netip.Addr // the NAT router's address on this LAN, if any
	nat     *Host
	cable   *Cable // what links attached from now on add (SetCable)
}

// LAN makes a segment with the IPv4 subnet cidr (e.g. "16.0.0.0/24").
// Addresses are handed out from .2; .1 is kept for a router.
func (l *Lab) LAN(name, cidr string) *LAN {
	l.t.Helper()
	p, err := netip.ParsePrefix(cidr)
	if err != nil || !p.Addr().Is4() || p.Bits() > 29 {
		l.t.Fatalf("netns: LAN %s: %q is not an IPv4 subnet of at least 8 addresses", name, cidr)
	}
	p = p.Masked()
	l.mu.Lock()
	if _, dup := l.lans[name]; dup {
		l.mu.Unlock()
		l.t.Fatalf("netns: two LANs named %s", name)
	}
	lan := &LAN{lab: l, name: name, bridge: fmt.Sprintf("br%d", len(l.lans)), prefix: p,
		next: p.Addr().Next().Next()}
	l.lans[name] = lan
	l.mu.Unlock()
	sw := l.switchNS()
	l.must("ip", "-n", sw, "link", "add", lan.bridge, "type", "bridge")
	l.must("ip", "-n", sw, "link", "set", lan.bridge, "up")
	return lan
}

// Name is the LAN's name.
func (n *LAN) Name() string { return n.name }

// Prefix is the LAN's subnet.
func (n *LAN) Prefix() netip.Prefix { return n.prefix }

// NAT is the router that joins the LAN to its outside, if it has one.
func (n *LAN) NAT() *Host { return n.nat }

func (n *LAN) allocate() netip.Addr {
	n.lab.mu.Lock()
	defer n.lab.mu.Unlock()
	a := n.next
	if !n.prefix.Contains(a.Next()) { // keep the broadcast address
		n.lab.t.Fatalf("netns: LAN %s is full", n.name)
	}
	n.next = a.Next()
	return a
}

// NATKind is how a NAT router maps its inside hosts' connections.
type NATKind int

const (
	// PortPreserving keeps a connection's source port when it is free
	// (Linux's MASQUERADE): one outside port per inside socket whatever
	// the destination, the kind of NAT hole punching gets through.
	PortPreserving NATKind = iota
	// Symmetric picks a random outside port for every connection
	// (MASQUERADE --random-fully): the mapping depends on the destination,
	// so a peer cannot predict it and hole punching fails.
	Symmetric
)

func (k NATKind) String() string {
	if k == Symmetric {
		return "symmetric"
	}
	return "port-preserving"
}

// NATLAN makes a LAN behind a NAT router: a host "NAME-nat" with address .1
// on the LAN and one on outside, forwarding and masquerading the LAN's
// traffic. Hosts attached to the LAN get it as their default route. Like a
// home router without port forwarding, it passes nothing in that the inside
// did not start (conntrack), and it drops what is sent to itself unasked.
// The second matters for hole punching: a Linux router that lets an
// unsolicited packet reach its own stack (to answer with ICMP "port
// unreachable") records a connection for it, and the inside's own packet
// to the same peer then gets another source port: the simultaneous open of
// DCUtR fails between two such routers even when they preserve ports.
func (l *Lab) NATLAN(name, cidr string, outside *LAN, kind NATKind) *LAN {
	l.t.Helper()
	lan := l.LAN(name, cidr)
	r := l.newHost(name + "-nat")
	gw := lan.prefix.Addr().Next()
	inIf := r.attach(lan, gw)
	outIf := r.attach(outside, outside.allocate())
	l.must("ip", "netns", "exec", r.ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	random := ""
	if kind == Symmetric {
		random = " fully-random"
	}
	// Masquerade what leaves by the outside; forward only the inside's
	// connections and their replies.
	err := l.nft(r.ns, fmt.Sprintf(`table ip nat {
	chain nat_out { type nat hook postrouting priority srcnat; policy accept;
		oifname %[1]q masquerade%[2]s
	}
}
table ip filter {
	chain guard { type filter hook forward priority filter; policy drop;
		ct state established,related accept
		iifname %[3]q oifname %[4]q accept
	}
	chain inbound { type filter hook input priority filter; policy drop;
		ct state established,related accept
		iifname { "lo", %[3]q } accept
	}
}
`, outIf, random, inIf, outIf))
	if err != nil {
		l.t.Fatalf("netns: NAT %s: %v", name, err)
	}
	lan.gateway = gw
	lan.nat = r
	return lan
}

// Host is a namespace: one machine with an address on each LAN it is
// attached to.
type Host struct {
	lab   *Lab
	name  string
	ns    string
	mu    sync.Mutex
	links []*Link
}

// Link is a host's attachment to a LAN: a veth pair, one end in the host,
// the other a port of the LAN's bridge.
type Link struct {
	host  *Host
	lan   *LAN
	iface string // in the host
	port  string // in the switch namespace
	addr  netip.Addr
	mu    sync.Mutex
	cut   bool
}

// Host makes a host attached to the given LANs, in order (eth0, eth1, …).
// Its default route goes through the first of them that has a NAT router.
func (l *Lab) Host(name string, lans ...*LAN) *Host {
	l.t.Helper()
	h := l.newHost(name)
	routed := false
	for _, lan := range lans {
		h.attach(lan, lan.allocate())
		if !routed && lan.gateway.IsValid() {
			l.must("ip", "-n", h.ns, "route", "add", "default", "via", lan.gateway.String())
			routed = true
		}
	}
	return h
}

func (l *Lab) newHost(name string) *Host {
	l.t.Helper()
	l.mu.Lock()
	if _, dup := l.hosts[name]; dup {
		l.mu.Unlock()
		l.t.Fatalf("netns: two hosts named %s", name)
	}
	h := &Host{lab: l, name: name, ns: l.id + "-" + name}
	l.hosts[name] = h
	l.mu.Unlock()
	l.addNS(h.ns)
	return h
}

// attach links h to lan with address addr and returns the interface name.
func (h *Host) attach(lan *LAN, addr netip.Addr) string {
	l := h.lab
	l.t.Helper()
	h.mu.Lock()
	iface := fmt.Sprintf("eth%d", len(h.links))
	l.mu.Lock()
	l.ports++
	port := fmt.Sprintf("p%d", l.ports)
	cfg := lan.cable
	l.mu.Unlock()
	link := &Link{host: h, lan: lan, iface: iface, port: port, addr: addr}
	h.links = append(h.links, link)
	h.mu.Unlock()
	sw := l.switchNS()
	if cfg != nil {
		c, err := newCable(*cfg, h.ns, iface, sw, port)
		if err != nil {
			l.t.Fatalf("netns: cable %s–%s: %v", h.name, lan.name, err)
		}
		l.mu.Lock()
		l.cables = append(l.cables, c)
		l.mu.Unlock()
	} else {
		l.must("ip", "-n", h.ns, "link", "add", iface, "type", "veth", "peer", "name", port, "netns", sw)
	}
	l.must("ip", "-n", sw, "link", "set", port, "master", lan.bridge, "up")
	l.must("ip", "-n", h.ns, "addr", "add", fmt.Sprintf("%s/%d", addr, lan.prefix.Bits()), "dev", iface)
	l.must("ip", "-n", h.ns, "link", "set", iface, "up")
	return iface
}

// Name is the host's name in the lab.
func (h *Host) Name() string { return h.name }

// Namespace is the name of the host's network namespace.
func (h *Host) Namespace() string { return h.ns }

// Addr is the host's address on lan.
func (h *Host) Addr(lan *LAN) netip.Addr {
	if l := h.Link(lan); l != nil {
		return l.addr
	}
	return netip.Addr{}
}

// Addrs are the host's addresses, one per LAN.
func (h *Host) Addrs() []netip.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []netip.Addr
	for _, l := range h.links {
		out = append(out, l.addr)
	}
	return out
}

// Link is the host's attachment to lan, or nil.
func (h *Host) Link(lan *LAN) *Link {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, l := range h.links {
		if l.lan == lan {
			return l
		}
	}
	return nil
}

// Exec runs a command in the host's namespace and returns its combined
// output.
func (h *Host) Exec(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.ns, name}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s on %s: %v: %s", name, h.name, err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// Cut drops every frame to and from the host on this link, in the LAN's
// switch: both ends keep their link up and learn nothing from the kernel,
// as when a cable far away is pulled or a firewall starts dropping.
// Established connections stall until something notices.
func (k *Link) Cut() {
	l := k.host.lab
	l.t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cut {
		return
	}
	err := l.nft(l.switchNS(), fmt.Sprintf(`table bridge cut_%[1]s {
	chain cut { type filter hook forward priority 0; policy accept;
		iifname %[1]q drop
		oifname %[1]q drop
	}
}
`, k.port))
	if err != nil {
		l.t.Fatalf("netns: cut %s–%s: %v", k.host.name, k.lan.name, err)
	}
	k.cut = true
}

// Heal undoes Cut.
func (k *Link) Heal() {
	l := k.host.lab
	l.t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.cut {
		return
	}
	if _, err := run("ip", "netns", "exec", l.switchNS(), "nft", "delete", "table", "bridge", "cut_"+k.port); err != nil {
		l.t.Fatalf("netns: heal %s–%s: %v", k.host.name, k.lan.name, err)
	}
	k.cut = false
}

// Shape limits the link to rate (tc's syntax: "2mbit") in each direction,
// with a token bucket (tbf) on the host's interface and on the switch's
// port whose queue holds latency's worth of packets: a slow link with the
// buffer of a home router or modem.
func (k *Link) Shape(rate string, latency time.Duration) {
	l := k.host.lab
	l.t.Helper()
	lat := fmt.Sprintf("%dms", latency.Milliseconds())
	l.must("ip", "netns", "exec", k.host.ns, "tc", "qdisc", "replace", "dev", k.iface, "root", "tbf", "rate", rate, "burst", "16kb", "latency", lat)
	l.must("ip", "netns", "exec", l.switchNS(), "tc", "qdisc", "replace", "dev", k.port, "root", "tbf", "rate", rate, "burst", "16kb", "latency", lat)
}

// String names the link.
func (k *Link) String() string { return k.host.name + "–" + k.lan.name }

// dirFor is a folder in the lab's directory.
func (l *Lab) dirFor(parts ...string) string {
	p := filepath.Join(append([]string{l.dir}, parts...)...)
	os.MkdirAll(p, 0o700)
	return p
}
