package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/mcpmesh/mcpmesh/gateway"
	"github.com/mcpmesh/mcpmesh/internal/loopback"
	"github.com/mcpmesh/mcpmesh/node"
)

// checkHTTPAddr accepts only a loopback HOST:PORT for --http: the gateway
// has no authentication, so anyone who can reach it can use the mesh as
// this node. Exposing it further is a reverse proxy's job (with its own
// authentication), not a flag's.
func checkHTTPAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want HOST:PORT, e.g. 127.0.0.1:8080", addr)
	}
	if !loopback.Host(host) {
		return fmt.Errorf("%q: the gateway only listens on a loopback address (127.0.0.1, ::1, localhost): it has no authentication", addr)
	}
	return nil
}

// serveGateway serves the MCP gateway over Streamable HTTP on addr: mesh
// mode at /mcp, transparent mode at /mcp/PEER/SERVER. It returns the base
// URL and a function that stops it. opts are mesh mode's (pins, event
// tools). A POST body is bounded as a message on a stream is, by
// maxMessage bytes.
func serveGateway(ctx context.Context, n *node.Node, addr string, opts gateway.MeshOptions, maxMessage int) (string, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("--http: %w", err)
	}
	mesh := gateway.NewMeshServer(ctx, n, opts)
	h := gateway.NewHTTPHandler(n, gateway.HTTPOptions{MeshServer: mesh.Server, MaxRequestBodyBytes: int64(maxMessage)})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	stop := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx) // hanging SSE streams end when the handler closes
		h.Close()
		srv.Close()
		<-served
		mesh.Close()
	}
	return "http://" + ln.Addr().String() + "/mcp", stop, nil
}
