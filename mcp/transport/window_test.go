package transport

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// frameStream hands out one frame per Read, and logs its reads and writes.
type frameStream struct {
	network.Stream
	mu     sync.Mutex
	frames []string
	log    []string
}

func (s *frameStream) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.frames) == 0 {
		return 0, io.EOF
	}
	f := s.frames[0]
	s.frames = s.frames[1:]
	s.log = append(s.log, "read "+f[:len(f)-1])
	return copy(p, f), nil
}

func (s *frameStream) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = append(s.log, "write")
	return len(p), nil
}

func (s *frameStream) Close() error       { return nil }
func (s *frameStream) Reset() error       { return nil }
func (s *frameStream) Conn() network.Conn { return fakeConn{} }

func (s *frameStream) read(f string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.log {
		if l == "read "+f {
			return true
		}
	}
	return false
}

// At its window, a conn reads no further frame until one of the requests
// in flight is answered: the peer waits, nothing is refused.
func TestWindowStopsReadingUntilAnAnswer(t *testing.T) {
	req := func(id int) string {
		return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"x"}}`+"\n", id)
	}
	s := &frameStream{frames: []string{req(1), req(2), req(3)}}
	c := NewConn(s, 0)
	c.SetGuard(Guard{Window: 2})
	ctx := context.Background()
	var ids []jsonrpc.ID
	for range 2 {
		m, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.(*jsonrpc.Request).ID)
	}
	third := make(chan jsonrpc.Message, 1)
	go func() {
		m, _ := c.Read(ctx)
		third <- m
	}()
	// Wait until the third read either took the frame (wrong) or waits.
	deadline := time.Now().Add(3 * time.Second)
	for !s.read(req(3)[:len(req(3))-1]) {
		c.fl.mu.Lock()
		waiting := c.fl.waiting
		c.fl.mu.Unlock()
		if waiting == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the third read neither read nor waited")
		}
		time.Sleep(time.Millisecond)
	}
	if s.read(req(3)[:len(req(3))-1]) {
		t.Fatalf("the third request was read with two in flight (window 2): %q", s.log)
	}
	if err := c.Write(ctx, &jsonrpc.Response{ID: ids[0], Result: json.RawMessage("{}")}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-third:
		if m == nil {
			t.Fatal("no third request")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the third request was not read after an answer")
	}
	// (The answer frees the window before its bytes are written, so the
	// third read may log before the write: what matters, that it was not
	// read before the answer, was checked above.)
	c.Close()
}
