package session_test

import (
	"testing"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/session"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

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
		nb      string // the notebook image named
		enabled []tools.Def
		want    string // "" resolves to sandbox.DefaultImage
	}{
		{"notebook tools on, no image named: the notebook image", sandbox.Config{}, "", all, sandbox.DefaultNotebookImage},
		{"notebook tools on, a notebook image named: that one", sandbox.Config{}, "my/jupyter", all, "my/jupyter"},
		{"an image the operator named is used as is", sandbox.Config{Image: "my/python"}, "my/jupyter", all, "my/python"},
		{"notebook tools off: the plain default", sandbox.Config{}, "", noNotebook, ""},
		{"notebook tools off, an image named", sandbox.Config{Image: "my/python"}, "", noNotebook, "my/python"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := tc.base
			base.MemoryLimit = "2g"
			got := session.Sandboxes{Config: base, NotebookImage: tc.nb, Tools: tc.enabled}.SessionConfig()
			if got.Image != tc.want || got.MemoryLimit != "2g" {
				t.Errorf("image %q memory %q, want image %q and the base's other settings", got.Image, got.MemoryLimit, tc.want)
			}
		})
	}
}
