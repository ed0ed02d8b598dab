package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	lpeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/mcpmesh/mcpmesh/agent"
	"github.com/mcpmesh/mcpmesh/control"
	"github.com/mcpmesh/mcpmesh/events/trigger"
	"github.com/mcpmesh/mcpmesh/limits"
	"github.com/mcpmesh/mcpmesh/mcp/relay"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/mcp/upstream"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/peer/delegation"
	"github.com/mcpmesh/mcpmesh/peer/identity"
	"github.com/mcpmesh/mcpmesh/peer/policy"
)

// ConfigFile is the name of the daemon's configuration file in its home.
const ConfigFile = "config.json"

// fileConfig is the daemon's configuration file. Command-line flags add to
// it; a flag sharing a name the file already shares is an error.
type fileConfig struct {
	Name        string   `json:"name,omitempty"`
	Description string   `json:"description,omitempty"`
	Tags        []string `json:"tags,omitempty"`
	Listen      []string `json:"listen,omitempty"`
	Peers       []string `json:"peers,omitempty"`
	// MDNS turns mDNS on or off (absent: on, but in a private mesh).
	MDNS   *bool                  `json:"mdns,omitempty"`
	Shares map[string]shareConfig `json:"shares,omitempty"`
	// Agents are LLM agents the node shares, each as one tool.
	Agents []agent.Config `json:"agents,omitempty"`
	// Triggers are rules that call a tool or an agent when a peer's event
	// comes (see 'mcpmesh on').
	Triggers []trigger.Rule `json:"triggers,omitempty"`
	// Policy says which peers may see and call what the node shares
	// (absent: none). Reread when the file changes or on SIGHUP.
	Policy *policy.Policy `json:"policy,omitempty"`
	// Delegation narrows what the node delegates to the peers it calls
	// (default: every tool, on every peer, for an hour).
	Delegation *delegationConfig `json:"delegation,omitempty"`
	// Limits changes the limits each peer gets (zero fields: defaults).
	Limits *limitsConfig `json:"limits,omitempty"`
	// Network says how the node is reached from other networks (relays,
	// hole punching, port mapping) and how soon a lost peer is seen.
	Network *networkConfig `json:"network,omitempty"`

	exists bool // the file was there (not only defaults)
}

// delegationConfig is the "delegation" section of the configuration file.
type delegationConfig struct {
	Tools []string `json:"tools,omitempty"` // tool patterns: TOOL or SERVER/TOOL, * for any run of characters
	Peers []string `json:"peers,omitempty"` // peer IDs or "*": where the delegate may use them
	TTL   string   `json:"ttl,omitempty"`   // how long a delegation stays valid, e.g. "10m"
	Off   bool     `json:"off,omitempty"`   // delegate nothing: peers act as themselves only
}

// limitsConfig is the "limits" section of the configuration file; -1 turns
// a limit off.
type limitsConfig struct {
	MaxConcurrentPerPeer int     `json:"maxConcurrentPerPeer,omitempty"`
	Rate                 float64 `json:"rate,omitempty"` // calls per second per peer
	Burst                int     `json:"burst,omitempty"`
	Strikes              int     `json:"strikes,omitempty"`      // refusals and bad frames that get a peer banned…
	StrikeWindow         string  `json:"strikeWindow,omitempty"` // …within this time, e.g. "10s"
	BanFor               string  `json:"banFor,omitempty"`       // e.g. "1m"
	// For calls made on behalf of one principal through other peers.
	MaxConcurrentPerPrincipal int     `json:"maxConcurrentPerPrincipal,omitempty"`
	PrincipalRate             float64 `json:"principalRate,omitempty"`
	PrincipalBurst            int     `json:"principalBurst,omitempty"`
	// libp2p's per-IP connection limits.
	ConnsPerIP     int     `json:"connsPerIP,omitempty"`     // connections open at once with one IP address
	ConnRatePerIP  float64 `json:"connRatePerIP,omitempty"`  // new connections per second with one public IP address…
	ConnBurstPerIP int     `json:"connBurstPerIP,omitempty"` // …in bursts of
	// What one peer's messages and sessions may cost (limits.Config).
	MaxMessageValues      int    `json:"maxMessageValues,omitempty"`      // JSON values in one message
	MaxMessageDepth       int    `json:"maxMessageDepth,omitempty"`       // how deep they nest
	MaxBytesPerPeer       int64  `json:"maxBytesPerPeer,omitempty"`       // memory one peer's messages in flight may hold
	MaxBytesInFlight      int64  `json:"maxBytesInFlight,omitempty"`      // … all peers' together
	WindowPerSession      int    `json:"windowPerSession,omitempty"`      // requests outstanding on one session
	PacedPerSession       int    `json:"pacedPerSession,omitempty"`       // requests in flight before the next waits for an answer
	MaxSessions           int    `json:"maxSessions,omitempty"`           // inbound sessions, all peers
	MaxHandshaking        int    `json:"maxHandshaking,omitempty"`        // … that have not sent a request yet
	MaxHandshakingPerPeer int    `json:"maxHandshakingPerPeer,omitempty"` // … of one peer
	HandshakeTimeout      string `json:"handshakeTimeout,omitempty"`      // e.g. "10s"
	IdleTimeout           string `json:"idleTimeout,omitempty"`           // e.g. "30m"
	LargeFramesAtOnce     int    `json:"largeFramesAtOnce,omitempty"`     // sessions reading a message over 64 KiB at once
	LargeFrameRate        int    `json:"largeFrameRate,omitempty"`        // bytes per second such messages are read at
}

