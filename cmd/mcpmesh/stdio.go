package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	logging "github.com/ipfs/go-log/v2"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	"github.com/mcpmesh/mcpmesh/control"
	"github.com/mcpmesh/mcpmesh/discovery"
	"github.com/mcpmesh/mcpmesh/gateway"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/peer/identity"
)

func newStdioCmd(g *globals) *cobra.Command {
	var (
		to      string
		pins    []string
		peers   []string
		mdns    bool
		noMDNS  bool
		meshKey string
		events  bool
	)
	cmd := &cobra.Command{
		Use:   "stdio",
		Short: "Serve the mesh to an MCP host on stdin/stdout",
		Long: `Serve MCP on standard input and output, for an MCP host (Claude Code, Claude
Desktop, any MCP client) that starts it as a stdio server.

Mesh mode (the default) offers three tools whatever the size of the mesh:
mesh_search (find tools by words and tags), mesh_describe (one tool's input
schema) and mesh_call (call it on a chosen peer, or "any"). --pin adds chosen
remote tools as tools of their own, named LABEL.TOOL. --events adds two:
mesh_subscribe (to an event of a peer, or of any) and mesh_events (wait for
what comes), so that the host's model waits for the mesh instead of polling.

Transparent mode (--to PEER/SERVER) is exactly the server SERVER that PEER
shares, relayed unchanged: the host cannot tell it from the server itself.

It goes through the daemon of --home when one runs; otherwise it starts a node
of its own in this process (finding peers by mDNS and --peer).`,
		Example: `  claude mcp add mesh -- mcpmesh stdio
  mcpmesh stdio --to 12D3KooW.../everything
  mcpmesh stdio --pin 12D3KooW.../translate`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Getenv("GOLOG_LOG_LEVEL") == "" {
				logging.SetLogLevelRegex("mcpmesh/.*", "warn")
			}
			for _, p := range pins {
				if _, err := gateway.ParsePin(p); err != nil {
					return usageError("--pin: %v", err)
				}
			}
			if to != "" {
				if _, _, err := control.SplitTarget(to); err != nil {
					return usageError("--to: %v", err)
				}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			req := control.GatewayRequest{To: to, Pins: pins, Events: events}
			if c, err := control.Dial(ctx, g.home); err == nil {
				conn, err := c.OpenGateway(ctx, req)
				if err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "mcpmesh stdio: %s, through the daemon of %s\n", modeOf(to), g.home)
				// What becomes of each pin is said here, as without a
				// daemon: the host shows this process's stderr, not the
				// daemon's log.
				reportsCtx, stopReports := context.WithCancel(ctx)
				reported := make(chan struct{})
				go func() {
					defer close(reported)
					err := c.PinReports(reportsCtx, conn, func(r control.PinReport) {
						fmt.Fprintf(os.Stderr, "mcpmesh stdio: %s\n", r.Event())
					})
					if err != nil && reportsCtx.Err() == nil {
						fmt.Fprintf(os.Stderr, "mcpmesh stdio: %v (the daemon's log says what became of the pins)\n", err)
					}
				}()
				defer func() { stopReports(); <-reported }()
				return pipe(ctx, conn, os.Stdin, os.Stdout, to)
			}
			return runEmbedded(ctx, g, req, peers, mdns, noMDNS, meshKey)
		},
	}
	f := cmd.Flags()
	f.StringVar(&to, "to", "", "PEER/SERVER: transparent mode, relaying that one server unchanged")
	f.StringArrayVar(&pins, "pin", nil, "[NAME=]PEER/[SERVER/]TOOL: expose a remote tool as a tool of its own (repeatable)")
	f.BoolVar(&events, "events", false, "mesh mode: add mesh_subscribe and mesh_events, to wait for the mesh's events")
	f.StringArrayVar(&peers, "peer", nil, "without a daemon: a peer to join the mesh through (repeatable)")
	f.BoolVar(&mdns, "mdns", false, "without a daemon: look for peers on the local network with mDNS (the default, but in a private mesh)")
	f.BoolVar(&noMDNS, "no-mdns", false, "without a daemon: do not look for peers on the local network")
	f.StringVar(&meshKey, "mesh-key", "", "without a daemon: private mesh key file (default HOME/swarm.key if it exists)")
	return cmd
}

func modeOf(to string) string {
	if to != "" {
		return "transparent mode to " + to
	}
	return "mesh mode"
}

// pipe copies the host's stdin to conn and conn to stdout until either
// side ends. The host ending its stdin is the normal end; the daemon ending
// the session while the host is still there is an error, which says so (the
// host shows a stdio server's stderr and exit status, and nothing else).
func pipe(ctx context.Context, conn io.ReadWriteCloser, in io.Reader, out io.Writer, target string) error {
	type end struct {
		daemon bool // the daemon's side ended first
		err    error
	}
	var once sync.Once
	done := make(chan end, 1)
	finish := func(e end) { once.Do(func() { done <- e }) }
	go func() { _, err := io.Copy(conn, in); finish(end{err: err}) }()
	go func() { _, err := io.Copy(out, conn); finish(end{daemon: true, err: err}) }()
	select {
	case e := <-done:
		conn.Close()
		if !e.daemon {
			return e.err
		}
		why := "the daemon ended the session"
		if target != "" {
			why = fmt.Sprintf("the session to %s ended (the server or its peer closed it, or the daemon stopped; the daemon's log says which)", target)
		}
		if e.err != nil {
			why += ": " + e.err.Error()
		}
		return errors.New(why)
	case <-ctx.Done():
		conn.Close()
		return nil
	}
}

