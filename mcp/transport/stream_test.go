package transport_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/goleak"

	"github.com/mcpmesh/mcpmesh/mcp/transport"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// libp2p keeps a few process-wide workers.
		goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/transport/quicreuse.(*reuse).gc"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

const testProto = protocol.ID("/mcpmesh-test/mcp/1")

type echoIn struct {
	Text string `json:"text"`
}

type echoOut struct {
	Text string `json:"text"`
}

type repeatIn struct {
	N int `json:"n"`
}

// ended is one server session that ended, with the error Wait returned.
type ended struct {
	err error
}

// fixture is two real libp2p hosts on loopback, one connection between
// them, and an SDK server with an echo tool served on testProto by the
// server host, one session per stream, each stream framed by
// StreamTransport with the given limit.
type fixture struct {
	t              *testing.T
	client, server host.Host
	ended          chan ended
	release        chan struct{} // a value lets one call of "block" return
	blocked        chan struct{} // a value when a call of "block" starts

	mu  sync.Mutex
	bad []error // what OnBadFrame was told
}

func (f *fixture) onBad(err error) {
	f.mu.Lock()
	f.bad = append(f.bad, err)
	f.mu.Unlock()
}

func (f *fixture) badFrames() []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]error(nil), f.bad...)
}

func newHost(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func newFixture(t *testing.T, limit int) *fixture {
	return newGuardedFixture(t, limit, transport.Guard{})
}

// newGuardedFixture is newFixture whose server sessions have guard g. Its
// server also has a tool "block" that returns once its call is cancelled,
// or once a value is sent on f.release.
func newGuardedFixture(t *testing.T, limit int, g transport.Guard) *fixture {
	t.Helper()
	f := &fixture{t: t, client: newHost(t), server: newHost(t), ended: make(chan ended, 64),
		release: make(chan struct{}, 64), blocked: make(chan struct{}, 64)}
	srv := sdkmcp.NewServer(&sdkmcp.Implementation{Name: "srv", Version: "1"}, nil)
	sdkmcp.AddTool(srv, &sdkmcp.Tool{Name: "echo"}, func(_ context.Context, _ *sdkmcp.CallToolRequest, in echoIn) (*sdkmcp.CallToolResult, echoOut, error) {
		return nil, echoOut(in), nil
	})
	sdkmcp.AddTool(srv, &sdkmcp.Tool{Name: "block"}, func(ctx context.Context, _ *sdkmcp.CallToolRequest, in echoIn) (*sdkmcp.CallToolResult, echoOut, error) {
		f.blocked <- struct{}{}
		select {
		case <-ctx.Done():
			return nil, echoOut{}, ctx.Err()
		case <-f.release:
			return nil, echoOut(in), nil
		}
	})
	sdkmcp.AddTool(srv, &sdkmcp.Tool{Name: "repeat"}, func(_ context.Context, _ *sdkmcp.CallToolRequest, in repeatIn) (*sdkmcp.CallToolResult, any, error) {
		return &sdkmcp.CallToolResult{Content: []sdkmcp.Content{&sdkmcp.TextContent{Text: strings.Repeat("x", in.N)}}}, nil, nil
	})
	f.server.SetStreamHandler(testProto, func(s network.Stream) {
		ss, err := srv.Connect(context.Background(), &transport.StreamTransport{Stream: s, MaxMessageSize: limit, Guard: g, OnBadFrame: f.onBad}, nil)
		if err != nil {
			s.Reset()
			f.ended <- ended{err: err}
			return
		}
		f.ended <- ended{err: ss.Wait()}
	})
	if err := f.client.Connect(context.Background(), *host.InfoFromHost(f.server)); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) stream() network.Stream {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	s, err := f.client.NewStream(ctx, f.server.ID(), testProto)
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

// session opens an SDK client session on a new stream.
func (f *fixture) session(version string) *sdkmcp.ClientSession {
	return f.sessionLimited(version, 0)
}

// sessionLimited opens an SDK client session on a new stream whose
// messages are bounded to limit bytes.
func (f *fixture) sessionLimited(version string, limit int) *sdkmcp.ClientSession {
	f.t.Helper()
	c := sdkmcp.NewClient(&sdkmcp.Implementation{Name: "cli", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	cs, err := c.Connect(ctx, &transport.StreamTransport{Stream: f.stream(), MaxMessageSize: limit}, &sdkmcp.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { cs.Close() })
	return cs
}

func echo(t *testing.T, cs *sdkmcp.ClientSession, text string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": text}})
	if err != nil {
		t.Fatalf("echo: %v", err)
	}
	out, _ := res.StructuredContent.(map[string]any)
	if res.IsError || out["text"] != text {
		t.Fatalf("echo %q: got %+v", text, res)
	}
}

// waitEnded waits for one server session to end and returns its error.
func (f *fixture) waitEnded() error {
	f.t.Helper()
	select {
	case e := <-f.ended:
		return e.err
	case <-time.After(3 * time.Second):
		f.t.Fatal("no server session ended")
		return nil
	}
}

// noneEnded checks that no other server session has ended.
func (f *fixture) noneEnded() {
	f.t.Helper()
	select {
	case e := <-f.ended:
		f.t.Errorf("another server session ended: %v", e.err)
	default:
	}
}

// readErr reads s until it fails and returns the error.
func readErr(t *testing.T, s network.Stream) error {
	t.Helper()
	s.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err := io.Copy(io.Discard, s)
	if err == nil {
		err = io.EOF // io.Copy reports a clean end as nil
	}
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("stream still open: %v", err)
	}
	return err
}

// initFrame returns an initialize request padded with spaces to exactly
// size bytes, without its newline.
func initFrame(t *testing.T, size int) []byte {
	t.Helper()
	base := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}`
	if size < len(base)+1 {
		t.Fatalf("frame size %d too small", size)
	}
	return []byte(base + strings.Repeat(" ", size-len(base)-1) + "}")
}

func TestStreamTransportCarriesToolCalls(t *testing.T) {
	f := newFixture(t, 0)
	for _, v := range []string{"2025-11-25", "2026-07-28"} {
		t.Run(v, func(t *testing.T) {
			cs := f.session(v)
			echo(t, cs, "hello")
			big := strings.Repeat("x", 100<<10) // longer than the reader's buffer
			echo(t, cs, big)
			echo(t, cs, "after a long frame")
		})
	}
}

// The session's end on a clean close is graceful: the peer reads EOF, not a
// reset.
func TestStreamTransportClosesCleanlyWhenThePeerIsDone(t *testing.T) {
	f := newFixture(t, 0)
	s := f.stream()
	if _, err := s.Write(append(initFrame(t, 200), '\n')); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	err := readErr(t, s)
	if !errors.Is(err, io.EOF) {
		t.Errorf("reading after a clean end: %v, want EOF", err)
	}
	f.waitEnded()
	s.Close()
}

// misbehave opens a raw stream next to a working SDK session on the same
// connection, writes data on it, and checks that the raw stream is reset
// and its server session ended while the SDK session keeps working.
func misbehave(t *testing.T, limit int, data []byte, closeWrite bool) {
	t.Helper()
	f := newFixture(t, limit)
	good := f.session("2025-11-25")
	echo(t, good, "before")

	bad := f.stream()
	if _, err := bad.Write(data); err != nil {
		t.Logf("write (may fail once the peer resets): %v", err)
	}
	if closeWrite {
		bad.CloseWrite()
	}
	err := readErr(t, bad)
	if !errors.Is(err, network.ErrReset) {
		t.Errorf("misbehaving stream: read %v, want a reset", err)
	}
	bad.Reset()
	if err := f.waitEnded(); err == nil {
		t.Log("server session ended without an error")
	}

	echo(t, good, "after")
	echo(t, f.session("2025-11-25"), "new session")
	f.noneEnded()
	if n := len(f.client.Network().ConnsToPeer(f.server.ID())); n != 1 {
		t.Errorf("%d connections, want the one", n)
	}
}

// A request over the limit is answered with a JSON-RPC error that names the
// limit, and the session goes on: the next request is served.
func TestStreamTransportAnswersARequestOverTheLimit(t *testing.T) {
	for _, limit := range []int{1024, 64 << 10} { // below and above the reader's buffer
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			f := newFixture(t, limit)
			s := f.stream()
			defer s.Close()
			r := bufio.NewReader(s)
			if _, err := s.Write(append(initFrame(t, 3*limit), '\n')); err != nil {
				t.Fatal(err)
			}
			var resp struct {
				ID    int `json:"id"`
				Error *struct {
					Code    int64  `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
				Result json.RawMessage `json:"result"`
			}
			s.SetReadDeadline(time.Now().Add(3 * time.Second))
			line, err := r.ReadBytes('\n')
			if err != nil {
				t.Fatalf("no answer to a request over the limit: %v", err)
			}
			if err := json.Unmarshal(line, &resp); err != nil || resp.ID != 1 || resp.Error == nil ||
				resp.Error.Code != transport.CodeMessageTooLarge || !strings.Contains(resp.Error.Message, "limit of "+transport.SizeText(limit)) {
				t.Fatalf("answer %s, want error %d naming the limit", line, transport.CodeMessageTooLarge)
			}
			// The session goes on.
			if _, err := s.Write(append(initFrame(t, 200), '\n')); err != nil {
				t.Fatal(err)
			}
			line, err = r.ReadBytes('\n')
			if err != nil || json.Unmarshal(line, &resp) != nil || resp.Result == nil {
				t.Fatalf("after a frame over the limit: %s, %v; want the initialize result", line, err)
			}
			f.noneEnded()
		})
	}
}

