package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/libp2p/go-libp2p/core/crypto"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/spf13/cobra"

	"github.com/mcpmesh/mcpmesh/mcp/upstream"
	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/peer/identity"
)

// readIdentity returns the peer ID of home's identity key without
// creating one; fs.ErrNotExist if there is none yet.
func readIdentity(home string) (lpeer.ID, error) {
	path := filepath.Join(home, identity.KeyFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	key, err := crypto.UnmarshalPrivateKey(data)
	if err != nil {
		return "", fmt.Errorf("identity %s is corrupt (%v)", path, err)
	}
	return lpeer.IDFromPrivateKey(key)
}

// configWarnings are what a configuration that parses may still get
// wrong: shareWarnings, API keys missing, and (with checkPorts) listen
// ports in use. fatal counts those that stop the node from starting.
func configWarnings(cfg *fileConfig, specs []shareSpec, listen []string, checkPorts bool) (out []string, fatal int) {
	out = shareWarnings(cfg, specs, nil)
	for _, a := range cfg.Agents {
		if a.Model.APIKeyEnv != "" && os.Getenv(a.Model.APIKeyEnv) == "" {
			out = append(out, fmt.Sprintf("agent %s: environment variable %s is not set: the node will not start", a.Name, a.Model.APIKeyEnv))
			fatal++
		}
	}
	if checkPorts {
		if err := checkListenPorts(listen); err != nil {
			out = append(out, err.Error()+": the node will not start")
			fatal++
		}
	}
	return out, fatal
}

// shareWarnings are what shares that parse may still get wrong: a header
// or env value naming a variable that is not set, a program not on PATH.
// flagHeaders are --share-header's values (NAME=Header: value).
func shareWarnings(cfg *fileConfig, specs []shareSpec, flagHeaders []string) []string {
	var out []string
	header := func(name, k, v string) {
		for _, unset := range unsetVars(v) {
			out = append(out, fmt.Sprintf("share %s: header %s uses ${%s}, which is not set: the server gets %q", name, k, unset, strings.TrimSpace(os.Expand(v, func(string) string { return "" }))))
		}
	}
	for name, sc := range cfg.Shares {
		for k, v := range sc.Headers {
			header(name, k, v)
		}
		for k, v := range sc.Env {
			for _, unset := range unsetVars(v) {
				out = append(out, fmt.Sprintf("share %s: env %s uses ${%s}, which is not set", name, k, unset))
			}
		}
	}
	for _, h := range flagHeaders {
		name, kv, _ := strings.Cut(h, "=")
		k, v, _ := strings.Cut(kv, ":")
		header(name, strings.TrimSpace(k), v)
	}
	for _, s := range specs {
		if len(s.command.Args) == 0 {
			continue
		}
		if prog := upstream.ProgramOf(s.display); prog != "" {
			if _, err := exec.LookPath(prog); err != nil {
				out = append(out, fmt.Sprintf("share %s: program %q is not on PATH (the node will keep trying to start it)", s.name, prog))
			}
		}
	}
	slices.Sort(out)
	return out
}

// unsetVars lists the variables ${VAR} or $VAR in v that the environment
// does not set.
func unsetVars(v string) []string {
	var out []string
	os.Expand(v, func(name string) string {
		if _, ok := os.LookupEnv(name); !ok {
			out = append(out, name)
		}
		return ""
	})
	return out
}

func newConfigCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check the daemon's configuration file, or make the daemon reload it",
	}
	var cfgPath string
	check := &cobra.Command{
		Use:   "check",
		Short: "Check the configuration file as the daemon would read it, and warn of what it may get wrong",
		Long: `Read the configuration file (--config, default HOME/config.json) as 'mcpmesh
node' does, and report its errors (exit 1) or that it is fine (exit 0). Then
warn of what parses but will not work: a header or env value naming a variable
that is not set (${GITHUB_TOKEN}: the server gets "Bearer "), a shared
program not on PATH, an agent's API key variable not set, a listen port
another program holds. The last two stop a node from starting: with either,
check exits 1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, named := configPath(g.home, cfgPath)
			out := cmd.OutOrStdout()
			file, err := loadConfig(path, named)
			if err != nil {
				return err
			}
			if !file.exists {
				fmt.Fprintf(out, "%s: none (the daemon runs on flags and defaults)\n", path)
				return nil
			}
			specs, err := checkConfig(file)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			_, running := dialQuiet(cmd, g)
			warnings, fatal := configWarnings(file, specs, file.Listen, !running)
			verdict := "ok"
			if fatal > 0 {
				verdict = "parses"
			}
			fmt.Fprintf(out, "%s: %s: %s\n", path, verdict, summarizeConfig(file, specs))
			for _, w := range warnings {
				fmt.Fprintf(out, "warning: %s\n", w)
			}
			if fatal > 0 {
				// A script's 'config check && mcpmesh node' must not go on.
				return &exitError{code: 1, err: fmt.Errorf("%s: a node will not start with it (%d of the warnings above)", path, fatal)}
			}
			return nil
		},
	}
	check.Flags().StringVar(&cfgPath, "config", "", "configuration file (default HOME/config.json)")
	cmd.AddCommand(check, newConfigReloadCmd(g))
	return cmd
}

func newConfigReloadCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "reload",
		Short: "Make the running daemon reread its configuration file, and say what it applied",
		Long: `Make the running daemon reread its configuration file (the one it started
with) and apply it, as it does when the file changes or on SIGHUP, and print
what it did. A reload applies the policy, the shares, the agents and the
triggers, each diffed by name with what runs: a share added starts (its
lines say when it is ready, with its tools), one removed stops once its calls
in flight are answered (at most 10s: then they fail, saying the server was
removed), one whose command, url, env, mode or sessions changed restarts.
Peers see the change in the node's card. A change to any other section is
reported and waits for a restart.

A file with an error applies nothing: the running configuration stays, and
the command exits 1 with the error.`,
		Example: `  mcpmesh config reload
  kill -HUP $(mcpmesh status --json | jq .daemon.pid)   # the same, without the report`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := dial(cmd, g)
			if err != nil {
				return err
			}
			res, err := c.Reload(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return printJSONLine(cmd.OutOrStdout(), res)
			}
			for _, l := range res.Lines {
				fmt.Fprintln(cmd.OutOrStdout(), l)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&g.json, "json", false, "print JSON: {\"lines\": [...]}")
	return cmd
}

