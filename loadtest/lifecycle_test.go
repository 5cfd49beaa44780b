package loadtest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/enclave-mcp/enclave-mcp/loadtest"
)

// TestIntegrationLongCallOutlivesSessionTTL: the streamable-HTTP idle TTL is for clients
// that went away, so a session whose call is still running is not idle, however long the
// call takes (up to the 3600 s a call may ask for, while the TTL defaults to 30 min).
func TestIntegrationLongCallOutlivesSessionTTL(t *testing.T) {
	t.Parallel()
	const ttl = 2 * time.Second
	srv := startServer(t, "--session-ttl", ttl.String())
	s := connect(t, srv, loadtest.Streamable)
	res, err := call(t.Context(), s, "shell_executor", map[string]any{"command": "sleep 6 && echo finished", "timeout": 30})
	if err != nil {
		t.Fatal(err)
	}
	if res.IsError || !strings.Contains(res.Text, "finished") {
		t.Errorf("a 6 s call under a %s session TTL was cut short (the session was swept mid-call): isError=%v %q", ttl, res.IsError, res.Text)
	}
}

// TestIntegrationMCPGoCloseEndsSession: an mcp-go streamable client given the token the
// documented way (WithHTTPHeaders) ends its session on Close, and the session's sandbox
// goes with it, instead of living on until the session TTL (30 minutes by default).
func TestIntegrationMCPGoCloseEndsSession(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	c, err := mcpclient.NewStreamableHttpClient(srv.URL+"/mcp",
		transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + srv.Token}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	init := mcp.InitializeRequest{}
	// The session protocol (initialize, Mcp-Session-Id): one sandbox per session, no handles.
	init.Params.ProtocolVersion = mcp.LATEST_LEGACY_PROTOCOL_VERSION
	init.Params.ClientInfo = mcp.Implementation{Name: "close-test", Version: "1"}
	if _, err := c.Initialize(ctx, init); err != nil {
		t.Fatal(err)
	}
	req := mcp.CallToolRequest{}
	req.Params.Name, req.Params.Arguments = "shell_executor", map[string]any{"command": "true"}
	if res, err := c.CallTool(ctx, req); err != nil || res.IsError {
		t.Fatalf("call: %v %+v", err, res)
	}
	onlySandbox(t, srv.PID())

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer wcancel()
	if n, err := loadtest.WaitSandboxes(wctx, srv.PID(), 0); err != nil {
		t.Errorf("%d sandbox still exists 10 s after the client closed its session: its DELETE was refused? (%v)", n, err)
	}
}
