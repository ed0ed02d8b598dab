// Package discovery finds who offers what in the mesh: signed capability
// cards stored in a private Kademlia DHT under each node's peer ID, provider
// records for every tool name and tag, and mDNS on local networks.
package discovery

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	"github.com/mcpmesh/mcpmesh/proto/cardpb"
)

// CardNamespace is the DHT key namespace of cards: a card lives under
// "/mcpmesh-card/" + the peer ID's bytes.
const CardNamespace = "mcpmesh-card"

// CardDomain is the signed-envelope domain of cards, so that a signature
// made for a card cannot pass for any other libp2p record and vice versa.
const CardDomain = "mcpmesh-card"

// cardCodec is the envelope's payload type, opaque to libp2p.
var cardCodec = []byte("/mcpmesh/card/1")

// MaxCardSize bounds a card's signed envelope; bigger ones are refused.
const MaxCardSize = 64 << 10

// CardKey returns the DHT key of p's card.
func CardKey(p lpeer.ID) string {
	return "/" + CardNamespace + "/" + string(p)
}

// cardRecord adapts cardpb.Card to libp2p's record.Record.
type cardRecord struct{ card *cardpb.Card }

func (r *cardRecord) Domain() string { return CardDomain }
func (r *cardRecord) Codec() []byte  { return cardCodec }
func (r *cardRecord) MarshalRecord() ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(r.card)
}
func (r *cardRecord) UnmarshalRecord(data []byte) error {
	r.card = new(cardpb.Card)
	return proto.Unmarshal(data, r.card)
}

// SealCard signs card with key, returning the envelope's bytes to publish.
// It sets the card's peer ID from the key.
func SealCard(card *cardpb.Card, key crypto.PrivKey) ([]byte, error) {
	id, err := lpeer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("seal card: %w", err)
	}
	card.PeerId = []byte(id)
	env, err := record.Seal(&cardRecord{card: card}, key)
	if err != nil {
		return nil, fmt.Errorf("seal card: %w", err)
	}
	data, err := env.Marshal()
	if err != nil {
		return nil, fmt.Errorf("seal card: %w", err)
	}
	if len(data) > MaxCardSize {
		return nil, fmt.Errorf("seal card: %d bytes, over the %d-byte limit (shorten descriptions or share less)", len(data), MaxCardSize)
	}
	return data, nil
}

// Card is a verified card.
type Card struct {
	*cardpb.Card
	// Peer is the peer that signed the card, which is the peer it describes.
	Peer lpeer.ID
	// Raw is the signed envelope as published.
	Raw []byte
}

// Expires returns when the card stops being valid.
func (c *Card) Expires() time.Time { return time.UnixMilli(c.ExpiresAtMs) }

// Multiaddrs decodes the card's listen addresses, skipping bad ones.
func (c *Card) Multiaddrs() []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, b := range c.Addrs {
		if a, err := ma.NewMultiaddrBytes(b); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// Errors of card verification.
var (
	ErrCardSignature = errors.New("card signature invalid")
	ErrCardSigner    = errors.New("card signed by another peer than the one it describes")
	ErrCardExpired   = errors.New("card expired")
	ErrCardTooLarge  = errors.New("card too large")
)

// OpenCard verifies a card's envelope: a valid signature in the card domain,
// by the peer the card names, not expired at now. If want is not empty the
// card must describe that peer.
func OpenCard(data []byte, want lpeer.ID, now time.Time) (*Card, error) {
	if len(data) > MaxCardSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrCardTooLarge, len(data))
	}
	var rec cardRecord
	env, err := record.ConsumeTypedEnvelope(data, &rec)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCardSignature, err)
	}
	signer, err := lpeer.IDFromPublicKey(env.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCardSignature, err)
	}
	if !bytes.Equal(rec.card.PeerId, []byte(signer)) {
		return nil, fmt.Errorf("%w: signed by %s", ErrCardSigner, signer)
	}
	if want != "" && signer != want {
		return nil, fmt.Errorf("%w: card of %s stored for %s", ErrCardSigner, signer, want)
	}
	if exp := time.UnixMilli(rec.card.ExpiresAtMs); !now.Before(exp) {
		return nil, fmt.Errorf("%w at %s", ErrCardExpired, exp.UTC().Format(time.RFC3339))
	}
	return &Card{Card: rec.card, Peer: signer, Raw: data}, nil
}

// Validator is the DHT's record validator for the card namespace.
type Validator struct {
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

func (v Validator) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

func peerFromKey(key string) (lpeer.ID, error) {
	rest, ok := strings.CutPrefix(key, "/"+CardNamespace+"/")
	if !ok {
		return "", fmt.Errorf("key %q is not a card key", key)
	}
	id, err := lpeer.IDFromBytes([]byte(rest))
	if err != nil {
		return "", fmt.Errorf("card key: %w", err)
	}
	return id, nil
}

// Validate accepts only a card signed by the peer named in key, not expired.
func (v Validator) Validate(key string, value []byte) error {
	p, err := peerFromKey(key)
	if err != nil {
		return err
	}
	_, err = OpenCard(value, p, v.now())
	return err
}

// Select picks the valid card with the highest sequence number; on a tie,
// the first.
func (v Validator) Select(key string, values [][]byte) (int, error) {
	p, err := peerFromKey(key)
	if err != nil {
		return 0, err
	}
	best, bestSeq := -1, uint64(0)
	for i, val := range values {
		c, err := OpenCard(val, p, v.now())
		if err != nil {
			continue
		}
		if best < 0 || c.Seq > bestSeq {
			best, bestSeq = i, c.Seq
		}
	}
	if best < 0 {
		return 0, errors.New("no valid card among the candidates")
	}
	return best, nil
}
