package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// bufStream hands out what r holds, as fast as it is read, and keeps
// what is written.
type bufStream struct {
	network.Stream
	r    io.Reader
	read atomic.Int64
	mu   sync.Mutex
	out  bytes.Buffer
}

func (s *bufStream) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.read.Add(int64(n))
	return n, err
}

func (s *bufStream) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.Write(p)
}

func (s *bufStream) Close() error       { return nil }
func (s *bufStream) Reset() error       { return nil }
func (s *bufStream) Conn() network.Conn { return fakeConn{} }

func (s *bufStream) written() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// A peer that sends more requests than the window without waiting for
// answers has those past the window refused, each with an error answer
// carrying its id and a strike; what is let through never makes more than
// the window outstanding.
func TestPipelinedPastTheWindowIsRefused(t *testing.T) {
	var frames strings.Builder
	for id := 1; id <= 20; id++ {
		fmt.Fprintf(&frames, `{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"x"}}`+"\n", id)
	}
	s := &bufStream{r: strings.NewReader(frames.String())}
	c := NewConn(s, 0)
	c.SetGuard(Guard{Window: 8, Paced: 2})
	var strikes atomic.Int32
	c.onBad = func(error) { strikes.Add(1) }
	ctx := context.Background()
	var admitted []jsonrpc.ID
	total := 0
	// Read until every request is admitted or refused (a read past the
	// last would wait for the answers at the end of the stream).
	for total+strings.Count(s.written(), `"code":-32031`) < 20 {
		m, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		admitted = append(admitted, m.(*jsonrpc.Request).ID)
		total++
		if len(admitted) > 8 {
			t.Fatalf("%d requests in flight, window 8", len(admitted))
		}
		// At the window, answer them all, so that reading goes on.
		if len(admitted) == 8 {
			for _, id := range admitted {
				if err := c.Write(ctx, &jsonrpc.Response{ID: id, Result: json.RawMessage("{}")}); err != nil {
					t.Fatal(err)
				}
			}
			admitted = nil
		}
	}
	out := s.written()
	refused := strings.Count(out, `"code":-32031`)
	if refused == 0 || !strings.Contains(out, "more than 8 sent on this session and not answered") {
		t.Fatalf("no request refused past the window:\n%s", out)
	}
	if int(strikes.Load()) != refused {
		t.Errorf("%d refused, %d strikes", refused, strikes.Load())
	}
	if !strings.Contains(out, `{"jsonrpc":"2.0","id":2,"error":{"code":-32031`) {
		t.Errorf("the first refusal does not carry the id sent:\n%s", out)
	}
	c.Close()
}

// A frame past LargeFrame is read under the Guard's gate: while one
// session reads a large frame, another's large frame waits, unread, and
// goes on once the first is done.
func TestLargeFramesTakeTurnsAtTheGate(t *testing.T) {
	g := NewGate(1, 0)
	large := func(n int) string {
		return `{"jsonrpc":"2.0","method":"x","params":{"pad":"` + strings.Repeat("a", n) + `"}}`
	}
	// A's frame arrives in part, and the rest when the test says.
	pr, pw := io.Pipe()
	a := NewConn(&bufStream{r: pr}, 0)
	a.SetGuard(Guard{Large: g})
	bStream := &bufStream{r: strings.NewReader(large(400<<10) + "\n")}
	b := NewConn(bStream, 0)
	b.SetGuard(Guard{Large: g})
	defer a.Close()
	defer b.Close()

	aDone, bDone := make(chan error, 1), make(chan error, 1)
	go func() { _, err := a.ReadFrame(); aDone <- err }()
	first := large(200 << 10)
	if _, err := pw.Write([]byte(first[:100<<10])); err != nil {
		t.Fatal(err)
	}
	// A holds the gate once it is past LargeFrame.
	for deadline := time.Now().Add(10 * time.Second); len(g.slots) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("A never entered the gate")
		}
	}
	go func() { _, err := b.ReadFrame(); bDone <- err }()
	for deadline := time.Now().Add(10 * time.Second); bStream.read.Load() <= LargeFrame; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("B never read up to the gate")
		}
	}
	select {
	case err := <-bDone:
		t.Fatalf("B read its large frame while A held the gate (%v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	if n := bStream.read.Load(); n > LargeFrame+32<<10 {
		t.Errorf("B read %d bytes while waiting at the gate", n)
	}
	if _, err := pw.Write([]byte(first[100<<10:] + "\n")); err != nil {
		t.Fatal(err)
	}
	for _, done := range []chan error{aDone, bDone} {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a large frame was not read once the gate was free")
		}
	}
	if len(g.slots) != 0 {
		t.Error("the gate is still held after both frames")
	}
	pw.Close()
}

