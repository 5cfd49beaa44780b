package testenv

import (
	"testing"

	mcpclient "github.com/mark3labs/mcp-go/client"
	mcpgo "github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// InProcessMCP is an mcp-go client connected to srv in this process, its session
// initialized; it is closed when the test ends.
func InProcessMCP(t testing.TB, srv *server.MCPServer) *mcpclient.Client {
	t.Helper()
	c, err := mcpclient.NewInProcessClient(srv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	InitializeMCP(t, c)
	return c
}

// InitializeMCP starts c and initializes its session at the latest protocol version.
func InitializeMCP(t testing.TB, c *mcpclient.Client) {
	t.Helper()
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	init := mcpgo.InitializeRequest{}
	init.Params.ProtocolVersion = mcpgo.LATEST_PROTOCOL_VERSION
	init.Params.ClientInfo = mcpgo.Implementation{Name: "enclave-mcp-test", Version: "1"}
	if _, err := c.Initialize(t.Context(), init); err != nil {
		t.Fatalf("initializing the MCP session: %v", err)
	}
}
