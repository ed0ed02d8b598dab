package main

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mcpmesh/mcpmesh/tasks"
	"github.com/mcpmesh/mcpmesh/tasks/tracker"
)

func newTasksCmd(g *globals) *cobra.Command {
	var tree string
	var watch bool
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "tasks",
		Short: "List the daemon's tasks, or show one task's tree across nodes",
		Long: `List the tasks of the daemon: every tool call it serves, and every call it makes
outside a task (the root of a tree), running or ended recently.

ID is a task's ID or its first characters, if no other task of the daemon
starts with them ('5d0c' for 5d0c3f…).

--tree ID shows the whole tree below the task ID, across nodes: each node that
holds a part of it is asked (and asks the nodes below it); one that cannot be
reached is marked, with what is below it missing. --watch redraws it until the
task ends (or Ctrl-C).`,
		Example: `  mcpmesh tasks
  mcpmesh tasks --tree 3f2a…  --watch
  mcpmesh tasks cancel 3f2a…`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := dial(cmd, g)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			ctx := cmd.Context()
			if tree == "" {
				if watch {
					return usageError("--watch works with --tree ID")
				}
				list, err := c.Tasks(ctx)
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(out, list)
				}
				// Names where a person reads: the connected peers' card names.
				names := map[string]string{}
				if peers, err := c.Peers(ctx); err == nil {
					for _, p := range peers {
						names[p.ID] = p.Name
					}
				}
				printTasks(out, list, names)
				return nil
			}
			for {
				t, err := c.TaskTree(ctx, tree)
				if err != nil {
					return err
				}
				if g.json {
					if err := printJSON(out, t); err != nil {
						return err
					}
				} else {
					if watch {
						fmt.Fprint(out, "\033[H\033[2J") // home, clear screen
					}
					drawTree(out, t)
				}
				if !watch || t.State.Terminal() {
					return nil
				}
				select {
				case <-time.After(interval):
				case <-ctx.Done():
					return nil
				}
			}
		},
	}
	cmd.Flags().BoolVar(&g.json, "json", false, "print JSON")
	cmd.Flags().StringVar(&tree, "tree", "", "show the tree below task `ID` across nodes")
	cmd.Flags().BoolVar(&watch, "watch", false, "with --tree: redraw until the task ends")
	cmd.Flags().DurationVar(&interval, "interval", 500*time.Millisecond, "with --watch: time between redraws")
	cmd.AddCommand(newTasksCancelCmd(g))
	return cmd
}

func newTasksCancelCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a task of the daemon and every task below it, on every node",
		Long: `Cancel task ID of the daemon and, through its calls, every task below it on
every node. ID is the task's ID or its first characters, if no other task of
the daemon starts with them.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := dial(cmd, g)
			if err != nil {
				return err
			}
			id, err := c.CancelTask(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "cancelled", id)
			return nil
		},
	}
}

func printTasks(out io.Writer, list []tasks.Task, names map[string]string) {
	if len(list) == 0 {
		fmt.Fprintln(out, "no tasks")
		return
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tROLE\tTOOL\tPEER\tSTATE\tDURATION\tPROGRESS\tCAUSE")
	for _, t := range list {
		peer := "← " + t.Caller
		if t.Role == tasks.Call {
			peer = "→ " + t.Target
		}
		if name := names[strings.TrimPrefix(strings.TrimPrefix(peer, "← "), "→ ")]; name != "" {
			peer += " (" + name + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s/%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Role, t.Server, t.Tool, peer, state(&t), round(t.Duration()), progress(t.Progress), cause(t.Cause))
	}
	tw.Flush()
}

// cause shows what started a tree: the event a trigger fired on.
func cause(c *tasks.Cause) string {
	if c == nil {
		return ""
	}
	s := "event " + c.Event + " from " + shortText(c.Source)
	if c.Trigger != "" {
		s += " (trigger " + c.Trigger + ")"
	}
	return s
}

// drawTree draws a task tree, one line per task.
func drawTree(out io.Writer, t *tracker.TaskTree) {
	if c := t.Cause; c != nil {
		fmt.Fprintf(out, "%s  [event %s]\n", cause(c), c.ID)
		fmt.Fprintln(out, "└▶ "+treeLine(t))
		drawChildren(out, t, "   ")
		return
	}
	fmt.Fprintln(out, treeLine(t))
	drawChildren(out, t, "")
}

func drawChildren(out io.Writer, t *tracker.TaskTree, indent string) {
	for i, c := range t.Children {
		branch, next := "├─ ", "│  "
		if i == len(t.Children)-1 {
			branch, next = "└─ ", "   "
		}
		fmt.Fprintln(out, indent+branch+treeLine(c))
		drawChildren(out, c, indent+next)
	}
}

func treeLine(t *tracker.TaskTree) string {
	if t.Unreachable != "" {
		return fmt.Sprintf("%s/%s on %s  UNREACHABLE: %s", t.Server, t.Tool, t.Peer, t.Unreachable)
	}
	var b strings.Builder
	if t.Role == tasks.Call {
		fmt.Fprintf(&b, "call %s/%s → %s", t.Server, t.Tool, t.Target)
	} else {
		fmt.Fprintf(&b, "%s/%s on %s", t.Server, t.Tool, t.Peer)
	}
	fmt.Fprintf(&b, "  %s  %s", state(&t.Task), round(t.Duration()))
	if p := progress(t.Progress); p != "" {
		b.WriteString("  " + p)
	}
	if t.FailedAt != nil && t.FailedAt.Peer != t.Peer {
		fmt.Fprintf(&b, "  (failed at %s)", t.FailedAt)
	}
	fmt.Fprintf(&b, "  [%s]", t.ID)
	return b.String()
}

func state(t *tasks.Task) string {
	s := string(t.State)
	if t.Error != "" {
		s += ": " + firstLine(t.Error, 60)
	} else if t.Message != "" {
		s += ": " + firstLine(t.Message, 40)
	}
	return s
}

func progress(p *tasks.Progress) string {
	if p == nil {
		return ""
	}
	s := number(p.Progress)
	if p.Total > 0 {
		s += "/" + number(p.Total)
	}
	if p.Message != "" {
		s += " " + firstLine(p.Message, 30)
	}
	return s
}

// number shows a progress value as people count: whole when it is nearly
// whole (a value that would not increase on its token is nudged a hair
// above the last one: tasks.Entry.Advance), else to one decimal.
func number(v float64) string {
	if r := math.Round(v); math.Abs(v-r) < 0.01 {
		return strconv.FormatFloat(r, 'f', -1, 64)
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

func round(d time.Duration) time.Duration {
	switch {
	case d > time.Second:
		return d.Round(100 * time.Millisecond)
	case d > time.Millisecond:
		return d.Round(100 * time.Microsecond)
	default:
		return d
	}
}
