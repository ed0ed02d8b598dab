// Command mcpmesh-fixture serves the MCP conformance suite's fixture server
// (package internal/fixture) over plain Streamable HTTP, on an mcpmesh node,
// or both, so that the suite can run against the server directly and
// through the mesh with the same server behind both.
//
//	mcpmesh-fixture --http 127.0.0.1:3001                 # direct baseline
//	mcpmesh-fixture --listen /ip4/127.0.0.1/tcp/4001      # shared on a node as "fixture"
//	mcpmesh-fixture --stdio                               # a stdio MCP program, for --share
//
// It prints one key=value line per endpoint (http=URL, peer=ID, addr=MULTIADDR),
// then "ready", and runs until interrupted. With --stdio it serves one MCP
// session on stdin/stdout instead (nothing else printed on stdout) and exits
// when stdin ends.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/internal/fixture"
	"github.com/mcpmesh/mcpmesh/node"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mcpmesh-fixture:", err)
		os.Exit(1)
	}
}

type listFlag []string

func (l *listFlag) String() string     { return fmt.Sprint(*l) }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func run() error {
	var listen listFlag
	httpAddr := flag.String("http", "", "serve the fixture over Streamable HTTP at this address (path /mcp)")
	stateless := flag.Bool("stateless", false, "serve HTTP statelessly (no sessions; no requests from server to client on 2025-11-25)")
	home := flag.String("home", "", "node home folder (identity); default: an ephemeral identity")
	name := flag.String("name", "fixture", "the name the node shares the fixture under")
	flag.Var(&listen, "listen", "run an mcpmesh node listening on this multiaddr and share the fixture on it (repeatable)")
	period := flag.Duration("update-every", 3*time.Second, "how often the watched resource reports an update")
	stdio := flag.Bool("stdio", false, "serve one MCP session on stdin/stdout (a program for `mcpmesh node --share`) and nothing else")
	flag.Parse()
	if *stdio {
		if *httpAddr != "" || len(listen) > 0 {
			return errors.New("--stdio serves stdin/stdout only: drop --http and --listen")
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		server := fixture.NewServer()
		go fixture.Updates(ctx, server, *period)
		return server.Run(ctx, &sdkmcp.StdioTransport{})
	}
	if *httpAddr == "" && len(listen) == 0 {
		return errors.New("nothing to do: give --http ADDR, --listen MULTIADDR (or both), or --stdio")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *httpAddr != "" {
		server := fixture.NewServer()
		go fixture.Updates(ctx, server, *period)
		h := sdkmcp.NewStreamableHTTPHandler(func(*http.Request) *sdkmcp.Server { return server },
			&sdkmcp.StreamableHTTPOptions{Stateless: *stateless})
		mux := http.NewServeMux()
		mux.Handle("/mcp", h)
		ln, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		fmt.Printf("http=http://%s/mcp\n", ln.Addr())
	}

	if len(listen) > 0 {
		opts := []node.Option{node.WithListenAddrs(listen...), node.WithName("mcpmesh-fixture"), node.WithOpen()}
		if *home != "" {
			opts = append(opts, node.WithHome(*home))
		}
		n, err := node.New(opts...)
		if err != nil {
			return err
		}
		defer n.Close()
		// A separate fixture server instance: its subscriptions and
		// sessions are its own.
		server := fixture.NewServer()
		go fixture.Updates(ctx, server, *period)
		if err := n.Share(*name, server); err != nil {
			return err
		}
		fmt.Printf("peer=%s\n", n.ID())
		for _, a := range n.Addrs() {
			fmt.Printf("addr=%s\n", a)
		}
	}
	fmt.Println("ready")
	<-ctx.Done()
	return nil
}
