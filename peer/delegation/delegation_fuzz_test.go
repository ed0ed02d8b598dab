package delegation

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"
)

// fuzzNow is the clock of FuzzDecodeChain: seed links are issued at it and
// expire an hour later.
var fuzzNow = time.UnixMilli(1_700_000_000_000)

// FuzzDecodeChain feeds DecodeChain what a peer could put under
// MetaKey: text as the JSON value, and raw as one link's envelope
// bytes, alone and after a valid first link. It must never panic, and what
// it accepts must hold together.
func FuzzDecodeChain(f *testing.F) {
	a, b, c, d, _ := parties(f)
	t0, exp := fuzzNow, fuzzNow.Add(time.Hour)
	all := []string{"*"}
	valid := forge(f,
		linkSpec{signer: a, audience: b.id, tools: []string{"files/read_*", "echo"}, peers: all, issued: t0, expires: exp},
		linkSpec{signer: b, audience: c.id, tools: []string{"files/read_x*"}, peers: []string{d.id.String()}, issued: t0, expires: exp},
		linkSpec{signer: c, audience: d.id, tools: []string{"files/read_x*"}, issued: t0, expires: exp},
	)
	raw := func(s string) []byte {
		r, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			f.Fatal(err)
		}
		return r
	}
	for n := 1; n <= len(valid); n++ {
		text, _ := json.Marshal(valid[:n])
		f.Add(text, raw(valid[n-1]))
	}
	f.Add([]byte(`[]`), []byte{})
	f.Add([]byte(`["AAAA", 1, null]`), []byte("\x0a\x00"))
	f.Add([]byte(`{"x": "y"}`), []byte("junk"))
	f.Add([]byte(`["`+valid[0]+`", "`+valid[2]+`"]`), raw(valid[1])[:40])

	f.Fuzz(func(t *testing.T, text, link []byte) {
		check := func(c *Chain, err error) {
			if err != nil {
				for _, kind := range []error{ErrExpired, ErrAudience, ErrWidened, ErrForged, ErrMalformed} {
					if errors.Is(err, kind) {
						return
					}
				}
				t.Fatalf("error of no kind: %v", err)
			}
			checkDecoded(t, c)
		}
		check(DecodeChain(json.RawMessage(text)))
		enc := base64.StdEncoding.EncodeToString(link)
		check(DecodeChain([]string{enc}))
		check(DecodeChain([]any{valid[0], enc}))
	})
}

// checkDecoded checks the invariants of a decoded chain, and runs what a
// callee and a delegate would do with it.
func checkDecoded(t *testing.T, c *Chain) {
	t.Helper()
	n := c.Len()
	if n < 1 || n > MaxLinks {
		t.Fatalf("chain of %d links", n)
	}
	links := c.Links()
	for i := 1; i < n; i++ {
		if links[i].Issuer != links[i-1].Audience {
			t.Fatalf("link %d not chained", i)
		}
		if links[i].Expires.After(links[i-1].Expires) {
			t.Fatalf("link %d expires later than link %d", i, i-1)
		}
	}
	if c.Principal() != links[0].Issuer {
		t.Fatal("principal is not the first issuer")
	}
	again, err := DecodeChain(c.Encode())
	if err != nil {
		t.Fatalf("re-decode: %v", err)
	}
	if !slices.Equal(again.Encode(), c.Encode()) {
		t.Fatal("re-encoded chain differs")
	}
	last := links[n-1]
	p, err := c.Verify(last.Issuer, last.Audience, "files", "read_xyz", last.Issued)
	if err == nil && p != links[0].Issuer {
		t.Fatalf("Verify gave principal %s, not the first issuer", p)
	}
	_ = c.Covers(last.Audience, "files", "read_xyz", last.Issued)
	_ = c.String()
}
