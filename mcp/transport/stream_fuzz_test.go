package transport

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"testing"

	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/mcpmesh/mcpmesh/internal/sdkcompat"
)

// fakeStream is a network.Stream that reads a fixed byte string and records
// how it was ended. Only what Conn uses is implemented; the embedded
// nil interfaces make anything else panic, which the fuzzer would report.
type fakeStream struct {
	network.Stream
	r      io.Reader
	reset  bool
	closed bool
}

type fakeConn struct{ network.Conn }

func (fakeConn) RemotePeer() lpeer.ID { return "fuzz-peer" }

func (s *fakeStream) Read(p []byte) (int, error)  { return s.r.Read(p) }
func (s *fakeStream) Write(p []byte) (int, error) { return len(p), nil }
func (s *fakeStream) Close() error                { s.closed = true; return nil }
func (s *fakeStream) Reset() error                { s.reset = true; return nil }
func (s *fakeStream) Conn() network.Conn          { return fakeConn{} }

// chunkReader hands out at most chunk bytes per Read, as a stream delivers
// data in pieces.
type chunkReader struct {
	data  []byte
	chunk int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), r.chunk, len(r.data))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

// fuzzConn is a Conn over data with the given frame limit, whose
// reader buffer is bufSize bytes (bufio's minimum is 16): a small buffer
// drives frames through the path for frames longer than the buffer, which
// the production 16 KiB buffer only reaches with large inputs.
func fuzzConn(data []byte, limit, bufSize, chunk int) (*Conn, *fakeStream) {
	s := &fakeStream{r: &chunkReader{data: data, chunk: chunk}}
	c := NewConn(s, limit)
	c.r = bufio.NewReaderSize(s, bufSize)
	return c, s
}

// expectedFrame is what splitting the input on newlines says the conn must
// do with each line.
type expectedFrame struct {
	line    []byte
	partial bool // the input ended without a newline after it
}

func splitFrames(data []byte) []expectedFrame {
	var out []expectedFrame
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			out = append(out, expectedFrame{line: data, partial: true})
			break
		}
		out = append(out, expectedFrame{line: data[:i]})
		data = data[i+1:]
	}
	return out
}

var streamCorpus = []string{
	`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}` + "\n" +
		`{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\n",
	`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"},"_meta":{"io.mcpmesh/task":"0123456789abcdef0123456789abcdef 0123456789abcdef0123456789abcdef - 8 0 0 12D3KooWA"}}}` + "\n",
	"\n\r\n" + `{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"ok"}]}}` + "\n",
	`{"jsonrpc":"2.0","id":7,"error":{"code":-32601,"message":"nope"}}` + "\n" + `not json` + "\n",
	`{"jsonrpc":"2.0","id":1,"method":"ini`,
	`{"jsonrpc":"2.0","id":1,"method":"ping"}` + "\n" + `{"jsonrpc":"2.0","id":2,"method":"ping"}`,
	"",
	"\n",
}

