package mcp_test

// End-to-end test with the official Go SDK's client (github.com/modelcontextprotocol/go-sdk),
// an implementation independent of the mcp-go library the server is built on.

import (
	"context"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/enclave-mcp/enclave-mcp/internal/syncbuf"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
)

func TestIntegrationGoSDKClient(t *testing.T) {
	testenv.RequireDocker(t)
	t.Parallel()
	bin := testenv.Binary(t)

	for _, tc := range []struct{ name, version string }{
		{"latest protocol", ""},
		{"protocol 2025-11-25", "2025-11-25"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			stderr := &syncbuf.Buffer{}
			cmd := exec.Command(bin, "serve", "--log-level", "debug")
			cmd.Stderr = stderr
			// Close closes stdin and waits this long before resorting to SIGTERM: a server
			// that exits on EOF returns well before.
			const terminate = 15 * time.Second
			transport := &sdk.CommandTransport{Command: cmd, TerminateDuration: terminate}
			client := sdk.NewClient(&sdk.Implementation{Name: "enclave-e2e-gosdk", Version: "0"}, nil)

			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			session, err := client.Connect(ctx, transport, &sdk.ClientSessionOptions{ProtocolVersion: tc.version})
			if err != nil {
				t.Fatalf("connecting: %v\nstderr:\n%s", err, stderr.String())
			}
			closed := false
			defer func() {
				if !closed {
					_ = session.Close()
				}
				if t.Failed() {
					t.Logf("server stderr (tail):\n%s", e2eTail(stderr.String(), 6000))
				}
			}()
			if ir := session.InitializeResult(); ir != nil {
				t.Logf("negotiated protocol version %s", ir.ProtocolVersion)
			}

			tools, err := session.ListTools(ctx, &sdk.ListToolsParams{})
			if err != nil {
				t.Fatalf("tools/list: %v", err)
			}
			var names []string
			for _, tool := range tools.Tools {
				names = append(names, tool.Name)
			}
			for _, want := range []string{"file_operation", "python_executor", "shell_executor"} {
				if !slices.Contains(names, want) {
					t.Errorf("tools/list lacks %s: %v", want, names)
				}
			}

			call := func(name string, args map[string]any) (*sdk.CallToolResult, e2eResult, string) {
				t.Helper()
				res, err := session.CallTool(ctx, &sdk.CallToolParams{Name: name, Arguments: args})
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				var text string
				for _, c := range res.Content {
					if tc, ok := c.(*sdk.TextContent); ok {
						text += tc.Text
					}
				}
				var r e2eResult
				if res.StructuredContent == nil {
					return res, r, text
				}
				raw, err := json.Marshal(res.StructuredContent)
				if err != nil {
					t.Fatal(err)
				}
				e2eCheckShape(t, name, raw, text, res.IsError)
				if err := json.Unmarshal(raw, &r); err != nil {
					t.Fatalf("%s: structuredContent %s: %v", name, raw, err)
				}
				return res, r, text
			}

			res, r, text := call("python_executor", map[string]any{"code": "print(6 * 7)"})
			if res.IsError || r.Status != "success" || r.Output != "42\n" || text != "42\n" {
				t.Errorf("python: isError=%v status=%s output=%q text=%q", res.IsError, r.Status, r.Output, text)
			}

			content := "written by the Go SDK\nüñíçødé ✓\n"
			if res, r, _ := call("file_operation", map[string]any{"operation": "write", "file_path": "gosdk.txt", "content": content}); res.IsError {
				t.Fatalf("write: %+v", r)
			}
			if res, r, _ := call("file_operation", map[string]any{"operation": "read", "file_path": "/sandbox/gosdk.txt"}); res.IsError || r.Output != content {
				t.Errorf("read back: isError=%v output=%q, want %q", res.IsError, r.Output, content)
			}

			res, _, text = call("python_executor", map[string]any{"code": "print(1)", "bogus": 1})
			if !res.IsError || !strings.Contains(text, `"bogus"`) {
				t.Errorf("unknown parameter: isError=%v text=%q, want an error naming it", res.IsError, text)
			}

			_, r, _ = call("shell_executor", map[string]any{"command": "cat /proc/self/mountinfo /proc/self/cgroup"})
			m := containerIDPattern.FindStringSubmatch(r.Output)
			if m == nil {
				t.Fatalf("no container ID in the sandbox's mountinfo/cgroup")
			}
			id := m[1]
			if e2eInspect(t, id) == nil {
				t.Fatalf("container %.12s does not exist", id)
			}

			start := time.Now()
			closed = true
			if err := session.Close(); err != nil {
				t.Logf("closing the session: %v", err)
			}
			if took := time.Since(start); took >= terminate {
				t.Errorf("the server did not exit when its stdin closed: Close took %v and had to signal it", took)
			}
			if cmd.ProcessState == nil {
				t.Errorf("the server has not exited after Close")
			}
			e2eAssertGone(t, id)
		})
	}
}
