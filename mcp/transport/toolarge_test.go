package transport

import (
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// The ID of a frame over the limit is read from its ends, where encoders
// put it (Go: first; JavaScript's JSON.stringify of {result, jsonrpc, id}:
// last), and never from inside the payload.
func TestFrameIDFromItsEnds(t *testing.T) {
	big := strings.Repeat("x", 64)
	id := func(v any) jsonrpc.ID { i, _ := jsonrpc.MakeID(v); return i }
	cases := []struct {
		name    string
		frame   string
		id      jsonrpc.ID
		request bool
	}{
		{"go answer", `{"jsonrpc":"2.0","id":7,"result":{"text":"` + big + `"}}`, id(float64(7)), false},
		{"js answer", `{"result":{"text":"` + big + `"},"jsonrpc":"2.0","id":"a-1"}`, id("a-1"), false},
		{"js answer id last", `{"result":{"text":"` + big + `"},"id":12}`, id(float64(12)), false},
		{"request", `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"t":"` + big + `"}}}`, id(float64(3)), true},
		{"method first", `{"method":"tools/call","params":{"a":"` + big + `"},"jsonrpc":"2.0","id":4}`, id(float64(4)), true},
		{"notification", `{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"` + big + `"}}`, jsonrpc.ID{}, true},
		{"nested id only", `{"jsonrpc":"2.0","result":{"id":9,"text":"` + big + `"}}`, jsonrpc.ID{}, false},
		{"nested id at the end", `{"jsonrpc":"2.0","result":{"text":"` + big + `","id":9}}`, jsonrpc.ID{}, false},
		{"id in a string", `{"jsonrpc":"2.0","result":{"text":"\"id\":5}"}}`, jsonrpc.ID{}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Only the first 40 and last 40 bytes are known.
			head, tail := c.frame[:40], c.frame[len(c.frame)-40:]
			got, request := frameID([]byte(head), []byte(tail))
			if got != c.id || request != c.request {
				t.Errorf("frameID = %v, request %v; want %v, %v", got, request, c.id, c.request)
			}
		})
	}
}

func TestSizeText(t *testing.T) {
	for n, want := range map[int]string{4 << 20: "4 MiB", 512 << 10: "512 KiB", 1000: "1000 bytes", 1<<20 + 1: "1048577 bytes"} {
		if got := SizeText(n); got != want {
			t.Errorf("SizeText(%d) = %q, want %q", n, got, want)
		}
	}
}
