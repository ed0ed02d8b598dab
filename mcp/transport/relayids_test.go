package transport

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// A relay's conn answers a request that reuses an id in flight, or has a
// null id, instead of passing it on; once the first is answered its id may
// be used again.
func TestTrackRequestIDsRefusesAnIDInFlight(t *testing.T) {
	peer, mine := net.Pipe()
	defer peer.Close()
	c := NewPipeConn(mine, "peer", 0)
	defer c.Close()
	var bad []string
	c.OnBadFrame(func(err error) { bad = append(bad, err.Error()) })
	c.TrackRequestIDs()
	answers := bufio.NewReader(peer)
	readAnswer := func() string {
		t.Helper()
		peer.SetReadDeadline(time.Now().Add(3 * time.Second))
		line, err := answers.ReadString('\n')
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		return line
	}
	frames := make(chan string, 8)
	go func() {
		defer close(frames)
		for {
			f, err := c.ReadFrame()
			if err != nil {
				return
			}
			frames <- string(f)
		}
	}()
	send := func(s string) {
		t.Helper()
		if _, err := peer.Write([]byte(s + "\n")); err != nil {
			t.Fatal(err)
		}
	}
	next := func() string {
		t.Helper()
		select {
		case f := <-frames:
			return f
		case <-time.After(3 * time.Second):
			t.Fatal("no frame passed on")
			return ""
		}
	}
	send(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{}}`)
	if f := next(); !strings.Contains(f, `"id":7`) {
		t.Fatalf("first request: %s", f)
	}
	send(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{}}`)
	if a := readAnswer(); !strings.Contains(a, `"id":7`) || !strings.Contains(a, "already in use") {
		t.Fatalf("a reused id in flight: %s, want an error answer", a)
	}
	send(`{"jsonrpc":"2.0","id":null,"method":"ping"}`)
	if a := readAnswer(); !strings.Contains(a, `"id":null`) || !strings.Contains(a, "null id") {
		t.Fatalf("a null id: %s, want an error answer", a)
	}
	// The answer to 7 goes back (as the other end spells it); 7 is free again.
	go c.WriteFrame([]byte(`{"jsonrpc":"2.0","result":{},"id":7}`))
	if a := readAnswer(); !strings.Contains(a, `"result"`) {
		t.Fatalf("the answer to 7: %s", a)
	}
	send(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{}}`)
	if f := next(); !strings.Contains(f, `"id":7`) {
		t.Fatalf("7 after its answer: %s", f)
	}
	if len(bad) != 2 {
		t.Errorf("bad frames counted: %q, want the reused id and the null one", bad)
	}
}
