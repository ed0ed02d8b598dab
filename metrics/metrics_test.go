package metrics_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/mcpmesh/mcpmesh/metrics"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/transport/quicreuse.(*reuse).gc"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

// scrape serves m on loopback and reads /metrics over HTTP.
func scrape(t *testing.T, m *metrics.Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	srv, err := m.Serve("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	resp, err := http.Get("http://" + srv.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse exposition: %v", err)
	}
	return fams
}

// gather reads m's registry in-process (faster than scrape for many series).
func gather(t *testing.T, m *metrics.Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	list, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	fams := map[string]*dto.MetricFamily{}
	for _, f := range list {
		fams[f.GetName()] = f
	}
	return fams
}

// find returns the metric of family name whose labels include want.
func find(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	t.Helper()
	fam, ok := fams[name]
	if !ok {
		t.Fatalf("no metric family %s", name)
	}
next:
	for _, m := range fam.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		return m
	}
	t.Fatalf("no %s%v", name, want)
	return nil
}

func TestScrapeOverHTTP(t *testing.T) {
	m := metrics.New()
	for range 3 {
		m.Call("node", "echo", "12D3A", "ok", 2*time.Millisecond)
	}
	m.Call("node", "echo", "12D3A", "error", 40*time.Millisecond)
	m.Call("node", "echo", "12D3B", "refused", 50*time.Microsecond)
	m.OutboundCall("12D3C", "fs", "read", "ok", 3*time.Second)
	m.Refused("rate")
	m.Refused("rate")
	m.Refused("policy")
	m.Lookup(true, 20*time.Millisecond)
	m.Lookup(false, 5*time.Second)
	m.LookupFailed(time.Second)
	m.TaskStates(func() map[string]int { return map[string]int{"working": 2, "completed": 7} })

	fams := scrape(t, m)
	counter := func(name string, labels map[string]string) float64 {
		return find(t, fams, name, labels).GetCounter().GetValue()
	}
	if v := counter("mcpmesh_calls_total", map[string]string{"server": "node", "tool": "echo", "peer": "12D3A", "outcome": "ok"}); v != 3 {
		t.Errorf("calls ok from A: %v, want 3", v)
	}
	if v := counter("mcpmesh_calls_total", map[string]string{"peer": "12D3A", "outcome": "error"}); v != 1 {
		t.Errorf("calls error from A: %v, want 1", v)
	}
	h := find(t, fams, "mcpmesh_call_duration_seconds", map[string]string{"peer": "12D3A"}).GetHistogram()
	if h.GetSampleCount() != 4 || h.GetSampleSum() < 0.0459 || h.GetSampleSum() > 0.0461 {
		t.Errorf("call duration from A: count %d sum %v, want 4 and 0.046", h.GetSampleCount(), h.GetSampleSum())
	}
	for _, b := range h.GetBucket() {
		if b.GetUpperBound() == 0.0025 && b.GetCumulativeCount() != 3 {
			t.Errorf("bucket le=0.0025: %d, want 3", b.GetCumulativeCount())
		}
	}
	if h := find(t, fams, "mcpmesh_call_duration_seconds", map[string]string{"peer": "12D3B"}).GetHistogram(); h.GetBucket()[0].GetUpperBound() != 0.0001 || h.GetBucket()[0].GetCumulativeCount() != 1 {
		t.Errorf("50 µs is not in the first bucket (100 µs): %v", h.GetBucket()[0])
	}
	if v := counter("mcpmesh_outbound_calls_total", map[string]string{"peer": "12D3C", "server": "fs", "tool": "read", "outcome": "ok"}); v != 1 {
		t.Errorf("outbound calls: %v", v)
	}
	if h := find(t, fams, "mcpmesh_outbound_call_duration_seconds", map[string]string{"peer": "12D3C"}).GetHistogram(); h.GetSampleSum() != 3 {
		t.Errorf("outbound duration sum %v, want 3", h.GetSampleSum())
	}
	if v := counter("mcpmesh_refusals_total", map[string]string{"reason": "rate"}); v != 2 {
		t.Errorf("refusals rate: %v, want 2", v)
	}
	for result, want := range map[string]float64{"found": 1, "none": 1, "error": 1} {
		if v := counter("mcpmesh_dht_lookups_total", map[string]string{"result": result}); v != want {
			t.Errorf("lookups %s: %v", result, v)
		}
	}
	if h := find(t, fams, "mcpmesh_dht_lookup_duration_seconds", map[string]string{"result": "none"}).GetHistogram(); h.GetSampleSum() != 5 {
		t.Errorf("lookup none duration sum %v", h.GetSampleSum())
	}
	if v := find(t, fams, "mcpmesh_tasks", map[string]string{"state": "working"}).GetGauge().GetValue(); v != 2 {
		t.Errorf("tasks working: %v", v)
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("no %s", name)
		}
	}

	// Task states are read at scrape time.
	m.TaskStates(func() map[string]int { return map[string]int{"working": 5} })
	fams = scrape(t, m)
	if v := find(t, fams, "mcpmesh_tasks", map[string]string{"state": "working"}).GetGauge().GetValue(); v != 5 {
		t.Errorf("tasks working after change: %v", v)
	}
}