// trustOptions turns the file's delegation and limits sections into node
// options.
func (c *fileConfig) trustOptions() ([]node.Option, error) {
	var opts []node.Option
	if d := c.Delegation; d != nil {
		switch {
		case d.Off:
			opts = append(opts, node.WithoutDelegation())
		default:
			ttl, err := optionalDuration("delegation.ttl", d.TTL)
			if err != nil {
				return nil, err
			}
			scope := delegation.Scope{Tools: d.Tools, Peers: d.Peers}
			if len(scope.Tools) == 0 {
				scope.Tools = []string{"*"}
			}
			if len(scope.Peers) == 0 {
				scope.Peers = []string{"*"}
			}
			opts = append(opts, node.WithDelegation(scope, ttl))
		}
	}
	if l := c.Limits; l != nil {
		window, err := optionalDuration("limits.strikeWindow", l.StrikeWindow)
		if err != nil {
			return nil, err
		}
		ban, err := optionalDuration("limits.banFor", l.BanFor)
		if err != nil {
			return nil, err
		}
		handshake, err := optionalDuration("limits.handshakeTimeout", l.HandshakeTimeout)
		if err != nil {
			return nil, err
		}
		idle, err := optionalDuration("limits.idleTimeout", l.IdleTimeout)
		if err != nil {
			return nil, err
		}
		opts = append(opts, node.WithLimits(limits.Config{
			MaxConcurrentPerPeer: l.MaxConcurrentPerPeer, Rate: l.Rate, Burst: l.Burst,
			Strikes: l.Strikes, StrikeWindow: window, BanFor: ban,
			MaxConcurrentPerPrincipal: l.MaxConcurrentPerPrincipal, PrincipalRate: l.PrincipalRate, PrincipalBurst: l.PrincipalBurst,
			ConnsPerIP: l.ConnsPerIP, ConnRatePerIP: l.ConnRatePerIP, ConnBurstPerIP: l.ConnBurstPerIP,
			MaxMessageValues: l.MaxMessageValues, MaxMessageDepth: l.MaxMessageDepth,
			MaxBytesPerPeer: l.MaxBytesPerPeer, MaxBytesInFlight: l.MaxBytesInFlight,
			WindowPerSession: l.WindowPerSession, PacedPerSession: l.PacedPerSession,
			MaxSessions: l.MaxSessions, MaxHandshaking: l.MaxHandshaking, MaxHandshakingPerPeer: l.MaxHandshakingPerPeer,
			HandshakeTimeout: handshake, IdleTimeout: idle,
			LargeFramesAtOnce: l.LargeFramesAtOnce, LargeFrameRate: l.LargeFrameRate,
		}))
	}
	return opts, nil
}

func optionalDuration(field, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("config %s: %q is not a duration like \"10m\"", field, s)
	}
	return d, nil
}

