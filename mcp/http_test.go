package mcp_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	mcpgo "github.com/mark3labs/mcp-go/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/mcp"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// httpFixture is a real server on a real listener, over a real engine.
type httpFixture struct {
	url     string
	engine  *sandbox.Engine
	manager *sandbox.Manager
}

func newHTTPFixture(t *testing.T, sessionTTL time.Duration) *httpFixture {
	t.Helper()
	engine := testenv.Engine(t)
	manager := sandbox.NewManager(sandbox.ManagerOptions{
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: engine.Creator(sandbox.TypeDocker)},
	})
	srv, err := mcp.New(mcp.Config{Tools: tools.All(), Manager: manager, DefaultTimeout: 30})
	if err != nil {
		t.Fatal(err)
	}
	transports := srv.HTTPTransports(t.Context(), mcp.HTTPOptions{SessionIdleTTL: sessionTTL})
	mux := http.NewServeMux()
	transports.Mount(mux, nil)
	ts := httptest.NewServer(mux)
	t.Cleanup(func() {
		ctx := context.Background()
		_ = transports.SSE.Shutdown(ctx)
		_ = transports.Streamable.Shutdown(ctx)
		ts.Close()
		_ = manager.Close(ctx)
	})
	return &httpFixture{url: ts.URL, engine: engine, manager: manager}
}

// waitNoSandboxes polls until the manager holds no sandbox and the engine shows none of ours.
func (f *httpFixture) waitNoSandboxes(t *testing.T, why string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		list, err := f.engine.ListManaged(context.Background(), f.engine.Instance())
		if err == nil && len(list) == 0 && len(f.manager.List()) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("sandboxes still exist %s", why)
}

// toolCaller is the part of a client the scenario needs: one tool call, returning its text
// and whether it failed.
type toolCaller func(ctx context.Context, name string, args map[string]any) (text string, isError bool, err error)

// statefulScenario: a file written in one call is read back by code in the next, so the
// session kept its sandbox; one sandbox exists while the session is open.
func statefulScenario(t *testing.T, f *httpFixture, call toolCaller) {
	t.Helper()
	ctx := t.Context()
	text, isErr, err := call(ctx, "file_operation", map[string]any{"operation": "write", "file_path": "state.txt", "content": "kept across calls"})
	if err != nil || isErr {
		t.Fatalf("write: %v %s", err, text)
	}
	text, isErr, err = call(ctx, "python_executor", map[string]any{"code": "print(open('state.txt').read())"})
	if err != nil || isErr || !strings.Contains(text, "kept across calls") {
		t.Fatalf("state lost between calls: err=%v isError=%v text=%q", err, isErr, text)
	}
	if n := len(f.manager.List()); n != 1 {
		t.Fatalf("the session holds %d sandboxes, want 1", n)
	}
}

func mcpgoCaller(c *mcpclient.Client) toolCaller {
	return func(ctx context.Context, name string, args map[string]any) (string, bool, error) {
		req := mcpgo.CallToolRequest{}
		req.Params.Name, req.Params.Arguments = name, args
		res, err := c.CallTool(ctx, req)
		if err != nil {
			return "", false, err
		}
		var b strings.Builder
		for _, c := range res.Content {
			if tc, ok := c.(mcpgo.TextContent); ok {
				b.WriteString(tc.Text)
			}
		}
		return b.String(), res.IsError, nil
	}
}

func startMCPGo(t *testing.T, c *mcpclient.Client) {
	t.Helper()
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	init := mcpgo.InitializeRequest{}
	init.Params.ProtocolVersion = mcpgo.LATEST_PROTOCOL_VERSION
	init.Params.ClientInfo = mcpgo.Implementation{Name: "http-test", Version: "1"}
	if _, err := c.Initialize(t.Context(), init); err != nil {
		t.Fatalf("initialize: %v", err)
	}
	tools, err := c.ListTools(t.Context(), mcpgo.ListToolsRequest{})
	if err != nil || len(tools.Tools) == 0 {
		t.Fatalf("tools/list: %v (%d tools)", err, len(tools.Tools))
	}
}

func TestIntegrationHTTPStreamableMCPGo(t *testing.T) {
	t.Parallel()
	f := newHTTPFixture(t, time.Minute)
	c, err := mcpclient.NewStreamableHttpClient(f.url + "/mcp")
	if err != nil {
		t.Fatal(err)
	}
	startMCPGo(t, c)
	statefulScenario(t, f, mcpgoCaller(c))
	_ = c.Close() // sends DELETE: the session ends at once
	f.waitNoSandboxes(t, "after the streamable-HTTP client closed")
}

func TestIntegrationHTTPSSEMCPGo(t *testing.T) {
	t.Parallel()
	f := newHTTPFixture(t, time.Minute)
	c, err := mcpclient.NewSSEMCPClient(f.url + "/sse")
	if err != nil {
		t.Fatal(err)
	}
	startMCPGo(t, c)
	statefulScenario(t, f, mcpgoCaller(c))
	_ = c.Close() // the SSE stream closes: the session ends
	f.waitNoSandboxes(t, "after the SSE client disconnected")
}

// TestIntegrationHTTPGoSDKDefaultProtocol: go-sdk v1.8.0 defaults to the stateless protocol
// (2026-07-28); the server's version list makes it fall back to a session-bearing one, and
// state is kept across calls.
func TestIntegrationHTTPGoSDKDefaultProtocol(t *testing.T) {
	t.Parallel()
	f := newHTTPFixture(t, time.Minute)
	client := sdk.NewClient(&sdk.Implementation{Name: "gosdk-http-test", Version: "1"}, nil)
	session, err := client.Connect(t.Context(), &sdk.StreamableClientTransport{Endpoint: f.url + "/mcp", DisableStandaloneSSE: true}, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	if v := session.InitializeResult().ProtocolVersion; v == "2026-07-28" || v == "" {
		t.Fatalf("negotiated protocol %q: the stateless version must not be accepted", v)
	}
	statefulScenario(t, f, func(ctx context.Context, name string, args map[string]any) (string, bool, error) {
		res, err := session.CallTool(ctx, &sdk.CallToolParams{Name: name, Arguments: args})
		if err != nil {
			return "", false, err
		}
		var b strings.Builder
		for _, c := range res.Content {
			if tc, ok := c.(*sdk.TextContent); ok {
				b.WriteString(tc.Text)
			}
		}
		return b.String(), res.IsError, nil
	})
	_ = session.Close()
	f.waitNoSandboxes(t, "after the go-sdk client closed")
}

// TestIntegrationHTTPIdleSessionReaped: a client that vanishes without DELETE loses its
// session (and sandbox) after the idle TTL, and its old session id is refused afterwards.
func TestIntegrationHTTPIdleSessionReaped(t *testing.T) {
	t.Parallel()
	f := newHTTPFixture(t, 2*time.Second)
	c, err := mcpclient.NewStreamableHttpClient(f.url+"/mcp", transport.WithHTTPTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	startMCPGo(t, c)
	call := mcpgoCaller(c)
	if _, isErr, err := call(t.Context(), "shell_executor", map[string]any{"command": "echo hi"}); err != nil || isErr {
		t.Fatalf("call: %v", err)
	}
	// No Close: the client just goes quiet.
	f.waitNoSandboxes(t, "after the idle TTL passed")
	if _, _, err := call(t.Context(), "shell_executor", map[string]any{"command": "echo hi"}); err == nil {
		t.Fatal("a swept session id was accepted again")
	}
}
