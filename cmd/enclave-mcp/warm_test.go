package main

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/internal/syncbuf"
)

// TestWarmPoolDefaults: --warm sizes the one pool MCP sessions take from, of their one
// sandbox each; the retired --warm-notebook is accepted, sizes nothing, and says so.
func TestWarmPoolDefaults(t *testing.T) {
	tests := []struct {
		name     string
		f        serveFlags
		want     int
		wantWarn bool
		wantErr  bool
	}{
		{"stdio default is off", serveFlags{warm: -1}, 0, false, false},
		{"http default keeps two", serveFlags{warm: -1, httpAddr: "127.0.0.1:0"}, defaultWarmHTTP, false, false},
		{"explicit zero over http", serveFlags{warm: 0, httpAddr: "127.0.0.1:0"}, 0, false, false},
		{"explicit size", serveFlags{warm: 3}, 3, false, false},
		{"retired --warm-notebook sizes nothing", serveFlags{warm: 3, warmNotebook: 1}, 3, true, false},
		{"negative warm", serveFlags{warm: -2}, 0, false, true},
		{"negative notebook", serveFlags{warm: 0, warmNotebook: -1}, 0, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs syncbuf.Buffer
			got, err := tc.f.warmPools(slog.New(slog.NewTextHandler(&logs, nil)))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err == nil && got != tc.want {
				t.Errorf("warm pools = %v, want %v", got, tc.want)
			}
			if warned := strings.Contains(logs.String(), "--warm-notebook has no effect"); warned != tc.wantWarn {
				t.Errorf("warned %v, want %v; log: %s", warned, tc.wantWarn, logs.String())
			}
		})
	}
}
