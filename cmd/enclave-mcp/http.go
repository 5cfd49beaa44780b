package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/netutil"

	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/mcp"
	"github.com/enclave-mcp/enclave-mcp/runtimeapi"
)

// httpLimits bound what one client can hold of the HTTP server: connections, bodies and
// MCP sessions. None of them cuts a stream: an SSE stream, a streamable-HTTP GET stream or
// a tool call may last as long as the longest call timeout (an hour).
type httpLimits struct {
	// ReadHeaderTimeout bounds a request's headers (slowloris).
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds the arrival of a whole request, headers and body (http.Server's
	// ReadTimeout). It does not cut streams: once a body has been read to its end (every
	// handler here reads its body whole before it answers), net/http clears the connection's
	// read deadline before it starts watching for the client going away, so a response may
	// then stream for as long as it needs. A body that stalls, or that a refused request
	// leaves to be drained, stays bounded.
	ReadTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that carries no request for this long.
	IdleTimeout time.Duration
	// MaxHeaderBytes caps a request's headers.
	MaxHeaderBytes int
	// MaxBodyBytes caps a JSON body: an MCP message on /mcp or /message, or a REST request.
	// REST tar uploads have their own, larger limit (client.Limits.MaxArchiveBytes).
	MaxBodyBytes int64
	// MaxSessions and MaxSessionsPerToken cap the live MCP sessions (0: no cap).
	MaxSessions, MaxSessionsPerToken int
	// MaxConns caps the open TCP connections (0: no cap). Past it, new connections wait in
	// the kernel's accept queue until one closes: a flood of idle connections costs the
	// server at most this many goroutines and buffers.
	MaxConns int
}

// Defaults of httpLimits. There is no WriteTimeout: it would cut streams, and a client
// that stops reading holds only its own response.
const (
	defaultReadHeaderTimeout = 10 * time.Second
	defaultReadTimeout       = 2 * time.Minute // a 64 MiB upload at ~0.5 MiB/s
	defaultIdleTimeout       = time.Minute
	defaultMaxHeaderBytes    = 64 << 10 // a token and a session id are well under 1 KiB
	// One token may hold half the server's sessions, so a second principal is never locked
	// out by the first. Sessions over --max-sandboxes (100) cannot run tools anyway; the
	// headroom is for clients that open sessions without calling tools.
	defaultMaxSessions         = 256
	defaultMaxConns            = 1024
	defaultMaxSessionsPerToken = 128
)

// httpServer is the one listener that serves MCP (/mcp, /sse, /message) beside the REST API,
// behind the perimeter (Origin and Host checks).
type httpServer struct {
	addr       string
	mcp        *mcp.Server
	rest       *httpapi.API    // the REST manager API, /health included; it checks the tokens itself
	sessions   *runtimeapi.API // sandbox_runtime's session API (/workspace/se/*); nil: not served
	perimeter  *httpapi.Perimeter
	sessionTTL time.Duration
	limits     httpLimits
	log        *slog.Logger
	// peers, when set, find the replica that holds a sandbox this one does not (the kube
	// backend with --kube-advertise-url); instance names this replica to them.
	peers    httpapi.Peers
	instance string
}

// serve listens on h.addr until ctx ends; see serveOn.
func (h *httpServer) serve(ctx context.Context) error {
	ln, err := net.Listen("tcp", h.addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", h.addr, err)
	}
	return h.serveOn(ctx, ln)
}

// handler is every endpoint behind the perimeter: MCP and the session API behind the REST
// API's token check (the same tokens, each its own principal), the REST API (which checks
// them itself) at "/".
func (h *httpServer) handler(ctx context.Context) (http.Handler, mcp.Transports) {
	transports := h.mcp.HTTPTransports(ctx, mcp.HTTPOptions{
		SessionIdleTTL:          h.sessionTTL,
		MaxBodyBytes:            h.limits.MaxBodyBytes,
		MaxSessions:             h.limits.MaxSessions,
		MaxSessionsPerPrincipal: h.limits.MaxSessionsPerToken,
		Principal:               httpapi.PrincipalOf,
		HostsCheckedOutside:     true, // by h.perimeter, with --allowed-hosts
	})
	mux := http.NewServeMux()
	transports.Mount(mux, h.rest.RequireAuth)
	if h.sessions != nil {
		h.sessions.Mount(mux, h.rest.RequireAuth)
	}
	mux.Handle("/", h.rest.Handler())
	return h.perimeter.Wrap(h.rest.Forward(mux, h.peers, h.instance)), transports
}

// serveOn serves on ln until ctx ends, then shuts the transports down (their sessions end,
// and with them the sessions' sandboxes).
func (h *httpServer) serveOn(ctx context.Context, ln net.Listener) error {
	if h.limits.MaxConns > 0 {
		ln = netutil.LimitListener(ln, h.limits.MaxConns)
	}
	handler, transports := h.handler(ctx)
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: h.limits.ReadHeaderTimeout,
		ReadTimeout:       h.limits.ReadTimeout,
		IdleTimeout:       h.limits.IdleTimeout,
		MaxHeaderBytes:    h.limits.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(h.log.Handler(), slog.LevelWarn),
	}
	base := "http://" + ln.Addr().String()
	h.log.Info("serving MCP and the REST API over HTTP", "mcp", base+"/mcp", "sse", base+"/sse", "rest", base+"/sandboxes",
		"sessions", base+runtimeapi.Prefix)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving HTTP: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	// SSE streams and streamable-HTTP sessions stay open: end them first, or Shutdown waits.
	_ = transports.SSE.Shutdown(sctx)
	_ = transports.Streamable.Shutdown(sctx)
	if err := h.rest.Close(sctx); err != nil {
		h.log.Warn("removing pooled sandboxes", "error", err)
	}
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutting down HTTP: %w", err)
	}
	return nil
}
