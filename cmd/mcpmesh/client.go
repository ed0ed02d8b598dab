package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"text/tabwriter"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	"github.com/mcpmesh/mcpmesh/control"
	"github.com/mcpmesh/mcpmesh/internal/oneline"
	"github.com/mcpmesh/mcpmesh/peer/identity"
)

func dial(cmd *cobra.Command, g *globals) (*control.Client, error) {
	return control.Dial(cmd.Context(), g.home)
}

// checkPeer checks a PEER argument before the daemon is asked: a typo or a
// placeholder copied from the docs is bad input (exit 2), said at once.
func checkPeer(s string) error {
	if _, err := identity.ParseTarget(s); err != nil {
		return &exitError{code: 2, err: err}
	}
	return nil
}

func printJSONLine(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newIDCmd(g *globals) *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:   "id",
		Short: "Show the node's peer ID; with a daemon, its addresses and shared servers",
		Long: `Show the peer ID of the node of this home and, when its daemon runs, its
name, addresses, shared servers and the state of shared programs ("starting"
while they come up). Without a daemon the peer ID is read from the home's
identity key, which the daemon creates at its first start.

-q prints the peer ID alone, for scripts: A=$(mcpmesh --home /tmp/a id -q).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			c, err := dial(cmd, g)
			if errors.Is(err, control.ErrNoDaemon) {
				return printOfflineID(out, g, quiet, err)
			}
			if err != nil {
				return err
			}
			id, err := c.ID(cmd.Context())
			if err != nil {
				return err
			}
			switch {
			case quiet:
				fmt.Fprintln(out, id.ID)
				return nil
			case g.json:
				return printJSON(out, id)
			}
			fmt.Fprintln(out, id.ID)
			fmt.Fprintf(out, "  name:    %s %s\n", id.Name, id.Version)
			if id.State != "" && id.State != "running" {
				fmt.Fprintf(out, "  daemon:  %s\n", id.State)
			}
			fmt.Fprintf(out, "  servers: %s\n", strings.Join(id.Servers, ", "))
			for i, a := range id.Addrs {
				label := "  addrs:   "
				if i > 0 {
					label = "           "
				}
				fmt.Fprintln(out, label+a)
			}
			for _, p := range id.Programs {
				state := "running"
				switch {
				case !p.Running && p.Restarts == 0 && p.LastError == "":
					state = "starting"
				case !p.Running:
					state = "restarting: " + p.LastError
				}
				sessions := ""
				if p.Mode == "isolated" {
					sessions = fmt.Sprintf(", %d sessions", p.Sessions)
				}
				fmt.Fprintf(out, "  share %s: %s, %s (%d tools, %d restarts%s) — %s\n", p.Name, state, p.Mode, p.Tools, p.Restarts, sessions, p.Command)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&g.json, "json", false, "print JSON")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print the peer ID alone")
	return cmd
}

// printOfflineID answers 'mcpmesh id' from the home's key when no daemon
// runs: the peer ID is the key's, whether the daemon runs or not.
func printOfflineID(out io.Writer, g *globals, quiet bool, noDaemon error) error {
	id, err := readIdentity(g.home)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w; nor has one ever run there: no identity key yet (the first 'mcpmesh node --home %s' creates it)", noDaemon, g.home)
	}
	if err != nil {
		return err
	}
	switch {
	case quiet:
		fmt.Fprintln(out, id)
	case g.json:
		return printJSON(out, control.Identity{ID: id.String(), State: "stopped"})
	default:
		fmt.Fprintln(out, id)
		fmt.Fprintf(out, "  daemon:  not running (start it: mcpmesh node --home %s)\n", g.home)
	}
	return nil
}

func newPeersCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "peers",
		Short: "List the peers the daemon is connected to",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := dial(cmd, g)
			if err != nil {
				return err
			}
			peers, err := c.Peers(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.json {
				return printJSON(out, peers)
			}
			if len(peers) == 0 {
				fmt.Fprintln(out, "no peers connected (connect with `mcpmesh connect MULTIADDR`)")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PEER\tNAME\tSERVERS\tADDRESS\tAGENT")
			for _, p := range peers {
				addr := ""
				if len(p.Addrs) > 0 {
					addr = p.Addrs[0]
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.ID, dash(p.Name), strings.Join(p.Servers, ","), addr, p.Agent)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&g.json, "json", false, "print JSON")
	return cmd
}

func newConnectCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "connect MULTIADDR",
		Short: "Connect the daemon to a peer",
		Long: `Connect the daemon to a peer given by a full multiaddr ending in /p2p/<peer ID>,
as 'mcpmesh node' and 'mcpmesh id' print them, and say at which address.

If the daemon is already connected to that peer through another address, it
dials the address given anyway (a connection of its own, closed once the peer
has answered: the one it has stays), and fails if the peer does not answer
there: a wrong address never passes for a right one.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkPeer(args[0]); err != nil {
				return err
			}
			c, err := dial(cmd, g)
			if err != nil {
				return err
			}
			res, err := c.Connect(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.json {
				return printJSON(out, res)
			}
			switch {
			case res.Tried:
				fmt.Fprintf(out, "already connected to %s through another address; %s answers too (dialed and closed: the connection stays as it was)\n", res.ID, res.Addr)
			case res.Already:
				fmt.Fprintf(out, "already connected to %s at %s\n", res.ID, res.Addr)
			case res.Addr != "":
				fmt.Fprintf(out, "connected to %s at %s\n", res.ID, res.Addr)
			default:
				fmt.Fprintln(out, "connected to", res.ID)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&g.json, "json", false, "print JSON")
	return cmd
}

func newToolsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tools PEER",
		Short: "List the tools a peer shares, server by server",
		Long: `List the tools of every MCP server a peer shares.

PEER is a peer ID the daemon knows or a full multiaddr ending in /p2p/<peer ID>.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkPeer(args[0]); err != nil {
				return err
			}
			c, err := dial(cmd, g)
			if err != nil {
				return err
			}
			tools, err := c.Tools(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.json {
				return printJSON(out, tools)
			}
			if len(tools) == 0 {
				// Nodes are closed by default: say why the list may be empty.
				fmt.Fprintf(out, "%s lists no tools to this node (its policy may grant it none: see 'Who may call what' in the README)\n", args[0])
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TOOL\tDESCRIPTION")
			for _, t := range tools {
				fmt.Fprintf(tw, "%s/%s\t%s\n", t.Server, t.Tool.Name, firstLine(t.Tool.Description, 70))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&g.json, "json", false, "print JSON, with each tool's full schema")
	return cmd
}

// firstLine shows s on one line of at most max characters.
func firstLine(s string, max int) string { return oneline.Cut(s, max) }

// wholeLine is s on one line, whole: a tool's error is its cause, and
// cutting it hides what to do.
func wholeLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func newCallCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	var answers []string
	var noInput, prompt bool
	cmd := &cobra.Command{
		Use:   "call PEER TOOL [JSON-ARGS]",
		Short: "Call a tool on a peer and print its result",
		Long: `Call a tool on a peer through the daemon and print the result: text content as
text, other content described, structured content as JSON. --json prints the raw
MCP result.

Progress the tool reports shows on stderr as it comes: on a terminal, one line
redrawn in place with a spinner while the call runs; otherwise one line per
notification ("progress 2/5 message"). Stdout holds the result alone, so
--json output stays clean.

PEER is a peer ID the daemon knows, a full multiaddr ending in /p2p/<peer ID>, or
"any": find the providers of TOOL in the mesh and call one (a connected peer
first, then the lowest latency; the next one if it cannot be reached).
TOOL is a tool name, looked up among all the peer's servers (an error lists the
choices if several have it), or SERVER/TOOL. JSON-ARGS is a JSON object ('-'
reads it from standard input).

