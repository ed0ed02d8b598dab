package discovery

import (
	"context"
	"errors"
	"fmt"
	"time"

	dhtpb "github.com/libp2p/go-libp2p-kad-dht/pb"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-msgio/pbio"
)

// cardFromPeer asks p itself for its card, with one GET_VALUE request over
// the DHT protocol: every node stores its own newest card locally, so the
// answer is authoritative, and it costs one request instead of a lookup.
//
// A peer known to be gone is not dialed (the dial would wait for its
// timeout), and one that disconnected is dialed for a short while only
// (see dhtHost); on failure the caller reads the card from the DHT.
func (s *Service) cardFromPeer(ctx context.Context, p lpeer.ID) (*Card, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.beforeDial(ctx, p); err != nil {
		return nil, err
	}
	st, err := s.h.NewStream(ctx, p, s.cfg.ProtocolPrefix+"/kad/1.0.0")
	s.afterDial(ctx, p, err)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if dl, ok := ctx.Deadline(); ok {
		st.SetDeadline(dl)
	}
	key := CardKey(p)
	if err := pbio.NewDelimitedWriter(st).WriteMsg(dhtpb.NewMessage(dhtpb.Message_GET_VALUE, []byte(key), 0)); err != nil {
		st.Reset()
		return nil, err
	}
	var resp dhtpb.Message
	if err := pbio.NewDelimitedReader(st, MaxCardSize+4096).ReadMsg(&resp); err != nil {
		st.Reset()
		return nil, err
	}
	rec := resp.GetRecord()
	if rec == nil || string(rec.GetKey()) != key {
		return nil, errors.New("peer has no card")
	}
	c, err := OpenCard(rec.GetValue(), p, time.Now())
	if err != nil {
		return nil, fmt.Errorf("card of %s: %w", p, err)
	}
	s.h.Peerstore().AddAddrs(p, c.Multiaddrs(), peerstore.TempAddrTTL)
	return c, nil
}
