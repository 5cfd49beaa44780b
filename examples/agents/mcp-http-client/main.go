// Command mcp-http-client is an MCP client that uses an enclave-mcp server over streamable
// HTTP with a bearer token: it lists the tools, then runs a short session in its sandbox
// (write a file, run Python on it, read the output back). The session, and its sandbox, end
// when it disconnects.
//
//	enclave-mcp serve --http 127.0.0.1:8000 --token "$ENCLAVE_TOKEN" &
//	go run ./mcp-http-client -url http://127.0.0.1:8000/mcp
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	url := flag.String("url", "http://127.0.0.1:8000/mcp", "the server's streamable HTTP endpoint")
	token := flag.String("token", os.Getenv("ENCLAVE_TOKEN"), "bearer token (or ENCLAVE_TOKEN)")
	flag.Parse()
	if err := run(ctx, *url, *token, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "mcp-http-client:", err)
		os.Exit(1)
	}
}

// run connects, lists the tools and runs the demo session, printing what happens to out.
func run(ctx context.Context, url, token string, out io.Writer) error {
	c, err := client.NewStreamableHttpClient(url, transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + token}))
	if err != nil {
		return fmt.Errorf("creating client: %w", err)
	}
	defer c.Close() // sends DELETE: the server removes the session's sandbox at once
	if err := c.Start(ctx); err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	init := mcp.InitializeRequest{}
	// The session protocol (initialize, Mcp-Session-Id): one sandbox per session, no handles.
	init.Params.ProtocolVersion = mcp.LATEST_LEGACY_PROTOCOL_VERSION
	init.Params.ClientInfo = mcp.Implementation{Name: "mcp-http-client", Version: "1"}
	if _, err := c.Initialize(ctx, init); err != nil {
		return fmt.Errorf("initializing: %w", err)
	}
	tools, err := c.ListTools(ctx, mcp.ListToolsRequest{})
	if err != nil {
		return fmt.Errorf("listing tools: %w", err)
	}
	for _, t := range tools.Tools {
		fmt.Fprintf(out, "tool %s\n", t.Name)
	}

	steps := []struct {
		tool string
		args map[string]any
	}{
		{"file_operation", map[string]any{"operation": "write", "file_path": "numbers.txt", "content": "3\n1\n4\n1\n5\n9\n"}},
		{"python_executor", map[string]any{"code": "nums = [int(x) for x in open('numbers.txt')]\nprint('sum', sum(nums), 'max', max(nums))"}},
	}
	for _, s := range steps {
		text, err := call(ctx, c, s.tool, s.args)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s: %s\n", s.tool, strings.TrimSpace(text))
	}
	return nil
}

// call runs one tool and returns its text; a tool-level failure is an error here.
func call(ctx context.Context, c *client.Client, name string, args map[string]any) (string, error) {
	req := mcp.CallToolRequest{}
	req.Params.Name, req.Params.Arguments = name, args
	res, err := c.CallTool(ctx, req)
	if err != nil {
		return "", fmt.Errorf("calling %s: %w", name, err)
	}
	var b strings.Builder
	for _, content := range res.Content {
		if tc, ok := content.(mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	if res.IsError {
		return "", fmt.Errorf("%s failed: %s", name, b.String())
	}
	return b.String(), nil
}
