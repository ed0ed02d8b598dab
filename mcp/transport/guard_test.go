package transport_test

import (
	"bufio"
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

	"github.com/mcpmesh/mcpmesh/mcp/transport"
)

// raw is a client that speaks JSON-RPC by hand on a stream, as a hostile
// peer would.
type raw struct {
	t *testing.T
	s network.Stream
	r *bufio.Reader
}

// answer is one message read back, its id kept as sent.
type answer struct {
	ID     json.RawMessage `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int64  `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Method string `json:"method"`
}

// String shows an answer as JSON-ish text, for failures.
func (a answer) String() string {
	if a.Error != nil {
		return fmt.Sprintf("{id %s, error %d %q}", a.ID, a.Error.Code, a.Error.Message)
	}
	return fmt.Sprintf("{id %s, result %.200s}", a.ID, a.Result)
}

// waitBlocked waits for a call of "block" to start.
func (f *fixture) waitBlocked() {
	f.t.Helper()
	select {
	case <-f.blocked:
	case <-time.After(3 * time.Second):
		f.t.Fatal("no call of block started")
	}
}

func (f *fixture) raw() *raw {
	f.t.Helper()
	c := &raw{t: f.t, s: f.stream()}
	c.r = bufio.NewReader(c.s)
	f.t.Cleanup(func() { c.s.Reset() })
	return c
}

