package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/mcpmesh/mcpmesh/audit"
	"github.com/mcpmesh/mcpmesh/control"
	"github.com/mcpmesh/mcpmesh/node"
)

func newAuditCmd(g *globals) *cobra.Command {
	var (
		since   string
		peer    string
		tool    string
		outcome string
		limit   int
		file    string
	)
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show the calls the daemon served or refused, one record each",
		Long: `Show the daemon's audit trail: one record for every call it served, or refused.

A record holds the time the call began, the caller (the peer ID of the
connection), on whose behalf it called (the principal of a verified delegation,
and the delegation chain), what it asked for (server, method and tool name,
resource URI or prompt name), its task ID, the outcome (ok, error, refused,
cancelled), why (the refusal reason, such as policy, rate, banned or loop, or
the start of the error) and how long it took. It never holds arguments or
results.

The daemon keeps its newest records (1000) in memory, searched by default, and
appends every record to HOME/audit.log (JSON Lines; rotated at 16 MiB into
audit.log.1). --file PATH reads such a file directly, with no daemon running.

--since takes a duration back from now (10m, 2h) or a time
(2026-05-01T12:00:00Z); --peer matches the caller or the principal; --tool
matches NAME or SERVER/NAME.`,
		Example: `  mcpmesh audit
  mcpmesh audit --since 10m --outcome refused
  mcpmesh audit --peer 12D3KooW... -n 20 --json
  mcpmesh audit --file ~/.mcpmesh/audit.log --tool node/echo`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := audit.Filter{Peer: peer, Tool: tool, Limit: limit}
			var err error
			if f.Outcome, err = audit.ParseOutcome(outcome); err != nil {
				return usageError("--outcome %v", err)
			}
			if f.Since, err = control.ParseSince(since, time.Now()); err != nil {
				return usageError("--since %v", err)
			}
			if limit < 0 {
				return usageError("-n %d: want a count (0 for all)", limit)
			}
			var list []audit.Record
			if file != "" {
				list, err = audit.ReadFile(file, f)
			} else {
				var c *control.Client
				c, err = dial(cmd, g)
				if errors.Is(err, control.ErrNoDaemon) {
					return fmt.Errorf("%w (read its audit file with --file %s)", err, filepath.Join(g.home, node.AuditFile))
				}
				if err != nil {
					return err
				}
				list, err = c.Audit(cmd.Context(), f)
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.json {
				for _, r := range list {
					if err := printJSONLine(out, r); err != nil {
						return err
					}
				}
				return nil
			}
			printAudit(out, list)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&since, "since", "", "only records from this time on: a duration back from now (10m) or an RFC 3339 time")
	fl.StringVar(&peer, "peer", "", "only calls by this peer ID, or made on its behalf")
	fl.StringVar(&tool, "tool", "", "only calls to this tool (NAME or SERVER/NAME; also a resource URI or prompt name)")
	fl.StringVar(&outcome, "outcome", "", "only calls that ended so: ok, error, refused or cancelled")
	fl.IntVarP(&limit, "limit", "n", 50, "show the newest N records (0 for all)")
	fl.StringVar(&file, "file", "", "read this audit file (HOME/audit.log) instead of asking the daemon")
	fl.BoolVar(&g.json, "json", false, "print one JSON object per record, one per line")
	return cmd
}

// printAudit prints one aligned line per record, oldest first:
//
//	15:04:05.000  ok       node/echo  caller 12D3…abcd  for 12D3…ef01  3.2ms  task 1a2b…  reason
func printAudit(out io.Writer, list []audit.Record) {
	if len(list) == 0 {
		fmt.Fprintln(out, "no records")
		return
	}
	const cols = 5 // time, outcome, what, who, duration; the rest is not aligned
	rows := make([][cols]string, len(list))
	var width [cols]int
	for i, r := range list {
		who := "caller " + abbrev(r.Caller)
		if r.For != "" {
			who += "  for " + abbrev(r.For)
		}
		what := r.Target()
		if r.Method != "" && r.Method != "tools/call" {
			what = r.Method + " " + what
		}
		rows[i] = [cols]string{r.Time.Local().Format("15:04:05.000"), string(r.Outcome), what, who, fmtDuration(r.Duration)}
		for j, c := range rows[i] {
			width[j] = max(width[j], utf8.RuneCountInString(c))
		}
	}
	for i, r := range list {
		var b strings.Builder
		for j, c := range rows[i] {
			pad := strings.Repeat(" ", width[j]-utf8.RuneCountInString(c))
			if j == cols-1 {
				b.WriteString(pad + c) // durations right-aligned
			} else {
				b.WriteString(c + pad + "  ")
			}
		}
		if r.Task != "" {
			b.WriteString("  task " + r.Task) // in full: for mcpmesh tasks --tree
		}
		if r.Reason != "" {
			b.WriteString("  " + firstLine(r.Reason, 80))
		}
		if r.Chain != "" {
			parts := strings.Split(r.Chain, " → ")
			for k, p := range parts {
				parts[k] = abbrev(p)
			}
			b.WriteString("  via " + strings.Join(parts, " → "))
		}
		fmt.Fprintln(out, b.String())
	}
}

// abbrev shortens a peer ID to its first and last four characters: 12D3…abcd.
func abbrev(id string) string {
	if len([]rune(id)) <= 12 {
		return id
	}
	r := []rune(id)
	return string(r[:4]) + "…" + string(r[len(r)-4:])
}

// fmtDuration prints d with about two significant digits: 3.2ms, 850µs, 1.4s.
func fmtDuration(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return d.Round(time.Second).String()
	case d >= time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d >= 10*time.Millisecond:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	case d >= 10*time.Microsecond:
		return d.Round(time.Microsecond).String()
	default:
		return d.String()
	}
}
