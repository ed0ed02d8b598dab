package gateway_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpmesh/mcpmesh/gateway"
	"github.com/mcpmesh/mcpmesh/internal/fixture"
)

// BenchmarkGatewayCall times one tools/call (test_simple_text) from an SDK
// client over Streamable HTTP (2025-11-25 session): straight to the SDK's
// own HTTP handler, through the gateway to a peer's server (one mesh hop),
// and through the gateway and a --share-peer relay (two hops).
func BenchmarkGatewayCall(b *testing.B) {
	ctx := context.Background()
	run := func(b *testing.B, url string) {
		cs, err := sdkmcp.NewClient(&sdkmcp.Implementation{Name: "bench", Version: "1"}, nil).Connect(ctx,
			&sdkmcp.StreamableClientTransport{Endpoint: url, DisableStandaloneSSE: true},
			&sdkmcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
		if err != nil {
			b.Fatal(err)
		}
		defer cs.Close()
		params := &sdkmcp.CallToolParams{Name: "test_simple_text"}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if _, err := cs.CallTool(ctx, params); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("direct", func(b *testing.B) {
		server := fixture.NewServer()
		hs := httptest.NewServer(sdkmcp.NewStreamableHTTPHandler(func(*http.Request) *sdkmcp.Server { return server }, nil))
		defer func() { hs.CloseClientConnections(); hs.Close() }()
		run(b, hs.URL)
	})
	b.Run("gateway-1hop", func(b *testing.B) {
		a, c := plainNode(b), plainNode(b)
		if err := c.Share("fixture", fixture.NewServer()); err != nil {
			b.Fatal(err)
		}
		if _, err := a.Connect(ctx, c.Addrs()[0].String()); err != nil {
			b.Fatal(err)
		}
		h := gateway.NewHTTPHandler(a, gateway.HTTPOptions{})
		hs := httptest.NewServer(h)
		defer func() { hs.CloseClientConnections(); hs.Close(); h.Close() }()
		run(b, fmt.Sprintf("%s/mcp/%s/fixture", hs.URL, c.ID()))
	})
	b.Run("gateway-2hops", func(b *testing.B) {
		url, _ := farFixture(b, gateway.HTTPOptions{})
		run(b, url)
	})
}
