package control

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/gateway"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
)

// UpgradeProtocol is the Upgrade header of POST /v1/mcp: after "101
// Switching Protocols" the connection carries one MCP session as
// newline-delimited JSON-RPC, the daemon serving.
const UpgradeProtocol = "mcpmesh-mcp"

// GatewayRequest is the body of POST /v1/mcp.
type GatewayRequest struct {
	// To, if set, is PEER/SERVER: the session is relayed to that server
	// unchanged (transparent mode). Else the daemon serves mesh mode.
	To string `json:"to,omitempty"`
	// Pins are remote tools to add to mesh mode ([AS=]PEER/[SERVER/]TOOL).
	Pins []string `json:"pins,omitempty"`
	// Events adds mesh_subscribe and mesh_events to mesh mode.
	Events bool `json:"events,omitempty"`
}

// SplitTarget reads PEER/SERVER, PEER a peer ID or a full multiaddr.
func SplitTarget(s string) (peerPart, server string, err error) {
	i := len(s) - 1
	for i >= 0 && s[i] != '/' {
		i--
	}
	if i <= 0 || i == len(s)-1 {
		return "", "", fmt.Errorf("%q: want PEER/SERVER", s)
	}
	if err := transport.ValidateServerName(s[i+1:]); err != nil {
		return "", "", err
	}
	return s[:i], s[i+1:], nil
}

func (s *Server) handleGateway(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != UpgradeProtocol {
		writeError(w, http.StatusUpgradeRequired, fmt.Errorf("POST /v1/mcp needs Upgrade: %s", UpgradeProtocol))
		return
	}
	var req GatewayRequest
	if !readJSON(w, r, &req) {
		return
	}
	var pins []gateway.Pin
	for _, p := range req.Pins {
		pin, err := gateway.ParsePin(p)
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		pins = append(pins, pin)
	}
	// Reach the target before switching, so that a bad one is a clear HTTP
	// error rather than a session that ends at once.
	var upstream sdkmcp.Connection
	if req.To != "" {
		peerPart, server, err := SplitTarget(req.To)
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		p, err := s.target(r.Context(), peerPart)
		if err != nil {
			writeError(w, http.StatusBadGateway, err)
			return
		}
		if upstream, err = s.node.DialServer(r.Context(), p, server); err != nil {
			writeError(w, http.StatusBadGateway, err)
			return
		}
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		writeError(w, http.StatusInternalServerError, fmt.Errorf("connection cannot be taken over"))
		return
	}
	conn, rw, err := hj.Hijack()
	if err != nil {
		if upstream != nil {
			upstream.Close()
		}
		return
	}
	// A session with pins gets an ID, under which its opener reads what
	// becomes of them (pins.go): its own stderr is where a host shows it.
	opts := gateway.MeshOptions{Pins: pins, Events: req.Events}
	sessionHeader := ""
	if len(pins) > 0 {
		session := s.pins.open()
		defer s.pins.close(session)
		opts.OnPin = func(e gateway.PinEvent) {
			gateway.LogPin(e)
			s.pins.add(session, e)
		}
		sessionHeader = SessionHeader + ": " + session + "\r\n"
	}
	fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n%s\r\n", UpgradeProtocol, sessionHeader)
	if err := rw.Flush(); err != nil {
		conn.Close()
		return
	}
	s.serveGateway(conn, rw.Reader, upstream, req.To, opts)
}

// serveGateway runs one host session on conn until it ends or the daemon
// stops.
func (s *Server) serveGateway(conn net.Conn, buffered *bufio.Reader, upstream sdkmcp.Connection, target string, mesh gateway.MeshOptions) {
	if !s.group.Enter() {
		conn.Close()
		if upstream != nil {
			upstream.Close()
		}
		return
	}
	defer s.group.Leave()
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	host, _ := (&sdkmcp.IOTransport{Reader: readCloser{buffered, conn}, Writer: conn}).Connect(ctx)
	if upstream != nil {
		if err := gateway.Relay(ctx, host, upstream, target); err != nil {
			log.Debugw("transparent gateway session ended", "error", err)
		}
		return
	}
	srv := gateway.NewMeshServer(ctx, s.node, mesh)
	defer srv.Close()
	ss, err := srv.Connect(ctx, transport.Connected(host), nil)
	if err != nil {
		host.Close()
		return
	}
	ss.Wait()
}

type readCloser struct {
	io.Reader
	io.Closer
}
