package netns

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Scenario 1: one LAN, mDNS only. Peers find each other, find each
// other's tools through the DHT, and call them: the baseline that worked
// before issue 11.
func TestOneLANmDNS(t *testing.T) {
	lab := newLab(t)
	lan := lab.LAN("lan", "10.0.0.0/24")
	hc := lab.Host("c", lan)
	share, _ := withTool(t, hc)
	c := hc.Start(share...)
	a := lab.Host("a", lan).Start()

	took := waitFor(t, 15*time.Second, "a connects to c through mDNS", func() (bool, string) {
		ok, addrs := connected(t, a, c.ID())
		return ok, strings.Join(addrs, " ")
	})
	t.Logf("a connected to c %v after a was ready", took.Round(time.Millisecond))
	took = waitFor(t, 15*time.Second, "a finds c's tool", func() (bool, string) {
		r := cli(a, "find", "hello", "--timeout", "3s")
		return r.OK() && strings.Contains(r.Stdout, c.ID()), r.String()
	})
	t.Logf("a's find lists c's tool %v later", took.Round(time.Millisecond))
	r := cli(a, "call", c.ID(), "tool/hello")
	if !r.OK() || strings.TrimSpace(r.Stdout) != "hello from c" {
		t.Fatalf("call: %v", r)
	}
}

// Scenario 7: a private mesh seen from a sniffer on its LAN. Control: on an
// open mesh the sniffer reads the members' peer IDs and addresses from
// mDNS (so it listens, and asks, as an outsider would). A private mesh's
// members (mDNS off by default; they meet through --peer) must tell it
// nothing, whatever it asks. With --mdns they announce under a name derived
// from the key and meet on the LAN: the sniffer then learns who they are
// (documented: the name is no secret, the records are in the clear) but not
// that they run mcpmesh, or which mesh.
func TestPrivateMeshQuietOnLAN(t *testing.T) {
	for _, mode := range []string{"open mesh", "private mesh", "private mesh --mdns"} {
		t.Run(mode, func(t *testing.T) {
			private := mode != "open mesh"
			lab := newLab(t)
			lan := lab.LAN("lan", "10.0.0.0/24")
			ha, hb, hs := lab.Host("a", lan), lab.Host("b", lan), lab.Host("sniffer", lan)
			sn, err := hs.SniffMDNS()
			if err != nil {
				t.Fatal(err)
			}
			defer sn.Close()

			homeA, homeB := filepath.Join(lab.Dir(), "home-a"), filepath.Join(lab.Dir(), "home-b")
			if private {
				if out, err := exec.Command(binary, "--home", homeA, "init-mesh").CombinedOutput(); err != nil {
					t.Fatalf("init-mesh: %v: %s", err, out)
				}
				key, err := os.ReadFile(filepath.Join(homeA, "swarm.key"))
				if err != nil {
					t.Fatal(err)
				}
				os.MkdirAll(homeB, 0o700)
				if err := os.WriteFile(filepath.Join(homeB, "swarm.key"), key, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var args []string
			if mode == "private mesh --mdns" {
				args = []string{"--mdns"}
			}
			a := ha.StartAt(homeA, args...)
			if mode == "private mesh" {
				args = []string{"--peer", a.Addr(lan, TCP)} // no mDNS: they meet as told
			}
			b := hb.StartAt(homeB, args...)
			waitFor(t, 20*time.Second, "a and b meet", func() (bool, string) {
				ok, _ := connected(t, a, b.ID())
				return ok, "not connected"
			})
			secrets := []string{a.ID(), b.ID(), ha.Addr(lan).String(), hb.Addr(lan).String()}
			if mode == "private mesh --mdns" {
				waitFor(t, 10*time.Second, "the sniffer hears the members' service", func() (bool, string) {
					return len(sn.Packets()) > 0, "nothing heard"
				})
				time.Sleep(3 * time.Second) // a few rounds of questions
				for _, name := range sn.Services() {
					if strings.Contains(name, "mcpmesh") || strings.Contains(name, "_p2p.") {
						t.Errorf("a private mesh's mDNS says what it is: service %q", name)
					}
				}
				t.Logf("service names heard: %v; learned (as documented): %d records naming members", sn.Services(), len(sn.Leaks(secrets...)))
				return
			}
			if !private {
				waitFor(t, 10*time.Second, "the sniffer reads a member's peer ID", func() (bool, string) {
					leaks := sn.Leaks(a.ID(), b.ID())
					return len(leaks) > 0, strings.Join(sn.Services(), " ")
				})
				t.Logf("the sniffer learned: %s", strings.Join(sn.Leaks(secrets...), "\n"))
				return
			}
			// Nothing to wait for: listen and ask for a while, at least
			// ten rounds of the sniffer's questions (the open mesh above
			// answers the first one).
			time.Sleep(6 * time.Second)
			if leaks := sn.Leaks(secrets...); len(leaks) > 0 {
				t.Errorf("the sniffer, without the key, learned %d things about members:\n%s", len(leaks), strings.Join(leaks, "\n"))
			}
			t.Logf("service names heard: %v; %d messages from others", sn.Services(), len(sn.Packets()))
		})
	}
}
