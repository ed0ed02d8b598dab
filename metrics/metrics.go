// Package metrics exports a node's Prometheus metrics: calls served and
// made, by server, tool and peer, with their latencies; tasks by state; DHT
// lookups; refusals by reason; and, through Registerer, libp2p's own metrics.
// Each Metrics has its own registry: nothing is registered globally.
//
// Label values that come from the network are bounded so that a peer cannot
// grow the exported series without limit: the first MaxPeers distinct peer
// IDs seen keep their own peer label, later ones are counted under "other";
// the same holds for MaxTools distinct server/tool pairs and MaxReasons
// refusal reasons. A peer or tool once given its own label keeps it for the
// life of the Metrics.
package metrics

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	logging "github.com/ipfs/go-log/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

var log = logging.Logger("mcpmesh/metrics")

// Bounds on label values; see the package documentation.
const (
	MaxPeers   = 1000
	MaxTools   = 500
	MaxReasons = 50
)

// Other is the label value that stands for every value past a bound.
const Other = "other"

// LatencyBuckets are the histogram buckets of every duration, in seconds:
// from 100 µs (a call served in-process) to 60 s (a long tool call or a
// lookup that times out), about three per decade.
var LatencyBuckets = []float64{
	0.0001, 0.00025, 0.0005,
	0.001, 0.0025, 0.005,
	0.01, 0.025, 0.05,
	0.1, 0.25, 0.5,
	1, 2.5, 5,
	10, 30, 60,
}

// Metrics holds a node's metrics and the registry they are exported from.
// Its methods are safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	calls          *prometheus.CounterVec
	callDur        *prometheus.HistogramVec
	outCalls       *prometheus.CounterVec
	outCallDur     *prometheus.HistogramVec
	refusals       *prometheus.CounterVec
	lookups        *prometheus.CounterVec
	lookupDur      *prometheus.HistogramVec
	tasks          taskCollector
	peers, tools   bound
	reasons, outcs bound
}

// New returns metrics with their own registry, which also holds the Go
// runtime and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpmesh_calls_total",
			Help: "Calls served by this node, by server, tool, calling peer and outcome (ok, error, refused, cancelled).",
		}, []string{"server", "tool", "peer", "outcome"}),
		callDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mcpmesh_call_duration_seconds",
			Help:    "Time to serve a call, by server, tool and calling peer.",
			Buckets: LatencyBuckets,
		}, []string{"server", "tool", "peer"}),
		outCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpmesh_outbound_calls_total",
			Help: "Calls this node made to peers, by peer, server, tool and outcome.",
		}, []string{"peer", "server", "tool", "outcome"}),
		outCallDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mcpmesh_outbound_call_duration_seconds",
			Help:    "Time for a peer to answer a call this node made, by peer, server and tool.",
			Buckets: LatencyBuckets,
		}, []string{"peer", "server", "tool"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpmesh_refusals_total",
			Help: "Calls refused before being served, by reason (policy, delegation, rate, concurrency, principal-rate, principal-concurrency, banned, loop, budget, deadline, ...).",
		}, []string{"reason"}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpmesh_dht_lookups_total",
			Help: "DHT lookups for providers, by result (found, none, error).",
		}, []string{"result"}),
		lookupDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mcpmesh_dht_lookup_duration_seconds",
			Help:    "Time a DHT lookup took, by result (found, none, error).",
			Buckets: LatencyBuckets,
		}, []string{"result"}),
		tasks: taskCollector{desc: prometheus.NewDesc("mcpmesh_tasks",
			"Tasks this node holds, by state, read when scraped.", []string{"state"}, nil)},
		peers:   newBound(MaxPeers),
		tools:   newBound(MaxTools),
		reasons: newBound(MaxReasons),
		outcs:   newBound(16),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.calls, m.callDur, m.outCalls, m.outCallDur, m.refusals, m.lookups, m.lookupDur, &m.tasks,
	)
	return m
}

// Registerer returns the registry for other subsystems' metrics: pass it to
// libp2p.PrometheusRegisterer so that libp2p's own metrics (libp2p_swarm_*,
// libp2p_identify_*, libp2p_rcmgr_*, ...) are exported with the node's.
// libp2p keeps those in package-level collectors: with several hosts in one
// process, each registry shows the sum over all of them.
func (m *Metrics) Registerer() prometheus.Registerer { return m.reg }

// Gatherer returns the registry, to read the metrics in-process.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// Handler returns an HTTP handler that serves the metrics in the Prometheus
// exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, ErrorLog: promLogger{}})
}

