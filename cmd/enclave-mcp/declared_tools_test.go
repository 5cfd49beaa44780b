package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	mcpgo "github.com/mark3labs/mcp-go/mcp"

	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/internal/fakesandbox"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/mcp"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/schema"
	"github.com/enclave-mcp/enclave-mcp/session"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// sayConfig declares one tool, enabled by name in tools_config beside a built-in.
const sayConfig = `{
  "sandbox": {"tools_config": {"shell_executor": {}, "say": {"max_output_bytes": 4096}}},
  "tools": [{
    "name": "say", "description": "Print a text in the sandbox, as it is.",
    "parameters": {"text": {"type": "string", "description": "What to print.", "required": true}},
    "argv": ["printf", "%s\n", "{text}"], "timeout": 5, "read_only": true
  }]
}`

// writeConfig writes a config file for the test and returns its path.
func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConfigDeclaredTools(t *testing.T) {
	t.Parallel()
	f := serveFlags{config: writeConfig(t, sayConfig)}
	cfg, _, err := f.sandboxConfig()
	if err != nil {
		t.Fatalf("a config with declared tools must be accepted: %v", err)
	}
	builtins := tools.All()
	if len(f.tools) != len(builtins)+1 || f.tools[len(builtins)].Name != "say" {
		t.Fatalf("tools %v: want the built-ins, then say", toolNames(f.tools))
	}
	enabled, err := tools.Enabled(f.tools, cfg.ToolsConfig)
	if err != nil || !slices.Equal(toolNames(enabled), []string{"shell_executor", "say"}) {
		t.Errorf("tools_config naming a declared tool: %v, %v; want shell_executor, say", toolNames(enabled), err)
	}
	// Without a config file, the built-ins alone.
	f = serveFlags{}
	if _, _, err := f.sandboxConfig(); err != nil || len(f.tools) != len(builtins) {
		t.Errorf("no config: tools %v, %v; want the built-ins", toolNames(f.tools), err)
	}

	const ok = `"description": "d", "argv": ["true"]`
	tests := []struct {
		name, config, wantErr string
	}{
		{"unknown key", `{"tools": [{"name": "t", ` + ok + `, "shell": true}]}`, `declared tool "t": unknown key "shell"; valid keys: name, description`},
		{"name clash", `{"tools": [{"name": "python_executor", ` + ok + `}]}`, `declared tool "python_executor": the server already has a tool of this name`},
		{"bad name", `{"tools": [{"name": "run tests", ` + ok + `}]}`, `declared tool "run tests": name must match`},
		{"placeholder naming no parameter", `{"tools": [{"name": "t", "description": "d", "argv": ["cat", "{path}"]}]}`,
			`declared tool "t": argv[1] "{path}": placeholder {path} names no parameter`},
		{"not a list", `{"tools": {"name": "t"}}`, `cannot unmarshal object into Go struct field fileConfig.tools`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := writeConfig(t, tc.config)
			f := serveFlags{config: path}
			_, _, err := f.sandboxConfig()
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), path) {
				t.Fatalf("err = %v, want it to name the file and contain %q", err, tc.wantErr)
			}
		})
	}
}

