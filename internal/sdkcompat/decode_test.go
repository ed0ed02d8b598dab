package sdkcompat

import (
	"reflect"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// DecodeMessage must read every frame exactly as the SDK's DecodeMessage does:
// the same messages, and an error for the same inputs — except that it also
// refuses data after the message, as the SDK's own stdio transport does.
var decodeCorpus = []string{
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`,
	`{"jsonrpc":"2.0","id":"a-1","method":"ping"}`,
	`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
	`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1}}`,
	`{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"ok"}]}}`,
	`{"jsonrpc":"2.0","id":7,"error":{"code":-32601,"message":"nope","data":{"x":1}}}`,
	`{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse"}}`,
	`{"jsonrpc":"2.0","id":1,"method":""}`,
	`{"jsonrpc":"1.0","id":1,"method":"x"}`,
	`{"id":1,"method":"x"}`,
	`{"jsonrpc":"2.0","result":{}}`,
	`{"jsonrpc":"2.0","id":1.5,"method":"x"}`,
	`{"jsonrpc":"2.0","id":[1],"method":"x"}`,
	`{"jsonrpc":"2.0","id":1,"method":5}`,
	`{"jsonrpc":"2.0","id":1,"method":"x"} trailing`,
	`{"jsonrpc":"2.0","id":1,"METHOD":"x"}`,
	`not json`,
	`[]`,
	`{}`,
	`{"jsonrpc":"2.0","id":1,"method":"x","params":` + deep(1001) + `}`,
	`{"jsonrpc":"2.0","id":1,"method":"x","params":` + deep(999) + `}`,
	`{"jsonrpc":"2.0","id":1,"method":"x","params":{"s":"\"{[{["}}`,
}

func deep(n int) string {
	s := ""
	for range n {
		s += "["
	}
	for range n {
		s += "]"
	}
	return s
}

func TestDecodeFrameMatchesSDK(t *testing.T) {
	for _, frame := range decodeCorpus {
		want, werr := jsonrpc.DecodeMessage([]byte(frame))
		got, gerr := DecodeMessage([]byte(frame))
		if stricter(werr, gerr) {
			continue
		}
		if (werr == nil) != (gerr == nil) {
			t.Errorf("%.80s: SDK error %v, ours %v", frame, werr, gerr)
			continue
		}
		if werr == nil && !reflect.DeepEqual(normalize(want), normalize(got)) {
			t.Errorf("%.80s:\n SDK  %#v\n ours %#v", frame, want, got)
		}
		if view, verr := DecodeMessageView([]byte(frame)); (verr == nil) != (gerr == nil) || !reflect.DeepEqual(normalize(view), normalize(got)) {
			t.Errorf("%.80s: the view decodes otherwise: %#v (%v)", frame, view, verr)
		}
	}
}

func stricter(sdkErr, ourErr error) bool {
	return sdkErr == nil && ourErr != nil && strings.Contains(ourErr.Error(), "data after the message")
}

// normalize drops the difference between a nil and an empty raw message.
func normalize(m jsonrpc.Message) jsonrpc.Message {
	switch m := m.(type) {
	case *jsonrpc.Request:
		c := *m
		if len(c.Params) == 0 {
			c.Params = nil
		}
		return &c
	case *jsonrpc.Response:
		c := *m
		if len(c.Result) == 0 {
			c.Result = nil
		}
		return &c
	}
	return m
}

func FuzzDecodeFrame(f *testing.F) {
	for _, frame := range decodeCorpus {
		f.Add([]byte(frame))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		want, werr := jsonrpc.DecodeMessage(frame)
		got, gerr := DecodeMessage(frame)
		if stricter(werr, gerr) {
			return
		}
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("%q: SDK error %v, ours %v", frame, werr, gerr)
		}
		if werr == nil && !reflect.DeepEqual(normalize(want), normalize(got)) {
			t.Fatalf("%q:\n SDK  %#v\n ours %#v", frame, want, got)
		}
		if view, verr := DecodeMessageView(frame); (verr == nil) != (gerr == nil) || !reflect.DeepEqual(normalize(view), normalize(got)) {
			t.Fatalf("%q: the view decodes otherwise: %#v (%v)", frame, view, verr)
		}
	})
}

// DecodeFrame gives the id exactly as sent, where the SDK's ID cannot hold
// it; a null id is told apart from none.
func TestDecodeFrameKeepsTheRawID(t *testing.T) {
	for frame, want := range map[string]string{
		`{"jsonrpc":"2.0","id":1.5,"method":"x"}`:                            `1.5`,
		`{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"x"}`: `123456789012345678901234567890`,
		`{"jsonrpc":"2.0","id":9007199254740993,"method":"x"}`:               `9007199254740993`,
		`{"jsonrpc":"2.0","id": "a\u0062" ,"method":"x"}`:                    `"a\u0062"`,
		`{"jsonrpc":"2.0","id":null,"method":"x"}`:                           `null`,
		`{"jsonrpc":"2.0","method":"x"}`:                                     ``,
		`{"jsonrpc":"2.0","id":7,"result":{}}`:                               `7`,
	} {
		_, raw, err := DecodeFrame([]byte(frame))
		if err != nil || string(raw) != want {
			t.Errorf("%s: raw id %q, %v; want %q", frame, raw, err, want)
		}
	}
}

// EncodeResponse relies on the SDK writing "jsonrpc" then "id" first.
func TestEncodeResponseWithRawID(t *testing.T) {
	for _, id := range []jsonrpc.ID{IDFor(42), mustID(t, "s")} {
		resp := &jsonrpc.Response{ID: id, Result: []byte(`{"ok":true}`)}
		got, err := EncodeResponse(resp, []byte(`123456789012345678901234567890`))
		if err != nil {
			t.Fatalf("%v: %v (did the SDK change how it encodes a response?)", id, err)
		}
		if want := `{"jsonrpc":"2.0","id":123456789012345678901234567890,"result":{"ok":true}}`; string(got) != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
	resp := &jsonrpc.Response{ID: IDFor(1), Error: &jsonrpc.Error{Code: -1, Message: "no"}}
	got, err := EncodeResponse(resp, []byte(`"é"`))
	if want := `{"jsonrpc":"2.0","id":"é","error":{"code":-1,"message":"no"}}`; err != nil || string(got) != want {
		t.Errorf("got %s, %v; want %s", got, err, want)
	}
}

func mustID(t *testing.T, v any) jsonrpc.ID {
	id, err := jsonrpc.MakeID(v)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
