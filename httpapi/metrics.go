package httpapi

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// Metrics counts tool calls, their latency, timeouts, OOM kills, pool waits that ran out and
// HTTP requests, and writes them in Prometheus' text exposition format. It is written by
// hand: a metrics library would be the largest dependency of the server for a few counters.
type Metrics struct {
	buckets []float64 // latency histogram bounds, seconds

	mu           sync.Mutex
	calls        map[[2]string]uint64 // {tool, status}
	latency      map[string]*histogram
	timeouts     map[string]uint64
	oomKills     map[string]uint64
	poolTimeouts uint64
	requests     map[[2]string]uint64 // {route, status code}
}

type histogram struct {
	counts []uint64 // per bucket, not cumulative
	sum    float64
	count  uint64
}

// NewMetrics returns empty metrics.
func NewMetrics() *Metrics {
	return &Metrics{
		buckets:  []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300},
		calls:    map[[2]string]uint64{},
		latency:  map[string]*histogram{},
		timeouts: map[string]uint64{},
		oomKills: map[string]uint64{},
		requests: map[[2]string]uint64{},
	}
}

// ObserveTool records one tool call that produced a result.
func (m *Metrics) ObserveTool(tool string, res tools.Result, took time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls[[2]string{tool, string(res.Status)}]++
	h := m.latency[tool]
	if h == nil {
		h = &histogram{counts: make([]uint64, len(m.buckets))}
		m.latency[tool] = h
	}
	secs := took.Seconds()
	if i, _ := slices.BinarySearch(m.buckets, secs); i < len(m.buckets) {
		h.counts[i]++
	}
	h.sum += secs
	h.count++
	if res.Status == tools.StatusTimeout {
		m.timeouts[tool]++
	}
	if res.OOMKilled {
		m.oomKills[tool]++
	}
}

func (m *Metrics) observePoolTimeout() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.poolTimeouts++
}

func (m *Metrics) observeRequest(route string, code int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests[[2]string{route, strconv.Itoa(code)}]++
}

