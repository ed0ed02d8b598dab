package transport_test

import (
	"bytes"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mcpmesh/mcpmesh/mcp/transport"
)

type countSigns struct{ n atomic.Int64 }

func (c *countSigns) Alive() { c.n.Add(1) }

// A conn with Signs tells them of every read that brings bytes and of each
// chunk of a large frame it writes; small frames tell nothing (a buffer
// takes them whether the peer is there or not).
func TestConnTellsSignsOfLife(t *testing.T) {
	here, there := net.Pipe()
	defer here.Close()
	defer there.Close()
	c := transport.NewPipeConn(here, "peer", 0)
	signs := &countSigns{}
	c.SetSigns(signs)

	small := []byte(`{"jsonrpc":"2.0","method":"notifications/progress"}`)
	large := []byte(`{"jsonrpc":"2.0","method":"x","params":{"t":"` + strings.Repeat("y", 200<<10) + `"}}`)
	want := append(append(append(append([]byte(nil), small...), '\n'), large...), '\n')
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, len(want))
		n, _ := io.ReadFull(there, b)
		got <- b[:n]
	}()
	if err := c.WriteFrame(append([]byte(nil), small...)); err != nil {
		t.Fatal(err)
	}
	if n := signs.n.Load(); n != 0 {
		t.Fatalf("a small frame written told %d signs, want none", n)
	}
	if err := c.WriteFrame(append([]byte(nil), large...)); err != nil {
		t.Fatal(err)
	}
	if n := signs.n.Load(); n < 6 {
		t.Fatalf("a %d-byte frame written told %d signs, want one per 32 KiB", len(large), n)
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("the frames arrived changed (%d bytes, want %d)", len(b), len(want))
	}

	before := signs.n.Load()
	go there.Write([]byte("{\"jsonrpc\":\"2.0\",\"method\":\"m\"}\n"))
	if _, err := c.ReadFrame(); err != nil {
		t.Fatal(err)
	}
	if signs.n.Load() == before {
		t.Fatal("bytes read from the peer told no sign of life")
	}
}
