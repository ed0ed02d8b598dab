package discovery

import (
	"bytes"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	"github.com/mcpmesh/mcpmesh/proto/cardpb"
)

// fuzzNow is the clock of the card fuzz targets: seeds expire an hour later.
var fuzzNow = time.UnixMilli(1_700_000_000_000)

// fuzzKey is a deterministic Ed25519 key, so seeds are the same every run.
func fuzzKey(tb testing.TB, seed byte) (crypto.PrivKey, lpeer.ID) {
	tb.Helper()
	k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{seed}, 32)))
	if err != nil {
		tb.Fatal(err)
	}
	id, err := lpeer.IDFromPrivateKey(k)
	if err != nil {
		tb.Fatal(err)
	}
	return k, id
}

// fuzzCards are realistic cards: what a node publishes.
func fuzzCards() []*cardpb.Card {
	addr := ma.StringCast("/ip4/192.0.2.1/tcp/4001").Bytes()
	quic := ma.StringCast("/ip6/::1/udp/4001/quic-v1").Bytes()
	exp := fuzzNow.Add(time.Hour).UnixMilli()
	return []*cardpb.Card{
		{Seq: 1, Name: "n", ExpiresAtMs: exp,
			Servers: []*cardpb.Server{{Name: "node", Tools: []*cardpb.Tool{{Name: "echo"}}}}},
		{Seq: 42, IssuedAtMs: fuzzNow.UnixMilli(), ExpiresAtMs: exp, Name: "team-tools", Description: "GitHub and docs",
			Version: "0.1.0", Addrs: [][]byte{addr, quic, []byte("not an addr")}, Tags: []string{"github", "docs"},
			Servers: []*cardpb.Server{
				{Name: "node", Tools: []*cardpb.Tool{{Name: "echo", Description: "echoes", Tags: []string{"test"}}}},
				{Name: "everything", ToolsHash: bytes.Repeat([]byte{7}, 32),
					Tools:             []*cardpb.Tool{{Name: "add", Title: "Add"}, {Name: "echo"}},
					Resources:         []*cardpb.Resource{{Uri: "file:///a", Name: "a", MimeType: "text/plain"}},
					ResourceTemplates: []*cardpb.ResourceTemplate{{UriTemplate: "file:///{x}", Name: "x"}},
					Prompts:           []*cardpb.Prompt{{Name: "p", Description: "a prompt"}}},
			}},
	}
}

// checkOpened runs what the node does with a verified card (addresses into
// the peerstore, capabilities advertised, matches for a query) and checks
// the card's own invariants.
func checkOpened(t *testing.T, c *Card, data []byte) {
	t.Helper()
	if !bytes.Equal(c.PeerId, []byte(c.Peer)) {
		t.Fatalf("opened card names %x but was signed by %s", c.PeerId, c.Peer)
	}
	if !fuzzNow.Before(c.Expires()) {
		t.Fatalf("expired card opened (expires %v)", c.Expires())
	}
	if len(data) > MaxCardSize {
		t.Fatalf("card of %d bytes opened", len(data))
	}
	c.Multiaddrs()
	for _, capa := range Capabilities(c) {
		if capa.Name == "" {
			t.Fatalf("empty capability %v", capa)
		}
		if capa.Kind == "tool" && len(MatchCard(c, capa)) == 0 {
			t.Fatalf("card advertises %v but does not match it", capa)
		}
		capa.CID()
	}
	// A valid card re-validates, under its own key only, and wins a
	// selection against nothing valid.
	v := Validator{Now: func() time.Time { return fuzzNow }}
	if err := v.Validate(CardKey(c.Peer), data); err != nil {
		t.Fatalf("opened card does not validate under its key: %v", err)
	}
	if i, err := v.Select(CardKey(c.Peer), [][]byte{[]byte("junk"), data, nil}); err != nil || i != 1 {
		t.Fatalf("Select of the one valid card: %d, %v", i, err)
	}
	_, other := fuzzKey(t, 0xEE)
	if other != c.Peer && v.Validate(CardKey(other), data) == nil {
		t.Fatalf("card of %s validated under %s's key", c.Peer, other)
	}
}

// FuzzOpenCard verifies arbitrary bytes as a card envelope, as the DHT's
// validator does with every record a peer sends, under an arbitrary DHT key.
// It checks that nothing panics and that whatever opens is a card signed by
// the peer it names, not expired, that validates again under its key.
func FuzzOpenCard(f *testing.F) {
	for i, card := range fuzzCards() {
		k, id := fuzzKey(f, byte(i+1))
		data, err := SealCard(card, k)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, CardKey(id))
		f.Add(data, "/mcpmesh-card/x")
	}
	f.Add([]byte("not a card"), "/mcpmesh-card/")
	f.Add([]byte{}, "")

	v := Validator{Now: func() time.Time { return fuzzNow }}
	f.Fuzz(func(t *testing.T, data []byte, key string) {
		if c, err := OpenCard(data, "", fuzzNow); err == nil {
			checkOpened(t, c, data)
		}
		if err := v.Validate(key, data); err == nil {
			p, perr := peerFromKey(key)
			if perr != nil {
				t.Fatalf("validated under key %q that names no peer: %v", key, perr)
			}
			c, err := OpenCard(data, p, fuzzNow)
			if err != nil || c.Peer != p {
				t.Fatalf("validated under %q but does not open for %s: %v", key, p, err)
			}
		}
		i, err := v.Select(key, [][]byte{data, data[:len(data)/2]})
		if err == nil && (i < 0 || i > 1) {
			t.Fatalf("Select returned index %d of 2", i)
		}
	})
}

// FuzzCardContents seals arbitrary card contents (a peer signs whatever it
// likes: the signature says who, not what) and opens them again. It checks
// that every card that seals opens again unchanged and that what the node
// does with a card's contents never panics.
func FuzzCardContents(f *testing.F) {
	for _, card := range fuzzCards() {
		b, err := proto.Marshal(card)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	k, id := fuzzKey(f, 1)
	f.Fuzz(func(t *testing.T, payload []byte) {
		card := new(cardpb.Card)
		if err := proto.Unmarshal(payload, card); err != nil {
			return
		}
		data, err := SealCard(card, k)
		if err != nil {
			return // over the size limit
		}
		c, err := OpenCard(data, id, fuzzNow)
		if err != nil {
			if fuzzNow.Before(time.UnixMilli(card.ExpiresAtMs)) {
				t.Fatalf("sealed card (expires %d) refused: %v", card.ExpiresAtMs, err)
			}
			return
		}
		if !proto.Equal(c.Card, card) {
			t.Fatalf("card changed on the way:\n sealed %v\n opened %v", card, c.Card)
		}
		checkOpened(t, c, data)
	})
}
