package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mcpmesh/mcpmesh/control"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
)

func newPolicyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Show the daemon's policy: who may see and call what it shares",
		Long: `Show the policy the daemon applies: its groups and grants, as the configuration
file writes them, or "open" for a daemon started with --open.

The policy comes from the "policy" section of the configuration file and is
reread when the file changes, or on SIGHUP; see 'Who may call what' in the
README. 'mcpmesh policy check' asks what it answers for one peer.`,
		Example: `  mcpmesh policy
  mcpmesh policy --json
  mcpmesh policy check 12D3KooW... node/pay --for 12D3KooW...`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := dial(cmd, g)
			if err != nil {
				return err
			}
			p, err := c.Policy(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.json {
				return printJSON(out, p)
			}
			fmt.Fprintf(out, "policy: %s\n", p.Summary)
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, p.Policy, "", "  "); err == nil && pretty.Len() > 0 && pretty.String() != `"open"` && pretty.String() != "null" {
				fmt.Fprintln(out, pretty.String())
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&g.json, "json", false, "print JSON")
	cmd.AddCommand(newPolicyCheckCmd(g))
	return cmd
}

func newPolicyCheckCmd(g *globals) *cobra.Command {
	var forPeer, kind string
	cmd := &cobra.Command{
		Use:   "check PEER SERVER/NAME",
		Short: "Ask whether the policy lets PEER use a tool, resource or prompt",
		Long: `Ask whether the daemon's policy lets PEER use SERVER/NAME: a tool (the
default), a resource (--kind resource; NAME is its URI) or a prompt (--kind
prompt), for itself or acting for another peer (--for PEER). Prints whether
the call would be allowed and whether the capability is listed to PEER, and
exits 1 if it would be refused.`,
		Example: `  mcpmesh policy check 12D3KooWB... node/pay
  mcpmesh policy check 12D3KooWB... node/pay --for 12D3KooWA...
  mcpmesh policy check 12D3KooWB... docs/file:///pub/a.txt --kind resource`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			server, name, ok := strings.Cut(args[1], "/")
			if !ok || transport.ValidateServerName(server) != nil || name == "" {
				return usageError("%q: want SERVER/NAME, like node/echo", args[1])
			}
			c, err := dial(cmd, g)
			if err != nil {
				return err
			}
			res, err := c.CheckPolicy(cmd.Context(), control.CheckRequest{Peer: args[0], For: forPeer, Server: server, Kind: kind, Name: name})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.json {
				if err := printJSON(out, res); err != nil {
					return err
				}
			} else {
				who := args[0]
				if forPeer != "" {
					who += " acting for " + forPeer
				}
				verdict := "refused (not permitted)"
				if res.Allowed {
					verdict = "allowed"
				}
				listed := "not listed to it"
				if res.Listed {
					listed = "listed to it"
				}
				fmt.Fprintf(out, "%s: %s %s; %s\n", who, verdict, args[1], listed)
			}
			if !res.Allowed {
				return errors.New("not permitted")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&forPeer, "for", "", "the peer PEER would act for (a verified delegation)")
	cmd.Flags().StringVar(&kind, "kind", "tool", "tool, resource or prompt")
	cmd.Flags().BoolVar(&g.json, "json", false, "print JSON")
	return cmd
}