// TestDeclaredToolEverywhere: a tool declared in the config file is in MCP's tools/list, in
// every export of GET /v1/tools, checks its arguments, and runs its argv as given (through a
// fake sandbox that records it).
func TestDeclaredToolEverywhere(t *testing.T) {
	t.Parallel()
	f := serveFlags{config: writeConfig(t, sayConfig)}
	cfg, _, err := f.sandboxConfig()
	if err != nil {
		t.Fatal(err)
	}
	enabled, err := tools.Enabled(f.tools, cfg.ToolsConfig)
	if err != nil {
		t.Fatal(err)
	}
	var fakes fakesandbox.Factory
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Defaults: map[sandbox.Type]sandbox.Config{sandbox.TypeDocker: {}},
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: fakes.Creator(sandbox.TypeDocker)},
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = m.Close(ctx)
	})
	core, err := session.New(session.Config{Manager: m, Tools: enabled, ToolOptions: cfg.ToolsConfig, DefaultTimeout: 30})
	if err != nil {
		t.Fatal(err)
	}
	api, err := httpapi.New(httpapi.Config{Core: core, Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	rest := httptest.NewServer(api.Handler())
	t.Cleanup(rest.Close)

	t.Run("GET /v1/tools", func(t *testing.T) {
		for _, format := range schema.Formats() {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, rest.URL+"/v1/tools?format="+string(format), nil)
			req.Header.Set("Authorization", "Bearer t")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var out struct {
				Tools []json.RawMessage `json:"tools"`
			}
			if err := json.Unmarshal(data, &out); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: %d %s", format, resp.StatusCode, data)
			}
			var say json.RawMessage
			for _, raw := range out.Tools {
				if strings.Contains(string(raw), `"say"`) {
					say = raw
				}
			}
			if say == nil || !strings.Contains(string(say), `"text"`) {
				t.Fatalf("%s: no tool say with its parameter text in %s", format, data)
			}
			if format == schema.FormatOpenAIStrict {
				var fn struct {
					Function struct {
						Parameters json.RawMessage `json:"parameters"`
					} `json:"function"`
				}
				if err := json.Unmarshal(say, &fn); err != nil {
					t.Fatal(err)
				}
				if err := schema.ValidateStrict(fn.Function.Parameters); err != nil {
					t.Errorf("strict export of say: %v", err)
				}
			}
		}
	})

	srv, err := mcp.New(mcp.Config{Core: core})
	if err != nil {
		t.Fatal(err)
	}
	c := testenv.InProcessMCP(t, srv.MCPServer())

	t.Run("tools/list", func(t *testing.T) {
		list, err := c.ListTools(t.Context(), mcpgo.ListToolsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(list.Tools, func(tool mcpgo.Tool) bool { return tool.Name == "say" })
		if i < 0 {
			t.Fatalf("say not in tools/list: %v", list.Tools)
		}
		say := list.Tools[i]
		if _, ok := say.InputSchema.Properties["text"]; !ok || !slices.Equal(say.InputSchema.Required, []string{"text"}) {
			t.Errorf("say: input schema %+v; want text, required", say.InputSchema)
		}
		if a := say.Annotations; a.ReadOnlyHint == nil || !*a.ReadOnlyHint || a.DestructiveHint == nil || *a.DestructiveHint {
			t.Errorf("say: annotations %+v; want read-only, not destructive", a)
		}
	})

	call := func(t *testing.T, args map[string]any) *mcpgo.CallToolResult {
		t.Helper()
		req := mcpgo.CallToolRequest{}
		req.Params.Name, req.Params.Arguments = "say", args
		res, err := c.CallTool(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	t.Run("bad arguments", func(t *testing.T) {
		res := call(t, map[string]any{"txt": "a"})
		text := ""
		if len(res.Content) == 1 {
			text = res.Content[0].(mcpgo.TextContent).Text
		}
		if !res.IsError || !strings.Contains(text, `unknown parameter "txt"; valid parameters: text`) {
			t.Errorf("isError %v, text %q: want the unknown parameter named", res.IsError, text)
		}
	})
	t.Run("the argv runs as declared", func(t *testing.T) {
		res := call(t, map[string]any{"text": "a; touch /sandbox/pwned"})
		if res.IsError {
			t.Fatalf("call failed: %+v", res)
		}
		created := fakes.Created()
		if len(created) != 1 {
			t.Fatalf("%d sandboxes, want the session's one", len(created))
		}
		execs := created[0].Execs()
		want := []string{"printf", "%s\n", "a; touch /sandbox/pwned"}
		if len(execs) != 1 || !slices.Equal(execs[0].Argv, want) {
			t.Fatalf("ran %+v, want one process with argv %q", execs, want)
		}
		if execs[0].TimeoutMS != 5000 || execs[0].MaxOutputBytes != 4096 {
			t.Errorf("timeout %d ms, output cap %d; want the declaration's 5000 and tools_config's 4096", execs[0].TimeoutMS, execs[0].MaxOutputBytes)
		}
	})
}

func toolNames(defs []tools.Def) []string {
	out := make([]string, len(defs))
	for i, d := range defs {
		out[i] = d.Name
	}
	return out
}
