package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	mcpgo "github.com/mark3labs/mcp-go/mcp"

	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/mcp"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// The HTTP layer's cost: one MCP tool call, `shell_executor echo hi`, through mcp-go's
// in-process client (the MCP server with no transport) and through its streamable-HTTP
// client against the same server on a loopback listener, with the token check on as in
// production. Each client is its own MCP session, so each has its own sandbox; the first
// call of each (which creates it) is not timed. The two kinds of call alternate, so that
// drift on the machine weighs on both alike.

// targetHTTPOverhead is the HTTP issue's target: what streamable HTTP adds to a tool call's
// median over the in-process path.
const targetHTTPOverhead = 2 * time.Millisecond

const benchHTTPToken = "enclave-bench-http-token"

func (b *bench) httpLayer(ctx context.Context) (err error) {
	manager := sandbox.NewManager(sandbox.ManagerOptions{
		Defaults: map[sandbox.Type]sandbox.Config{sandbox.TypeDocker: {Image: b.cfg.Image}},
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: sandbox.NewCreator(b.engine, sandbox.TypeDocker)},
	})
	defer func() {
		// The sessions' sandboxes; the tracker's engine-label sweep is the backstop.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if cerr := manager.Close(cctx); cerr != nil {
			err = errors.Join(err, fmt.Errorf("removing the MCP sessions' sandboxes: %w", cerr))
		}
	}()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := mcp.New(mcp.Config{Name: "enclave-bench", Tools: tools.All(), Manager: manager, DefaultTimeout: 30, Logger: quiet})
	if err != nil {
		return err
	}

	sctx, stop := context.WithCancel(ctx)
	defer stop()
	transports := srv.HTTPTransports(sctx, mcp.HTTPOptions{})
	mux := http.NewServeMux()
	transports.Mount(mux, func(next http.Handler) http.Handler { return httpapi.RequireToken(benchHTTPToken, next) })
	ts := httptest.NewServer(mux)
	defer func() {
		_ = transports.SSE.Shutdown(context.WithoutCancel(ctx))
		_ = transports.Streamable.Shutdown(context.WithoutCancel(ctx))
		ts.Close()
	}()

	inproc, err := mcpclient.NewInProcessClient(srv.MCPServer())
	if err != nil {
		return err
	}
	overHTTP, err := mcpclient.NewStreamableHttpClient(ts.URL+"/mcp",
		transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + benchHTTPToken}))
	if err != nil {
		return err
	}
	for _, c := range []*mcpclient.Client{inproc, overHTTP} {
		if err := startBenchClient(ctx, c); err != nil {
			return err
		}
		defer c.Close() // the HTTP client's sends DELETE: its session and sandbox end
	}

	name := "shell_executor `echo hi`: in-process | HTTP"
	fmt.Fprintf(os.Stderr, "  %-44s", name)
	// Warm-up, untimed: each session creates its sandbox.
	for _, c := range []*mcpclient.Client{inproc, overHTTP} {
		if err := echoHi(ctx, c); err != nil {
			fmt.Fprintln(os.Stderr, "failed")
			return fmt.Errorf("%s: warm-up: %w", name, err)
		}
	}
	var inSamples, httpSamples []time.Duration
	for i := range b.n {
		for _, c := range []*mcpclient.Client{inproc, overHTTP} {
			if err := ctx.Err(); err != nil {
				fmt.Fprintln(os.Stderr, "interrupted")
				return fmt.Errorf("%s: %w", name, context.Cause(ctx))
			}
			start := time.Now()
			if err := echoHi(ctx, c); err != nil {
				fmt.Fprintln(os.Stderr, "failed")
				return fmt.Errorf("%s: run %d of %d: %w", name, i+1, b.n, err)
			}
			took := time.Since(start)
			if c == inproc {
				inSamples = append(inSamples, took)
			} else {
				httpSamples = append(httpSamples, took)
			}
		}
	}
	in, over := summarize(inSamples), summarize(httpSamples)
	diff := over.Median - in.Median
	fmt.Fprintf(os.Stderr, "median %s | %s, HTTP adds %s over %d\n", fmtDur(in.Median), fmtDur(over.Median), fmtDur(diff), b.n)

	b.rep.add(row{
		Op:       "MCP tool call `shell_executor echo hi` over streamable HTTP (loopback, token check)",
		Ours:     over,
		Baseline: "same call, mcp-go in-process client (ratio: in-process / HTTP)",
		Docker:   in,
	})
	b.rep.add(row{
		Op: "HTTP layer's cost: HTTP minus in-process (median, p90, min each)",
		Ours: stats{
			N: b.n, Median: diff, P90: over.P90 - in.P90, Min: over.Min - in.Min,
		},
		Baseline: "—",
		Skipped:  "difference of the row above",
		Target:   targetHTTPOverhead,
	})
	return nil
}

func startBenchClient(ctx context.Context, c *mcpclient.Client) error {
	if err := c.Start(ctx); err != nil {
		return fmt.Errorf("starting an MCP client: %w", err)
	}
	init := mcpgo.InitializeRequest{}
	// The session protocol (initialize, Mcp-Session-Id): one sandbox per session, no handles.
	init.Params.ProtocolVersion = mcpgo.LATEST_LEGACY_PROTOCOL_VERSION
	init.Params.ClientInfo = mcpgo.Implementation{Name: "enclave-bench", Version: "1"}
	if _, err := c.Initialize(ctx, init); err != nil {
		return fmt.Errorf("MCP initialize: %w", err)
	}
	return nil
}

// echoHi is one tool call, checked.
func echoHi(ctx context.Context, c *mcpclient.Client) error {
	req := mcpgo.CallToolRequest{}
	req.Params.Name = "shell_executor"
	req.Params.Arguments = map[string]any{"command": "echo hi"}
	res, err := c.CallTool(ctx, req)
	if err != nil {
		return err
	}
	var text strings.Builder
	for _, content := range res.Content {
		if tc, ok := content.(mcpgo.TextContent); ok {
			text.WriteString(tc.Text)
		}
	}
	if res.IsError || text.String() != "hi\n" {
		return fmt.Errorf("shell_executor echo hi: isError %v, text %q", res.IsError, text.String())
	}
	return nil
}
