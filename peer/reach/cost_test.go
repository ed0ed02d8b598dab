package reach

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/mcpmesh/mcpmesh/internal/cable"
)

func heapAndGoroutines() (uint64, int) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, runtime.NumGoroutine()
}

// BenchmarkLivenessCost measures what watching peers costs, with the
// default interval and timeout:
//
//   - goroutines/peer and heap-B/peer: one host holding 50 connected peers,
//     against the same host holding none;
//   - ping-B/s/peer: ping bytes per second per watched peer, counted on
//     the streams (libp2p's bandwidth counter, both directions);
//   - wire-B/s/peer: bytes per second through a TCP cable to one watched
//     peer, both directions, less the same cable's bytes while not watched
//     (TLS records, yamux frames and window updates included; TCP/IP
//     headers not);
//   - idle-pings: pings sent while nothing is held (must be 0).
//
// go test -run XXX -bench LivenessCost -benchtime 1x ./peer/reach
func BenchmarkLivenessCost(b *testing.B) {
	const peers = 50
	const period = 10 * time.Second
	for b.Loop() {
		bw := metrics.NewBandwidthCounter()
		h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics(), libp2p.BandwidthReporter(bw))
		if err != nil {
			b.Fatal(err)
		}
		var others []host.Host
		for range peers {
			o := newHost(b, nil)
			others = append(others, o)
			connect(b, h, o)
		}
		// One more peer, behind a cable that counts its bytes.
		far := newHost(b, nil)
		link, err := cable.New(netAddr(far).String(), nil)
		if err != nil {
			b.Fatal(err)
		}
		via, _ := manet.FromNetAddr(link.Addr())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := h.Connect(ctx, peer.AddrInfo{ID: far.ID(), Addrs: []ma.Multiaddr{via}}); err != nil {
			b.Fatal(err)
		}
		cancel()

		l := NewLiveness(h, DefaultLivenessInterval, DefaultLivenessTimeout, nil)
		heap0, g0 := heapAndGoroutines()
		idleStart := link.Bytes()
		time.Sleep(period)
		idleBytes := link.Bytes() - idleStart
		idlePings := l.Stats().Pings

		var releases []func()
		for _, o := range others {
			releases = append(releases, l.Hold(o.ID()))
		}
		deadline := time.Now().Add(10 * time.Second)
		for l.Stats().Pings < peers && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		heap1, g1 := heapAndGoroutines()
		for _, r := range releases {
			r()
		}

		release := l.Hold(far.ID())
		time.Sleep(DefaultLivenessInterval + 100*time.Millisecond) // the first ping opens the stream
		start, pingStart := link.Bytes(), bw.GetBandwidthForProtocol(ping.ID)
		time.Sleep(period)
		watched := link.Bytes() - start
		pingEnd := bw.GetBandwidthForProtocol(ping.ID)
		release()
		l.Close()
		link.Close()
		h.Close()

		secs := period.Seconds()
		b.ReportMetric(float64(g1-g0)/peers, "goroutines/peer")
		b.ReportMetric(float64(int64(heap1)-int64(heap0))/peers, "heap-B/peer")
		b.ReportMetric(float64(pingEnd.TotalIn+pingEnd.TotalOut-pingStart.TotalIn-pingStart.TotalOut)/secs, "ping-B/s/peer")
		b.ReportMetric(float64(watched-idleBytes)/secs, "wire-B/s/peer")
		b.ReportMetric(float64(idlePings), "idle-pings")
	}
}
