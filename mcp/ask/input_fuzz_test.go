package ask

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
	valid, err := in.encodeState(requestState{
		Answers: map[string]json.RawMessage{"mcpmesh-1": json.RawMessage(`{"action":"accept"}`)},
		Memos:   map[int]memo{0: {Label: "call pay", Value: json.RawMessage(`{"content":[]}`)}, 1: {Label: "model", Err: "refused"}},
	})
	if err != nil {
		f.Fatal(err)
	}
	for _, body := range []string{
		`{}`,
		`{"answers":{"mcpmesh-1":{"action":"accept","content":{"name":"Ada"}}}}`,
		`{"answers":{"mcpmesh-1":{"action":"decline"},"mcpmesh-2":{"model":"m","role":"assistant","content":[{"type":"text","text":"hi"}]}}}`,
		`{"answers":null,"memos":{"0":{"label":"x","value":1},"-3":{"label":"y","err":"e"}}}`,
		`{"memos":{"zz":{}}}`,
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
		if rs, err := in.decodeState(state); err == nil {
			if rs.Answers == nil {
				t.Fatalf("state %q accepted with a nil answers map", state)
			}
			checkStateRoundTrip(t, in, rs)
		}
		// An arbitrary body this node signed: decoded, or refused, never a
		// panic; decoded, it must take answers and encode back to itself.
		rs, err := in.decodeState(in.sign(body))
		if err != nil {
			return
		}
		if rs.Answers == nil {
			t.Fatalf("body %q decoded to a nil answers map: adding an answer to it would panic", body)
		}
		rs.Answers["mcpmesh-fuzz"] = []byte(`{"action":"cancel"}`)
		checkStateRoundTrip(t, in, rs)
	})
}

func checkStateRoundTrip(t *testing.T, in *Inputs, rs requestState) {
	t.Helper()
	enc, err := in.encodeState(rs)
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
