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

	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/mcp"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// httpTestToken is the bearer token every HTTP fixture requires, checked by
// httpapi.RequireToken as in production.
const httpTestToken = "http-test-token"

// httpFixture is a real server on a real listener, over a real engine, wired as serve wires
// it (one sandbox per session, for every tool), behind the production token check.
type httpFixture struct {
	url     string
	engine  *sandbox.Docker
	manager *sandbox.Manager
}

func newHTTPFixture(t *testing.T, sessionTTL time.Duration) *httpFixture {
	t.Helper()
	srv, engine, manager := notebookServer(t)
	transports := srv.HTTPTransports(t.Context(), mcp.HTTPOptions{SessionIdleTTL: sessionTTL})
	mux := http.NewServeMux()
	transports.Mount(mux, func(next http.Handler) http.Handler { return httpapi.RequireToken(httpTestToken, next) })
	ts := httptest.NewServer(mux)
	t.Cleanup(func() {
		ctx := context.Background()
		_ = transports.SSE.Shutdown(ctx)
		_ = transports.Streamable.Shutdown(ctx)
		ts.Close()
	})
	return &httpFixture{url: ts.URL, engine: engine, manager: manager}
}

// serveStreamable serves srv's streamable HTTP transport (opts) on a test listener behind
// guard (nil: none) until the test ends, and returns the listener's URL.
func serveStreamable(t *testing.T, srv *mcp.Server, opts mcp.HTTPOptions, guard func(http.Handler) http.Handler) string {
	t.Helper()
	transports := srv.HTTPTransports(t.Context(), opts)
	mux := http.NewServeMux()
	transports.Mount(mux, guard)
	ts := httptest.NewServer(mux)
	t.Cleanup(func() {
		_ = transports.Streamable.Shutdown(context.Background())
		ts.Close()
	})
	return ts.URL
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
	t.Fatalf("sandboxes still exist %s: manager holds %d", why, len(f.manager.List()))
}

// authHeader is the header every client sends.
func authHeader() map[string]string {
	return map[string]string{"Authorization": "Bearer " + httpTestToken}
}

// bearerTransport adds the token to every request of a go-sdk client.
type bearerTransport struct{ base http.RoundTripper }

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+httpTestToken)
	return b.base.RoundTrip(r)
}

func bearerClient() *http.Client {
	return &http.Client{Transport: bearerTransport{base: http.DefaultTransport}}
}

// toolCaller is the part of a client the scenario needs: one tool call, returning its text
// and whether it failed.
type toolCaller func(ctx context.Context, name string, args map[string]any) (text string, isError bool, err error)

