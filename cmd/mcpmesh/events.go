package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/mcpmesh/mcpmesh/control"
	"github.com/mcpmesh/mcpmesh/events/trigger"
)

// TriggersDir is the folder in a daemon's home where its triggers keep
// their cursors and the events they fired.
const TriggersDir = "triggers"

func newOnCmd(g *globals) *cobra.Command {
	var (
		r       trigger.Rule
		where   []string
		args    string
		list    bool
		remove  string
		timeout string
	)
	cmd := &cobra.Command{
		Use:   "on EVENT (--call REF | --agent NAME)",
		Short: "Run a tool or an agent when an event comes from a peer (a trigger)",
		Long: `Start a trigger on the daemon: when an event called EVENT comes from the peers
of --from (peer IDs, self, or any provider the mesh knows: the default) and its
data match every --where, call the tool --call (PEER/SERVER/TOOL, PEER/TOOL,
self/SERVER/TOOL or any/TOOL) or run the agent --agent of this node.

--args are the tool's arguments (with --agent, more fields of its input), as
JSON in which {{event.data.PATH}}, {{event.id}}, {{event.name}},
{{event.source}}, {{event.time}} and {{event}} are filled from the event; a
string that is one placeholder keeps the field's type. --task is the agent's
task, a template too (default: the event's name, source and data).

Each firing is a root task (mcpmesh tasks shows its cause), audited, and
subject to the policy of every node it reaches. --rate, --burst and
--concurrency bound the firings: past them the trigger waits, and the events
wait in the source's log. Events are de-duplicated by ID, and the trigger
resumes where it was after a restart of either side (its state is in
HOME/triggers). The source must grant this node its events ("events" in its
policy).

A trigger started here runs until the daemon stops; to keep it, put the rule
it prints in HOME/config.json under "triggers".

Events every node emits: mcp.resource.updated, mcp.tools.list_changed,
mcp.resources.list_changed, mcp.prompts.list_changed, mcp.task.ended,
mesh.peer.joined, mesh.peer.left, mesh.card.changed; 'mcpmesh events PEER'
lists a peer's.`,
		Example: `  mcpmesh on mcp.resource.updated --from 12D3KooW... --where server=reports \
      --agent summarizer --task 'Summarize {{event.data.uri}}'
  mcpmesh on invoice.paid --call 12D3KooW.../billing/send_receipt --args '{"invoice":"{{event.data.id}}"}'
  mcpmesh on mcp.task.ended --from self --where state=failed --call self/node/notify --rate 0.2
  mcpmesh on --list
  mcpmesh on --remove on-invoice.paid-1a2b`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, argv []string) error {
			c, err := dial(cmd, g)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			ctx := cmd.Context()
			switch {
			case list:
				st, err := c.Triggers(ctx)
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(out, st)
				}
				printTriggers(out, st)
				return nil
			case remove != "":
				if err := c.RemoveTrigger(ctx, remove); err != nil {
					return err
				}
				fmt.Fprintln(out, "removed", remove)
				return nil
			case len(argv) != 1:
				return usageError("give the EVENT to act on (or --list, --remove NAME)")
			}
			r.Event = argv[0]
			if r.Name == "" {
				var b [2]byte
				rand.Read(b[:])
				r.Name = "on-" + strings.NewReplacer("/", "-", ":", "-").Replace(r.Event) + "-" + hex.EncodeToString(b[:])
				if len(r.Name) > 64 {
					r.Name = r.Name[len(r.Name)-64:]
				}
			}
			if len(where) > 0 {
				w, err := parseWhere(where)
				if err != nil {
					return usageError("--where: %v", err)
				}
				r.Where = w
			}
			if args != "" {
				if err := json.Unmarshal([]byte(args), &r.Arguments); err != nil {
					return usageError("--args: want a JSON object: %v", err)
				}
			}
			r.Timeout = timeout
			if err := r.Check(); err != nil {
				return usageError("%v", err)
			}
			st, err := c.AddTrigger(ctx, r)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(out, st)
			}
			target := r.Call
			if r.Agent != "" {
				target = "agent " + r.Agent
			}
			fmt.Fprintf(out, "trigger %s: on %s from %s, %s\n", r.Name, r.Event, strings.Join(r.From, ", "), target)
			fmt.Fprintln(out, "It runs until the daemon stops. To keep it, add to HOME/config.json under \"triggers\":")
			rule, _ := json.MarshalIndent(st.Rule, "  ", "  ")
			fmt.Fprintf(out, "  %s\n", rule)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&r.Name, "name", "", "the trigger's name (default on-EVENT-XXXX)")
	f.StringArrayVar(&r.From, "from", nil, "where the events come from: a peer ID, self, or * for any provider (repeatable; default *)")
	f.StringArrayVar(&where, "where", nil, "PATH=VALUE: only events whose data field PATH (dotted) is VALUE; * in VALUE matches anything; a JSON number, true, false or null as such (repeatable)")
	f.StringVar(&r.Call, "call", "", "the tool to call: PEER/SERVER/TOOL, PEER/TOOL, self/SERVER/TOOL or any/TOOL")
	f.StringVar(&r.Agent, "agent", "", "an agent of this node to run instead of a tool")
	f.StringVar(&r.Task, "task", "", "with --agent: its task, a template")
	f.StringVar(&args, "args", "", "the tool's arguments, a JSON object of templates")
	f.Float64Var(&r.Rate, "rate", 0, "firings per second at most (default 1)")
	f.IntVar(&r.Burst, "burst", 0, "firings at once above the rate (default 5)")
	f.IntVar(&r.MaxConcurrent, "concurrency", 0, "firings running at once at most (default 4)")
	f.StringVar(&timeout, "timeout", "", "how long one firing may take (default 5m)")
	f.StringVar(&r.MaxAge, "max-age", "", "on resuming, skip events older than this (e.g. 1h)")
	f.BoolVar(&list, "list", false, "list the daemon's triggers and what they did")
	f.StringVar(&remove, "remove", "", "stop the trigger `NAME`")
	f.BoolVar(&g.json, "json", false, "print JSON")
	return cmd
}

