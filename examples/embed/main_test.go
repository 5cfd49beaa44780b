package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	mcpclient "github.com/mark3labs/mcp-go/client"
	mcpgo "github.com/mark3labs/mcp-go/mcp"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/mcp"
)

// call runs one tool and returns its text and whether it was an error.
func call(t *testing.T, c *mcpclient.Client, tool string, args map[string]any) (string, bool) {
	t.Helper()
	req := mcpgo.CallToolRequest{}
	req.Params.Name, req.Params.Arguments = tool, args
	res, err := c.CallTool(t.Context(), req)
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	var text strings.Builder
	for _, content := range res.Content {
		if tc, ok := content.(mcpgo.TextContent); ok {
			text.WriteString(tc.Text)
		}
	}
	return text.String(), res.IsError
}

// TestEmbeddedServer: the Go tool and the declared tool are offered beside the built-ins,
// with schemas, run in the session's sandbox on the process backend, and refuse bad
// arguments the way built-ins do; a declared tool's argument never reaches a shell.
func TestEmbeddedServer(t *testing.T) {
	core, err := newCore(testenv.Process(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = core.Close(ctx)
		_ = core.Manager().Close(ctx)
	})
	srv, err := mcp.New(mcp.Config{Core: core})
	if err != nil {
		t.Fatal(err)
	}
	c := testenv.InProcessMCP(t, srv.MCPServer())

	list, err := c.ListTools(t.Context(), mcpgo.ListToolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"python_executor", "word_count", "line_count"} {
		i := slices.IndexFunc(list.Tools, func(tool mcpgo.Tool) bool { return tool.Name == want })
		if i < 0 {
			t.Fatalf("tools/list lacks %s", want)
		}
		if want != "python_executor" && !slices.Equal(list.Tools[i].InputSchema.Required, []string{"path"}) {
			t.Errorf("%s: required %v, want [path] from its parameters", want, list.Tools[i].InputSchema.Required)
		}
	}

	if _, isErr := call(t, c, "file_operation", map[string]any{"operation": "write", "file_path": "notes.txt", "content": "one two three\nfour\n"}); isErr {
		t.Fatal("writing notes.txt failed")
	}
	tests := []struct {
		name, tool string
		args       map[string]any
		want       string
		isErr      bool
	}{
		{"the Go tool reads the session's file", "word_count", map[string]any{"path": "notes.txt"}, "4 words", false},
		{"the declared tool runs its argv", "line_count", map[string]any{"path": "notes.txt"}, "2 notes.txt", false},
		{"the Go tool refuses an unknown parameter", "word_count", map[string]any{"file": "notes.txt"}, `unknown parameter "file"`, true},
		{"the declared tool refuses a wrong type", "line_count", map[string]any{"path": 3}, `parameter "path" must be a string`, true},
		{"a shell metacharacter stays literal", "line_count", map[string]any{"path": "x; touch pwned"}, "x; touch pwned", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			text, isErr := call(t, c, tc.tool, tc.args)
			if isErr != tc.isErr || !strings.Contains(text, tc.want) {
				t.Errorf("got %q (error %v), want %q (error %v)", text, isErr, tc.want, tc.isErr)
			}
		})
	}
	if text, _ := call(t, c, "file_operation", map[string]any{"operation": "exists", "file_path": "pwned"}); text != "does not exist" {
		t.Errorf("exists(pwned) = %q: a declared tool's argument ran as a command", text)
	}
}

// TestEmbeddedBinaryIsItsOwnAgent: the example built as a program serves MCP over stdio and
// runs its sandboxes with itself as the agent.
func TestEmbeddedBinaryIsItsOwnAgent(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "embed")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the example: %v\n%s", err, out)
	}
	// The backend's sandboxes go under TMPDIR, which the agents' uid must be able to reach.
	tmp, err := os.MkdirTemp("", "embed-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(tmp) })
	if err := os.Chmod(tmp, 0o711); err != nil {
		t.Fatal(err)
	}
	c, err := mcpclient.NewStdioMCPClient(bin, []string{"TMPDIR=" + tmp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	testenv.InitializeMCP(t, c)
	if text, isErr := call(t, c, "shell_executor", map[string]any{"command": "echo hello world > w.txt"}); isErr {
		t.Fatalf("shell_executor failed: %s", text)
	}
	if text, isErr := call(t, c, "word_count", map[string]any{"path": "w.txt"}); isErr || text != "2 words" {
		t.Errorf("word_count = %q (error %v), want 2 words", text, isErr)
	}
}