// statefulScenario: Python runs; a file written in one call is read back by code in the
// next, so the session kept its sandbox; a notebook cell sees the variable the previous
// cell set, and the file. While the session is open it holds exactly one sandbox.
func statefulScenario(t *testing.T, f *httpFixture, call toolCaller) {
	t.Helper()
	ctx := t.Context()
	text, isErr, err := call(ctx, "python_executor", map[string]any{"code": "print(6*7)"})
	if err != nil || isErr || strings.TrimSpace(text) != "42" {
		t.Fatalf("python: err=%v isError=%v text=%q", err, isErr, text)
	}
	text, isErr, err = call(ctx, "file_operation", map[string]any{"operation": "write", "file_path": "state.txt", "content": "kept across calls"})
	if err != nil || isErr {
		t.Fatalf("write: %v %s", err, text)
	}
	text, isErr, err = call(ctx, "python_executor", map[string]any{"code": "print(open('state.txt').read())"})
	if err != nil || isErr || !strings.Contains(text, "kept across calls") {
		t.Fatalf("state lost between calls: err=%v isError=%v text=%q", err, isErr, text)
	}
	text, isErr, err = call(ctx, "file_operation", map[string]any{"operation": "read", "file_path": "state.txt"})
	if err != nil || isErr || !strings.Contains(text, "kept across calls") {
		t.Fatalf("read back: err=%v isError=%v text=%q", err, isErr, text)
	}
	if n := len(f.manager.List()); n != 1 {
		t.Fatalf("the session holds %d sandboxes before its notebook cell, want 1", n)
	}
	text, isErr, err = call(ctx, "notebook_executor", map[string]any{"code": "x = 21"})
	if err != nil || isErr {
		t.Fatalf("notebook x = 21: err=%v isError=%v text=%q", err, isErr, text)
	}
	text, isErr, err = call(ctx, "notebook_executor", map[string]any{"code": "x * 2"})
	if err != nil || isErr || strings.TrimSpace(text) != "42" {
		t.Fatalf("notebook x * 2: err=%v isError=%v text=%q, want 42", err, isErr, text)
	}
	text, isErr, err = call(ctx, "notebook_executor", map[string]any{"code": "open('state.txt').read()"})
	if err != nil || isErr || !strings.Contains(text, "kept across calls") {
		t.Fatalf("the notebook does not see the session's workspace: err=%v isError=%v text=%q", err, isErr, text)
	}
	if n := len(f.manager.List()); n != 1 {
		t.Fatalf("the session holds %d sandboxes, want 1 for every tool", n)
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

// startMCPGo connects c with the session protocol (initialize, Mcp-Session-Id): one
// sandbox per session, no handles.
func startMCPGo(t *testing.T, c *mcpclient.Client) {
	t.Helper()
	startMCPGoAt(t, c, mcpgo.LATEST_LEGACY_PROTOCOL_VERSION)
}

// startMCPGoAt connects c asking for protocol version ("" is mcp-go's default: the
// stateless 2026-07-28 when the server offers it) and checks that the tools are listed.
func startMCPGoAt(t *testing.T, c *mcpclient.Client, version string) {
	t.Helper()
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	init := mcpgo.InitializeRequest{}
	init.Params.ProtocolVersion = version
	init.Params.ClientInfo = mcpgo.Implementation{Name: "http-test", Version: "1"}
	if _, err := c.Initialize(t.Context(), init); err != nil {
		t.Fatalf("initialize: %v", err)
	}
	tools, err := c.ListTools(t.Context(), mcpgo.ListToolsRequest{})
	if err != nil || !hasTools(len(tools.Tools), func(i int) string { return tools.Tools[i].Name }) {
		t.Fatalf("tools/list: %v (%+v)", err, tools)
	}
}

// hasTools reports whether a tools/list answer names the tools the scenario calls.
func hasTools(n int, name func(int) string) bool {
	want := map[string]bool{"python_executor": false, "file_operation": false, "notebook_executor": false}
	for i := range n {
		if _, ok := want[name(i)]; ok {
			want[name(i)] = true
		}
	}
	for _, ok := range want {
		if !ok {
			return false
		}
	}
	return true
}

func TestIntegrationHTTPStreamableMCPGo(t *testing.T) {
	t.Parallel()
	f := newHTTPFixture(t, time.Minute)
	c, err := mcpclient.NewStreamableHttpClient(f.url+"/mcp", transport.WithHTTPHeaders(authHeader()))
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
	c, err := mcpclient.NewSSEMCPClient(f.url+"/sse", transport.WithHeaders(authHeader()))
	if err != nil {
		t.Fatal(err)
	}
	startMCPGo(t, c)
	statefulScenario(t, f, mcpgoCaller(c))
	_ = c.Close() // the SSE stream closes: the session ends
	f.waitNoSandboxes(t, "after the SSE client disconnected")
}

// goSDKScenario lists the tools and runs the scenario over a connected go-sdk session,
// then closes it.
func goSDKScenario(t *testing.T, f *httpFixture, session *sdk.ClientSession) {
	t.Helper()
	list, err := session.ListTools(t.Context(), nil)
	if err != nil || !hasTools(len(list.Tools), func(i int) string { return list.Tools[i].Name }) {
		t.Fatalf("tools/list: %v", err)
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
}

// TestIntegrationHTTPSSEGoSDK: go-sdk's SSE client (the 2024-11-05 transport) against
// mcp-go's SSE server, with its default protocol.
func TestIntegrationHTTPSSEGoSDK(t *testing.T) {
	t.Parallel()
	f := newHTTPFixture(t, time.Minute)
	client := sdk.NewClient(&sdk.Implementation{Name: "gosdk-sse-test", Version: "1"}, nil)
	session, err := client.Connect(t.Context(), &sdk.SSEClientTransport{Endpoint: f.url + "/sse", HTTPClient: bearerClient()}, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	// mcp-go's SSE server accepts go-sdk's default, the stateless 2026-07-28, and state is
	// still kept: an SSE session is its open stream, not a session id.
	t.Logf("negotiated protocol %s", session.InitializeResult().ProtocolVersion)
	goSDKScenario(t, f, session)
	f.waitNoSandboxes(t, "after the go-sdk SSE client closed")
}

// TestIntegrationHTTPIdleSessionReaped: a client that vanishes without DELETE loses its
// session (and sandbox) after the idle TTL, and its old session id is refused afterwards.
func TestIntegrationHTTPIdleSessionReaped(t *testing.T) {
	t.Parallel()
	f := newHTTPFixture(t, 2*time.Second)
	c, err := mcpclient.NewStreamableHttpClient(f.url+"/mcp", transport.WithHTTPTimeout(10*time.Second), transport.WithHTTPHeaders(authHeader()))
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

// TestIntegrationHTTPTokenRequired: without the token, neither transport lets a client in.
func TestIntegrationHTTPTokenRequired(t *testing.T) {
	t.Parallel()
	f := newHTTPFixture(t, time.Minute)
	for _, path := range []string{"/mcp", "/sse"} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, f.url+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without the token: %d, want 401", path, resp.StatusCode)
		}
	}
}

// TestHTTPSessionLimitPerPrincipal: one principal at its session limit cannot start another
// session, while another principal still can; the refusal is a JSON-RPC error naming the
// limit; a DELETE gives the slot back. (Issue 9, finding 6; the full server's limits are
// tested in cmd/enclave-mcp, TestHTTPSessionLimits.)
func TestHTTPSessionLimitPerPrincipal(t *testing.T) {
	t.Parallel()
	manager := sandbox.NewManager(sandbox.ManagerOptions{})
	t.Cleanup(func() { _ = manager.Close(context.Background()) })
	srv, err := mcp.New(mcp.Config{Tools: tools.All(), Manager: manager})
	if err != nil {
		t.Fatal(err)
	}
	url := serveStreamable(t, srv, mcp.HTTPOptions{
		MaxSessions: 10, MaxSessionsPerPrincipal: 1,
		Principal: func(r *http.Request) string { return r.Header.Get("X-Principal") },
	}, nil)
	open := func(principal string) (*mcpclient.Client, error) {
		c, err := mcpclient.NewStreamableHttpClient(url+"/mcp", transport.WithHTTPHeaders(map[string]string{"X-Principal": principal}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		if err := c.Start(t.Context()); err != nil {
			return nil, err
		}
		init := mcpgo.InitializeRequest{}
		// The session protocol (initialize, Mcp-Session-Id): one sandbox per session, no handles.
		init.Params.ProtocolVersion = mcpgo.LATEST_LEGACY_PROTOCOL_VERSION
		init.Params.ClientInfo = mcpgo.Implementation{Name: "limit-test", Version: "1"}
		_, err = c.Initialize(t.Context(), init)
		return c, err
	}
	alice, err := open("alice")
	if err != nil {
		t.Fatalf("alice's first session: %v", err)
	}
	if _, err := open("alice"); err == nil || !strings.Contains(err.Error(), "per-token limit") {
		t.Fatalf("alice's second session: %v; want an error naming the per-token limit", err)
	}
	if _, err := open("bob"); err != nil {
		t.Fatalf("bob is not held back by alice's limit: %v", err)
	}
	_ = alice.Close() // DELETE
	if _, err := open("alice"); err != nil {
		t.Fatalf("alice after her DELETE: %v", err)
	}
}
