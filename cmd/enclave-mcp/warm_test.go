package main

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/internal/syncbuf"
)

// TestWarmPoolDefaults: --warm is the least spares of the pools (MCP sessions' sandbox, and
// over HTTP the REST API's default), --warm-max the most they grow to; the retired
// --warm-notebook is accepted, sizes nothing, and says so.
func TestWarmPoolDefaults(t *testing.T) {
	const http = "127.0.0.1:0"
	tests := []struct {
		name     string
		f        serveFlags
		wantLo   int
		wantHi   int
		wantWarn bool
		wantErr  bool
	}{
		{"stdio default is off", serveFlags{warm: -1, warmMax: -1}, 0, 0, false, false},
		{"http default keeps two and grows", serveFlags{warm: -1, warmMax: -1, httpAddr: http}, defaultWarmHTTP, defaultWarmMaxHTTP, false, false},
		{"explicit zero over http turns pools off", serveFlags{warm: 0, warmMax: -1, httpAddr: http}, 0, 0, false, false},
		{"zero with a maximum grows from nothing", serveFlags{warm: 0, warmMax: 4, httpAddr: http}, 0, 4, false, false},
		{"explicit size over stdio is fixed", serveFlags{warm: 3, warmMax: -1}, 3, 3, false, false},
		{"explicit size over http grows", serveFlags{warm: 3, warmMax: -1, httpAddr: http}, 3, defaultWarmMaxHTTP, false, false},
		{"a minimum past the default maximum", serveFlags{warm: 20, warmMax: -1, httpAddr: http}, 20, 20, false, false},
		{"a fixed pool", serveFlags{warm: 2, warmMax: 2, httpAddr: http}, 2, 2, false, false},
		{"retired --warm-notebook sizes nothing", serveFlags{warm: 3, warmMax: -1, warmNotebook: 1}, 3, 3, true, false},
		{"negative warm", serveFlags{warm: -2, warmMax: -1}, 0, 0, false, true},
		{"maximum under the minimum", serveFlags{warm: 3, warmMax: 2}, 0, 0, false, true},
		{"negative notebook", serveFlags{warm: 0, warmMax: -1, warmNotebook: -1}, 0, 0, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs syncbuf.Buffer
			lo, hi, err := tc.f.warmPools(slog.New(slog.NewTextHandler(&logs, nil)))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err == nil && (lo != tc.wantLo || hi != tc.wantHi) {
				t.Errorf("warm pools = %d..%d, want %d..%d", lo, hi, tc.wantLo, tc.wantHi)
			}
			if warned := strings.Contains(logs.String(), "--warm-notebook has no effect"); warned != tc.wantWarn {
				t.Errorf("warned %v, want %v; log: %s", warned, tc.wantWarn, logs.String())
			}
		})
	}
}

// TestReserveDefaults: over HTTP on Docker the MCP sessions' pool keeps a reserve for
// bursts unless pools are off or --reserve says otherwise, within half of --max-sandboxes;
// over stdio or on Kubernetes none unless asked for.
func TestReserveDefaults(t *testing.T) {
	const http = "127.0.0.1:0"
	docker := backendFlags{name: "docker"}
	tests := []struct {
		name    string
		f       serveFlags
		warmMax int
		want    int
		wantErr bool
	}{
		{"http default", serveFlags{reserve: -1, backend: docker, httpAddr: http, maxTotal: 100}, 16, defaultReserveHTTP, false},
		{"http default without a cap", serveFlags{reserve: -1, backend: docker, httpAddr: http}, 16, defaultReserveHTTP, false},
		{"half the cap at most", serveFlags{reserve: -1, backend: docker, httpAddr: http, maxTotal: 20}, 16, 10, false},
		{"pools off", serveFlags{reserve: -1, backend: docker, httpAddr: http, maxTotal: 100}, 0, 0, false},
		{"stdio", serveFlags{reserve: -1, backend: docker, maxTotal: 100}, 0, 0, false},
		{"kubernetes", serveFlags{reserve: -1, backend: backendFlags{name: "kube"}, httpAddr: http, maxTotal: 100}, 16, 0, false},
		{"explicit on kubernetes", serveFlags{reserve: 4, backend: backendFlags{name: "kube"}, httpAddr: http}, 16, 4, false},
		{"explicit", serveFlags{reserve: 5, httpAddr: http, maxTotal: 100}, 16, 5, false},
		{"explicit zero", serveFlags{reserve: 0, httpAddr: http, maxTotal: 100}, 16, 0, false},
		{"explicit over stdio", serveFlags{reserve: 3}, 0, 3, false},
		{"negative", serveFlags{reserve: -2, httpAddr: http}, 16, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.f.reserveSize(tc.warmMax)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err == nil && got != tc.want {
				t.Errorf("reserve = %d, want %d", got, tc.want)
			}
		})
	}
}
