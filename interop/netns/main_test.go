package netns

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var (
	figures  = flag.Bool("netns.figures", false, "run the figure measurements (minutes): time to first call through NAT, share of direct connections, relay overhead, partition detection")
	attempts = flag.Int("netns.attempts", 20, "attempts per figure with -netns.figures")
	rtt      = flag.Duration("netns.rtt", 40*time.Millisecond, "round trip between two hosts of the figures' \"internet\" (a cable of a quarter of it on each link)")
	logLevel = flag.String("netns.log", "", "GOLOG_LOG_LEVEL for the daemons (e.g. info, or \"error,mcpmesh/node=debug\")")
	checkout = flag.String("netns.build", "../..", "the checkout of mcpmesh whose ./cmd/mcpmesh the daemons run (e.g. another worktree)")
)

// Built once by TestMain.
var (
	binary   string // the mcpmesh command
	selfPath string // this test binary: the lab's tool server (MaybeRunTool)
)

func TestMain(m *testing.M) {
	MaybeRunTool() // the --share program of the tests: serves and exits
	flag.Parse()
	code := func() int {
		if err := Available(); err != nil {
			// Each test skips (or fails in CI) with the reason.
			return m.Run()
		}
		if removed, err := RemoveStale(); err != nil {
			fmt.Fprintln(os.Stderr, "netns: removing stale namespaces:", err)
		} else if len(removed) > 0 {
			fmt.Fprintf(os.Stderr, "netns: removed %d namespaces of an earlier run that was killed\n", len(removed))
		}
		dir, err := os.MkdirTemp("", "mcpmesh-netns")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		binary = filepath.Join(dir, "mcpmesh")
		build := exec.Command("go", "build", "-o", binary, "./cmd/mcpmesh")
		build.Dir = *checkout
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "netns: build mcpmesh:", err)
			return 1
		}
		if selfPath, err = os.Executable(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		code := m.Run()
		if code == 0 {
			if err := goleak.Find(); err != nil {
				fmt.Fprintln(os.Stderr, "goleak:", err)
				return 1
			}
		}
		return code
	}()
	os.Exit(code)
}