// Write writes every metric, with the sandboxes counted from st, in a stable order.
func (m *Metrics) Write(w io.Writer, st sandbox.Stats) error {
	bw := bufio.NewWriter(w)
	header := func(name, typ, help string) {
		fmt.Fprintf(bw, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}

	header("enclave_sandboxes", "gauge", "Sandboxes by state, all owners.")
	for _, s := range statuses() {
		fmt.Fprintf(bw, "enclave_sandboxes{state=%s} %d\n", quote(string(s)), st.ByStatus[s])
	}
	header("enclave_sandboxes_by_type", "gauge", "Sandboxes by type, all owners.")
	for _, t := range sortedKeys(st.ByType) {
		fmt.Fprintf(bw, "enclave_sandboxes_by_type{type=%s} %d\n", quote(string(t)), st.ByType[t])
	}

	writeWarm(bw, header, st.Warm)
	if e := st.Egress; e != nil {
		header("enclave_egress_allowed_total", "counter", "Egress connections (CONNECT) and HTTP requests the proxy let through, all sandboxes.")
		fmt.Fprintf(bw, "enclave_egress_allowed_total %d\n", e.Allowed)
		header("enclave_egress_refused_total", "counter", "Egress connections and requests refused by a sandbox's egress policy or limits.")
		fmt.Fprintf(bw, "enclave_egress_refused_total %d\n", e.Refused)
		header("enclave_egress_intercepted_total", "counter", "Egress CONNECTs whose TLS the server terminated to add a credential.")
		fmt.Fprintf(bw, "enclave_egress_intercepted_total %d\n", e.Intercepted)
		header("enclave_egress_bytes_total", "counter", "Bytes through the egress proxy, by direction (sent: from sandboxes).")
		fmt.Fprintf(bw, "enclave_egress_bytes_total{direction=\"sent\"} %d\nenclave_egress_bytes_total{direction=\"received\"} %d\n", e.Sent, e.Received)
		header("enclave_egress_connections", "gauge", "Egress proxy connections open now.")
		fmt.Fprintf(bw, "enclave_egress_connections %d\n", e.Active)
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	header("enclave_tool_calls_total", "counter", "Tool calls that produced a result, by tool and status.")
	for _, k := range sortedKeys(m.calls) {
		fmt.Fprintf(bw, "enclave_tool_calls_total{tool=%s,status=%s} %d\n", quote(k[0]), quote(k[1]), m.calls[k])
	}
	header("enclave_tool_call_duration_seconds", "histogram", "Tool call latency, by tool.")
	for _, tool := range sortedKeys(m.latency) {
		h := m.latency[tool]
		var cum uint64
		for i, le := range m.buckets {
			cum += h.counts[i]
			fmt.Fprintf(bw, "enclave_tool_call_duration_seconds_bucket{tool=%s,le=\"%s\"} %d\n", quote(tool), strconv.FormatFloat(le, 'g', -1, 64), cum)
		}
		fmt.Fprintf(bw, "enclave_tool_call_duration_seconds_bucket{tool=%s,le=\"+Inf\"} %d\n", quote(tool), h.count)
		fmt.Fprintf(bw, "enclave_tool_call_duration_seconds_sum{tool=%s} %s\n", quote(tool), strconv.FormatFloat(h.sum, 'g', -1, 64))
		fmt.Fprintf(bw, "enclave_tool_call_duration_seconds_count{tool=%s} %d\n", quote(tool), h.count)
	}
	header("enclave_tool_timeouts_total", "counter", "Tool calls killed by their timeout, by tool.")
	for _, tool := range sortedKeys(m.timeouts) {
		fmt.Fprintf(bw, "enclave_tool_timeouts_total{tool=%s} %d\n", quote(tool), m.timeouts[tool])
	}
	header("enclave_oom_kills_total", "counter", "Tool calls whose process the kernel killed for memory, by tool.")
	for _, tool := range sortedKeys(m.oomKills) {
		fmt.Fprintf(bw, "enclave_oom_kills_total{tool=%s} %d\n", quote(tool), m.oomKills[tool])
	}
	header("enclave_pool_wait_timeouts_total", "counter", "Pool executions that found no free sandbox in time.")
	fmt.Fprintf(bw, "enclave_pool_wait_timeouts_total %d\n", m.poolTimeouts)
	header("enclave_http_requests_total", "counter", "HTTP requests by route and status code.")
	for _, k := range sortedKeys(m.requests) {
		fmt.Fprintf(bw, "enclave_http_requests_total{route=%s,code=%s} %d\n", quote(k[0]), quote(k[1]), m.requests[k])
	}
	return bw.Flush()
}

// writeWarm writes the warm pools' gauges and counters, and Acquire's latency for a
// session's first sandbox as a summary by type and path (warm: from the pool; cold: created).
func writeWarm(bw io.Writer, header func(name, typ, help string), warm []sandbox.WarmStats) {
	gauge := func(name, help string, v func(sandbox.WarmStats) int) {
		header(name, "gauge", help)
		for _, w := range warm {
			fmt.Fprintf(bw, "%s{type=%s} %d\n", name, quote(string(w.Type)), v(w))
		}
	}
	counter := func(name, help string, v func(sandbox.WarmStats) uint64) {
		header(name, "counter", help)
		for _, w := range warm {
			fmt.Fprintf(bw, "%s{type=%s} %d\n", name, quote(string(w.Type)), v(w))
		}
	}
	gauge("enclave_warm_pool_size", "Spare sandboxes each warm pool keeps (0: no pool), by type.", func(w sandbox.WarmStats) int { return w.Size })
	gauge("enclave_warm_pool_spare", "Started spare sandboxes ready now, by type.", func(w sandbox.WarmStats) int { return w.Spare })
	gauge("enclave_warm_pool_filling", "Spare sandboxes being created, by type.", func(w sandbox.WarmStats) int { return w.Filling })
	gauge("enclave_warm_pool_reserve", "Reserve spare sandboxes ready now (--reserve), by type.", func(w sandbox.WarmStats) int { return w.Reserve })
	counter("enclave_warm_pool_hits_total", "Sessions' first sandboxes handed out from the warm pool, by type.", func(w sandbox.WarmStats) uint64 { return w.Hits })
	counter("enclave_warm_pool_reserve_hits_total", "Of the warm pool's hand-outs, those from its reserve, by type.", func(w sandbox.WarmStats) uint64 { return w.ReserveHits })
	counter("enclave_warm_pool_misses_total", "Sessions' first sandboxes created cold because the warm pool was empty, by type.", func(w sandbox.WarmStats) uint64 { return w.Misses })
	counter("enclave_warm_pool_dead_total", "Spare sandboxes found dead at hand-out and replaced, by type.", func(w sandbox.WarmStats) uint64 { return w.Dead })
	counter("enclave_warm_pool_evicted_total", "Spare sandboxes removed to make room under --max-sandboxes, by type.", func(w sandbox.WarmStats) uint64 { return w.Evicted })
	counter("enclave_warm_pool_refill_failures_total", "Failed warm pool refills, by type.", func(w sandbox.WarmStats) uint64 { return w.RefillFailures })

	const acq = "enclave_sandbox_acquire_seconds"
	header(acq, "summary", "Time to a session's first sandbox, by type and path (warm: from the pool; cold: created); quantiles over the last 512.")
	for _, w := range warm {
		for _, p := range []struct {
			path string
			l    sandbox.Latency
		}{{"warm", w.AcquireWarm}, {"cold", w.AcquireCold}} {
			if p.l.Count == 0 {
				continue
			}
			labels := "type=" + quote(string(w.Type)) + ",path=" + quote(p.path)
			for _, q := range []struct {
				q  string
				ms float64
			}{{"0.5", p.l.P50MS}, {"0.9", p.l.P90MS}, {"0.99", p.l.P99MS}} {
				fmt.Fprintf(bw, "%s{%s,quantile=\"%s\"} %s\n", acq, labels, q.q, strconv.FormatFloat(q.ms/1000, 'g', -1, 64))
			}
			fmt.Fprintf(bw, "%s_sum{%s} %s\n", acq, labels, strconv.FormatFloat(p.l.SumSeconds, 'g', -1, 64))
			fmt.Fprintf(bw, "%s_count{%s} %d\n", acq, labels, p.l.Count)
		}
	}
}

// quote writes a label value: double-quoted, with backslash, quote and newline escaped.
func quote(v string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(v) + `"`
}

func sortedKeys[K interface {
	comparable
	~string | ~[2]string
}, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b K) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	return keys
}

func (a *API) metricsText(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if err := a.metrics.Write(w, a.cfg.Manager.Stats()); err != nil {
		a.log.Debug("writing metrics", "request_id", requestIDFrom(r.Context()), "error", err)
	}
}