// A gate with a rate reads large frames no faster than it.
func TestGatePacesLargeFrames(t *testing.T) {
	const rate = 4 << 20
	g := NewGate(1, rate)
	frame := `{"jsonrpc":"2.0","method":"x","params":{"pad":"` + strings.Repeat("a", 1<<20) + `"}}` + "\n"
	c := NewConn(&bufStream{r: strings.NewReader(frame)}, 0)
	c.SetGuard(Guard{Large: g})
	defer c.Close()
	start := time.Now()
	if _, err := c.ReadFrame(); err != nil {
		t.Fatal(err)
	}
	// Past LargeFrame and the gate's burst, the rest at the rate.
	paced := len(frame) - LargeFrame - g.rate.Burst()
	if took, least := time.Since(start), time.Duration(float64(paced)/rate*float64(time.Second)); took < least {
		t.Errorf("a %d-byte frame read in %v, at %d B/s it takes at least %v", len(frame), took, rate, least)
	}
}

// AwaitRequest returns once the peer sends something other than blank
// lines, which is then read as usual; a stream of blank lines that ends
// is an error.
func TestAwaitRequest(t *testing.T) {
	req := `{"jsonrpc":"2.0","id":1,"method":"ping"}`
	c := NewConn(&bufStream{r: strings.NewReader("\n \r\n\t" + req + "\n")}, 0)
	if err := c.AwaitRequest(); err != nil {
		t.Fatal(err)
	}
	m, err := c.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := m.(*jsonrpc.Request); !ok || r.Method != "ping" {
		t.Fatalf("read %#v after AwaitRequest", m)
	}
	c.Close()

	silent := NewConn(&bufStream{r: strings.NewReader("\n\n")}, 0)
	if err := silent.AwaitRequest(); !errors.Is(err, io.EOF) {
		t.Fatalf("blank lines then the end: %v, want io.EOF", err)
	}
	silent.Close()
}

// A stream that has not spoken holds a small read buffer, not the full
// one (a flood of silent streams is a flood of buffers: 16 KiB each made
// a tenth of the node's CPU under bench/attack's 2-idle-streams); its
// first frame gets the full buffer, and what the small one read ahead,
// here part of a frame longer than it, is read intact.
func TestSilentConnHoldsASmallBuffer(t *testing.T) {
	long := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"` + strings.Repeat("x", 3*silentBuffer) + `"}}}`
	ping := `{"jsonrpc":"2.0","id":2,"method":"ping"}`
	c := NewConn(&bufStream{r: strings.NewReader("\n\n" + long + "\n" + ping + "\n")}, 0)
	defer c.Close()
	if n := c.r.Size(); n > silentBuffer {
		t.Fatalf("a conn that has not spoken holds a %d-byte read buffer, want at most %d", n, silentBuffer)
	}
	if err := c.AwaitRequest(); err != nil {
		t.Fatal(err)
	}
	if n := c.r.Size(); n > silentBuffer {
		t.Fatalf("after AwaitRequest, a %d-byte read buffer, want at most %d until the first frame", n, silentBuffer)
	}
	for _, want := range []struct {
		id     int64
		method string
	}{{1, "tools/call"}, {2, "ping"}} {
		m, err := c.Read(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		r, ok := m.(*jsonrpc.Request)
		if !ok || r.Method != want.method || r.ID.Raw() != want.id {
			t.Fatalf("read %#v, want the request %d (%s)", m, want.id, want.method)
		}
		if want.id == 1 && !strings.Contains(string(r.Params), strings.Repeat("x", 3*silentBuffer)) {
			t.Fatal("the first frame, read partly by the small buffer, came back cut")
		}
	}
	if n := c.r.Size(); n != 16<<10 {
		t.Errorf("after the first frame, a %d-byte read buffer, want the full %d", n, 16<<10)
	}
}