// shareConfig is one shared server: exactly one of Command, URL and Peer.
type shareConfig struct {
	// Command is a stdio MCP server program, run with /bin/sh.
	Command string            `json:"command,omitempty"`
	Env     map[string]string `json:"env,omitempty"` // added to the node's environment
	Dir     string            `json:"dir,omitempty"`
	// URL is a Streamable HTTP MCP server; Headers go with every request,
	// ${VAR} in a value taken from the node's environment (keep secrets
	// there, not in the file).
	URL     string            `json:"url,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	// Peer is PEER/SERVER: a server of another node, re-shared.
	Peer string `json:"peer,omitempty"`
	// Mode is how callers share a program or an endpoint: "isolated" (the
	// default: a session, and for a program a process, of its own each) or
	// "shared" (one for all callers).
	Mode string `json:"mode,omitempty"`
	// Sessions bounds an isolated share's callers' sessions.
	Sessions *sessionsConfig `json:"sessions,omitempty"`
}

// sessionsConfig is upstream.PoolConfig as the file writes it; zero fields
// keep the defaults.
type sessionsConfig struct {
	Max       int    `json:"max,omitempty"`       // in all (16)
	PerCaller int    `json:"perCaller,omitempty"` // per calling peer (4)
	Spares    int    `json:"spares,omitempty"`    // processes started ahead (1; -1 for none)
	Idle      string `json:"idle,omitempty"`      // ended when idle this long ("30m")
}

// checkTriggers checks the file's triggers: each valid, names unique.
func (c *fileConfig) checkTriggers() error {
	seen := map[string]bool{}
	for i := range c.Triggers {
		r := c.Triggers[i]
		if err := r.Check(); err != nil {
			return fmt.Errorf("config triggers[%d]: %w", i, err)
		}
		if seen[r.Name] {
			return fmt.Errorf("config triggers[%d]: a trigger named %q comes twice", i, r.Name)
		}
		seen[r.Name] = true
	}
	return nil
}

// loadConfig reads the configuration file at path. A missing file is an
// error only if the user named it.
func loadConfig(path string, named bool) (*fileConfig, error) {
	cfg := &fileConfig{}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !named {
		return cfg, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return parseConfig(path, data)
}

// parseConfig reads data, the configuration file at path.
func parseConfig(path string, data []byte) (*fileConfig, error) {
	cfg := &fileConfig{}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	cfg.exists = true
	return cfg, nil
}

func configPath(home, flag string) (string, bool) {
	if flag != "" {
		return flag, true
	}
	return filepath.Join(home, ConfigFile), false
}

// shareSpec is one server to share, from the file or a flag.
type shareSpec struct {
	name    string
	command upstream.Command // a program, if Args is set
	remote  *upstream.Remote // a Streamable HTTP server
	target  lpeer.AddrInfo   // a peer's server, re-shared
	server  string
	display string
	opts    []node.ShareOption // a program's or an endpoint's mode and bounds
	source  shareConfig        // what the file and flags said, to tell a changed share on reload
}

// shareSpecs merges the file's shares with the flags' and checks them all.
func shareSpecs(cfg *fileConfig, shares, httpShares, headers, relays, modes []string) ([]shareSpec, error) {
	all := map[string]shareConfig{}
	for name, sc := range cfg.Shares {
		all[name] = sc
	}
	add := func(flag, name string, sc shareConfig) error {
		if _, dup := all[name]; dup {
			return usageError("%s: a server named %q is already shared", flag, name)
		}
		all[name] = sc
		return nil
	}
	for _, s := range shares {
		name, command, ok := strings.Cut(s, "=")
		if !ok || strings.TrimSpace(command) == "" {
			return nil, usageError("--share %q: want NAME=COMMAND", s)
		}
		if err := add("--share", name, shareConfig{Command: command}); err != nil {
			return nil, err
		}
	}
	for _, s := range httpShares {
		name, url, ok := strings.Cut(s, "=")
		if !ok || url == "" {
			return nil, usageError("--share-http %q: want NAME=URL", s)
		}
		if err := add("--share-http", name, shareConfig{URL: url}); err != nil {
			return nil, err
		}
	}
	for _, h := range headers {
		name, header, ok := strings.Cut(h, "=")
		key, value, ok2 := strings.Cut(header, ":")
		sc, known := all[name]
		if !ok || !ok2 || !known || sc.URL == "" {
			return nil, usageError("--share-header %q: want NAME=Header: value, NAME shared with --share-http", h)
		}
		if sc.Headers == nil {
			sc.Headers = map[string]string{}
		}
		sc.Headers[strings.TrimSpace(key)] = strings.TrimSpace(value)
		all[name] = sc
	}
	for _, r := range relays {
		name, ref, ok := strings.Cut(r, "=")
		if !ok {
			return nil, usageError("--share-peer %q: want NAME=PEER/SERVER", r)
		}
		if err := add("--share-peer", name, shareConfig{Peer: ref}); err != nil {
			return nil, err
		}
	}
	for _, m := range modes {
		name, mode, ok := strings.Cut(m, "=")
		sc, known := all[name]
		if !ok || !known || (sc.Command == "" && sc.URL == "") {
			return nil, usageError("--share-mode %q: want NAME=isolated or NAME=shared, NAME shared with --share or --share-http", m)
		}
		sc.Mode = mode
		all[name] = sc
	}

	names := make([]string, 0, len(all))
	for name := range all {
		names = append(names, name)
	}
	sort.Strings(names)
	var specs []shareSpec
	for _, name := range names {
		sc := all[name]
		if err := transport.ValidateServerName(name); err != nil {
			return nil, usageError("share: %v", err)
		}
		spec := shareSpec{name: name, source: sc}
		kinds := 0
		if sc.Command != "" {
			kinds++
			spec.command = upstream.ShellCommand(sc.Command)
			spec.command.Dir = sc.Dir
			if len(sc.Env) > 0 {
				env := os.Environ()
				for k, v := range sc.Env {
					env = append(env, k+"="+os.ExpandEnv(v))
				}
				spec.command.Env = env
			}
			spec.display = sc.Command
		}
		if sc.URL != "" {
			kinds++
			h := http.Header{}
			for k, v := range sc.Headers {
				h.Set(k, os.ExpandEnv(v))
			}
			spec.remote = &upstream.Remote{URL: sc.URL, Header: h}
			spec.display = sc.URL
		}
		if sc.Peer != "" {
			kinds++
			peerPart, server, err := control.SplitTarget(sc.Peer)
			if err != nil {
				return nil, usageError("share %s: peer %v", name, err)
			}
			info, err := identity.ParseTarget(peerPart)
			if err != nil {
				return nil, usageError("share %s: %v", name, err)
			}
			spec.target, spec.server, spec.display = info, server, sc.Peer
		}
		if kinds != 1 {
			return nil, usageError("share %s: give exactly one of command, url and peer", name)
		}
		if sc.Mode != "" || sc.Sessions != nil {
			if sc.Peer != "" {
				return nil, usageError("share %s: mode and sessions are for programs and URLs; a re-shared peer's server is the peer's to share", name)
			}
			mode, err := relay.ParseMode(sc.Mode)
			if err != nil {
				return nil, usageError("share %s: %v", name, err)
			}
			spec.opts = append(spec.opts, node.ShareMode(mode))
			if s := sc.Sessions; s != nil {
				idle, err := optionalDuration("shares."+name+".sessions.idle", s.Idle)
				if err != nil {
					return nil, usageError("%v", err)
				}
				if s.Max < 0 || s.PerCaller < 0 {
					return nil, usageError("share %s: sessions.max and sessions.perCaller must be positive", name)
				}
				spec.opts = append(spec.opts, node.ShareSessions(upstream.PoolConfig{MaxSessions: s.Max, MaxPerCaller: s.PerCaller, Spares: s.Spares, IdleTimeout: idle}))
			}
		}
		specs = append(specs, spec)
	}
	return specs, nil
}

// sharePeers re-shares the other nodes' servers among specs (the
// programs and HTTP servers are startShares's), and keeps the node
// connected to those given with addresses while each share lasts: it adds
// to keep how to stop that, by share name.
func sharePeers(n *node.Node, specs []shareSpec, keep map[string]context.CancelFunc) error {
	for _, s := range specs {
		if len(s.command.Args) > 0 || s.remote != nil {
			continue
		}
		if err := n.SharePeer(s.name, s.target.ID, s.server); err != nil {
			return err
		}
		if len(s.target.Addrs) > 0 {
			ctx, cancel := context.WithCancel(context.Background())
			n.KeepConnectedWhile(ctx, s.target)
			keep[s.name] = cancel
		}
	}
	return nil
}

// mergeStrings appends the flag's values to the file's, without repeats.
func mergeStrings(file, flag []string) []string {
	out := slices.Clone(file)
	for _, v := range flag {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}
