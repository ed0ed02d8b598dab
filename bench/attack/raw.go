package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// protocolOf is the stream protocol of a daemon's MCP server (DESIGN.md,
// "Why one protocol per server"), spelled out here so that the suite
// depends on the wire, not on the node's packages.
func protocolOf(server string) protocol.ID { return protocol.ID("/mcpmesh/mcp/1.0.0/" + server) }

// protocolVersion is what the suite's clients ask for: what mcpmesh nodes
// ask each other for (node.DefaultProtocolVersion).
const protocolVersion = "2025-11-25"

// newIdentity starts a libp2p host with a fresh key, listening nowhere. An
// attacker's host has no resource manager of its own, so that what stops
// it is the target's limits, never its own; a well-behaved peer's has
// libp2p's default one.
func newIdentity(attacker bool) (host.Host, error) {
	opts := []libp2p.Option{libp2p.NoListenAddrs}
	if attacker {
		opts = append(opts, libp2p.ResourceManager(&network.NullResourceManager{}))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("start a libp2p host: %w", err)
	}
	return h, nil
}

// throwaway starts a fresh attacker identity and opens an MCP session
// from it on the daemon's server. Closing the host resets the stream.
func throwaway(ctx context.Context, target lpeer.AddrInfo, server string) (host.Host, *rawSession, error) {
	h, err := newIdentity(true)
	if err != nil {
		return nil, nil, err
	}
	rs, err := openRaw(ctx, h, target, server, true)
	if err != nil {
		h.Close()
		return nil, nil, err
	}
	return h, rs, nil
}

// connect connects h to target within timeout.
func connect(ctx context.Context, h host.Host, target lpeer.AddrInfo, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := h.Connect(network.WithForceDirectDial(ctx, "attack"), target); err != nil {
		return fmt.Errorf("connect to %s: %w", target.ID, err)
	}
	return nil
}

// rawSession is an MCP session spoken by hand on a libp2p stream:
// newline-delimited JSON-RPC, exactly the bytes the suite writes.
type rawSession struct {
	s network.Stream
	r *bufio.Reader
}

// openRaw opens a stream to the server's protocol and, if handshake is
// set, opens an MCP session on it (initialize, initialized). The stream is
// reset when ctx ends.
func openRaw(ctx context.Context, h host.Host, target lpeer.AddrInfo, server string, handshake bool) (*rawSession, error) {
	if err := connect(ctx, h, target, 10*time.Second); err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := h.NewStream(sctx, target.ID, protocolOf(server))
	if err != nil {
		return nil, fmt.Errorf("open a stream: %w", err)
	}
	context.AfterFunc(ctx, func() { s.Reset() }) // the attack's end ends every stream it opened
	rs := &rawSession{s: s, r: bufio.NewReaderSize(s, 64<<10)}
	if !handshake {
		return rs, nil
	}
	init := fmt.Sprintf(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":%q,"capabilities":{},"clientInfo":{"name":"attack","version":"0"}}}`+"\n", protocolVersion)
	if err := rs.write([]byte(init)); err != nil {
		s.Reset()
		return nil, err
	}
	if _, err := rs.replyTo([]byte("0"), time.Now().Add(10*time.Second)); err != nil {
		s.Reset()
		return nil, fmt.Errorf("initialize: %w", err)
	}
	if err := rs.write([]byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\n")); err != nil {
		s.Reset()
		return nil, err
	}
	return rs, nil
}

// write writes b (whole frames) within 30 s.
func (rs *rawSession) write(b ...[]byte) error {
	rs.s.SetWriteDeadline(time.Now().Add(30 * time.Second))
	for _, p := range b {
		if _, err := rs.s.Write(p); err != nil {
			return fmt.Errorf("write: %w", err)
		}
	}
	return nil
}

// message is one JSON-RPC message read back, its fields kept raw.
type message struct {
	fields map[string]json.RawMessage
}

// id returns the message's "id" exactly as it came, and whether it had one.
func (m message) id() (json.RawMessage, bool) {
	v, ok := m.fields["id"]
	return v, ok
}

// isResponse: a message with an id and no method.
func (m message) isResponse() bool {
	_, hasID := m.fields["id"]
	_, hasMethod := m.fields["method"]
	return hasID && !hasMethod
}

// errorMessage is the message of the error in a response ("" if none).
func (m message) errorMessage() string {
	raw, ok := m.fields["error"]
	if !ok {
		return ""
	}
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if json.Unmarshal(raw, &e) != nil || e.Message == "" {
		return "error " + string(raw)
	}
	return fmt.Sprintf("%s (%d)", e.Message, e.Code)
}

func (m message) isError() bool { _, ok := m.fields["error"]; return ok }

// maxLine bounds a line the suite reads back: an echo of a frame just
// under the daemon's limit fits.
const maxLine = 16 << 20

// next reads the next message, by deadline.
func (rs *rawSession) next(deadline time.Time) (message, error) {
	rs.s.SetReadDeadline(deadline)
	line, err := readLine(rs.r)
	if err != nil {
		return message{}, err
	}
	var m message
	if err := json.Unmarshal(line, &m.fields); err != nil {
		return message{}, fmt.Errorf("a line that is not a JSON object: %.80q", line)
	}
	return m, nil
}

// replyTo reads messages until the response with this id (byte for byte),
// skipping the others.
func (rs *rawSession) replyTo(id []byte, deadline time.Time) (message, error) {
	for {
		m, err := rs.next(deadline)
		if err != nil {
			return m, err
		}
		if got, ok := m.id(); ok && m.isResponse() && bytes.Equal(got, id) {
			return m, nil
		}
	}
}

// skipLine reads and drops one line, however long.
func (rs *rawSession) skipLine(deadline time.Time) error {
	rs.s.SetReadDeadline(deadline)
	for {
		_, err := rs.r.ReadSlice('\n')
		if !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
	}
}

func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		part, err := r.ReadSlice('\n')
		line = append(line, part...)
		switch {
		case err == nil:
			return line, nil
		case !errors.Is(err, bufio.ErrBufferFull):
			return nil, err
		case len(line) > maxLine:
			return nil, fmt.Errorf("a line over %d bytes", maxLine)
		}
	}
}

func (rs *rawSession) reset() { rs.s.Reset() }