func TestStreamTransportResetsAStreamThatSendsAnEndlessLine(t *testing.T) {
	const limit = 64 << 10
	// No newline at all: the reader must give up past a few limits' worth,
	// not read or buffer everything the peer sends.
	misbehave(t, limit, []byte(strings.Repeat("a", 8*limit)), false)
}

func TestStreamTransportResetsAStreamThatSendsGarbage(t *testing.T) {
	misbehave(t, 0, []byte("this is not json\n"), false)
}

func TestStreamTransportResetsAStreamThatEndsMidFrame(t *testing.T) {
	misbehave(t, 0, []byte(`{"jsonrpc":"2.0","id":1,"method":"ini`), true)
}

func TestStreamTransportAcceptsAFrameOfExactlyTheLimit(t *testing.T) {
	for _, limit := range []int{1024, 16 << 10, 64 << 10} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			f := newFixture(t, limit)
			s := f.stream()
			defer s.Close()
			// Blank lines between frames are tolerated.
			msg := append([]byte("\n\r\n"), initFrame(t, limit)...)
			if _, err := s.Write(append(msg, '\n')); err != nil {
				t.Fatal(err)
			}
			s.SetReadDeadline(time.Now().Add(3 * time.Second))
			line, err := bufio.NewReader(s).ReadBytes('\n')
			if err != nil {
				t.Fatalf("no answer to a frame of exactly the limit: %v", err)
			}
			var resp struct {
				ID     int             `json:"id"`
				Result json.RawMessage `json:"result"`
				Error  json.RawMessage `json:"error"`
			}
			if err := json.Unmarshal(line, &resp); err != nil {
				t.Fatalf("answer %q: %v", line, err)
			}
			if resp.ID != 1 || resp.Result == nil || resp.Error != nil {
				t.Errorf("answer %s, want the initialize result", line)
			}
			f.noneEnded()
		})
	}
}

