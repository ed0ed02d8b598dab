package netns

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Cable is what a LAN's links add to every frame, each way: the kernel
// here has no sch_netem, so a link with a cable is a pair of TAP devices
// (one in the host, one a port of the LAN's bridge) with the frames carried
// between them by the test process.
type Cable struct {
	// Delay is added to every frame in each direction: a host-to-host
	// round trip across the LAN takes 4×Delay.
	Delay time.Duration
	// Loss is the probability that a frame is dropped, in each direction.
	Loss float64
}

// SetCable makes every link attached to the LAN from now on a cable with
// c's delay and loss (links attached before keep theirs).
func (n *LAN) SetCable(c Cable) {
	n.lab.mu.Lock()
	defer n.lab.mu.Unlock()
	n.cable = &c
}

// cable carries frames between two TAP devices.
type cable struct {
	cfg      Cable
	host, sw *os.File
	wg       sync.WaitGroup
	queued   int // frames in flight per direction at most
}

// openTAP creates TAP device name in namespace ns and returns its file.
func openTAP(ns, name string) (*os.File, error) {
	var f *os.File
	err := doIn(ns, name, func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("create TAP %s: %w", name, err)
		}
		f = os.NewFile(uintptr(fd), name) // non-blocking: Close ends a Read
		return nil
	})
	return f, err
}

func newCable(cfg Cable, hostNS, iface, swNS, port string) (*cable, error) {
	h, err := openTAP(hostNS, iface)
	if err != nil {
		return nil, err
	}
	s, err := openTAP(swNS, port)
	if err != nil {
		h.Close()
		return nil, err
	}
	c := &cable{cfg: cfg, host: h, sw: s, queued: 4096}
	c.wg.Add(2)
	go c.pump(h, s)
	go c.pump(s, h)
	return c, nil
}

type frame struct {
	b   []byte
	due time.Time
}

// pump carries frames from one end to the other, each delayed by
// cfg.Delay (their order kept) or dropped with probability cfg.Loss, or
// when more than c.queued are in flight (a full queue). It returns when
// either end is closed.
func (c *cable) pump(from, to *os.File) {
	defer c.wg.Done()
	q := make(chan frame, c.queued)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for f := range q {
			if d := time.Until(f.due); d > 0 {
				time.Sleep(d)
			}
			to.Write(f.b) // an error is a frame lost; Close ends the reader
		}
	}()
	buf := make([]byte, 65536)
	for {
		n, err := from.Read(buf)
		if err != nil {
			break
		}
		if c.cfg.Loss > 0 && rand.Float64() < c.cfg.Loss {
			continue
		}
		select {
		case q <- frame{b: append([]byte(nil), buf[:n]...), due: time.Now().Add(c.cfg.Delay)}:
		default:
		}
	}
	close(q)
	<-done
}

func (c *cable) close() {
	c.host.Close()
	c.sw.Close()
	c.wg.Wait()
}
