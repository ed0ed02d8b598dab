// Package cable is a TCP link for tests that can be cut silently: a
// forwarder from a local port to a target address that, once frozen, stops
// moving bytes without closing anything, as a partition that drops packets
// does. Thawed, it moves them again (including those it held).
package cable

import (
	"net"
	"sync"
	"sync/atomic"
)

// Cable forwards every connection made to Addr to the target.
type Cable struct {
	ln     net.Listener
	target string
	dialer *net.Dialer
	bytes  atomic.Int64

	mu     sync.Mutex
	thawed chan struct{} // closed while the cable forwards; open while frozen
	conns  map[net.Conn]struct{}
	closed chan struct{}
	wg     sync.WaitGroup
}

// New listens on a free loopback port and forwards to target, dialing it
// with dialer (nil: the default, from any local address).
func New(target string, dialer *net.Dialer) (*Cable, error) {
	if dialer == nil {
		dialer = &net.Dialer{}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	thawed := make(chan struct{})
	close(thawed)
	c := &Cable{ln: ln, target: target, dialer: dialer, thawed: thawed, conns: map[net.Conn]struct{}{}, closed: make(chan struct{})}
	c.wg.Add(1)
	go c.accept()
	return c, nil
}

// Addr is where the cable listens (host:port).
func (c *Cable) Addr() *net.TCPAddr { return c.ln.Addr().(*net.TCPAddr) }

// Bytes is how many bytes the cable has moved, both ways.
func (c *Cable) Bytes() int64 { return c.bytes.Load() }

// Freeze stops moving bytes; connections stay open, new ones are accepted
// and not connected onwards.
func (c *Cable) Freeze() {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.thawed:
		c.thawed = make(chan struct{})
	default:
	}
}

// Thaw moves bytes again.
func (c *Cable) Thaw() {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.thawed:
	default:
		close(c.thawed)
	}
}

// wait blocks while the cable is frozen; false once it is closed.
func (c *Cable) wait() bool {
	c.mu.Lock()
	ch := c.thawed
	c.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-c.closed:
		return false
	}
}

// Close closes the listener and every connection, and waits for the
// forwarding goroutines.
func (c *Cable) Close() error {
	err := c.ln.Close()
	c.mu.Lock()
	select {
	case <-c.closed:
	default:
		close(c.closed)
	}
	for conn := range c.conns {
		conn.Close()
	}
	c.mu.Unlock()
	c.wg.Wait()
	return err
}

func (c *Cable) track(conn net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.closed:
		conn.Close()
		return false
	default:
	}
	c.conns[conn] = struct{}{}
	return true
}

func (c *Cable) untrack(conns ...net.Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range conns {
		conn.Close()
		delete(c.conns, conn)
	}
}

func (c *Cable) accept() {
	defer c.wg.Done()
	for {
		in, err := c.ln.Accept()
		if err != nil {
			return
		}
		if !c.track(in) {
			return
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			if !c.wait() {
				return
			}
			out, err := c.dialer.Dial("tcp", c.target)
			if err != nil {
				in.Close()
				return
			}
			if !c.track(out) {
				in.Close()
				return
			}
			c.wg.Add(2)
			go c.pipe(in, out)
			go c.pipe(out, in)
		}()
	}
}

// pipe copies src to dst while thawed; the end of either side ends both.
func (c *Cable) pipe(src, dst net.Conn) {
	defer c.wg.Done()
	defer c.untrack(src, dst)
	buf := make([]byte, 32<<10)
	for {
		if !c.wait() {
			return
		}
		n, err := src.Read(buf)
		if n > 0 {
			if !c.wait() { // bytes read just before a freeze are held
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			c.bytes.Add(int64(n))
		}
		if err != nil {
			return // the end (EOF, reset, close) of one side ends both
		}
	}
}
