package main

import (
	"log/slog"
	"maps"
	"strings"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/internal/syncbuf"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/session"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// TestWarmPoolDefaults: --warm sizes the one pool MCP sessions take from, of their one
// sandbox each; the retired --warm-notebook is accepted, sizes nothing, and says so.
func TestWarmPoolDefaults(t *testing.T) {
	tests := []struct {
		name     string
		f        serveFlags
		want     map[sandbox.Type]int
		wantWarn bool
		wantErr  bool
	}{
		{"stdio default is off", serveFlags{warm: -1}, map[sandbox.Type]int{session.SessionType: 0}, false, false},
		{"http default keeps two", serveFlags{warm: -1, httpAddr: "127.0.0.1:0"}, map[sandbox.Type]int{session.SessionType: defaultWarmHTTP}, false, false},
		{"explicit zero over http", serveFlags{warm: 0, httpAddr: "127.0.0.1:0"}, map[sandbox.Type]int{session.SessionType: 0}, false, false},
		{"explicit size", serveFlags{warm: 3}, map[sandbox.Type]int{session.SessionType: 3}, false, false},
		{"retired --warm-notebook sizes nothing", serveFlags{warm: 3, warmNotebook: 1}, map[sandbox.Type]int{session.SessionType: 3}, true, false},
		{"negative warm", serveFlags{warm: -2}, nil, false, true},
		{"negative notebook", serveFlags{warm: 0, warmNotebook: -1}, nil, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs syncbuf.Buffer
			got, err := tc.f.warmPools(slog.New(slog.NewTextHandler(&logs, nil)))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err == nil && !maps.Equal(got, tc.want) {
				t.Errorf("warm pools = %v, want %v", got, tc.want)
			}
			if warned := strings.Contains(logs.String(), "--warm-notebook has no effect"); warned != tc.wantWarn {
				t.Errorf("warned %v, want %v; log: %s", warned, tc.wantWarn, logs.String())
			}
		})
	}
}

// TestSessionConfigImage: the image an MCP session's one sandbox starts from.
func TestSessionConfigImage(t *testing.T) {
	all := tools.All()
	noNotebook, err := tools.Enabled(all, sandbox.ToolsConfig{"python_executor": nil, "shell_executor": nil, "file_operation": nil})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		base    sandbox.Config
		nc      notebookConfig
		enabled []tools.Def
		want    string // "" resolves to sandbox.DefaultImage
	}{
		{"notebook tools on, no image named: the notebook image", sandbox.Config{}, notebookConfig{}, all, sandbox.DefaultNotebookImage},
		{"notebook tools on, a notebook image named: that one", sandbox.Config{}, notebookConfig{Image: "my/jupyter"}, all, "my/jupyter"},
		{"an image the operator named is used as is", sandbox.Config{Image: "my/python"}, notebookConfig{Image: "my/jupyter"}, all, "my/python"},
		{"notebook tools off: the plain default", sandbox.Config{}, notebookConfig{}, noNotebook, ""},
		{"notebook tools off, an image named", sandbox.Config{Image: "my/python"}, notebookConfig{}, noNotebook, "my/python"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := tc.base
			base.MemoryLimit = "2g"
			got := sessionConfig(base, tc.nc, tc.enabled)
			if got.Image != tc.want || got.MemoryLimit != "2g" {
				t.Errorf("image %q memory %q, want image %q and the base's other settings", got.Image, got.MemoryLimit, tc.want)
			}
		})
	}
}