func TestPeersBeyondTheBoundAreOther(t *testing.T) {
	m := metrics.New()
	for i := range metrics.MaxPeers + 5 {
		m.Call("node", "echo", fmt.Sprintf("peer%d", i), "ok", time.Millisecond)
	}
	m.Call("node", "echo", "peer0", "ok", time.Millisecond) // admitted before: keeps its label
	fams := gather(t, m)
	if v := find(t, fams, "mcpmesh_calls_total", map[string]string{"peer": metrics.Other}).GetCounter().GetValue(); v != 5 {
		t.Errorf("calls from other peers: %v, want 5", v)
	}
	if v := find(t, fams, "mcpmesh_calls_total", map[string]string{"peer": "peer0"}).GetCounter().GetValue(); v != 2 {
		t.Errorf("calls from peer0: %v, want 2", v)
	}
	if n := len(fams["mcpmesh_calls_total"].GetMetric()); n != metrics.MaxPeers+1 {
		t.Errorf("%d call series, want %d", n, metrics.MaxPeers+1)
	}
}

func TestToolsBeyondTheBoundAreOther(t *testing.T) {
	m := metrics.New()
	for i := range metrics.MaxTools + 3 {
		m.Call("node", fmt.Sprintf("t%d", i), "p", "refused", time.Millisecond)
	}
	fams := gather(t, m)
	if v := find(t, fams, "mcpmesh_calls_total", map[string]string{"server": metrics.Other, "tool": metrics.Other}).GetCounter().GetValue(); v != 3 {
		t.Errorf("calls to other tools: %v, want 3", v)
	}
}

func TestServeStopsAtClose(t *testing.T) {
	m := metrics.New()
	srv, err := m.Serve("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr().String()
	resp, err := http.Get("http://" + addr + "/nothing")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nothing: %s", resp.Status)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	// Close has waited for the server: nothing answers any more.
	if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
		resp.Body.Close()
		t.Fatal("still serving after Close")
	}
	if _, err := m.Serve("127.0.0.1:99999"); err == nil {
		t.Error("Serve on a bad address: no error")
	}
}

func TestLibp2pMetricsLandInTheRegistry(t *testing.T) {
	m := metrics.New()
	a, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.PrometheusRegisterer(m.Registerer()))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.PrometheusRegisterer(metrics.New().Registerer()))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
		t.Fatal(err)
	}
	// Identify runs right after connecting; wait for its answer.
	for {
		if protos, _ := a.Peerstore().GetProtocols(b.ID()); len(protos) > 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("identify never completed")
		}
		time.Sleep(10 * time.Millisecond)
	}

	fams := scrape(t, m)
	var names []string
	prefixes := map[string]int{}
	for name := range fams {
		if strings.HasPrefix(name, "libp2p_") {
			names = append(names, name)
			prefixes[strings.Join(strings.SplitN(name, "_", 3)[:2], "_")]++
		}
	}
	sort.Strings(names)
	t.Logf("libp2p families exported after one connection (%d): %s", len(names), strings.Join(names, " "))
	for _, want := range []string{"libp2p_swarm", "libp2p_identify", "libp2p_rcmgr", "libp2p_eventbus"} {
		if prefixes[want] == 0 {
			t.Errorf("no %s_* metrics", want)
		}
	}
	if !slices.Contains(names, "libp2p_swarm_connections_opened_total") {
		t.Errorf("no libp2p_swarm_connections_opened_total")
	} else if v := find(t, fams, "libp2p_swarm_connections_opened_total", map[string]string{"dir": "outbound"}).GetCounter().GetValue(); v < 1 {
		t.Errorf("outbound connections opened: %v", v)
	}
}

func BenchmarkCall(b *testing.B) {
	m := metrics.New()
	b.ReportAllocs()
	for b.Loop() {
		m.Call("node", "echo", "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo", "ok", time.Millisecond)
	}
}
