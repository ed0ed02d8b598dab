package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mcpmesh/mcpmesh/node"
)

func newInitMeshCmd(g *globals) *cobra.Command {
	var (
		out   string
		force bool
	)
	cmd := &cobra.Command{
		Use:   "init-mesh",
		Short: "Create a mesh secret: nodes started with it form a private mesh",
		Long: `Create a mesh secret: a libp2p private network key (32 random bytes, in the
"/key/swarm/psk/1.0.0/" format), written to HOME/swarm.key (or --out FILE) with
mode 0600.

Nodes started with the key ('mcpmesh node --mesh-key FILE', or the key in their
home folder as swarm.key, which 'mcpmesh node' and 'mcpmesh stdio' use on their
own) connect only to nodes that hold the same key: a node without it cannot even
complete a connection. Anyone with the file can join the mesh: hand it out as
you would a password.

The cost: libp2p private networks run over TCP (and WebSocket) only, not QUIC,
so such nodes have no 0-RTT connection setup; relays and hole punching work over
TCP.

An existing key is never replaced without --force (nodes that hold the old key
could no longer reach this one).`,
		Example: `  mcpmesh init-mesh
  mcpmesh init-mesh --out team.key
  mcpmesh --home /tmp/b node --mesh-key team.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := out
			if path == "" {
				path = filepath.Join(g.home, node.MeshKeyFile)
			}
			if err := node.WriteMeshKey(path, force); err != nil {
				return err
			}
			abs, err := filepath.Abs(path)
			if err != nil {
				abs = path
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "wrote a new mesh key to %s (mode 0600)\n\n", abs)
			fmt.Fprintf(w, "Nodes started with this key form a private mesh: they connect only to each\n")
			fmt.Fprintf(w, "other. Keep it secret: anyone with the file can join. On every node, either\n")
			fmt.Fprintf(w, "  copy it into the node's home folder as %s (used automatically), or\n", node.MeshKeyFile)
			fmt.Fprintf(w, "  mcpmesh node --mesh-key %s\n", abs)
			fmt.Fprintf(w, "Private meshes use TCP (and WebSocket) only: no QUIC.\n")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "file to write the key to (default HOME/swarm.key)")
	f.BoolVar(&force, "force", false, "replace an existing key")
	return cmd
}

// meshKeyOptions returns the node options of a private mesh: the key of
// --mesh-key (path), else HOME/swarm.key if it exists, else none. say
// receives what to tell the user: which key, and the listen addresses
// dropped (QUIC) from listen.
func meshKeyOptions(home, path string, listen []string, say func(string)) ([]node.Option, error) {
	if path == "" {
		p := filepath.Join(home, node.MeshKeyFile)
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		path = p
	}
	psk, err := node.ReadMeshKey(path)
	if err != nil {
		return nil, fmt.Errorf("mesh key: %w", err)
	}
	msg := "private mesh: key " + path + "; TCP/WebSocket only, no QUIC"
	if _, dropped := node.PrivateNetworkAddrs(listen); len(dropped) > 0 {
		msg += " (not listening on " + strings.Join(dropped, ", ") + ")"
	}
	say(msg)
	return []node.Option{node.WithPrivateNetwork(psk)}, nil
}

// mdnsOn decides whether a node looks for peers with mDNS: --mdns or
// --no-mdns if given, else the configuration file's "mdns", else on in an
// open mesh and off in a private one, whose members, when asked, announce
// under a name derived from the mesh key (discovery.PrivateMDNSService).
func mdnsOn(on, off bool, file *bool, private bool) (bool, error) {
	switch {
	case on && off:
		return false, errors.New("--mdns and --no-mdns: give one or the other")
	case on:
		return true, nil
	case off:
		return false, nil
	case file != nil:
		return *file, nil
	}
	return !private, nil
}

// mdnsSaid is what a private mesh's node tells the user about mDNS.
func mdnsSaid(on bool) string {
	if on {
		return "mDNS on, under a name derived from the key (anyone on the LAN still learns members' peer IDs and addresses)"
	}
	return "mDNS off (--mdns announces under a name derived from the key)"
}
