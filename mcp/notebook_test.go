package mcp_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"image/png"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	mcpgo "github.com/mark3labs/mcp-go/mcp"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/mcp"
	"github.com/enclave-mcp/enclave-mcp/notebook"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/session"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// notebookServer is an MCP server on a real engine, wired as serve wires it: each session
// gets one sandbox for every tool, of the notebook image, whose Jupyter starts on the
// session's first notebook call; the REST types stay beside it.
func notebookServer(t *testing.T) (*mcp.Server, *sandbox.Docker, *sandbox.Manager) {
	t.Helper()
	engine, manager := notebookManager(t)
	srv, err := mcp.New(mcp.Config{Tools: tools.All(), Manager: manager, DefaultTimeout: 30})
	if err != nil {
		t.Fatal(err)
	}
	return srv, engine, manager
}

// notebookManager is the manager of notebookServer, on a real engine.
func notebookManager(t *testing.T) (*sandbox.Docker, *sandbox.Manager) {
	t.Helper()
	engine := testenv.Engine(t)
	testenv.RequireImage(t, engine, sandbox.DefaultNotebookImage)
	nb := sandbox.Config{Image: sandbox.DefaultNotebookImage, Runtime: testenv.Runtime()}
	manager := sandbox.NewManager(sandbox.ManagerOptions{
		Defaults: map[sandbox.Type]sandbox.Config{sandbox.TypeNotebook: nb, session.SessionType: nb},
		Creators: map[sandbox.Type]sandbox.Creator{
			sandbox.TypeDocker:   sandbox.NewCreator(engine, sandbox.TypeDocker),
			sandbox.TypeNotebook: notebook.Creator(engine, notebook.Options{}),
			session.SessionType:  notebook.LazyCreator(engine, session.SessionType, notebook.Options{}),
		},
	})
	t.Cleanup(func() { _ = manager.Close(context.Background()) })
	return engine, manager
}

