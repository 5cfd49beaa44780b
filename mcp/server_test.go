package mcp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	mcpgo "github.com/mark3labs/mcp-go/mcp"

	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/internal/fakesandbox"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/mcp"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/session"
)

// TestBadArgumentsAreTheSameOnMCPAndREST sends the same bad arguments through both faces of
// one session core: MCP answers with isError, the REST API's result as structuredContent,
// and that result's error as its text. No engine is needed: the call never reaches a
// sandbox.
func TestBadArgumentsAreTheSameOnMCPAndREST(t *testing.T) {
	t.Parallel()
	f := &fakesandbox.Factory{}
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Defaults: map[sandbox.Type]sandbox.Config{sandbox.TypeDocker: {}},
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: f.Creator(sandbox.TypeDocker)},
	})
	t.Cleanup(func() { _ = m.Close(context.WithoutCancel(t.Context())) })
	core, err := session.New(session.Config{Manager: m})
	if err != nil {
		t.Fatal(err)
	}
	api, err := httpapi.New(httpapi.Config{Core: core, Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	rest := httptest.NewServer(api.Handler())
	t.Cleanup(rest.Close)
	srv, err := mcp.New(mcp.Config{Core: core})
	if err != nil {
		t.Fatal(err)
	}
	c := testenv.InProcessMCP(t, srv.MCPServer())

	post := func(path string, body any) map[string]any {
		t.Helper()
		raw, _ := json.Marshal(body)
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, rest.URL+path, bytes.NewReader(raw))
		req.Header.Set("Authorization", "Bearer t")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s: %d %s", path, resp.StatusCode, data)
		}
		var out map[string]any
		if err := json.Unmarshal(data, &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	id, _ := post("/sandbox/create", map[string]any{})["sandbox_id"].(string)

	for _, tc := range []struct {
		name, tool string
		args       map[string]any
	}{
		{"wrong type", "python_executor", map[string]any{"code": 1}},
		{"unknown parameter", "shell_executor", map[string]any{"command": "ls", "comand": "ls"}},
		{"missing required", "file_operation", map[string]any{"operation": "read"}},
		{"timeout out of range", "shell_executor", map[string]any{"command": "ls", "timeout": 1e9}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			viaREST := post("/sandbox/tool/execute", map[string]any{"sandbox_id": id, "tool_name": tc.tool, "parameters": tc.args})

			req := mcpgo.CallToolRequest{}
			req.Params.Name, req.Params.Arguments = tc.tool, tc.args
			res, err := c.CallTool(t.Context(), req)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := json.Marshal(res.StructuredContent)
			var viaMCP map[string]any
			if err := json.Unmarshal(raw, &viaMCP); err != nil {
				t.Fatalf("structuredContent %s: %v", raw, err)
			}
			for _, r := range []map[string]any{viaREST, viaMCP} {
				if _, err := time.Parse(time.RFC3339Nano, r["timestamp"].(string)); err != nil {
					t.Errorf("timestamp: %v", err)
				}
				delete(r, "timestamp")
			}
			restJSON, _ := json.Marshal(viaREST)
			mcpJSON, _ := json.Marshal(viaMCP)
			if !bytes.Equal(restJSON, mcpJSON) {
				t.Errorf("the faces disagree:\n REST: %s\n MCP:  %s", restJSON, mcpJSON)
			}
			if viaREST["status"] != "error" || viaREST["metadata"].(map[string]any)["invalid_arguments"] != true {
				t.Errorf("REST result %s is not an invalid-arguments error", restJSON)
			}
			text := ""
			if len(res.Content) == 1 {
				if tc, ok := res.Content[0].(mcpgo.TextContent); ok {
					text = tc.Text
				}
			}
			if !res.IsError || text == "" || text != viaREST["error"] {
				t.Errorf("MCP: isError=%v text=%q, want isError and the REST error %q", res.IsError, text, viaREST["error"])
			}
		})
	}
	if n := len(f.Created()); n > 2 {
		t.Errorf("%d sandboxes created, want at most the REST one and the MCP session's", n)
	}
}
