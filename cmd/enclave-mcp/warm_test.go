package main

import (
	"testing"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

func TestWarmPoolDefaults(t *testing.T) {
	tests := []struct {
		name           string
		f              serveFlags
		docker, nbWarm int
		wantErr        bool
	}{
		{"stdio default is off", serveFlags{warm: -1}, 0, 0, false},
		{"http default keeps two", serveFlags{warm: -1, httpAddr: "127.0.0.1:0"}, defaultWarmHTTP, 0, false},
		{"explicit zero over http", serveFlags{warm: 0, httpAddr: "127.0.0.1:0"}, 0, 0, false},
		{"explicit sizes", serveFlags{warm: 3, warmNotebook: 1}, 3, 1, false},
		{"negative warm", serveFlags{warm: -2}, 0, 0, true},
		{"negative notebook", serveFlags{warm: 0, warmNotebook: -1}, 0, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.f.warmPools()
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err == nil && (got[sandbox.TypeDocker] != tc.docker || got[sandbox.TypeNotebook] != tc.nbWarm) {
				t.Errorf("warm pools = %v, want docker %d, notebook %d", got, tc.docker, tc.nbWarm)
			}
		})
	}
}