// initialized opens a raw session that has done the MCP handshake.
func (f *fixture) initialized() *raw {
	c := f.raw()
	c.send(`{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
	if a := c.next(); string(a.ID) != `"init"` || a.Result == nil {
		f.t.Fatalf("initialize: %v", a)
	}
	c.send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	return c
}

func (c *raw) send(frames ...string) {
	c.t.Helper()
	if _, err := c.s.Write([]byte(strings.Join(frames, "\n") + "\n")); err != nil {
		c.t.Fatal(err)
	}
}

// next reads the next answer (skipping notifications), within 3 s.
func (c *raw) next() answer {
	c.t.Helper()
	a, err := c.tryNext()
	if err != nil {
		c.t.Fatalf("no answer: %v", err)
	}
	return a
}

func (c *raw) tryNext() (answer, error) {
	c.s.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		line, err := c.r.ReadBytes('\n')
		if err != nil {
			return answer{}, err
		}
		var a answer
		if err := json.Unmarshal(line, &a); err != nil {
			return answer{}, fmt.Errorf("answer %q: %w", line, err)
		}
		if a.Method == "" {
			return a, nil
		}
	}
}

func call(id, tool, text string) string {
	return `{"jsonrpc":"2.0","id":` + id + `,"method":"tools/call","params":{"name":"` + tool + `","arguments":{"text":"` + text + `"}}}`
}

// JSON-RPC 2.0: the answer carries the id of the request, whatever it was;
// the SDK's ids are int64 or string (1.5 would come back as 1, 30 digits
// as the smallest int64).
func TestIDsAreEchoedAsSent(t *testing.T) {
	f := newFixture(t, 0)
	c := f.initialized()
	ids := []string{`1.5`, `123456789012345678901234567890`, `9007199254740993`, `-0`, `1e3`, `"string"`, `"\u00e9t\u00e9"`, `"a\"b"`, `0`, `-7`}
	for _, id := range ids {
		c.send(call(id, "echo", "x"))
		if a := c.next(); string(a.ID) != id || a.Result == nil {
			t.Errorf("id %s came back as %s (%v)", id, a.ID, a)
		}
	}
	// Pipelined, and answered in any order: each with its own id.
	var frames []string
	want := map[string]bool{}
	for i := range 20 {
		id := fmt.Sprintf("%d.%d", i, i)
		frames = append(frames, call(id, "echo", "p"))
		want[id] = true
	}
	c.send(frames...)
	for range frames {
		a := c.next()
		if !want[string(a.ID)] {
			t.Errorf("unexpected id %s", a.ID)
		}
		delete(want, string(a.ID))
	}
}

// A request whose id is null, or whose id is that of a request still in
// flight, gets an error answer (the SDK leaves both unanswered), and the
// session goes on; each is a bad frame for the limits.
func TestNullAndReusedIDsAreAnswered(t *testing.T) {
	f := newFixture(t, 0)
	c := f.initialized()
	c.send(call("null", "echo", "x"))
	if a := c.next(); string(a.ID) != "null" || a.Error == nil || a.Error.Code != jsonrpc.CodeInvalidRequest || !strings.Contains(a.Error.Message, "null id") {
		t.Fatalf("null id: %v", a)
	}
	c.send(call("7", "block", "first"))
	f.waitBlocked()
	c.send(call("7", "echo", "second"))
	if a := c.next(); string(a.ID) != "7" || a.Error == nil || !strings.Contains(a.Error.Message, "already in use") {
		t.Fatalf("id 7 reused while in flight: %v", a)
	}
	f.release <- struct{}{}
	if a := c.next(); string(a.ID) != "7" || a.Result == nil || !strings.Contains(string(a.Result), "first") {
		t.Fatalf("the first request with id 7: %v", a)
	}
	// Answered, the id may be used again.
	c.send(call("7", "echo", "third"))
	if a := c.next(); string(a.ID) != "7" || !strings.Contains(string(a.Result), "third") {
		t.Fatalf("id 7 once free: %v", a)
	}
	if n := len(f.badFrames()); n != 2 {
		t.Errorf("%d bad frames reported, want 2: %v", n, f.badFrames())
	}
	f.noneEnded()
}

// A peer that sends its requests and closes its side of the stream still
// gets every answer, then the end of the stream.
func TestHalfClosedPeerGetsItsAnswers(t *testing.T) {
	f := newFixture(t, 0)
	for range 5 {
		c := f.initialized()
		c.send(call("1", "block", "a"), call("2", "echo", "b"), call("3", "block", "c"))
		if err := c.s.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		f.waitBlocked()
		f.waitBlocked()
		f.release <- struct{}{}
		f.release <- struct{}{}
		got := map[string]bool{}
		for range 3 {
			a := c.next()
			if a.Result == nil {
				t.Fatalf("answer %v", a)
			}
			got[string(a.ID)] = true
		}
		if len(got) != 3 {
			t.Fatalf("answers to %v, want 1, 2 and 3", got)
		}
		if _, err := c.tryNext(); !errors.Is(err, io.EOF) {
			t.Fatalf("after the answers: %v, want the end of the stream", err)
		}
		if err := f.waitEnded(); err != nil {
			t.Errorf("session ended with %v", err)
		}
	}
}

// A cancellation names the request by the id the peer sent: it reaches
// the request the SDK knows under another id.
func TestCancelledNamesTheRequestAsSent(t *testing.T) {
	f := newFixture(t, 0)
	c := f.initialized()
	c.send(call(`"job-1"`, "block", "x"))
	f.waitBlocked()
	c.send(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"job-1","reason":"enough"}}`)
	// The handler returns once cancelled; the SDK then answers (or not:
	// MCP lets it), and the session goes on.
	c.send(call("2", "echo", "after"))
	for {
		a := c.next()
		if string(a.ID) == "2" {
			if !strings.Contains(string(a.Result), "after") {
				t.Fatalf("after the cancel: %v", a)
			}
			break
		}
	}
	// The cancelled call's answer (the SDK still sends one) frees its id;
	// it may come after the answer to 2. Until then a reused id is
	// refused as in flight; once it has come, the id is free.
	deadline := time.Now().Add(10 * time.Second)
	for sent := 0; ; {
		if sent == 0 {
			c.send(call(`"job-1"`, "echo", "again"))
			sent++
		}
		a := c.next()
		switch {
		case string(a.ID) != `"job-1"`:
			t.Fatalf("after the cancel: %v", a)
		case a.Result != nil && strings.Contains(string(a.Result), "again"):
			return
		case a.Error != nil && strings.Contains(a.Error.Message, "already in use"):
			sent-- // refused while the cancelled call was in flight: again
		}
		// Else the cancelled call's own answer.
		if time.Now().After(deadline) {
			t.Fatal("the cancelled call's id was never freed")
		}
	}
}

// countingBudget is a Budget of a fixed size that keeps count.
type countingBudget struct {
	size  int64
	mu    sync.Mutex
	held  int64
	peak  int64
	takes atomic.Int64
}

func (b *countingBudget) Take(n int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.takes.Add(1)
	if b.held+n > b.size {
		return fmt.Errorf("over the test budget of %d bytes (%d held)", b.size, b.held)
	}
	b.held += n
	b.peak = max(b.peak, b.held)
	return nil
}

func (b *countingBudget) Return(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.held -= n
	if b.held < 0 {
		panic(fmt.Sprintf("budget returned more than taken: %d", b.held))
	}
}

func (b *countingBudget) heldNow() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.held
}

