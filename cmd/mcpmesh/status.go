package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mcpmesh/mcpmesh/control"
)

func newStatusCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show how the daemon is reached and how it reaches its peers",
		Long: `Show the running daemon's network state:

  reachability   public, private or unknown, and what decided it (AutoNAT's
                 dial-backs, the configuration, or the lack of a public address)
  addresses      where it listens, and what it announces to peers (circuit
                 addresses through its relays included)
  port mapping   off, searching, no gateway, or the mappings the router gave
  relay service  its mode, and whether it relays for others now
  relays         the relays it holds a reservation with
  peers          each connected peer: name (when a session to it is open),
                 direct or relayed (and through which relay), transport, latency

--json prints one JSON object (reach.Status's fields at the top level), for
scripts.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := dial(cmd, g)
			if err != nil {
				return err
			}
			st, err := c.Status(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.json {
				return printJSON(out, st)
			}
			return printStatus(out, st)
		},
	}
	cmd.Flags().BoolVar(&g.json, "json", false, "print JSON")
	return cmd
}

func printStatus(out io.Writer, st control.Status) error {
	fmt.Fprintf(out, "%s (%s %s)\n", st.ID, st.Name, st.Version)
	mode := ""
	if st.Mode != "auto" {
		mode = " [set: " + st.Mode + "]"
	}
	fmt.Fprintf(out, "  reachability:  %s — %s%s\n", st.Reachability, st.DecidedBy, mode)
	list := func(label string, items []string) {
		for i, a := range items {
			if i == 0 {
				fmt.Fprintf(out, "  %-14s %s\n", label, a)
			} else {
				fmt.Fprintf(out, "  %-14s %s\n", "", a)
			}
		}
	}
	list("listen:", st.Listen)
	list("announced:", st.Announced)
	list("reachable:", st.Reachable)
	list("unreachable:", st.Unreachable)
	mapping := st.PortMapping
	if len(st.Mappings) > 0 {
		mapping += ": " + strings.Join(st.Mappings, ", ")
	}
	fmt.Fprintf(out, "  port mapping:  %s\n", mapping)
	relaying := "not relaying"
	if st.Relaying {
		relaying = "relaying for others"
	}
	fmt.Fprintf(out, "  relay service: %s (%s)\n", st.RelayService, relaying)
	fmt.Fprintf(out, "  hole punching: %s\n", onOff(st.HolePunching))
	if len(st.Relays) == 0 {
		fmt.Fprintf(out, "  relays:        none\n")
	}
	for i, r := range st.Relays {
		label := "relays:"
		if i > 0 {
			label = ""
		}
		through := ""
		if len(r.Addrs) > 0 {
			through = " (" + r.Addrs[0] + ")"
		}
		fmt.Fprintf(out, "  %-14s %s%s\n", label, r.ID, through)
	}
	if len(st.Peers) == 0 {
		fmt.Fprintln(out, "no peers connected")
		return nil
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tNAME\tPATH\tTRANSPORT\tLATENCY\tADDRESS")
	for _, p := range st.Peers {
		path := "direct"
		if p.Relayed {
			path = "relayed via " + shortID(p.Via)
		}
		latency := "-"
		if p.Latency > 0 {
			latency = p.Latency.Round(10 * time.Microsecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.ID, dash(p.Name), path, p.Transport, latency, p.Addr)
	}
	return tw.Flush()
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
