package node

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/mcpmesh/mcpmesh/mcp/relay"
	"github.com/mcpmesh/mcpmesh/mcp/transport"
	"github.com/mcpmesh/mcpmesh/peer/trust"
	"github.com/mcpmesh/mcpmesh/tasks/tracker"
)

// relayTarget is a server of another peer that this node re-shares.
type relayTarget struct {
	peer   lpeer.ID
	server string
	ctx    context.Context // ends when the share ends: every relayed session stops
	cancel context.CancelFunc
}

// SharePeer re-shares the server called server on peer p under name: peers
// that cannot reach p (another network, behind NAT, not permitted there)
// reach it through this node. Each session opened on name is relayed to a
// session of its own on p, frame by frame, decoding nothing that the mesh
// need not rewrite, so everything MCP carries passes through unchanged; each
// tools/call is a task of this node (a hop of its tree), whose context the
// call carries on.
func (n *Node) SharePeer(name string, p lpeer.ID, server string) error {
	if err := transport.ValidateServerName(server); err != nil {
		return err
	}
	if p == n.host.ID() {
		return fmt.Errorf("share %s: %s/%s is this node's own server", name, p, server)
	}
	ctx, cancel := context.WithCancel(n.ctx)
	t := &relayTarget{peer: p, server: server, ctx: ctx, cancel: cancel}
	s := &sharedServer{relay: t, stop: cancel}
	s.pass = n.passToPeer(name, t, &s.live)
	if err := n.addServer(name, s); err != nil {
		cancel()
		return err
	}
	return nil
}

// passFunc serves one session of a server the node passes through, from
// down (its caller's side, a stream or a pipe in memory) by the
// authenticated caller.
type passFunc func(down *transport.Conn, caller lpeer.ID)

// passStreams is the stream handler of a server the node passes through.
func (n *Node) passStreams(pass passFunc) network.StreamHandler {
	return func(s network.Stream) {
		if !n.group.Enter() {
			s.Reset()
			return
		}
		defer n.group.Leave()
		caller := s.Conn().RemotePeer()
		down := transport.NewConn(s, n.cfg.maxMessageSize)
		if signs := n.signs(s); signs != nil {
			down.SetSigns(signs)
		}
		// The bounds of a session the node serves itself on what a frame
		// holds once decoded and the memory frames in flight hold. Not its
		// idle timeout nor its slot in the session table: both read the
		// session's requests and answers, which a relay carrying raw frames
		// does not follow.
		down.SetGuard(n.guard(caller))
		down.TrackRequestIDs()
		down.OnBadFrame(func(err error) { n.trust.BadFrame(caller, err) })
		defer context.AfterFunc(n.ctx, down.Abort)()
		// A stream that never speaks within the handshake timeout costs a
		// read: no upstream session, no process started for it.
		if err := down.AwaitRequest(); err != nil {
			log.Debugw("relayed session not started", "peer", caller, "error", err)
			down.Close()
			return
		}
		s.SetReadDeadline(time.Time{}) // the handshake's, set by AwaitRequest
		pass(down, caller)
	}
}

// passToPeer returns how a session of a re-shared server is served: relayed
// to a stream of its own to the target.
func (n *Node) passToPeer(name string, t *relayTarget, live *liveRelays) passFunc {
	return func(down *transport.Conn, caller lpeer.ID) {
		if refusal := n.trust.MayOpenRelay(caller, name); refusal != nil {
			relay.RefuseSession(down, refusal.Code, refusal.Message)
			return
		}
		s, err := n.openRelay(t)
		if err != nil {
			down.Break(err)
			down.Close()
			log.Debugw("relay session refused", "server", name, "error", err)
			return
		}
		up := transport.NewConn(s, n.cfg.maxMessageSize)
		if signs := n.signs(s); signs != nil {
			up.SetSigns(signs)
		}
		if err := n.runRelay(t.ctx, name, caller, down, up, t.peer, t.server, nil, live); err != nil {
			log.Debugw("relay session ended", "server", name, "to", t.peer, "error", err)
		}
	}
}

// runRelay relays one session of the server shared as name from caller
// (down) to up, until either ends or ctx is done: server on peer, or, with no peer, the program or endpoint
// behind the share. The layers apply in order: the trust layer (policy,
// delegation, limits, audit, list filtering), then the task layer (each
// tools/call a task of this node; for a peer, passed on as its child),
// then, for a program or an endpoint, the mesh's own _meta keys are taken
// out. setBusy, if not nil, is told how to know that calls are in flight;
// live, if not nil, holds the session while it runs (see UnshareGracefully).
func (n *Node) runRelay(ctx context.Context, name string, caller lpeer.ID, down, up relay.FrameConn, peer lpeer.ID, server string, setBusy func(func() bool), live *liveRelays) error {
	r := relay.New(down, up)
	// The task layer's own answers (a call cancelled or past its deadline
	// here) pass the trust layer on their way, as the server's would.
	var trustToClient relay.FrameRewrite
	answer := func(msg jsonrpc.Message) error {
		frame, err := jsonrpc.EncodeMessage(msg)
		if err != nil {
			return err
		}
		if trustToClient != nil {
			if fwd, _, err := relay.Apply(trustToClient, frame); err == nil && fwd != nil {
				frame = fwd
			}
		}
		return r.WriteToClient(frame)
	}
	tk := n.tasks.Relay(name, caller, tracker.Target{Peer: peer, Server: server}, r.SendToServer, answer)
	if setBusy != nil {
		setBusy(tk.Busy)
	}
	then := tk.ToServer
	if peer == "" {
		then = relay.Chain(tk.ToServer, relay.StripMeshMeta)
	}
	toServer, toClient, end := n.trust.RelayRewrites(caller, name, trust.Target{Peer: peer, Server: server}, then, r.SendToClient)
	trustToClient = toClient
	var lostOnce sync.Once
	r.ServerLost = func(err error) {
		// The server's side ended on its own (or the server was removed):
		// what waits on it is answered with a failure naming it, while the
		// caller's side is still open.
		lostOnce.Do(func() {
			end(err)
			tk.End(err)
		})
	}
	if live != nil {
		lr := &liveRelay{busy: tk.Busy, lose: r.ServerLost}
		live.add(lr)
		defer live.remove(lr)
	}
	if live != nil {
		toServer = live.refuseWhileDraining(name, n.host.ID(), toServer)
	}
	err := r.Run(ctx, toServer, relay.Chain(tk.ToClient, toClient))
	end(nil)
	tk.End(nil)
	return err
}

// openRelay opens the stream to the target of a re-shared server.
func (n *Node) openRelay(t *relayTarget) (network.Stream, error) {
	dialCtx, cancel := context.WithTimeout(t.ctx, n.cfg.dialTimeout)
	defer cancel()
	s, err := n.host.NewStream(mcpStream(network.WithDialPeerTimeout(dialCtx, n.cfg.dialTimeout)), t.peer, transport.ProtocolID(t.server))
	if err != nil {
		// The caller sees its session end: it cannot get a better answer
		// before it has sent anything.
		return nil, fmt.Errorf("relay to %s/%s: %w", t.peer, t.server, n.dialError(t.peer, err))
	}
	return s, nil
}