// A frame holding more JSON values, or nesting deeper, than the guard
// allows is refused as it arrives, before anything decodes it: the request
// is answered with an error naming the bound, the session goes on, and the
// peer gets a strike.
func TestGuardRefusesAFrameTooComplex(t *testing.T) {
	f := newGuardedFixture(t, 0, transport.Guard{MaxValues: 1000, MaxDepth: 16})
	c := f.initialized()
	keys := `"text":"x"` + strings.Repeat(`,"k":0`, 2000)
	c.send(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{` + keys + `}}}`)
	if a := c.next(); string(a.ID) != "1" || a.Error == nil || a.Error.Code != transport.CodeMessageTooLarge || !strings.Contains(a.Error.Message, "more than 1000 JSON values") {
		t.Fatalf("2000 keys: %v", a)
	}
	deep := strings.Repeat("[", 40) + strings.Repeat("]", 40)
	c.send(`{"jsonrpc":"2.0","method":"tools/call","params":{"name":"echo","arguments":{"text":"x","d":` + deep + `}},"id":"last"}`)
	if a := c.next(); string(a.ID) != `"last"` || a.Error == nil || !strings.Contains(a.Error.Message, "deeper than 16 levels") {
		t.Fatalf("nested 40 deep: %v", a)
	}
	echoRaw(t, c, "2")
	if n := len(f.badFrames()); n != 2 {
		t.Errorf("%d bad frames reported, want 2", n)
	}
	f.noneEnded()
}

func echoRaw(t *testing.T, c *raw, id string) {
	t.Helper()
	c.send(call(id, "echo", "still here"))
	if a := c.next(); string(a.ID) != id || !strings.Contains(string(a.Result), "still here") {
		t.Fatalf("echo after: %v", a)
	}
}

// A frame that would take the session over its budget is refused (its
// request answered with the budget's reason); what frames hold is given
// back as they are answered, and all of it when the session ends.
func TestGuardBudgetBoundsFramesInFlight(t *testing.T) {
	b := &countingBudget{size: 3 * transport.FrameCost(300, 20)}
	f := newGuardedFixture(t, 0, transport.Guard{Budget: b})
	c := f.initialized()
	c.send(call("1", "block", "a"), call("2", "block", "b"))
	f.waitBlocked()
	f.waitBlocked()
	big := strings.Repeat("x", 64<<10) // far over what is left
	c.send(call("3", "echo", big))
	if a := c.next(); string(a.ID) != "3" || a.Error == nil || a.Error.Code != transport.CodeLimited || !strings.Contains(a.Error.Message, "over the test budget") {
		t.Fatalf("over the budget: %v", a)
	}
	f.release <- struct{}{}
	f.release <- struct{}{}
	c.next()
	c.next()
	echoRaw(t, c, "4")
	c.s.Close()
	if err := f.waitEnded(); err != nil {
		t.Fatal(err)
	}
	if held := b.heldNow(); held != 0 {
		t.Errorf("%d bytes of budget still held after the session ended (peak %d)", held, b.peak)
	}
	if n := len(f.badFrames()); n != 1 {
		t.Errorf("%d bad frames reported, want 1 (over the peer's own budget)", n)
	}
}

// A stream that sends no request within the handshake timeout is reset; a
// session idle past the idle timeout is closed. Other sessions go on.
func TestGuardTimesOutSilentStreams(t *testing.T) {
	f := newGuardedFixture(t, 0, transport.Guard{HandshakeTimeout: 200 * time.Millisecond, IdleTimeout: 300 * time.Millisecond})
	silent := f.raw()
	silent.send("") // a newline, no request
	if _, err := silent.tryNext(); !errors.Is(err, network.ErrReset) {
		t.Fatalf("a stream that never sent a request: %v, want a reset", err)
	}
	f.waitEnded()

	idle := f.initialized()
	echoRaw(t, idle, "1")
	if _, err := idle.tryNext(); !errors.Is(err, io.EOF) {
		t.Fatalf("an idle session: %v, want the end of the stream", err)
	}
	f.waitEnded()

	// Nothing times out while a request is in flight.
	busy := f.initialized()
	busy.send(call("1", "block", "slow"))
	f.waitBlocked()
	time.Sleep(500 * time.Millisecond) // past the idle timeout, with a call in flight
	f.release <- struct{}{}
	if a := busy.next(); a.Result == nil {
		t.Fatalf("a call longer than the idle timeout: %v", a)
	}
}
