package main

import (
	"context"
	"os"
	"time"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
)

// A daemon of the suite may share this executable as a stdio MCP server
// (--share slow=EXECUTABLE), and the suite runs its attackers in it
// (attacker.go); the environment tells it which it is.
const (
	roleEnv   = "MCPMESH_ATTACK_ROLE"
	roleSleep = "sleep-server"
)

// asSharedProgram serves the sleep tool over stdio, or runs an attack,
// and reports true, if the environment says this process is a daemon's
// shared program or the suite's attacker.
func asSharedProgram() bool {
	switch os.Getenv(roleEnv) {
	case roleSleep:
		serveSleep()
	case roleAttacker:
		runAttacker()
	default:
		return false
	}
	return true
}

type sleepIn struct {
	Ms int `json:"ms" jsonschema:"how long to sleep, in milliseconds"`
}

type sleepOut struct {
	Slept int `json:"slept"`
}

// serveSleep serves one tool, sleep, on stdin/stdout until stdin closes: a
// call that stays pending as long as the caller asks.
func serveSleep() {
	s := sdkmcp.NewServer(&sdkmcp.Implementation{Name: "attack-sleep", Version: "0"}, nil)
	sdkmcp.AddTool(s, &sdkmcp.Tool{Name: "sleep", Description: "Sleeps for ms milliseconds, then answers."},
		func(ctx context.Context, _ *sdkmcp.CallToolRequest, in sleepIn) (*sdkmcp.CallToolResult, sleepOut, error) {
			t := time.NewTimer(time.Duration(min(max(in.Ms, 0), 60_000)) * time.Millisecond)
			defer t.Stop()
			select {
			case <-t.C:
				return nil, sleepOut{Slept: in.Ms}, nil
			case <-ctx.Done():
				return nil, sleepOut{}, ctx.Err()
			}
		})
	s.Run(context.Background(), &sdkmcp.StdioTransport{})
}
