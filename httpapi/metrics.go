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
