package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/mcpmesh/mcpmesh/console"
	"github.com/mcpmesh/mcpmesh/control"
	"github.com/mcpmesh/mcpmesh/internal/loopback"
	"github.com/mcpmesh/mcpmesh/node"
)

// checkUIAddr accepts only a loopback HOST:PORT for --ui.
func checkUIAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want HOST:PORT, e.g. 127.0.0.1:8780", addr)
	}
	if !loopback.Host(host) {
		return fmt.Errorf("%q: the console only listens on a loopback address (127.0.0.1, ::1, localhost)", addr)
	}
	return nil
}

// serveConsole serves the web console of n on addr and tells the control
// API its URL (for 'mcpmesh ui'). It returns the login URL and a function
// that stops the console.
func serveConsole(n *node.Node, addr string, specs []shareSpec, api *control.Server) (string, func(), error) {
	relays := map[string]string{}
	for _, s := range specs {
		if s.target.ID != "" {
			relays[s.name] = s.target.ID.String() + "/" + s.server
		}
	}
	c := console.New(control.ConsoleNode(n, relays), console.Options{})
	url, err := c.Listen(addr)
	if err != nil {
		return "", nil, fmt.Errorf("--ui: %w", err)
	}
	api.SetConsoleURL(url)
	return url, func() { c.Close() }, nil
}

func newUICmd(g *globals) *cobra.Command {
	var printOnly bool
	cmd := &cobra.Command{
		Use:   "ui",
		Short: "Open the running daemon's web console",
		Long: `Open the web console of the daemon of this home folder in a browser, signed
in, and print its URL.

The daemon serves a console when started with --ui 127.0.0.1:PORT: the mesh as
a graph, capability search, live task trees (cancel one from the page), the
audit trail with refusals explained, the policy, and a form to call any tool.
The URL carries a login token (new at each start of the daemon), which the
page exchanges for a cookie; only users who can read the home folder can get
it. --print only prints the URL.`,
		Example: `  mcpmesh ui
  mcpmesh --home /tmp/mcpmesh-a ui --print`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := dial(cmd, g)
			if err != nil {
				return err
			}
			url, err := c.ConsoleURL(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), url)
			if !printOnly {
				if err := openBrowser(cmd.Context(), url); err != nil {
					fmt.Fprintf(os.Stderr, "(%v: open the URL above in a browser)\n", err)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&printOnly, "print", false, "only print the URL, do not open a browser")
	return cmd
}

// openBrowser asks the desktop to open url, where there is one.
func openBrowser(ctx context.Context, url string) error {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.CommandContext(ctx, "open", url)
	case "windows":
		cmd = exec.CommandContext(ctx, "rundll32", "url.dll,FileProtocolHandler", url)
	default:
		// Without a display, xdg-open may start a text browser in this
		// terminal: better to just print.
		if os.Getenv("DISPLAY") == "" && os.Getenv("WAYLAND_DISPLAY") == "" {
			return errors.New("no display")
		}
		cmd = exec.CommandContext(ctx, "xdg-open", url)
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("could not start a browser: %w", err)
	}
	return nil
}
