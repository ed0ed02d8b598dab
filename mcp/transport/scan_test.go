package transport

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/mcpmesh/mcpmesh/internal/sdkcompat"
)

func scan(frame string, chunk int) *scanner {
	s := newScanner()
	b := []byte(frame)
	for len(b) > 0 {
		n := min(chunk, len(b))
		s.feed(b[:n])
		b = b[n:]
	}
	return &s
}

// The scanner finds a frame's top-level id wherever it is, never one inside
// the payload, and counts values (as many as a JSON decoder finds) and
// depth, however the frame arrives.
func TestScannerReadsTheTopLevel(t *testing.T) {
	big := strings.Repeat("x", 64)
	cases := []struct {
		name, frame, id   string
		request, response bool
		values, depth     int
	}{
		{"go answer", `{"jsonrpc":"2.0","id":7,"result":{"text":"` + big + `"}}`, `7`, false, true, 7, 2},
		{"js answer, id last", `{"result":{"text":"` + big + `"},"jsonrpc":"2.0","id":"a-1"}`, `"a-1"`, false, true, 7, 2},
		{"request", `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"t":"` + big + `"}}}`, `3`, true, false, 13, 3},
		{"method first, id last", `{"method":"x","params":{"a":[1,2,{"b":null}]},"jsonrpc":"2.0","id":1.5}`, `1.5`, true, false, 16, 4},
		{"notification", `{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"` + big + `"}}`, ``, true, false, 7, 2},
		{"nested id only", `{"jsonrpc":"2.0","result":{"id":9,"text":"` + big + `"}}`, ``, false, true, 7, 2},
		{"id in a string", `{"jsonrpc":"2.0","result":{"text":"\"id\":5}"}}`, ``, false, true, 5, 2},
		{"escaped string id", `{"jsonrpc":"2.0","id":"a\"b\\","method":"x"}`, `"a\"b\\"`, true, false, 6, 1},
		{"spaces", "{ \"id\" : -12 , \"method\" : \"x\" }", `-12`, true, false, 5, 1},
		{"null id", `{"id":null,"method":"x"}`, `null`, true, false, 5, 1},
		{"escaped key", `{"\u0069d":1,"method":"x"}`, ``, true, false, 5, 1},
		{"brackets in strings", `{"id":2,"params":{"s":"[[[{{{\"}}}"}}`, `2`, false, false, 6, 2},
	}
	for _, c := range cases {
		var v any
		if err := json.Unmarshal([]byte(c.frame), &v); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		c.values = countValues(v)
		for _, chunk := range []int{1, 3, 7, 1 << 20} {
			s := scan(c.frame, chunk)
			if string(s.rawID()) != c.id || s.method != c.request || s.response != c.response || s.values != c.values || s.deepest != c.depth {
				t.Errorf("%s (chunks of %d): id %q method %v response %v values %d depth %d; want %q %v %v %d %d",
					c.name, chunk, s.rawID(), s.method, s.response, s.values, s.deepest, c.id, c.request, c.response, c.values, c.depth)
			}
		}
	}
}

// FuzzScanner checks the scanner against the decoder on any frame the
// decoder reads: the same top-level id, and as many values as a JSON
// decoder finds.
func FuzzScanner(f *testing.F) {
	for _, s := range streamCorpus {
		for _, line := range strings.Split(s, "\n") {
			f.Add([]byte(line), uint8(5))
		}
	}
	f.Add([]byte(`{"jsonrpc":"2.0","id":"x\u0022y","method":"m","params":{"a":[1,{"b":"]"}]}}`), uint8(2))
	f.Fuzz(func(t *testing.T, frame []byte, chunkIn uint8) {
		msg, raw, err := sdkcompat.DecodeFrame(frame)
		if err != nil || msg == nil || bytes.Contains(frame, []byte(`\u`)) && bytes.Count(frame, []byte(`"id"`)) == 0 {
			return
		}
		s := scan(string(frame), 1+int(chunkIn)%32)
		var v any
		if json.Unmarshal(frame, &v) != nil {
			return
		}
		if !bytes.Contains(frame, []byte(`\`)) && bytes.Count(frame, []byte(`"id"`)) <= 1 && !bytes.Equal(s.rawID(), raw) {
			t.Fatalf("scanner id %q, decoder's %q", s.rawID(), raw)
		}
		if want := countValues(v); s.values < want {
			t.Fatalf("scanner counted %d values, the frame holds %d", s.values, want)
		}
	})
}

func countValues(v any) int {
	switch x := v.(type) {
	case map[string]any:
		n := 1
		for _, e := range x {
			n += 1 + countValues(e) // the key and its value
		}
		return n
	case []any:
		n := 1
		for _, e := range x {
			n += countValues(e)
		}
		return n
	}
	return 1
}
