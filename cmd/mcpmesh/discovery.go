package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mcpmesh/mcpmesh/control"
)

func newFindCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "find QUERY",
		Short: "Find the tools, tags or event types peers offer, anywhere in the mesh",
		Long: `Find, through the mesh's DHT and the cards of the peers this node knows, the
tools whose names or descriptions hold the words of QUERY, as the mesh_search
tool of 'mcpmesh stdio' does (best matches first, grouped by peer); or, exactly,
tag:NAME for every tool (or node) with that tag, or event:NAME for the nodes
that emit events of that name (see 'mcpmesh on'). Each provider's signed card
is fetched and verified; tag: and event: results print as they arrive, and the
lookup ends within --timeout.`,
		Example: `  mcpmesh find sum
  mcpmesh find "long running"
  mcpmesh find tag:github --json
  mcpmesh find event:mcp.resource.updated`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if q := strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(args[0], "tag:"), "event:")); q == "" {
				return usageError("empty query: give words of a tool's name or description, tag:NAME or event:TYPE")
			}
			c, err := dial(cmd, g)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			n := 0
			start := time.Now()
			err = c.Find(cmd.Context(), args[0], timeout, func(r control.FindResult) {
				n++
				if g.json {
					printJSONLine(out, r)
					return
				}
				for _, m := range r.Matches {
					if m.Event != "" {
						fmt.Fprintf(out, "%s  %-12s event %s  %s\n", r.Peer, r.Name, m.Event, firstLine(m.Description, 60))
						continue
					}
					fmt.Fprintf(out, "%s  %-12s %s/%s  %s\n", r.Peer, r.Name, m.Server, m.Tool, firstLine(m.Description, 60))
				}
				if len(r.Matches) == 0 {
					fmt.Fprintf(out, "%s  %-12s (node tagged %s)\n", r.Peer, r.Name, strings.TrimPrefix(args[0], "tag:"))
				}
			})
			if err != nil {
				return err
			}
			if n == 0 {
				// The lookup ends when the DHT has answered, most often long
				// before --timeout: say how long it took.
				return &exitError{code: 1, err: fmt.Errorf("no peer offers %q (the lookup ended after %v): words match tools' names and descriptions; tag:NAME and event:TYPE are exact",
					args[0], time.Since(start).Round(10*time.Millisecond))}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&g.json, "json", false, "print one JSON object per provider, per line")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "end the lookup after this long")
	return cmd
}

func newCardCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "card PEER",
		Short: "Print a peer's verified capability card from the DHT",
		Long: `Fetch PEER's card from the mesh's DHT, check its signature and expiry, and
print what the peer offers: servers, tools, resources and prompts, with its
addresses. PEER is a peer ID (its own works too).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkPeer(args[0]); err != nil {
				return err
			}
			c, err := dial(cmd, g)
			if err != nil {
				return err
			}
			card, err := c.Card(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.json {
				return printJSON(out, card)
			}
			fmt.Fprintf(out, "%s  %s %s (card issued %s, valid until %s)\n", card.Peer, card.Name, card.Version,
				card.Issued.Local().Format(time.TimeOnly), card.Expires.Local().Format(time.TimeOnly))
			if card.Desc != "" {
				fmt.Fprintf(out, "  %s\n", card.Desc)
			}
			if len(card.Tags) > 0 {
				fmt.Fprintf(out, "  tags: %s\n", strings.Join(card.Tags, ", "))
			}
			for _, a := range card.Addrs {
				fmt.Fprintf(out, "  addr: %s\n", a)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			for _, s := range card.Servers {
				fmt.Fprintf(tw, "server %s\t\n", s.Name)
				for _, t := range s.Tools {
					tags := ""
					if len(t.Tags) > 0 {
						tags = " [" + strings.Join(t.Tags, ",") + "]"
					}
					fmt.Fprintf(tw, "  tool %s\t%s%s\n", t.Name, firstLine(t.Description, 60), tags)
				}
				for _, r := range s.Resources {
					fmt.Fprintf(tw, "  resource %s\t%s\n", r.Uri, firstLine(r.Description, 60))
				}
				for _, r := range s.ResourceTemplates {
					fmt.Fprintf(tw, "  template %s\t%s\n", r.UriTemplate, firstLine(r.Description, 60))
				}
				for _, p := range s.Prompts {
					fmt.Fprintf(tw, "  prompt %s\t%s\n", p.Name, firstLine(p.Description, 60))
				}
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&g.json, "json", false, "print JSON")
	return cmd
}
