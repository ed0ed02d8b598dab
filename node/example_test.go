package node_test

import (
	"context"
	"fmt"
	"log"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/node"
	"github.com/mcpmesh/mcpmesh/peer/identity"
	"github.com/mcpmesh/mcpmesh/peer/policy"
)

type translateIn struct {
	Text string `json:"text" jsonschema:"the text to translate"`
}

type translateOut struct {
	French string `json:"french"`
}

// Two nodes in one program: one offers a typed tool, the other calls it over
// libp2p. Either could call the other the same way.
func Example() {
	ctx := context.Background()
	loopback := node.WithListenAddrs("/ip4/127.0.0.1/tcp/0")

	client, err := node.New(loopback)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	// Closed by default: the server grants the client its one tool.
	grants, err := policy.Parse([]byte(`{"grants": [{"peers": ["` + client.ID().String() + `"], "tools": ["translate"]}]}`))
	if err != nil {
		log.Fatal(err)
	}
	server, err := node.New(loopback, node.WithName("translator"), node.WithPolicy(grants))
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()
	node.AddTool(server, &sdkmcp.Tool{Name: "translate", Description: "English to French"},
		func(ctx context.Context, _ *sdkmcp.CallToolRequest, in translateIn) (*sdkmcp.CallToolResult, translateOut, error) {
			caller, _ := identity.Remote(ctx) // authenticated by libp2p, never claimed
			log.Printf("translate called by %s", caller)
			return nil, translateOut{French: map[string]string{"hello": "bonjour"}[in.Text]}, nil
		})

	id, err := client.Connect(ctx, server.Addrs()[0].String())
	if err != nil {
		log.Fatal(err)
	}
	tools, err := client.ListTools(ctx, id)
	if err != nil {
		log.Fatal(err)
	}
	for _, t := range tools {
		fmt.Println("tool:", t.Ref())
	}
	res, err := client.CallTool(ctx, id, "translate", translateIn{Text: "hello"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("french:", res.StructuredContent.(map[string]any)["french"])
	// Output:
	// tool: node/translate
	// french: bonjour
}

func ExampleSplitRef() {
	for _, ref := range []string{"files/read", "translate", "not a server/x"} {
		server, tool, ok := node.SplitRef(ref)
		fmt.Printf("%q → server %q, tool %q, named %v\n", ref, server, tool, ok)
	}
	// Output:
	// "files/read" → server "files", tool "read", named true
	// "translate" → server "", tool "translate", named false
	// "not a server/x" → server "", tool "not a server/x", named false
}
