package mcp

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"testing"
)

// sign is what encodeState does with an arbitrary body: a caller cannot
// forge the MAC, but the node decodes what it signed itself, so the body's
// decoder is fuzzed with valid MACs too.
func (in *Inputs) sign(body []byte) string {
	mac := hmac.New(sha256.New, in.key)
	mac.Write(body)
	enc := base64.RawURLEncoding
	return enc.EncodeToString(body) + "." + enc.EncodeToString(mac.Sum(nil))
}

// FuzzDecodeState decodes arbitrary requestState values (which come back
// from the caller) and arbitrary bodies under a valid MAC. It checks that
// decodeState never panics, that a forged or mangled state is refused, that
// what it accepts is a map the middleware can add answers to, and that a
// decoded state encodes and decodes back to itself.
func FuzzDecodeState(f *testing.F) {
	in := &Inputs{key: []byte("fuzz key, 32 bytes long, exactly")}
	valid, err := in.encodeState(map[string]json.RawMessage{"mcpmesh-1": json.RawMessage(`{"action":"accept"}`)})
	if err != nil {
		f.Fatal(err)
	}
	for _, body := range []string{
		`{}`,
		`{"mcpmesh-1":{"action":"accept","content":{"name":"Ada"}}}`,
		`{"mcpmesh-1":{"action":"decline"},"mcpmesh-2":{"model":"m","role":"assistant","content":[{"type":"text","text":"hi"}]}}`,
		`[]`,
		`"x"`,
	} {
		f.Add(in.sign([]byte(body)), []byte(body))
	}
	f.Add(valid, []byte(nil))
	f.Add("", []byte(nil))
	f.Add("e30.AAAA", []byte("{}"))
	f.Add("not base64!.x", []byte("{"))

	f.Fuzz(func(t *testing.T, state string, body []byte) {
		// An arbitrary state: refused unless it is one this node signed.
		if answers, err := in.decodeState(state); err == nil {
			if answers == nil {
				t.Fatalf("state %q accepted as a nil map", state)
			}
			checkStateRoundTrip(t, in, answers)
		}
		// An arbitrary body this node signed: decoded, or refused, never a
		// panic; decoded, it must take answers and encode back to itself.
		answers, err := in.decodeState(in.sign(body))
		if err != nil {
			return
		}
		if answers == nil {
			t.Fatalf("body %q decoded to a nil map: adding an answer to it would panic", body)
		}
		answers["mcpmesh-fuzz"] = []byte(`{"action":"cancel"}`)
		checkStateRoundTrip(t, in, answers)
	})
}

func checkStateRoundTrip(t *testing.T, in *Inputs, answers map[string]json.RawMessage) {
	t.Helper()
	enc, err := in.encodeState(answers)
	if err != nil {
		return // raw values the decoder kept but JSON cannot re-encode: refused when sent
	}
	back, err := in.decodeState(enc)
	if err != nil {
		t.Fatalf("state %q, encoded by this node, refused: %v", enc, err)
	}
	again, err := in.encodeState(back)
	if err != nil || again != enc {
		t.Fatalf("state does not round-trip:\n %q\n %q (%v)", enc, again, err)
	}
}