// FuzzStreamConnRead feeds arbitrary bytes to a Conn as a peer's
// stream would deliver them and checks, against a plain split on newlines,
// that it never panics, never returns a frame longer than its limit (nor
// one that is not exactly a line of the input), decodes each frame as
// sdkcompat.DecodeMessage does, stops at the first bad frame, and marks the conn broken
// (so that Close resets the stream) after any error other than a clean end
// between frames.
func FuzzStreamConnRead(f *testing.F) {
	for _, s := range streamCorpus {
		f.Add([]byte(s), uint16(4096), uint8(0), uint8(0))
		f.Add([]byte(s), uint16(40), uint8(4), uint8(3))
	}
	f.Fuzz(func(t *testing.T, data []byte, limitIn uint16, bufIn, chunkIn uint8) {
		limit := 1 + int(limitIn)%(8<<10)
		bufSize := 16 + int(bufIn)     // 16..271 bytes, bufio's minimum upwards
		chunk := 1 + int(chunkIn)%64*4 // how the stream delivers the bytes

		// ReadFrame: exactly the input's lines, none over the limit.
		c, _ := fuzzConn(data, limit, bufSize, chunk)
		for i, want := range splitFrames(data) {
			line, err := c.ReadFrame()
			var skipped *FrameTooLargeError
			if errors.As(err, &skipped) {
				// Skipped whole: the session goes on with the next frame.
				if want.partial || len(want.line) <= limit || skipped.Size != len(want.line) {
					t.Fatalf("frame %d (%d bytes, limit %d, partial %v): skipped as %d bytes", i, len(want.line), limit, want.partial, skipped.Size)
				}
				if c.broken != nil {
					t.Fatalf("frame %d: a skipped frame broke the conn: %v", i, c.broken)
				}
				if id := skipped.ID; id.IsValid() {
					// An ID read from the frame's ends is its own.
					if msg, derr := sdkcompat.DecodeMessage(want.line); derr == nil && msgID(msg) != id {
						t.Fatalf("frame %d: skipped with ID %v, the frame's is %v", i, id, msgID(msg))
					}
				}
				continue
			}
			if err != nil {
				tooLong := len(want.line) > limit
				switch {
				case errors.Is(err, ErrFrameTooLarge) && tooLong && (want.partial || len(want.line) > maxSkip*limit):
				case errors.Is(err, io.ErrUnexpectedEOF) && want.partial:
				default:
					t.Fatalf("frame %d (%d bytes, limit %d, partial %v): %v", i, len(want.line), limit, want.partial, err)
				}
				if c.broken == nil {
					t.Fatalf("frame %d: error %v left the conn unbroken", i, err)
				}
				break
			}
			if want.partial {
				t.Fatalf("frame %d: a line without its newline returned as a frame", i)
			}
			if len(line) > limit {
				t.Fatalf("frame %d: %d bytes returned over the %d-byte limit", i, len(line), limit)
			}
			if !bytes.Equal(line, want.line) {
				t.Fatalf("frame %d: got %q, want %q", i, line, want.line)
			}
		}

		// Read: the decoded messages, up to the first error. A frame over
		// the limit is skipped; an answer among them comes back as the error
		// that stands for it.
		c, s := fuzzConn(data, limit, bufSize, chunk)
		frames := splitFrames(data)
		next := 0
		blank := func(f expectedFrame) bool {
			return !f.partial && (len(f.line) == 0 || string(f.line) == "\r")
		}
		over := func(f expectedFrame) bool { return !f.partial && len(f.line) > limit }
		// A request with a null id is answered by the conn itself.
		nullID := func(f expectedFrame) bool {
			if f.partial || len(f.line) > limit {
				return false
			}
			msg, raw, err := sdkcompat.DecodeFrame(f.line)
			_, isReq := msg.(*jsonrpc.Request)
			return err == nil && isReq && string(raw) == "null"
		}
		for {
			msg, err := c.Read(context.Background())
			for next < len(frames) && (blank(frames[next]) || nullID(frames[next])) {
				next++
			}
			if err != nil {
				for next < len(frames) && (blank(frames[next]) || over(frames[next])) {
					next++
				}
				if errors.Is(err, io.EOF) {
					if next != len(frames) {
						t.Fatalf("clean end with %d frames left", len(frames)-next)
					}
					if c.broken != nil {
						t.Fatalf("clean end marked the conn broken: %v", c.broken)
					}
					break
				}
				if c.broken == nil {
					t.Fatalf("error %v left the conn unbroken", err)
				}
				if next >= len(frames) && !errors.Is(err, ErrFrameTooLarge) {
					t.Fatalf("error %v after the last frame", err)
				}
				if next < len(frames) {
					if want := frames[next]; !want.partial && len(want.line) <= limit {
						if _, derr := sdkcompat.DecodeMessage(want.line); derr == nil {
							t.Fatalf("Read failed on %q, which sdkcompat.DecodeMessage reads: %v", want.line, err)
						}
					}
				}
				break
			}
			var rpcErr *jsonrpc.Error
			if resp, ok := msg.(*jsonrpc.Response); ok && errors.As(resp.Error, &rpcErr) && rpcErr.Code == CodeMessageTooLarge &&
				next < len(frames) && over(frames[next]) {
				next++ // the answer over the limit it stands for
				continue
			}
			for next < len(frames) && (blank(frames[next]) || over(frames[next]) || nullID(frames[next])) {
				next++ // skipped: a request (answered) or a notification
			}
			if next >= len(frames) {
				t.Fatalf("message %v read past the end of the input", msg)
			}
			want := frames[next]
			if want.partial {
				t.Fatalf("message read from a partial frame (%d bytes)", len(want.line))
			}
			if _, derr := sdkcompat.DecodeMessage(want.line); derr != nil {
				t.Fatalf("Read decoded %q, which sdkcompat.DecodeMessage refuses: %v", want.line, derr)
			}
			next++
			// Answered at once, as the SDK answers every request: the conn
			// waits for its answers at the end of the stream.
			if req, ok := msg.(*jsonrpc.Request); ok && req.ID.IsValid() {
				if err := c.Write(context.Background(), &jsonrpc.Response{ID: req.ID, Result: json.RawMessage("{}")}); err != nil {
					t.Fatalf("answer %v: %v", req.ID, err)
				}
			}
		}
		c.Close()
		if c.broken != nil && !s.reset {
			t.Fatal("a broken conn was closed without a reset")
		}
		if c.broken == nil && (s.reset || !s.closed) {
			t.Fatal("a healthy conn was not closed gracefully")
		}
	})
}

// msgID is the ID of a decoded message, zero for a notification.
func msgID(msg jsonrpc.Message) jsonrpc.ID {
	switch m := msg.(type) {
	case *jsonrpc.Request:
		return m.ID
	case *jsonrpc.Response:
		return m.ID
	}
	return jsonrpc.ID{}
}
