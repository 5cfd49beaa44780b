package httpapi_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/egress"
	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// TestStatsAndMetricsShowWarmPools: /stats carries the server's warm pools beside the
// caller's counts, and /metrics writes their gauges, counters and the acquire summary.
func TestStatsAndMetricsShowWarmPools(t *testing.T) {
	t.Parallel()
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Defaults: map[sandbox.Type]sandbox.Config{sandbox.TypeDocker: {}},
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: refusingCreator},
		Warm:     map[sandbox.Type]int{sandbox.TypeDocker: 2},
	})
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	api, err := httpapi.New(httpapi.Config{Manager: m, Token: token, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Close(context.Background()) })
	s := newServerFor(t, api, m)

	deadline := time.Now().Add(5 * time.Second)
	var st struct {
		Total int                 `json:"total_sandboxes"`
		Warm  []sandbox.WarmStats `json:"warm_pools"`
	}
	for {
		s.must("GET", "/stats", nil, &st)
		if len(st.Warm) == 1 && st.Warm[0].RefillFailures > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats warm_pools = %+v, want the docker pool with a failed refill", st.Warm)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if w := st.Warm[0]; w.Type != sandbox.TypeDocker || w.Size != 2 || w.Spare != 0 {
		t.Errorf("warm pool = %+v", w)
	}

	text := string(s.do("GET", "/metrics", nil).body)
	for _, want := range []string{
		"# TYPE enclave_warm_pool_spare gauge",
		`enclave_warm_pool_size{type="docker"} 2`,
		`enclave_warm_pool_hits_total{type="docker"} 0`,
		"# TYPE enclave_sandbox_acquire_seconds summary",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestMetricsWriteAcquireSummary(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	st := sandbox.Stats{Warm: []sandbox.WarmStats{{
		Type: sandbox.TypeDocker, Size: 2, Spare: 1, Hits: 3, Misses: 1,
		AcquireWarm: sandbox.Latency{Count: 3, SumSeconds: 0.0003, P50MS: 0.1, P90MS: 0.1, P99MS: 0.1},
		AcquireCold: sandbox.Latency{Count: 1, SumSeconds: 0.2, P50MS: 200, P90MS: 200, P99MS: 200},
	}}}
	if err := httpapi.NewMetrics().Write(&b, st); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`enclave_warm_pool_spare{type="docker"} 1`,
		`enclave_warm_pool_misses_total{type="docker"} 1`,
		`enclave_sandbox_acquire_seconds{type="docker",path="warm",quantile="0.5"} 0.0001`,
		`enclave_sandbox_acquire_seconds{type="docker",path="cold",quantile="0.99"} 0.2`,
		`enclave_sandbox_acquire_seconds_count{type="docker",path="warm"} 3`,
		`enclave_sandbox_acquire_seconds_sum{type="docker",path="cold"} 0.2`,
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, b.String())
		}
	}
}

func TestMetricsWriteEgress(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	if err := httpapi.NewMetrics().Write(&b, sandbox.Stats{}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "enclave_egress") {
		t.Errorf("egress metrics without an egress service:\n%s", b.String())
	}
	b.Reset()
	st := sandbox.Stats{Egress: &egress.Stats{Allowed: 5, Refused: 2, Intercepted: 1, Sent: 100, Received: 2000, Active: 3}}
	if err := httpapi.NewMetrics().Write(&b, st); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"enclave_egress_allowed_total 5", "enclave_egress_refused_total 2", "enclave_egress_intercepted_total 1",
		`enclave_egress_bytes_total{direction="sent"} 100`, `enclave_egress_bytes_total{direction="received"} 2000`,
		"enclave_egress_connections 3",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, b.String())
		}
	}
}