// Call counts a call served by this node to tool of server, made by peer,
// that ended with outcome (an audit.Outcome: "ok", "error", "refused",
// "cancelled") after d.
func (m *Metrics) Call(server, tool, peer string, outcome string, d time.Duration) {
	server, tool = m.tool(server, tool)
	peer = m.peers.value(peer)
	m.calls.WithLabelValues(server, tool, peer, m.outcs.value(outcome)).Inc()
	m.callDur.WithLabelValues(server, tool, peer).Observe(d.Seconds())
}

// OutboundCall counts a call this node made to tool of server on peer, that
// ended with outcome after d.
func (m *Metrics) OutboundCall(peer, server, tool, outcome string, d time.Duration) {
	server, tool = m.tool(server, tool)
	peer = m.peers.value(peer)
	m.outCalls.WithLabelValues(peer, server, tool, m.outcs.value(outcome)).Inc()
	m.outCallDur.WithLabelValues(peer, server, tool).Observe(d.Seconds())
}

// Refused counts a call refused for reason (a short key: "policy", "rate",
// "banned", ...).
func (m *Metrics) Refused(reason string) {
	m.refusals.WithLabelValues(m.reasons.value(reason)).Inc()
}

// Lookup counts a DHT lookup that found providers or not, after d.
func (m *Metrics) Lookup(found bool, d time.Duration) {
	result := "none"
	if found {
		result = "found"
	}
	m.lookup(result, d)
}

// LookupFailed counts a DHT lookup that failed with an error after d.
func (m *Metrics) LookupFailed(d time.Duration) { m.lookup("error", d) }

func (m *Metrics) lookup(result string, d time.Duration) {
	m.lookups.WithLabelValues(result).Inc()
	m.lookupDur.WithLabelValues(result).Observe(d.Seconds())
}

// TaskStates sets the function that counts the node's tasks by state
// ("working", "completed", ...): it is called at each scrape and exported as
// the gauge mcpmesh_tasks{state}. A later call replaces the function; nil
// exports nothing.
func (m *Metrics) TaskStates(f func() map[string]int) { m.tasks.f.Store(&f) }

// tool bounds server/tool pairs together, so the pair keeps its meaning.
func (m *Metrics) tool(server, tool string) (string, string) {
	if m.tools.value(server+"\x00"+tool) == Other {
		return Other, Other
	}
	return server, tool
}

// Serve serves the metrics over HTTP at addr ("127.0.0.1:9464"; port 0
// picks a free one) on /metrics, until the returned server's Close. The
// metrics say which peers call which tools: an address that is not loopback
// is served as told, with a warning in the log.
func (m *Metrics) Serve(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for metrics on %s: %w", addr, err)
	}
	if ta, ok := ln.Addr().(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
		log.Warnw("metrics served on a non-loopback address: anyone who can reach it sees which peers call which tools", "addr", ln.Addr().String())
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	s := &Server{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, addr: ln.Addr(), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Errorw("serve metrics", "addr", ln.Addr().String(), "error", err)
		}
	}()
	return s, nil
}

// Server serves metrics over HTTP; see Metrics.Serve.
type Server struct {
	srv  *http.Server
	addr net.Addr
	done chan struct{} // closed when the serving goroutine has ended
}

// Addr returns the address the server listens on.
func (s *Server) Addr() net.Addr { return s.addr }

// Close stops serving and waits until the server has stopped.
func (s *Server) Close() error {
	err := s.srv.Close()
	<-s.done
	return err
}

// bound admits the first max distinct label values; later ones become Other.
type bound struct {
	max  int
	mu   sync.RWMutex
	seen map[string]struct{}
}

func newBound(max int) bound { return bound{max: max, seen: make(map[string]struct{})} }

func (b *bound) value(v string) string {
	b.mu.RLock()
	_, ok := b.seen[v]
	full := len(b.seen) >= b.max
	b.mu.RUnlock()
	if ok {
		return v
	}
	if full {
		return Other
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.seen[v]; ok {
		return v
	}
	if len(b.seen) >= b.max {
		return Other
	}
	b.seen[v] = struct{}{}
	return v
}

// taskCollector reads the task counts at scrape time.
type taskCollector struct {
	desc *prometheus.Desc
	f    atomic.Pointer[func() map[string]int]
}

func (c *taskCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *taskCollector) Collect(ch chan<- prometheus.Metric) {
	f := c.f.Load()
	if f == nil || *f == nil {
		return
	}
	for state, n := range (*f)() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), state)
	}
}

// promLogger sends promhttp's errors to the package log.
type promLogger struct{}

func (promLogger) Println(v ...any) { log.Warn(v...) }