// checkConfig checks what the daemon checks of a configuration file before
// it starts: shares, peers, delegation and limits, network, agents.
func checkConfig(file *fileConfig) ([]shareSpec, error) {
	specs, err := shareSpecs(file, nil, nil, nil, nil, nil)
	if err != nil {
		return nil, err
	}
	for _, p := range file.Peers {
		if _, err := identity.ParseTarget(p); err != nil {
			return nil, fmt.Errorf("peers: %w", err)
		}
	}
	for _, a := range file.Listen {
		if _, err := ma.NewMultiaddr(a); err != nil {
			return nil, fmt.Errorf("listen %q: %w", a, err)
		}
	}
	if _, err := file.trustOptions(); err != nil {
		return nil, err
	}
	var flags networkFlags // at their defaults: the file's values win
	dummy := &cobra.Command{}
	flags.add(dummy)
	if _, err := networkOptions(dummy, file.Network, &flags); err != nil {
		return nil, err
	}
	return specs, nil
}

func summarizeConfig(file *fileConfig, specs []shareSpec) string {
	parts := []string{fmt.Sprintf("%d shares", len(specs)), fmt.Sprintf("%d agents", len(file.Agents)), "policy " + describePolicy(file.Policy, false)}
	return strings.Join(parts, ", ")
}

// dialQuiet reports whether a daemon runs for the home.
func dialQuiet(cmd *cobra.Command, g *globals) (string, bool) {
	c, err := dial(cmd, g)
	if err != nil {
		return "", false
	}
	id, err := c.ID(cmd.Context())
	return id.ID, err == nil
}

// printOffline says what can be known of a home without its daemon: the
// identity, the configuration and its warnings, the mesh key, the ports.
func printOffline(out io.Writer, home, cfgFlag string) {
	fmt.Fprintf(out, "no daemon runs for home %s (start one: mcpmesh node --home %s)\n", home, home)
	if id, err := readIdentity(home); err == nil {
		fmt.Fprintf(out, "  identity:  %s\n", id)
	} else if errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(out, "  identity:  none yet (created at the daemon's first start)\n")
	} else {
		fmt.Fprintf(out, "  identity:  %v\n", err)
	}
	path, named := configPath(home, cfgFlag)
	file, err := loadConfig(path, named)
	switch {
	case err != nil:
		fmt.Fprintf(out, "  config:    %v\n", err)
		return
	case !file.exists:
		fmt.Fprintf(out, "  config:    none (%s)\n", path)
	}
	specs, err := checkConfig(file)
	if err != nil {
		fmt.Fprintf(out, "  config:    %s: %v\n", path, err)
		return
	}
	if file.exists {
		fmt.Fprintf(out, "  config:    %s: %s\n", path, summarizeConfig(file, specs))
	}
	if _, err := os.Stat(filepath.Join(home, node.MeshKeyFile)); err == nil {
		fmt.Fprintf(out, "  mesh:      private mesh: key %s\n", filepath.Join(home, node.MeshKeyFile))
	} else {
		fmt.Fprintf(out, "  mesh:      open mesh (no %s)\n", node.MeshKeyFile)
	}
	warnings, _ := configWarnings(file, specs, file.Listen, true)
	for _, w := range warnings {
		fmt.Fprintf(out, "  warning:   %s\n", w)
	}
}
