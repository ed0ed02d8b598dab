package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	logging "github.com/ipfs/go-log/v2"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/spf13/cobra"

	"github.com/mcpmesh/mcpmesh/agent"
	"github.com/mcpmesh/mcpmesh/control"
	"github.com/mcpmesh/mcpmesh/discovery"
	"github.com/mcpmesh/mcpmesh/events/trigger"
	"github.com/mcpmesh/mcpmesh/gateway"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/metrics"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/peer/identity"
)

func newNodeCmd(g *globals) *cobra.Command {
	var (
		listen     []string
		peers      []string
		shares     []string
		modes      []string
		relays     []string
		httpSh     []string
		headers    []string
		cfgPath    string
		name       string
		api        string
		maxMsg     int
		timeout    time.Duration
		mdns       bool
		noMDNS     bool
		noDHT      bool
		cardTTL    time.Duration
		desc       string
		tags       []string
		httpAt     string
		httpPins   []string
		meshKey    string
		open       bool
		metricsAt  string
		network    networkFlags
		uiAt       string
		httpEvents bool
	)
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run a node: serve and call MCP over libp2p until stopped",
		Long: `Run an mcpmesh node in the foreground.

The node's identity (an Ed25519 key) lives in its home folder and is created on
first start. It listens on TCP and QUIC, prints its full multiaddrs (give one to
another node's --peer or 'mcpmesh connect'), and serves a control API on
127.0.0.1 that the other commands find through the home folder.

The node takes part in the mesh's DHT: it publishes a signed card of what it
shares and advertises every tool name and tag, so that any node can find it
('mcpmesh find', 'mcpmesh call any'). --peer addresses double as bootstrap
peers, and mDNS finds nodes on the local network (--no-mdns to turn off).

Peers on other networks: AutoNAT (peers dial this node back) decides whether
the node is publicly reachable. If it is not (or not known to be), it reserves a
slot with a relay — one given with --relay, or any connected peer that serves
as one — and announces an address through it; relayed connections turn into
direct ones by hole punching when both sides can (--hole-punching), and the
router is asked for a port mapping (--port-mapping). --relay-service on makes
this node a relay for others even when it is not publicly reachable (a node
that joins two networks); auto (the default) relays only while it is.
'mcpmesh status' shows what was decided. While a call or a task runs, its
peers are pinged every second; one silent for 3s has its connection closed, so
the call fails at once (config "network": livenessInterval, livenessTimeout).

--mesh-key FILE (default HOME/swarm.key when present; see 'mcpmesh init-mesh')
makes the node a member of a private mesh: it connects only to nodes holding
the same key, over TCP and WebSocket only (no QUIC listen addresses). mDNS is
then off unless --mdns: members announce under a name derived from the key, so
that outsiders cannot tell which mesh it is, but anyone on the LAN still learns
the members' peer IDs and addresses.

Each --share NAME=COMMAND shares a stdio MCP server program with the mesh under
NAME, passed through: a caller sees the program as a host running it would (its
own initialize, tools, errors, notifications and questions). Each caller session
gets a process of its own (one is kept started ahead), so one caller's state is
not another's; --share-mode NAME=shared runs one process for every caller
instead (for stateless programs). Each process gets a folder of its own in
$MCPMESH_SESSION_DIR, for programs that keep state in files. The node runs one
more process of its own to list what the program offers; if it exits, the node
says so and restarts it with backoff.

Each --share-http NAME=URL shares a Streamable HTTP MCP server the same way (a
session of its own per caller session);
--share-header NAME="Authorization: Bearer ${TOKEN}" adds a header to its
requests (the value's ${VAR} read from the environment, so secrets stay out of
the command line).

Each --share-peer NAME=PEER/SERVER re-shares a server of another node under
NAME: each session is relayed to PEER, message by message, unchanged.

--http 127.0.0.1:PORT serves MCP hosts over Streamable HTTP: /mcp is mesh mode
(search, describe and call tools across the mesh), /mcp/PEER/SERVER is the
server SERVER of peer PEER exactly, relayed unchanged. Loopback only: requests
whose Host or Origin is not loopback are refused (DNS-rebinding protection).
Each --http-pin [NAME=]PEER/[SERVER/]TOOL adds a remote tool to /mcp as a tool
of its own, as 'mcpmesh stdio --pin' does.

--ui 127.0.0.1:PORT serves a web console: the mesh, capability search, live
task trees, the audit trail and the policy, and a form to call a tool. Its URL,
printed at start, carries a login token; 'mcpmesh ui' opens it. Loopback only,
with the same Host/Origin checks as --http.

Closed by default: peers see and may call only what the "policy" of the
configuration file grants them, by peer ID or group, per server, tool, resource
and prompt, for their own calls or when acting for another peer (see README).
--open lets every peer see and call everything: for demos and labs only.

The configuration file is reread when it changes, on SIGHUP and on 'mcpmesh
config reload': its policy, shares, agents and triggers are applied, each
diffed by name with what runs (a share added starts, one removed or changed
stops once its calls in flight are answered, within 10s); a change to any
other section waits for a restart, and says so. A file with an error applies
nothing: the running configuration stays, and the daemon says why.

Every call the node serves (or refuses) is recorded in HOME/audit.log; 'mcpmesh
audit' shows recent records. --metrics 127.0.0.1:PORT serves Prometheus
metrics (calls, latencies, refusals, tasks, DHT lookups, libp2p's own).

A configuration file (--config, default HOME/config.json when present) can list
all of this instead of flags; see the README for its format.

Logs: quiet by default; set GOLOG_LOG_LEVEL (e.g. "info" or
"mcpmesh/node=debug") for more.`,
		Example: `  mcpmesh node
  mcpmesh node --home /tmp/b --listen /ip4/127.0.0.1/tcp/4002 --peer /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...
  mcpmesh node --share everything="npx -y @modelcontextprotocol/server-everything stdio"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, named := configPath(g.home, cfgPath)
			raw, _ := os.ReadFile(path) // what a reload diffs against
			file, err := loadConfig(path, named)
			if err != nil {
				return usageError("%v", err)
			}
			specs, err := shareSpecs(file, shares, httpSh, headers, relays, modes)
			if err != nil {
				return err
			}
			if err := file.checkTriggers(); err != nil {
				return usageError("%v", err)
			}
			peers = mergeStrings(file.Peers, peers)
			listen = mergeStrings(file.Listen, listen)
			tags = mergeStrings(file.Tags, tags)
			if !cmd.Flags().Changed("name") && file.Name != "" {
				name = file.Name
			}
			if name == "" {
				name = defaultNodeName()
			}
			if desc == "" {
				desc = file.Description
			}
			for _, p := range peers {
				if _, err := identity.ParseTarget(p); err != nil {
					return usageError("--peer: %v", err)
				}
			}
			for _, l := range listen {
				if _, err := ma.NewMultiaddr(l); err != nil {
					return usageError("--listen %q: %v: want a multiaddr such as /ip4/127.0.0.1/tcp/4001", l, err)
				}
			}
			if httpAt != "" {
				if err := checkHTTPAddr(httpAt); err != nil {
					return usageError("--http %v", err)
				}
			}
			if uiAt != "" {
				if err := checkUIAddr(uiAt); err != nil {
					return usageError("--ui %v", err)
				}
			}
			var pins []gateway.Pin
			for _, s := range httpPins {
				if httpAt == "" {
					return usageError("--http-pin: pins a tool on the --http gateway; give --http too")
				}
				p, err := gateway.ParsePin(s)
				if err != nil {
					return usageError("--http-pin: %v", err)
				}
				pins = append(pins, p)
			}
			if len(listen) == 0 {
				listen = node.DefaultListenAddrs
			}
			for _, w := range shareWarnings(file, specs, headers) {
				fmt.Fprintf(os.Stderr, "warning: %s\n", w)
			}
			if err := checkListenPorts(listen); err != nil {
				return err
			}
			if os.Getenv("GOLOG_LOG_LEVEL") == "" {
				// Quiet, but a daemon must say when a shared program dies or a peer is lost.
				logging.SetLogLevelRegex("mcpmesh/.*", "warn")
			}

			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if c, err := control.Dial(ctx, g.home); err == nil {
				id, _ := c.ID(ctx)
				return fmt.Errorf("a node (%s) already runs for home %s: stop it, or use another --home", id.ID, g.home)
			}
			var meshSaid string
			meshOpts, err := meshKeyOptions(g.home, meshKey, listen, func(s string) { meshSaid = s })
			if err != nil {
				return usageError("%v", err)
			}
			opts := []node.Option{
				node.WithHome(g.home),
				node.WithName(name),
				node.WithVersion(version),
				node.WithListenAddrs(listen...),
				node.WithMaxMessageSize(maxMsg),
				node.WithDialTimeout(timeout),
				node.WithDescription(desc),
				node.WithTags(tags...),
			}
			opts = append(opts, meshOpts...)
			useMDNS, err := mdnsOn(mdns, noMDNS, file.MDNS, len(meshOpts) > 0)
			if err != nil {
				return usageError("%v", err)
			}
			if meshSaid != "" && !noDHT {
				meshSaid += "; " + mdnsSaid(useMDNS)
			}
			if open {
				opts = append(opts, node.WithOpen())
				fmt.Fprintln(os.Stderr, "WARNING: --open: every peer that connects may see and call everything this node shares. Use it for demos and labs only.")
			} else {
				opts = append(opts, node.WithPolicy(file.Policy))
			}
			trustOpts, err := file.trustOptions()
			if err != nil {
				return usageError("%v", err)
			}
			opts = append(opts, trustOpts...)
			netOpts, err := networkOptions(cmd, file.Network, &network)
			if err != nil {
				return usageError("%v", err)
			}
			opts = append(opts, netOpts...)
			var reg *metrics.Metrics
			if metricsAt != "" {
				reg = metrics.New()
				opts = append(opts, node.WithMetrics(reg))
			}
			if !noDHT {
				opts = append(opts, node.WithDiscovery(discovery.Config{MDNS: useMDNS, CardTTL: cardTTL}))
			}
			n, err := node.New(opts...)
			if err != nil {
				return err
			}
			defer n.Close()
			addBuiltins(n)
			for _, a := range file.Agents {
				if err := agent.Add(n, a); err != nil {
					// An agent whose key is missing is left out, not the node:
					// the others (scripted, borrowed, local models) work.
					var missing *agent.MissingKeyError
					if errors.As(err, &missing) {
						fmt.Fprintf(os.Stderr, "warning: %v: the agent is skipped (set it and restart the node)\n", err)
						continue
					}
					return usageError("%v", err)
				}
			}
			// Re-shared peers' servers start at once; programs and HTTP
			// servers come up in the background (see startShares).
			kept := map[string]context.CancelFunc{} // re-shared peers kept connected, by share
			if err := sharePeers(n, specs, kept); err != nil {
				return err
			}

			// The control API first: 'mcpmesh id' and 'status' answer (and a
			// second daemon on this home is refused) while shares start.
			srv, err := control.Listen(n, g.home, api)
			if err != nil {
				return err
			}
			defer srv.Close()
			daemon := control.Daemon{
				State: "starting", Since: time.Now(), PID: os.Getpid(), Home: g.home,
				Policy: describePolicy(file.Policy, open), Mesh: "open mesh (no mesh key)",
				MDNS: !noDHT && useMDNS, DHT: !noDHT, Control: srv.Addr(),
			}
			if meshSaid != "" {
				daemon.Mesh = meshSaid
			}
			if file.exists {
				daemon.Config = path
			}
			srv.SetDaemon(daemon)
			triggers := trigger.New(n, trigger.Options{StateDir: filepath.Join(g.home, TriggersDir)})
			defer triggers.Close()
			for _, r := range file.Triggers {
				if err := triggers.Add(r); err != nil {
					return usageError("config triggers: %v", err)
				}
			}
			srv.SetTriggers(triggers)
			var metricsURL string
			if reg != nil {
				ms, err := reg.Serve(metricsAt)
				if err != nil {
					return fmt.Errorf("--metrics: %w", err)
				}
				defer ms.Close()
				metricsURL = "http://" + ms.Addr().String() + "/metrics"
			}
			out := &syncWriter{w: cmd.OutOrStdout()}
			// The file is reloaded when it changes, on SIGHUP and on 'mcpmesh
			// config reload': the policy, shares, agents and triggers.
			reload := newReloader(ctx, n, triggers, path, open, shareFlags{shares, httpSh, headers, relays, modes}, file, raw, specs, kept, out, os.Stderr)
			reload.policySaid = func(p string) { srv.UpdateDaemon(func(d *control.Daemon) { d.Policy = p }) }
			srv.SetReloader(reload.reloadNow)
			watchCtx, stopWatch := context.WithCancel(ctx)
			watched := make(chan struct{})
			go func() {
				defer close(watched)
				reload.watch(watchCtx)
			}()
			defer func() { stopWatch(); <-watched }()
			var gatewayURL string
			if httpAt != "" {
				url, stopGateway, err := serveGateway(ctx, n, httpAt, gateway.MeshOptions{Pins: pins, Events: httpEvents}, maxMsg)
				if err != nil {
					return err
				}
				defer stopGateway()
				gatewayURL = url
			}
			var consoleURL string
			if uiAt != "" {
				url, stopConsole, err := serveConsole(n, uiAt, specs, srv)
				if err != nil {
					return err
				}
				defer stopConsole()
				consoleURL = url
			}

			fmt.Fprintf(out, "mcpmesh node %s\n", n.ID())
			fmt.Fprintf(out, "  name:    %s\n", name)
			fmt.Fprintf(out, "  home:    %s\n", g.home)
			fmt.Fprintf(out, "  servers: %s\n", strings.Join(bannerServers(n.Shared(), specs), ", "))
			fmt.Fprintf(out, "  control: %s\n", srv.Addr())
			fmt.Fprintf(out, "  policy:  %s\n", daemon.Policy)
			if len(file.Triggers) > 0 {
				fmt.Fprintf(out, "  triggers: %d (mcpmesh on --list)\n", len(file.Triggers))
			}
			if metricsURL != "" {
				fmt.Fprintf(out, "  metrics: %s\n", metricsURL)
			}
			if meshSaid != "" {
				fmt.Fprintf(out, "  mesh:    %s\n", meshSaid)
			}
			if gatewayURL != "" {
				fmt.Fprintf(out, "  http:    %s (mesh mode)\n", gatewayURL)
				fmt.Fprintf(out, "           %s/PEER/SERVER (one peer's server, transparent)\n", gatewayURL)
			}
			if consoleURL != "" {
				fmt.Fprintf(out, "  console: %s\n", consoleURL)
			}
			for i, a := range n.Addrs() {
				label := "  listen:  "
				if i > 0 {
					label = "           "
				}
				fmt.Fprintln(out, label+a.String())
			}
			shared := startShares(ctx, n, specs, out, os.Stderr)
			for _, p := range peers {
				info, _ := identity.ParseTarget(p)
				cctx, cancel := context.WithTimeout(ctx, timeout)
				err := n.ConnectAddr(cctx, info)
				cancel()
				if err != nil {
					fmt.Fprintf(os.Stderr, "warning: %v (will keep trying)\n", err)
				} else {
					fmt.Fprintf(out, "connected to %s\n", info.ID)
				}
				n.KeepConnected(info)
			}
			// Ready once every shared server has started or failed its
			// first start, and the card listing them is served: what
			// scripts wait for.
			select {
			case <-shared:
			case <-ctx.Done():
			}
			if d := n.Discovery(); d != nil && ctx.Err() == nil {
				sctx, cancel := context.WithTimeout(ctx, cardSyncWait)
				if err := d.Sync(sctx); err != nil && ctx.Err() == nil {
					fmt.Fprintf(os.Stderr, "warning: %v; peers will find this node's tools once it is (see the log with --log-level debug)\n", err)
				}
				cancel()
			}
			if ctx.Err() == nil {
				srv.UpdateDaemon(func(d *control.Daemon) { d.State = "running" })
				fmt.Fprintln(out, "ready; Ctrl-C to stop")
				<-ctx.Done()
			}
			stop() // a second Ctrl-C kills the process at once
			<-shared
			fmt.Fprintln(out, "stopping")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&listen, "listen", nil, "multiaddr to listen on (repeatable; default all interfaces, TCP and QUIC, free ports)")
	f.StringArrayVar(&peers, "peer", nil, "full multiaddr of a peer to connect to and stay connected to (repeatable)")
	f.StringArrayVar(&shares, "share", nil, "NAME=COMMAND: share a stdio MCP server program under NAME (repeatable)")
	f.StringArrayVar(&relays, "share-peer", nil, "NAME=PEER/SERVER: re-share SERVER of another node under NAME, for peers that cannot reach it (repeatable; PEER is a peer ID or a full multiaddr)")
	f.StringArrayVar(&httpSh, "share-http", nil, "NAME=URL: share a Streamable HTTP MCP server under NAME (repeatable)")
	f.StringArrayVar(&headers, "share-header", nil, "NAME=Header: value, sent to the --share-http server NAME (repeatable; ${VAR} is read from the environment)")
	f.StringArrayVar(&modes, "share-mode", nil, "NAME=isolated|shared: how callers share the --share or --share-http server NAME (default isolated: a session, and for a program a process, of its own each; repeatable)")
	f.StringVar(&cfgPath, "config", "", "configuration file (JSON; default HOME/config.json if it exists): name, description, tags, listen, peers, shares")
	f.StringVar(&name, "name", "", "the name this node gives peers, on its card (default: this machine's host name)")
	f.StringVar(&api, "api", "127.0.0.1:0", "loopback address of the control API")
	f.IntVar(&maxMsg, "max-message-size", transport.DefaultMaxMessageSize, "largest MCP message accepted on a stream, in bytes")
	f.DurationVar(&timeout, "dial-timeout", 10*time.Second, "how long reaching a peer may take")
	f.BoolVar(&mdns, "mdns", false, "look for peers on the local network with mDNS (the default, but in a private mesh, where the name announced is derived from the key)")
	f.BoolVar(&noMDNS, "no-mdns", false, "do not look for peers on the local network")
	f.BoolVar(&noDHT, "no-dht", false, "take no part in the mesh's DHT: no card, no lookups (find, card, call any)")
	f.DurationVar(&cardTTL, "card-ttl", 3*time.Minute, "how long this node's published card stays valid; a node that leaves drops out of lookups within this time")
	f.StringVar(&desc, "description", "", "what this node offers, in a sentence, for its card")
	f.StringArrayVar(&tags, "tag", nil, "a tag for this node on its card, found with 'mcpmesh find tag:NAME' (repeatable)")
	f.StringVar(&meshKey, "mesh-key", "", "private mesh: the key file from 'mcpmesh init-mesh' (default HOME/swarm.key if it exists); TCP/WebSocket only, no QUIC")
	f.BoolVar(&open, "open", false, "let every peer see and call everything this node shares, ignoring the policy (demos and labs only)")
	f.StringVar(&metricsAt, "metrics", "", "HOST:PORT to serve Prometheus metrics on (/metrics; e.g. 127.0.0.1:9464)")
	f.StringVar(&httpAt, "http", "", "loopback HOST:PORT to serve MCP over Streamable HTTP: /mcp (mesh mode) and /mcp/PEER/SERVER (one server, transparent)")
	f.StringVar(&uiAt, "ui", "", "loopback HOST:PORT to serve the web console on (e.g. 127.0.0.1:8780; 'mcpmesh ui' opens it)")
	f.StringArrayVar(&httpPins, "http-pin", nil, "[NAME=]PEER/[SERVER/]TOOL: list a remote tool on --http's /mcp as a tool of its own (repeatable)")
	f.BoolVar(&httpEvents, "http-events", false, "list mesh_subscribe and mesh_events on --http's /mcp, to wait for the mesh's events")
	network.add(cmd)
	return cmd
}

// defaultNodeName is the name a node gives peers when neither --name nor
// the configuration file sets one: the machine's host name (its first
// label, letters, digits, '-' and '_' only), so that peers tell machines
// apart; "mcpmesh" if it has none.
func defaultNodeName() string {
	h, _ := os.Hostname()
	return sanitizeNodeName(h)
}

func sanitizeNodeName(host string) string {
	host, _, _ = strings.Cut(host, ".")
	var b strings.Builder
	for _, r := range host {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
		if b.Len() >= 32 {
			break
		}
	}
	if name := strings.Trim(b.String(), "-"); name != "" && name != "localhost" {
		return name
	}
	return "mcpmesh"
}

// cardSyncWait bounds how long the daemon waits, before it says it is
// ready, for its card to be built and stored where peers ask for it.
const cardSyncWait = 10 * time.Second