// runEmbedded serves the host from a node of this process.
func runEmbedded(ctx context.Context, g *globals, req control.GatewayRequest, peers []string, mdns, noMDNS bool, meshKey string) error {
	// stdout is the host's MCP stream: everything said goes to stderr.
	var meshSaid string
	meshOpts, err := meshKeyOptions(g.home, meshKey, node.DefaultListenAddrs, func(s string) { meshSaid = s })
	if err != nil {
		return usageError("%v", err)
	}
	useMDNS, err := mdnsOn(mdns, noMDNS, nil, len(meshOpts) > 0)
	if err != nil {
		return usageError("%v", err)
	}
	if meshSaid != "" {
		fmt.Fprintf(os.Stderr, "mcpmesh stdio: %s; %s\n", meshSaid, mdnsSaid(useMDNS))
	}
	n, err := node.New(append([]node.Option{
		node.WithHome(g.home),
		node.WithVersion(version),
		node.WithListenAddrs(node.DefaultListenAddrs...),
		node.WithDiscovery(discovery.Config{MDNS: useMDNS}),
	}, meshOpts...)...)
	if err != nil {
		return err
	}
	defer n.Close()
	for _, p := range peers {
		info, err := identity.ParseTarget(p)
		if err != nil {
			return usageError("--peer: %v", err)
		}
		n.KeepConnected(info)
	}
	fmt.Fprintf(os.Stderr, "mcpmesh stdio: %s, no daemon for %s: running node %s in this process\n", modeOf(req.To), g.home, n.ID())

	host, _ := (&sdkmcp.StdioTransport{}).Connect(ctx)
	if req.To != "" {
		peerPart, server, _ := control.SplitTarget(req.To)
		info, err := identity.ParseTarget(peerPart)
		if err != nil {
			return err
		}
		if len(info.Addrs) > 0 {
			if err := n.ConnectAddr(ctx, info); err != nil {
				return err
			}
		}
		up, err := dialWithRetry(ctx, n, info, server)
		if err != nil {
			return err
		}
		return gateway.Relay(ctx, host, up, req.To)
	}
	// The host asks at once: a search before this node has found anyone
	// would answer nothing. Wait, briefly and saying so, for the mesh.
	waitForMesh(ctx, n, len(peers), bootstrapWait, os.Stderr)
	var pins []gateway.Pin
	for _, p := range req.Pins {
		pin, _ := gateway.ParsePin(p)
		pins = append(pins, pin)
	}
	// What becomes of each pin is said on stderr, which the host shows:
	// one that does not resolve says why and is tried again as the mesh
	// changes, rather than never appearing unexplained.
	onPin := func(e gateway.PinEvent) { fmt.Fprintf(os.Stderr, "mcpmesh stdio: %s\n", e) }
	mesh := gateway.NewMeshServer(ctx, n, gateway.MeshOptions{Pins: pins, Events: req.Events, OnPin: onPin})
	defer mesh.Close()
	ss, err := mesh.Connect(ctx, transport.Connected(host), nil)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { ss.Close() })
	defer stop()
	ss.Wait()
	return nil
}

// bootstrapWait bounds how long 'mcpmesh stdio' without a daemon waits for
// peers before it serves the host.
const bootstrapWait = 5 * time.Second

// waitForMesh waits until n has joined the mesh: every one of the `want`
// --peer nodes connected (or, with none, a first peer found by mDNS) and in
// its DHT routing table, so that searches reach their cards. It gives up
// after wait, and says on w what it found.
func waitForMesh(ctx context.Context, n *node.Node, want int, wait time.Duration, w io.Writer) {
	start := time.Now()
	joined := func() (int, bool) {
		connected := len(n.Host().Network().Peers())
		d := n.Discovery()
		if d == nil || d.DHT().RoutingTable().Size() == 0 {
			return connected, false
		}
		return connected, connected >= max(want, 1)
	}
	fmt.Fprintf(w, "mcpmesh stdio: looking for peers (up to %v)…\n", wait)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		if got, ok := joined(); ok {
			fmt.Fprintf(w, "mcpmesh stdio: joined the mesh: %d peers connected (%v)\n", got, time.Since(start).Round(10*time.Millisecond))
			return
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			got, _ := joined()
			fmt.Fprintf(w, "mcpmesh stdio: %d peers connected after %v; serving anyway (searches find nodes as they are found)\n", got, wait)
			return
		case <-ctx.Done():
			return
		}
	}
}

// dialWithRetry gives a node that just started a few seconds to find the
// target (mDNS, its peers) before giving up.
func dialWithRetry(ctx context.Context, n *node.Node, info lpeer.AddrInfo, server string) (sdkmcp.Connection, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		up, err := n.DialServer(ctx, info.ID, server)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return up, err
		}
		// Its card in the DHT gives its addresses, once we have peers.
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		n.Card(cctx, info.ID)
		cancel()
		time.Sleep(300 * time.Millisecond)
	}
}