// parseWhere reads PATH=VALUE pairs into a filter: VALUE as JSON if it is a
// number, true, false or null, else as a string.
func parseWhere(pairs []string) (json.RawMessage, error) {
	m := map[string]any{}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q: want PATH=VALUE", p)
		}
		var val any = v
		var scalar any
		if json.Unmarshal([]byte(v), &scalar) == nil {
			switch scalar.(type) {
			case float64, bool, nil:
				val = scalar
			}
		}
		m[k] = val
	}
	return json.Marshal(m)
}

func printTriggers(out io.Writer, list []trigger.Status) {
	if len(list) == 0 {
		fmt.Fprintln(out, "no triggers")
		return
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tEVENT\tCALLS\tFIRED\tFAILED\tHELD\tDUP\tLOOP\tSOURCES")
	for _, s := range list {
		target := s.Rule.Call
		if s.Rule.Agent != "" {
			target = "agent " + s.Rule.Agent
		}
		var srcs []string
		for _, sub := range s.Subscriptions {
			state := "connected"
			if !sub.Connected {
				state = "waiting"
				if sub.LastError != "" {
					state += ": " + firstLine(sub.LastError, 60)
				}
			}
			srcs = append(srcs, shortText(sub.Peer)+" "+state)
		}
		if len(srcs) == 0 {
			srcs = []string{"none yet (" + strings.Join(s.Rule.From, ", ") + ")"}
		}
		c := s.Counts
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n", s.Rule.Name, s.Rule.Event, target, c.Fired, c.Failed, c.Held, c.Duplicate, c.Loop, strings.Join(srcs, "; "))
		if s.LastError != "" {
			fmt.Fprintf(tw, "\t\t\t\t\t\t\t\tlast error: %s\n", firstLine(s.LastError, 80))
		}
	}
	tw.Flush()
}

func newEventsCmd(g *globals) *cobra.Command {
	var (
		watch  bool
		poll   bool
		where  []string
		cursor string
	)
	cmd := &cobra.Command{
		Use:   "events [PEER [EVENT]]",
		Short: "List the event types a peer lets this node subscribe to, or watch its events",
		Long: `Without EVENT, list the event types PEER (default: this node) lets this node
subscribe to (events/list), with their descriptions.

With EVENT and --watch, subscribe and print each event as it comes (one line
each; --json for JSON lines), until Ctrl-C; --cursor resumes from a cursor a
previous run printed. With --poll, print what PEER's log holds after --cursor
(none without one: a poll from now returns only the cursor of now).`,
		Example: `  mcpmesh events
  mcpmesh events 12D3KooW...
  mcpmesh events 12D3KooW... mcp.resource.updated --watch --where server=reports`,
		Args: cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, argv []string) error {
			c, err := dial(cmd, g)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			ctx := cmd.Context()
			peer := ""
			if len(argv) > 0 {
				peer = argv[0]
			}
			if len(argv) < 2 {
				if watch || poll {
					return usageError("--watch and --poll need PEER and EVENT")
				}
				types, err := c.EventTypes(ctx, peer)
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(out, types)
				}
				if len(types) == 0 {
					fmt.Fprintln(out, "no event types this node may subscribe to (the peer's policy grants \"events\")")
				}
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				for _, t := range types {
					fmt.Fprintf(tw, "%s\t%s\n", t.Name, firstLine(t.Description, 80))
				}
				return tw.Flush()
			}
			req := control.EventsRequest{Peer: peer, Name: argv[1], Cursor: cursor}
			if len(where) > 0 {
				if req.Where, err = parseWhere(where); err != nil {
					return usageError("--where: %v", err)
				}
			}
			switch {
			case poll:
				res, err := c.PollEvents(ctx, req)
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(out, res)
				}
				for _, e := range res.Events {
					fmt.Fprintf(out, "%s  %s  %s  %s\n", e.Time.Format("15:04:05.000"), e.Name, e.ID, e.Data)
				}
				fmt.Fprintf(out, "cursor %s  truncated %v  more %v\n", res.Cursor, res.Truncated, res.HasMore)
				return nil
			case watch:
				return c.WatchEvents(ctx, req, func(l control.WatchedEvent) {
					if g.json {
						printJSONLine(out, l)
						return
					}
					switch {
					case l.Event != nil:
						fmt.Fprintf(out, "%s  %s from %s  %s  %s\n", l.Event.Time.Format("15:04:05.000"), l.Event.Name, shortText(l.Source), l.Event.ID, l.Event.Data)
					case l.Active:
						note := ""
						if l.Truncated {
							note = " (events were skipped: the cursor was older than the source's log)"
						}
						fmt.Fprintf(out, "subscribed, cursor %s%s\n", l.Cursor, note)
					case l.Error != "":
						fmt.Fprintf(out, "waiting: %s\n", l.Error)
					}
				})
			default:
				return usageError("with EVENT, give --watch or --poll")
			}
		},
	}
	f := cmd.Flags()
	f.BoolVar(&watch, "watch", false, "subscribe and print events as they come")
	f.BoolVar(&poll, "poll", false, "print the events after --cursor")
	f.StringArrayVar(&where, "where", nil, "PATH=VALUE: only events whose data field PATH is VALUE (repeatable)")
	f.StringVar(&cursor, "cursor", "", "resume after this cursor")
	f.BoolVar(&g.json, "json", false, "print JSON")
	return cmd
}

// shortText shortens a peer ID's text as identity.Short does.
func shortText(s string) string {
	if len(s) <= 12 {
		return s
	}
	return s[:4] + "…" + s[len(s)-6:]
}
