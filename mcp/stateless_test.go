package mcp_test

import (
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	mcpgo "github.com/mark3labs/mcp-go/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/mcp"
	"github.com/enclave-mcp/enclave-mcp/schema"
	"github.com/enclave-mcp/enclave-mcp/session"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// The second principal of the stateless fixture, beside httpTestToken's.
const (
	bobToken = "stateless-test-bob-token"
	bobName  = "bob"
)

// newStatelessFixture is newHTTPFixture's server with the REST API's credentials: the
// operator token (httpTestToken) and bob's, each its own principal on /mcp, as serve wires
// them (httpapi.PrincipalOf).
func newStatelessFixture(t *testing.T, ttl time.Duration) *httpFixture {
	t.Helper()
	return newStatelessFixtureConfig(t, ttl, mcp.Config{})
}

// newStatelessFixtureConfig is newStatelessFixture with cfg's options for the MCP server.
func newStatelessFixtureConfig(t *testing.T, ttl time.Duration, cfg mcp.Config) *httpFixture {
	t.Helper()
	engine, manager := notebookManager(t)
	core, err := session.New(session.Config{Manager: manager, Tools: tools.All(), DefaultTimeout: 30})
	if err != nil {
		t.Fatal(err)
	}
	rest, err := httpapi.New(httpapi.Config{Core: core, Token: httpTestToken, Tokens: []httpapi.Credential{{Name: bobName, Token: bobToken}}})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Core = core
	srv, err := mcp.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	url := serveStreamable(t, srv, mcp.HTTPOptions{SessionIdleTTL: ttl, Principal: httpapi.PrincipalOf}, rest.RequireAuth)
	return &httpFixture{url: url, engine: engine, manager: manager}
}

type tokenTransport struct {
	token string
	base  http.RoundTripper
}

func (b tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.base.RoundTrip(r)
}

// goSDKConnect connects go-sdk v1.8.0's client with token; version "" is its default.
func goSDKConnect(t *testing.T, url, token, version string) *sdk.ClientSession {
	t.Helper()
	client := sdk.NewClient(&sdk.Implementation{Name: "gosdk-stateless-test", Version: "1"}, nil)
	cs, err := client.Connect(t.Context(), &sdk.StreamableClientTransport{
		Endpoint: url + "/mcp", HTTPClient: &http.Client{Transport: tokenTransport{token: token, base: http.DefaultTransport}},
		DisableStandaloneSSE: true,
	}, &sdk.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

// sdkCall calls a tool and returns its text, whether it failed, and its structured content.
func sdkCall(t *testing.T, cs *sdk.ClientSession, name string, args map[string]any) (string, bool, map[string]any) {
	t.Helper()
	res, err := cs.CallTool(t.Context(), &sdk.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*sdk.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	var structured map[string]any
	if res.StructuredContent != nil {
		raw, _ := json.Marshal(res.StructuredContent)
		_ = json.Unmarshal(raw, &structured)
	}
	return b.String(), res.IsError, structured
}

// toolSchemas lists tools/list's tools by name, each with its input schema decoded.
func toolSchemas(t *testing.T, cs *sdk.ClientSession) map[string]map[string]any {
	t.Helper()
	list, err := cs.ListTools(t.Context(), nil)
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	out := map[string]map[string]any{}
	for _, tool := range list.Tools {
		raw, _ := json.Marshal(tool.InputSchema)
		var s map[string]any
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatalf("%s's schema %s: %v", tool.Name, raw, err)
		}
		out[tool.Name] = s
	}
	return out
}

// hasHandleArg reports whether a schema has the handle property, and whether it is required.
func hasHandleArg(s map[string]any) (has, required bool) {
	props, _ := s["properties"].(map[string]any)
	_, has = props[mcp.HandleArg]
	req, _ := s["required"].([]any)
	return has, slices.Contains(req, any(mcp.HandleArg))
}

// TestIntegrationHTTPStatelessGoSDK: go-sdk v1.8.0's default client speaks the stateless
// protocol (2026-07-28: server/discover, no session) over real HTTP, against a real engine.
// It sees the handle tools and every tool with a required "sandbox" argument; a call
// without a handle, with a bad one, or with another token's gets an error that says what
// to do; a handle keeps a sandbox's files between calls; its files are resources under
// the handle, for its token only; sandbox_close removes the container.
func TestIntegrationHTTPStatelessGoSDK(t *testing.T) {
	t.Parallel()
	f := newStatelessFixture(t, time.Minute)
	alice := goSDKConnect(t, f.url, httpTestToken, "")
	if v := alice.InitializeResult().ProtocolVersion; v != "2026-07-28" {
		t.Fatalf("go-sdk's default client negotiated %q, want the stateless 2026-07-28", v)
	}
	bob := goSDKConnect(t, f.url, bobToken, "")

	schemas := toolSchemas(t, alice)
	for _, name := range []string{"sandbox_open", "sandbox_close"} {
		if schemas[name] == nil {
			t.Errorf("tools/list lacks %s", name)
		}
	}
	for name, s := range schemas {
		if name == "sandbox_open" {
			continue
		}
		if has, required := hasHandleArg(s); !has || !required {
			t.Errorf("%s's stateless schema: handle property %v, required %v; want both", name, has, required)
		}
	}

	code := func(c string) map[string]any { return map[string]any{"code": c} }
	text, isErr, _ := sdkCall(t, alice, "python_executor", code("print(1)"))
	if !isErr || !strings.Contains(text, "sandbox_open") || !strings.Contains(text, `"sandbox"`) {
		t.Errorf("a call without a handle: isError=%v %q; want an error saying to call sandbox_open and pass \"sandbox\"", isErr, text)
	}
	if n := len(f.manager.List()); n != 0 {
		t.Errorf("%d sandboxes exist before sandbox_open, want none", n)
	}

	text, isErr, structured := sdkCall(t, alice, "sandbox_open", nil)
	handle, _ := structured[mcp.HandleArg].(string)
	if isErr || handle == "" || !strings.Contains(text, handle) {
		t.Fatalf("sandbox_open: isError=%v %q %v", isErr, text, structured)
	}
	in := func(args map[string]any) map[string]any { args[mcp.HandleArg] = handle; return args }

	text, isErr, _ = sdkCall(t, alice, "python_executor", in(code("open('state.txt', 'w').write('kept on disk')\nprint(6*7)")))
	if isErr || strings.TrimSpace(text) != "42" {
		t.Fatalf("first python call: isError=%v %q", isErr, text)
	}
	text, isErr, _ = sdkCall(t, alice, "python_executor", in(code("print(open('state.txt').read())")))
	if isErr || strings.TrimSpace(text) != "kept on disk" {
		t.Fatalf("the second call does not see the first's file: isError=%v %q", isErr, text)
	}
	_, _, res := sdkCall(t, alice, "shell_executor", in(map[string]any{"command": "cat /proc/self/mountinfo /proc/self/cgroup"}))
	output, _ := res["output"].(string)
	m := containerIDPattern.FindStringSubmatch(output)
	if m == nil {
		t.Fatalf("no container ID in the sandbox's mountinfo/cgroup")
	}
	container := m[1]

	for _, tc := range []struct {
		name  string
		args  map[string]any
		wants []string
	}{
		{"unknown handle", map[string]any{"code": "print(1)", "sandbox": "sb-nope"}, []string{`"sb-nope"`, "not found", "sandbox_open"}},
		{"handle not a string", map[string]any{"code": "print(1)", "sandbox": 7}, []string{`"sandbox"`, "non-empty string", "7"}},
		{"empty handle", map[string]any{"code": "print(1)", "sandbox": ""}, []string{`"sandbox"`, "non-empty string"}},
	} {
		if text, isErr, _ := sdkCall(t, alice, "python_executor", tc.args); !isErr || !containsAll(text, tc.wants...) {
			t.Errorf("%s: isError=%v %q; want an error with %q", tc.name, isErr, text, tc.wants)
		}
	}
	if text, isErr, _ := sdkCall(t, bob, "python_executor", in(code("print(open('state.txt').read())"))); !isErr || !containsAll(text, handle, "not found") || strings.Contains(text, "kept on disk") {
		t.Errorf("bob uses alice's handle: isError=%v %q; want not found", isErr, text)
	}
	if text, isErr, _ := sdkCall(t, bob, "sandbox_close", map[string]any{"sandbox": handle}); !isErr || !strings.Contains(text, "not found") {
		t.Errorf("bob closes alice's handle: isError=%v %q; want not found", isErr, text)
	}

	if tmpl, err := alice.ListResourceTemplates(t.Context(), nil); err != nil || len(tmpl.ResourceTemplates) != 1 ||
		tmpl.ResourceTemplates[0].URITemplate != mcp.HandleURIPrefix+"{sandbox}/{+path}" {
		t.Errorf("resources/templates/list: %v; want the handles' template only", err)
	}
	uri := mcp.HandleURIPrefix + handle + "/state.txt"
	list, err := alice.ListResources(t.Context(), nil)
	if err != nil || !slices.ContainsFunc(list.Resources, func(r *sdk.Resource) bool { return r.URI == uri }) {
		t.Errorf("resources/list: %v; want %s among %d resources", err, uri, len(list.Resources))
	}
	if read, err := alice.ReadResource(t.Context(), &sdk.ReadResourceParams{URI: uri}); err != nil || len(read.Contents) != 1 || read.Contents[0].Text != "kept on disk" {
		t.Errorf("resources/read %s: %+v, %v", uri, read, err)
	}
	if list, err := bob.ListResources(t.Context(), nil); err != nil || len(list.Resources) != 0 {
		t.Errorf("bob's resources/list: %v, %v; want none (alice's sandbox is not his)", list, err)
	}
	if _, err := bob.ReadResource(t.Context(), &sdk.ReadResourceParams{URI: uri}); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("bob reads alice's file: %v; want not found", err)
	}

	text, isErr, _ = sdkCall(t, alice, "sandbox_close", map[string]any{"sandbox": handle})
	if isErr {
		t.Fatalf("sandbox_close: %s", text)
	}
	e2eAssertGone(t, container)
	if text, isErr, _ := sdkCall(t, alice, "python_executor", in(code("print(1)"))); !isErr || !strings.Contains(text, "not found") {
		t.Errorf("a closed handle: isError=%v %q; want not found", isErr, text)
	}
	f.waitNoSandboxes(t, "after sandbox_close")
}

// TestIntegrationHTTPStatelessHandleIdle: a handle nobody calls ends after the idle TTL,
// and its container with it.
func TestIntegrationHTTPStatelessHandleIdle(t *testing.T) {
	t.Parallel()
	f := newStatelessFixture(t, 2*time.Second)
	cs := goSDKConnect(t, f.url, httpTestToken, "")
	_, isErr, structured := sdkCall(t, cs, "sandbox_open", nil)
	handle, _ := structured[mcp.HandleArg].(string)
	if isErr || handle == "" {
		t.Fatalf("sandbox_open: %v", structured)
	}
	f.waitNoSandboxes(t, "after the handle's idle TTL")
	if text, isErr, _ := sdkCall(t, cs, "shell_executor", map[string]any{"command": "true", "sandbox": handle}); !isErr || !strings.Contains(text, "not found") {
		t.Errorf("an expired handle: isError=%v %q; want not found", isErr, text)
	}
}

// TestIntegrationHTTPGoSDKSessionProtocol: go-sdk pinned to 2025-11-25 keeps a session,
// whose tools are exactly today's: no handle tools, no "sandbox" argument; state is kept
// across calls without one.
func TestIntegrationHTTPGoSDKSessionProtocol(t *testing.T) {
	t.Parallel()
	f := newHTTPFixture(t, time.Minute)
	cs := goSDKConnect(t, f.url, httpTestToken, "2025-11-25")
	if v := cs.InitializeResult().ProtocolVersion; v != "2025-11-25" {
		t.Fatalf("negotiated %q, want 2025-11-25", v)
	}
	assertSessionSchemas(t, toolSchemas(t, cs))
	goSDKScenario(t, f, cs)
	f.waitNoSandboxes(t, "after the go-sdk client closed")
}

// assertSessionSchemas: a session's tools are those it always had, each with exactly the
// schema the tool's definition exports: no handle tools, no handle property.
func assertSessionSchemas(t *testing.T, schemas map[string]map[string]any) {
	t.Helper()
	for name, s := range schemas {
		if name == "sandbox_open" || name == "sandbox_close" {
			t.Errorf("a session lists the stateless clients' tool %s", name)
		}
		if has, _ := hasHandleArg(s); has {
			t.Errorf("%s's schema in a session has the handle property", name)
		}
	}
	for _, def := range tools.All() {
		raw, err := schema.MCP(def.Schema())
		if err != nil {
			t.Fatal(err)
		}
		var want map[string]any
		if err := json.Unmarshal(raw, &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(schemas[def.Name], want) {
			t.Errorf("%s's schema in a session:\n got %v\nwant %v", def.Name, schemas[def.Name], want)
		}
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// TestIntegrationHTTPStatelessMCPGo: mcp-go v1.2.1's client, left at its default protocol,
// is stateless too (server/discover), and keeps a sandbox's files between calls through a
// handle.
func TestIntegrationHTTPStatelessMCPGo(t *testing.T) {
	t.Parallel()
	f := newStatelessFixture(t, time.Minute)
	c, err := mcpclient.NewStreamableHttpClient(f.url+"/mcp", transport.WithHTTPHeaders(authHeader()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	startMCPGoAt(t, c, "")
	if v := c.ProtocolVersion(); v != "2026-07-28" {
		t.Fatalf("mcp-go's default client negotiated %q, want the stateless 2026-07-28", v)
	}
	call := mcpgoCaller(c)
	req := mcpgo.CallToolRequest{}
	req.Params.Name = "sandbox_open"
	opened, err := c.CallTool(t.Context(), req)
	if err != nil || opened.IsError {
		t.Fatalf("sandbox_open: %v %+v", err, opened)
	}
	raw, _ := json.Marshal(opened.StructuredContent)
	var out struct{ Sandbox string }
	if err := json.Unmarshal(raw, &out); err != nil || out.Sandbox == "" {
		t.Fatalf("sandbox_open's structuredContent %s: %v", raw, err)
	}
	handle := out.Sandbox
	if text, isErr, err := call(t.Context(), "file_operation", map[string]any{"operation": "write", "file_path": "a.txt", "content": "via mcp-go", "sandbox": handle}); err != nil || isErr {
		t.Fatalf("write: %v %q", err, text)
	}
	if text, isErr, err := call(t.Context(), "python_executor", map[string]any{"code": "print(open('a.txt').read())", "sandbox": handle}); err != nil || isErr || strings.TrimSpace(text) != "via mcp-go" {
		t.Fatalf("read in the next call: %v %v %q", err, isErr, text)
	}
	if text, isErr, err := call(t.Context(), "sandbox_close", map[string]any{"sandbox": handle}); err != nil || isErr {
		t.Fatalf("sandbox_close: %v %q", err, text)
	}
	f.waitNoSandboxes(t, "after sandbox_close")
}
