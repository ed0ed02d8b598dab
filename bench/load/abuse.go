package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	lpeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/mcpmesh/mcpmesh/mcp/transport"
)

// abuser is a plain libp2p host (no limits of its own) that misbehaves on
// the serving node's MCP protocol in every way at once.
type abuser struct {
	h     host.Host
	stats abuseStats
}

type abuseStats struct {
	huge, garbage     atomic.Int64 // frames sent
	calls             atomic.Int64 // tools/call requests written
	answered, refused atomic.Int64 // responses read, and those that were errors
	streams           atomic.Int64 // streams opened
	streamsLost       atomic.Int64 // streams refused or reset
	connFails         atomic.Int64 // failed (re)connections
}

// abuseCounts are the abuser's counts, as its process reports them.
type abuseCounts struct {
	Huge, Garbage, Calls, Answered, Refused, Streams, StreamsLost, ConnFails int64
}

func (s *abuseStats) counts() abuseCounts {
	return abuseCounts{
		Huge: s.huge.Load(), Garbage: s.garbage.Load(), Calls: s.calls.Load(), Answered: s.answered.Load(),
		Refused: s.refused.Load(), Streams: s.streams.Load(), StreamsLost: s.streamsLost.Load(), ConnFails: s.connFails.Load(),
	}
}

// Sizes of the abuse.
const (
	hugeFrame      = 6 << 20 // over the default 4 MiB limit
	floodCalls     = 2000    // pipelined tools/call per flood round
	floodStreams   = 4       // streams flooding calls at once
	garbageStreams = 4       // streams sending garbage at once
	heldStreams    = 100     // streams held per round: over the 64 per server and peer; far more would kill the connection (see README)
)

func newAbuser() (*abuser, error) {
	h, err := libp2p.New(libp2p.ListenAddrStrings(loopback), libp2p.ResourceManager(&network.NullResourceManager{}))
	if err != nil {
		return nil, fmt.Errorf("start abusive host: %w", err)
	}
	return &abuser{h: h}, nil
}

func (a *abuser) close() { a.h.Close() }

// run misbehaves until ctx ends.
func (a *abuser) run(ctx context.Context, target lpeer.AddrInfo) error {
	var wg sync.WaitGroup
	loop := func(f func(context.Context, lpeer.AddrInfo)) {
		wg.Go(func() {
			for ctx.Err() == nil {
				if !a.connect(ctx, target) {
					continue
				}
				f(ctx, target)
			}
		})
	}
	loop(a.sendHuge)
	for range garbageStreams {
		loop(a.sendGarbage)
	}
	for range floodStreams {
		loop(a.floodCalls)
	}
	loop(a.holdStreams)
	wg.Wait()
	return nil
}

// connect makes sure the abuser is connected, knocking again after a short
// pause when the node refuses it.
func (a *abuser) connect(ctx context.Context, target lpeer.AddrInfo) bool {
	if a.h.Network().Connectedness(target.ID) == network.Connected {
		return true
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := a.h.Connect(network.WithForceDirectDial(cctx, "abuse"), target); err != nil {
		a.stats.connFails.Add(1)
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
		return false
	}
	return true
}

func (a *abuser) stream(ctx context.Context, target lpeer.AddrInfo) network.Stream {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := a.h.NewStream(sctx, target.ID, transport.ProtocolID(transport.DefaultServer))
	a.stats.streams.Add(1)
	if err != nil {
		a.stats.streamsLost.Add(1)
		return nil
	}
	return s
}

// sendHuge writes one frame over the size limit, in 64 KiB writes.
func (a *abuser) sendHuge(ctx context.Context, target lpeer.AddrInfo) {
	s := a.stream(ctx, target)
	if s == nil {
		return
	}
	defer s.Reset()
	chunk := bytes.Repeat([]byte("a"), 64<<10)
	s.SetWriteDeadline(time.Now().Add(5 * time.Second))
	for sent := 0; sent < hugeFrame && ctx.Err() == nil; sent += len(chunk) {
		if _, err := s.Write(chunk); err != nil {
			break
		}
	}
	a.stats.huge.Add(1)
}

// sendGarbage writes one line that is not JSON-RPC and waits for the reset.
func (a *abuser) sendGarbage(ctx context.Context, target lpeer.AddrInfo) {
	s := a.stream(ctx, target)
	if s == nil {
		return
	}
	defer s.Reset()
	s.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.Write([]byte("GET / HTTP/1.1 \x00\xff garbage\n")); err != nil {
		return
	}
	a.stats.garbage.Add(1)
	s.Read(make([]byte, 1))
}

// initialize and initialized open an MCP session by hand on a raw stream.
const (
	initialize  = `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"abuser","version":"0"}}}` + "\n"
	initialized = `{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\n"
)

// floodCalls opens an MCP session by hand on a raw stream, then pipelines
// floodCalls tools/call without waiting for answers, and reads what comes
// back.
func (a *abuser) floodCalls(ctx context.Context, target lpeer.AddrInfo) {
	s := a.stream(ctx, target)
	if s == nil {
		return
	}
	defer s.Reset()
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	s.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReaderSize(s, 64<<10)
	if _, err := s.Write([]byte(initialize)); err != nil {
		return
	}
	if _, err := r.ReadSlice('\n'); err != nil {
		return
	}
	var read sync.WaitGroup
	read.Go(func() {
		// Until every call is answered: closing our side would end the
		// session, and with it the calls in flight.
		for range floodCalls {
			line, err := r.ReadSlice('\n')
			if err != nil {
				return
			}
			a.stats.answered.Add(1)
			if bytes.Contains(line, []byte(`"error"`)) {
				a.stats.refused.Add(1)
			}
		}
	})
	// Batches of 100 calls per write; a call counts once its batch is out.
	var batch bytes.Buffer
	batch.WriteString(initialized)
	for i := 1; i <= floodCalls && ctx.Err() == nil; i++ {
		fmt.Fprintf(&batch, `{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"work","arguments":{"text":"%s"}}}`+"\n", i, strings.Repeat("x", 32))
		if i%100 == 0 {
			if _, err := s.Write(batch.Bytes()); err != nil {
				s.Reset()
				break
			}
			a.stats.calls.Add(100)
			batch.Reset()
		}
	}
	read.Wait()
}

// holdStreams opens heldStreams streams, starts a session on each, and
// holds them a moment; one round every two seconds.
func (a *abuser) holdStreams(ctx context.Context, target lpeer.AddrInfo) {
	held := make([]network.Stream, 0, heldStreams)
	defer func() {
		for _, s := range held {
			s.Reset()
		}
	}()
	for range heldStreams {
		if ctx.Err() != nil || a.h.Network().Connectedness(target.ID) != network.Connected {
			return
		}
		s := a.stream(ctx, target)
		if s == nil {
			continue
		}
		s.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := s.Write([]byte(initialize)); err != nil {
			a.stats.streamsLost.Add(1)
			s.Reset()
			continue
		}
		held = append(held, s)
	}
	// Hold them half a second, release, and leave the other abuses room
	// for a second and a half before the next round.
	select {
	case <-ctx.Done():
	case <-time.After(500 * time.Millisecond):
	}
	for _, s := range held {
		s.Reset()
	}
	held = held[:0]
	select {
	case <-ctx.Done():
	case <-time.After(1500 * time.Millisecond):
	}
}
