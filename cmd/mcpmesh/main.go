// Command mcpmesh runs and drives mcpmesh nodes: peer-to-peer agents that
// are each both an MCP server and an MCP client over libp2p.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// exitError carries a process exit code with its message.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	if os.Getenv(demoProgramEnv) == "1" {
		runDemoProgram() // the demo's shared program
		return
	}
	root := newRoot()
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "mcpmesh:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

type globals struct {
	home string
	json bool
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "mcpmesh",
		Short: "A peer-to-peer mesh of MCP agents",
		Long: `mcpmesh connects agents peer to peer. Every node is both an MCP server and an
MCP client over one authenticated libp2p connection per peer: any node can call
any other node's tools, resources and prompts, and be called, at the same time.

Start a daemon with 'mcpmesh node'; the other commands talk to the daemon of the
same home folder (--home, MCPMESH_HOME, default ~/.mcpmesh).
New here? Run 'mcpmesh demo'.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.PersistentFlags().StringVar(&g.home, "home", defaultHome(), "node home folder: identity key and daemon address (env MCPMESH_HOME)")
	root.AddCommand(
		newNodeCmd(g),
		newIDCmd(g),
		newPeersCmd(g),
		newStatusCmd(g),
		newConnectCmd(g),
		newToolsCmd(g),
		newCallCmd(g),
		newFindCmd(g),
		newOnCmd(g),
		newEventsCmd(g),
		newCardCmd(g),
		newStdioCmd(g),
		newTasksCmd(g),
		newAuditCmd(g),
		newPolicyCmd(g),
		newInitMeshCmd(g),
		newUICmd(g),
		newDemoCmd(),
	)
	return root
}

func defaultHome() string {
	if h := os.Getenv("MCPMESH_HOME"); h != "" {
		return h
	}
	if dir, err := os.UserHomeDir(); err == nil {
		return dir + "/.mcpmesh"
	}
	return ".mcpmesh"
}

// usageError marks bad command-line input: exit code 2.
func usageError(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}
