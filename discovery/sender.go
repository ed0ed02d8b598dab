package discovery

import (
	"context"
	"fmt"
	"time"

	dhtpb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio/pbio"
)

// answerTimeout bounds the wait for one peer's answer to one DHT request
// (kad-dht's own sender waits as long).
const answerTimeout = 10 * time.Second

// checkedSender sends the DHT's messages, one stream per request, and
// refuses answers that kad-dht would trust unchecked. kad-dht v0.42.2's
// ProtocolMessenger.PutValue reads the answer's record without checking
// that there is one: a peer answering a PUT_VALUE with none (any peer can;
// the version that checks needs a newer go-libp2p than this module's)
// crashed the node, on every path that puts (a card's publication, the
// fix-up puts after a lookup, a hand-off). Here an answer must be of the
// request's type, and a PUT_VALUE's must hold a record.
//
// kad-dht's own sender keeps one stream per peer for reuse; a stream per
// request costs a stream opening on an existing connection (the protocol
// is negotiated lazily, with the request), which a mesh's lookups afford.
type checkedSender struct {
	h      host.Host
	protos []protocol.ID
}

func newCheckedSender(h host.Host, protos []protocol.ID) dhtpb.MessageSenderWithDisconnect {
	return &checkedSender{h: h, protos: protos}
}

// SendRequest sends req to p and returns its answer, checked.
func (c *checkedSender) SendRequest(ctx context.Context, p lpeer.ID, req *dhtpb.Message) (*dhtpb.Message, error) {
	s, err := c.open(ctx, p)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	if err := pbio.NewDelimitedWriter(s).WriteMsg(req); err != nil {
		s.Reset()
		return nil, c.failed(ctx, err)
	}
	var resp dhtpb.Message
	if err := pbio.NewDelimitedReader(s, network.MessageSizeMax).ReadMsg(&resp); err != nil {
		s.Reset()
		return nil, c.failed(ctx, err)
	}
	if err := checkAnswer(req, &resp); err != nil {
		s.Reset()
		return nil, fmt.Errorf("peer %s: %w", p, err)
	}
	s.Close()
	return &resp, nil
}

// SendMessage sends msg to p, which answers nothing.
func (c *checkedSender) SendMessage(ctx context.Context, p lpeer.ID, msg *dhtpb.Message) error {
	s, err := c.open(ctx, p)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	if err := pbio.NewDelimitedWriter(s).WriteMsg(msg); err != nil {
		s.Reset()
		return c.failed(ctx, err)
	}
	return s.Close()
}

// OnDisconnect has nothing to drop: no stream outlives its request.
func (c *checkedSender) OnDisconnect(context.Context, lpeer.ID) {}

func (c *checkedSender) open(ctx context.Context, p lpeer.ID) (network.Stream, error) {
	s, err := c.h.NewStream(ctx, p, c.protos...)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(answerTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	s.SetDeadline(deadline)
	return s, nil
}

// failed prefers the context's error, which reset the stream, to the reset.
func (c *checkedSender) failed(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// checkAnswer refuses an answer kad-dht could not use safely.
func checkAnswer(req, resp *dhtpb.Message) error {
	if resp.GetType() != req.GetType() {
		return fmt.Errorf("answered a %s request with a %s message", req.GetType(), resp.GetType())
	}
	if req.GetType() == dhtpb.Message_PUT_VALUE && resp.GetRecord() == nil {
		return fmt.Errorf("answered a PUT_VALUE without the record")
	}
	return nil
}
