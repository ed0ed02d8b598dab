package discovery

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	lpeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/mcpmesh/mcpmesh/proto/cardpb"
)

func newKey(t testing.TB) (crypto.PrivKey, lpeer.ID) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := lpeer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, id
}

func sealed(t *testing.T, key crypto.PrivKey, seq uint64, expires time.Time) []byte {
	t.Helper()
	data, err := SealCard(&cardpb.Card{
		Seq: seq, Name: "n", ExpiresAtMs: expires.UnixMilli(),
		Servers: []*cardpb.Server{{Name: "node", Tools: []*cardpb.Tool{{Name: "echo"}}}},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestValidCardAccepted(t *testing.T) {
	k, id := newKey(t)
	if err := (Validator{}).Validate(CardKey(id), sealed(t, k, 1, time.Now().Add(time.Minute))); err != nil {
		t.Fatal(err)
	}
}

func TestForgedCardRejected(t *testing.T) {
	_, victim := newKey(t)
	forger, _ := newKey(t)
	err := (Validator{}).Validate(CardKey(victim), sealed(t, forger, 1, time.Now().Add(time.Minute)))
	if !errors.Is(err, ErrCardSigner) {
		t.Fatalf("card signed by another key: %v, want ErrCardSigner", err)
	}
}

func TestTamperedCardRejected(t *testing.T) {
	k, id := newKey(t)
	data := sealed(t, k, 1, time.Now().Add(time.Minute))
	for i := range data {
		bad := append([]byte(nil), data...)
		bad[i] ^= 0x01
		if (Validator{}).Validate(CardKey(id), bad) == nil {
			t.Fatalf("card with byte %d flipped accepted", i)
		}
	}
}

func TestUnsignedCardRejected(t *testing.T) {
	_, id := newKey(t)
	for _, v := range [][]byte{nil, []byte("not a card"), make([]byte, 100)} {
		if (Validator{}).Validate(CardKey(id), v) == nil {
			t.Fatalf("%q accepted", v)
		}
	}
}

func TestExpiredCardRejected(t *testing.T) {
	k, id := newKey(t)
	err := (Validator{}).Validate(CardKey(id), sealed(t, k, 1, time.Now().Add(-time.Second)))
	if !errors.Is(err, ErrCardExpired) {
		t.Fatalf("expired card: %v", err)
	}
}

func TestOversizedCardRejected(t *testing.T) {
	_, id := newKey(t)
	if err := (Validator{}).Validate(CardKey(id), make([]byte, MaxCardSize+1)); !errors.Is(err, ErrCardTooLarge) {
		t.Fatalf("oversized card: %v", err)
	}
}

func TestSelectKeepsNewestValidCard(t *testing.T) {
	k, id := newKey(t)
	forger, _ := newKey(t)
	exp := time.Now().Add(time.Minute)
	older, newer := sealed(t, k, 5, exp), sealed(t, k, 9, exp)
	forged := sealed(t, forger, 100, exp)
	expired := sealed(t, k, 50, time.Now().Add(-time.Second))
	i, err := (Validator{}).Select(CardKey(id), [][]byte{older, forged, expired, newer})
	if err != nil || i != 3 {
		t.Fatalf("Select = %d, %v; want 3 (seq 9)", i, err)
	}
}

func TestCardKeyMustNamePeer(t *testing.T) {
	k, _ := newKey(t)
	for _, key := range []string{"/other/x", "/" + CardNamespace + "/garbage", ""} {
		if (Validator{}).Validate(key, sealed(t, k, 1, time.Now().Add(time.Minute))) == nil {
			t.Errorf("key %q accepted", key)
		}
	}
}

func TestParseQuery(t *testing.T) {
	for q, want := range map[string]Capability{
		"translate":      {Kind: "tool", Name: "translate"},
		"tag:github":     {Kind: "tag", Name: "github"},
		" echo ":         {Kind: "tool", Name: "echo"},
		"event:job.done": {Kind: "event", Name: "job.done"},
	} {
		got, err := ParseQuery(q)
		if err != nil || got != want {
			t.Errorf("ParseQuery(%q) = %v, %v", q, got, err)
		}
	}
	for _, q := range []string{"", "tag:", "event:"} {
		if _, err := ParseQuery(q); err == nil {
			t.Errorf("ParseQuery(%q) accepted", q)
		}
	}
	if a, b := (Capability{"tool", "x"}).CID(), (Capability{"tag", "x"}).CID(); a.Equals(b) {
		t.Error("tool and tag of the same name share a key")
	}
	if a, b := (Capability{"tool", "x"}).CID(), (Capability{"event", "x"}).CID(); a.Equals(b) {
		t.Error("tool and event of the same name share a key")
	}
}

// A card's event types are advertised and matched as "event:NAME", never as
// tools or tags.
func TestCardEventsAdvertisedAndMatched(t *testing.T) {
	card := &Card{Card: &cardpb.Card{
		Servers: []*cardpb.Server{{Name: "node", Tools: []*cardpb.Tool{{Name: "job.done"}}}},
		Events:  []*cardpb.EventType{{Name: "job.done", Description: "A job ended.", Replay: true}},
	}}
	caps := Capabilities(card)
	if !slices.Contains(caps, Capability{"event", "job.done"}) || !slices.Contains(caps, Capability{"tool", "job.done"}) {
		t.Errorf("Capabilities = %v; want the tool and the event", caps)
	}
	m := MatchCard(card, Capability{"event", "job.done"})
	if len(m) != 1 || m[0].Event == nil || m[0].Tool != nil || m[0].Event.Description != "A job ended." {
		t.Errorf("MatchCard(event) = %+v", m)
	}
	if m := MatchCard(card, Capability{"tool", "job.done"}); len(m) != 1 || m[0].Tool == nil || m[0].Event != nil {
		t.Errorf("MatchCard(tool) = %+v", m)
	}
}