// A result over the serving side's limit is not sent (the peer would reset
// the stream, and the caller never learn why): the call is answered with an
// error that names the limit, and the session goes on.
func TestStreamTransportAnswersAResultOverTheLimitWithAnError(t *testing.T) {
	const limit = 64 << 10
	f := newFixture(t, limit)
	for _, v := range []string{"2025-11-25", "2026-07-28"} {
		t.Run(v, func(t *testing.T) {
			cs := f.session(v)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			_, err := cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: "repeat", Arguments: map[string]any{"n": limit + 1}})
			var werr *jsonrpc.Error
			if !errors.As(err, &werr) || werr.Code != jsonrpc.CodeInternalError ||
				!strings.Contains(werr.Message, "limit of 64 KiB (65536 bytes)") || !strings.Contains(werr.Message, "the result of request") {
				t.Fatalf("a result over the limit: %v, want a JSON-RPC error naming the limit", err)
			}
			echo(t, cs, "after")
			f.noneEnded()
		})
	}
}

// A request over the calling side's limit is not sent either: the call
// fails with a LimitError, and the session goes on.
func TestStreamTransportRefusesToSendARequestOverTheLimit(t *testing.T) {
	const limit = 64 << 10
	f := newFixture(t, 0)
	cs := f.sessionLimited("2025-11-25", limit)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := cs.CallTool(ctx, &sdkmcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": strings.Repeat("y", limit)}})
	var lerr *transport.LimitError
	if !errors.As(err, &lerr) || lerr.Limit != limit || !lerr.Request || !strings.Contains(err.Error(), "a tools/call request of") {
		t.Fatalf("a request over the limit: %v, want a LimitError", err)
	}
	echo(t, cs, "after")
	f.noneEnded()
}

func TestSizeReadsAsPeopleWriteLimits(t *testing.T) {
	for n, want := range map[int]string{
		4 << 20:  "4 MiB (4194304 bytes)",
		5242939:  "5.0 MiB (5242939 bytes)",
		64 << 10: "64 KiB (65536 bytes)",
		1000:     "1000 bytes",
	} {
		if got := transport.Size(n); got != want {
			t.Errorf("Size(%d) = %q, want %q", n, got, want)
		}
	}
}