// connect opens an in-process MCP session.
func connect(t *testing.T, srv *mcp.Server) *client.Client {
	t.Helper()
	c, err := client.NewInProcessClient(srv.MCPServer())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	init := mcpgo.InitializeRequest{}
	init.Params.ProtocolVersion = mcpgo.LATEST_PROTOCOL_VERSION
	init.Params.ClientInfo = mcpgo.Implementation{Name: "notebook-test", Version: "1"}
	if _, err := c.Initialize(t.Context(), init); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func callTool(t *testing.T, c *client.Client, name string, args map[string]any, progressToken any) *mcpgo.CallToolResult {
	t.Helper()
	req := mcpgo.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = args
	if progressToken != nil {
		req.Params.Meta = &mcpgo.Meta{ProgressToken: progressToken}
	}
	res, err := c.CallTool(t.Context(), req)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return res
}

func textOf(res *mcpgo.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(mcpgo.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

// TestIntegrationNotebookOverMCP drives notebook_executor through an MCP client: state,
// values, errors, a plot as image content, progress, and the sandbox's removal with the
// session.
func TestIntegrationNotebookOverMCP(t *testing.T) {
	srv, engine, _ := notebookServer(t)
	c := connect(t, srv)

	steps := []struct {
		name, code string
		wantText   string
		wantError  bool
	}{
		{"define", "a=1; b=2; c=a+b; print(c)", "3\n", false},
		{"reuse", "print(c)", "3\n", false},
		{"assign", "x = 41", "(no output)", false},
		{"value", "x + 1", "42", false},
		{"error", "1/0", "ZeroDivisionError: division by zero", true},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			res := callTool(t, c, "notebook_executor", map[string]any{"code": st.code}, nil)
			text := textOf(res)
			if res.IsError != st.wantError || !strings.Contains(text, st.wantText) || strings.Contains(text, "\x1b") {
				t.Fatalf("isError %v text %q, want %v containing %q", res.IsError, text, st.wantError, st.wantText)
			}
		})
	}

	t.Run("a plot is image content", func(t *testing.T) {
		res := callTool(t, c, "notebook_executor", map[string]any{"code": "import matplotlib.pyplot as plt\nplt.plot([3, 1, 2])\nplt.show()"}, nil)
		var images []mcpgo.ImageContent
		for _, content := range res.Content {
			if img, ok := content.(mcpgo.ImageContent); ok {
				images = append(images, img)
			}
		}
		if res.IsError || len(images) != 1 || images[0].MIMEType != "image/png" {
			t.Fatalf("want one PNG image content, got %+v", res.Content)
		}
		data, err := base64.StdEncoding.DecodeString(images[0].Data)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := png.Decode(bytes.NewReader(data)); err != nil {
			t.Fatalf("image bytes are not a PNG: %v", err)
		}
		// Structured content lists the image without its bytes.
		raw, err := json.Marshal(res.StructuredContent)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(raw, []byte(`"mime_type":"image/png"`)) || bytes.Contains(raw, []byte(images[0].Data[:64])) {
			t.Errorf("structured content must list the image, not carry it: %.300s", raw)
		}
	})

	t.Run("progress while a cell runs", func(t *testing.T) {
		var mu sync.Mutex
		var messages []string
		c.OnNotification(func(n mcpgo.JSONRPCNotification) {
			if n.Method != "notifications/progress" {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if msg, ok := n.Params.AdditionalFields["message"].(string); ok {
				messages = append(messages, msg)
			}
		})
		res := callTool(t, c, "notebook_executor", map[string]any{"code": "import time\nfor i in range(3):\n    print('step', i, flush=True)\n    time.sleep(0.7)"}, "nb-progress")
		if res.IsError || !strings.Contains(textOf(res), "step 2") {
			t.Fatalf("result: %q", textOf(res))
		}
		deadline := time.Now().Add(2 * time.Second)
		for {
			mu.Lock()
			got := strings.Join(messages, "|")
			mu.Unlock()
			if strings.Contains(got, "step 0") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no progress carried the cell's output; got %q", got)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	t.Run("timeout keeps state", func(t *testing.T) {
		start := time.Now()
		res := callTool(t, c, "notebook_executor", map[string]any{"code": "import time\ntime.sleep(5)\ny = 1", "timeout": 1}, nil)
		if !res.IsError || !strings.Contains(textOf(res), "timed out after 1s") || time.Since(start) > 1500*time.Millisecond {
			t.Fatalf("after %s: %q", time.Since(start), textOf(res))
		}
		if res := callTool(t, c, "notebook_executor", map[string]any{"code": "print('y' in globals(), x)"}, nil); textOf(res) != "False 41\n" {
			t.Errorf("after the timeout: %q", textOf(res))
		}
	})

	// A docker tool in the same session runs in the notebook's sandbox, the session's only
	// one, which goes when the session ends.
	if res := callTool(t, c, "shell_executor", map[string]any{"command": "echo shell"}, nil); textOf(res) != "shell\n" {
		t.Fatalf("shell_executor: %q", textOf(res))
	}
	if n := countContainers(t, engine); n != 1 {
		t.Fatalf("want the session's one sandbox, found %d containers", n)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for countContainers(t, engine) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("containers still there after the session ended: %d", countContainers(t, engine))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestIntegrationNotebookSessionsIsolated: two sessions get two kernels.
func TestIntegrationNotebookSessionsIsolated(t *testing.T) {
	srv, _, _ := notebookServer(t)
	a, b := connect(t, srv), connect(t, srv)
	var wg sync.WaitGroup
	for _, c := range []*client.Client{a, b} {
		wg.Go(func() { // both sessions start their sandbox and its notebook at once
			req := mcpgo.CallToolRequest{}
			req.Params.Name, req.Params.Arguments = "notebook_executor", map[string]any{"code": "1"}
			if res, err := c.CallTool(t.Context(), req); err != nil || res.IsError {
				t.Errorf("first call: %v %v", res, err)
			}
		})
	}
	wg.Wait()
	callTool(t, a, "notebook_executor", map[string]any{"code": "secret = 'a'"}, nil)
	if res := callTool(t, b, "notebook_executor", map[string]any{"code": "print('secret' in globals())"}, nil); textOf(res) != "False\n" {
		t.Errorf("session b sees session a's kernel: %q", textOf(res))
	}
	if res := callTool(t, a, "notebook_executor", map[string]any{"code": "secret"}, nil); textOf(res) != "'a'" {
		t.Errorf("session a lost its state: %q", textOf(res))
	}
}

func countContainers(t *testing.T, e *sandbox.Docker) int {
	t.Helper()
	list, err := e.ListManaged(context.Background(), e.Instance())
	if err != nil {
		t.Fatal(err)
	}
	return len(list)
}
