package main

import (
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// DHT request types, as numbered in kad-dht's pb.Message_MessageType.
const (
	msgPutValue = iota
	msgGetValue
	msgAddProvider
	msgGetProviders
	msgFindNode
	msgPing
	numMsgTypes
)

// counter counts the DHT requests that every node of the mesh receives, by
// type. The DHT answers each request with at most one response, so a
// request is one RPC.
type counter struct {
	byType [numMsgTypes + 1]atomic.Int64 // the last slot: unknown types
}

type counts [numMsgTypes + 1]int64

func (c *counter) snapshot() counts {
	var s counts
	for i := range c.byType {
		s[i] = c.byType[i].Load()
	}
	return s
}

func (s counts) sub(o counts) counts {
	var d counts
	for i := range s {
		d[i] = s[i] - o[i]
	}
	return d
}

func (s counts) total() int64 {
	var t int64
	for _, v := range s {
		t += v
	}
	return t
}

// countingHost hands the DHT streams that count the requests read from
// them: the serving side of every RPC, whoever sent it. discovery.New only
// needs a host.Host, so the DHT it starts never knows.
//
// It also hands the DHT a connection manager: mocknet hosts have none, and
// without one every node stays connected to every peer it ever queried.
type countingHost struct {
	host.Host
	c  *counter
	cm connmgr.ConnManager
}

func (h *countingHost) ConnManager() connmgr.ConnManager {
	if h.cm == nil {
		return h.Host.ConnManager()
	}
	return h.cm
}

func (h *countingHost) SetStreamHandler(pid protocol.ID, handler network.StreamHandler) {
	h.Host.SetStreamHandler(pid, func(s network.Stream) {
		handler(&countingStream{Stream: s, c: h.c})
	})
}

// countingStream parses the DHT's framing (an unsigned varint length, then
// a protobuf pb.Message) in what is read, and counts each message by the
// type in its first field. The type is a proto3 enum: PUT_VALUE (0) is the
// default and so has no field at all.
type countingStream struct {
	network.Stream
	c *counter

	lenBuf   uint64 // the length being decoded
	lenShift uint
	left     uint64 // bytes of the current body still to come; 0: reading a length
	inBody   bool
	bodyPos  uint64 // bytes of the body seen so far
	firstTag byte
}

func (s *countingStream) Read(p []byte) (int, error) {
	n, err := s.Stream.Read(p)
	s.feed(p[:n])
	return n, err
}

func (s *countingStream) feed(b []byte) {
	for len(b) > 0 {
		if !s.inBody {
			x := b[0]
			b = b[1:]
			s.lenBuf |= uint64(x&0x7f) << s.lenShift
			s.lenShift += 7
			if x&0x80 != 0 {
				continue
			}
			s.left, s.inBody, s.bodyPos = s.lenBuf, true, 0
			s.lenBuf, s.lenShift = 0, 0
			if s.left == 0 { // an empty message: all defaults, PUT_VALUE
				s.count(msgPutValue)
				s.inBody = false
			}
			continue
		}
		// In a body: look at its first two bytes, skip the rest.
		if s.bodyPos == 0 {
			s.firstTag = b[0]
			if s.firstTag != 0x08 { // field 1 absent: type 0
				s.count(msgPutValue)
			}
		} else if s.bodyPos == 1 && s.firstTag == 0x08 {
			s.count(int(b[0]))
		}
		step := min(uint64(len(b)), s.left)
		if s.bodyPos == 0 && step > 1 && s.firstTag == 0x08 {
			// Both bytes are here.
			s.count(int(b[1]))
		}
		s.bodyPos += step
		s.left -= step
		b = b[step:]
		if s.left == 0 {
			s.inBody = false
		}
	}
}

func (s *countingStream) count(t int) {
	if t < 0 || t >= numMsgTypes {
		t = numMsgTypes
	}
	s.c.byType[t].Add(1)
}