A tool may ask its caller a question while it runs (MCP elicitation), from this
peer or from any peer its call reaches in turn. On a terminal the question shows
on stderr: its message, then (a)ccept, (d)ecline or (c)ancel, then to accept a
prompt for each field the question asks for, with its type, choices and
default (Enter takes the default). The answer is checked against the
question's schema before it goes back to the tool. Ctrl-C cancels the call.
--answer gives the answers beforehand, in order: a JSON object of the fields,
or accept, decline, cancel. Without a terminal on stdin, with --json or with
--no-input, questions beyond the --answer values are declined, with a line on
stderr saying what was asked and how to answer; --prompt asks them anyway,
reading one answer a line from stdin (for scripts). A request for a model
completion (MCP sampling) is declined: a terminal has no model.

Exits 1 with a one-line reason if the peer is unreachable or the tool fails, 2 on
bad input (an --answer that does not fit its question among it).`,
		Example: `  mcpmesh call 12D3KooW... echo '{"text":"hello"}'
  mcpmesh call any translate '{"text":"hello"}'
  mcpmesh call /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW... node/echo '{"text":"hi"}'
  mcpmesh call 12D3KooW... book_table '{"restaurant":"Lisbon"}' --answer '{"people":4}'`,
		Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] != control.AnyPeer {
				if err := checkPeer(args[0]); err != nil {
					return err
				}
			}
			argsFromStdin := len(args) == 3 && args[2] == "-"
			if argsFromStdin && prompt {
				return usageError("--prompt reads the answers from standard input, which JSON-ARGS '-' reads already: give JSON-ARGS on the command line")
			}
			var raw json.RawMessage
			if len(args) == 3 {
				text := args[2]
				if argsFromStdin {
					b, err := io.ReadAll(cmd.InOrStdin())
					if err != nil {
						return err
					}
					text = string(b)
				}
				var obj map[string]any
				if err := json.Unmarshal([]byte(text), &obj); err != nil || obj == nil {
					return usageError("JSON-ARGS must be a JSON object, like '{\"text\":\"hi\"}': %q", text)
				}
				raw = json.RawMessage(text)
			}
			c, err := dial(cmd, g)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			if timeout > 0 {
				ctx, cancel = context.WithTimeoutCause(cmd.Context(), timeout, callTimedOut(args[0], args[1], timeout))
			}
			defer cancel()
			stderr := cmd.ErrOrStderr()
			view := newProgressView(stderr, isTerminal(stderr))
			ask := &asker{w: printableWriter{stderr}, answers: answers, view: view}
			switch in := cmd.InOrStdin(); {
			case noInput:
				ask.noInput, ask.fix = "--no-input was given", "call without --no-input in a terminal"
			case prompt:
				ask.in, ask.echo = newLines(in), !isTerminal(in)
			case g.json:
				ask.noInput, ask.fix = "--json output is for scripts, which do not answer questions", "call without --json in a terminal"
			case argsFromStdin:
				ask.noInput, ask.fix = "standard input held JSON-ARGS", "give JSON-ARGS on the command line"
			case !isTerminal(in):
				ask.noInput, ask.fix = "standard input is not a terminal", "run the call in a terminal"
			default:
				ask.in = newLines(in)
			}
			res, err := c.CallWith(ctx, args[0], args[1], raw, control.CallHooks{Progress: view.update, Question: ask.question})
			view.close()
			if err != nil {
				return err
			}
			ask.unused()
			if args[0] == control.AnyPeer {
				for _, t := range res.Tried {
					fmt.Fprintf(cmd.ErrOrStderr(), "skipped: %s\n", t)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "answered by %s (%s/%s)\n", res.Peer, res.Server, res.Tool)
			}
			out := cmd.OutOrStdout()
			if g.json {
				if err := printJSON(out, res.Result); err != nil {
					return err
				}
			} else {
				printResult(out, res.Result)
			}
			if res.Result.IsError {
				return &exitError{code: 1, err: fmt.Errorf("tool %s/%s on %s failed: %s", res.Server, res.Tool, shortID(res.Peer), wholeLine(resultText(res.Result)))}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&g.json, "json", false, "print the raw MCP result as JSON")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "cancel the call if it has not ended after this long (0: no limit)")
	cmd.Flags().StringArrayVar(&answers, "answer", nil, "answer the tool's next question with this: a JSON object of its fields, or accept, decline, cancel (repeatable, in order)")
	cmd.Flags().BoolVar(&noInput, "no-input", false, "ask nothing: decline the tool's questions")
	cmd.Flags().BoolVar(&prompt, "prompt", false, "ask the tool's questions even when standard input is not a terminal, one answer a line")
	return cmd
}

// callTimedOut is the error of a call that did not end within timeout:
// the tool's, not the daemon's, which passed the call on and, once the
// CLI stops waiting, cancels it on the peer.
func callTimedOut(peer, tool string, timeout time.Duration) error {
	longer := max(10*timeout, time.Minute).Truncate(time.Second)
	return fmt.Errorf("tool %s on %s did not answer within %v (--timeout): the call was cancelled, on the peer too; to wait longer give --timeout %s, or --timeout 0 for no limit",
		tool, shortID(peer), timeout, flagDuration(longer))
}

// flagDuration prints d as one would type it: 1m, not 1m0s.
func flagDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func shortID(id string) string {
	if len(id) > 16 {
		return id[:8] + "…" + id[len(id)-6:]
	}
	return id
}

func resultText(r *sdkmcp.CallToolResult) string {
	var parts []string
	for _, c := range r.Content {
		if t, ok := c.(*sdkmcp.TextContent); ok {
			parts = append(parts, t.Text)
		}
	}
	return strings.Join(parts, " ")
}

// printResult prints a tool result for people.
func printResult(w io.Writer, r *sdkmcp.CallToolResult) {
	if r.IsError {
		return // the error line says it
	}
	printed := false
	for _, c := range r.Content {
		printed = true
		switch c := c.(type) {
		case *sdkmcp.TextContent:
			fmt.Fprintln(w, c.Text)
		case *sdkmcp.ImageContent:
			fmt.Fprintf(w, "[image %s, %d bytes]\n", c.MIMEType, len(c.Data))
		case *sdkmcp.AudioContent:
			fmt.Fprintf(w, "[audio %s, %d bytes]\n", c.MIMEType, len(c.Data))
		case *sdkmcp.ResourceLink:
			fmt.Fprintf(w, "[resource link %s]\n", c.URI)
		case *sdkmcp.EmbeddedResource:
			if c.Resource != nil && c.Resource.Text != "" {
				fmt.Fprintln(w, c.Resource.Text)
			} else if c.Resource != nil {
				fmt.Fprintf(w, "[resource %s, %d bytes]\n", c.Resource.URI, len(c.Resource.Blob))
			}
		default:
			fmt.Fprintf(w, "[%T]\n", c)
		}
	}
	if !printed && r.StructuredContent != nil {
		printJSON(w, r.StructuredContent)
	}
}
