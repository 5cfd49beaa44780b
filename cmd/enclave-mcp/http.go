package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/mcp"
)

// httpToken returns the token the HTTP endpoints require. Without one, a loopback listener
// gets a random token (printed at start) and any other address is refused: a remote
// endpoint is never open.
func httpToken(addr, token string) (string, bool, error) {
	if token != "" {
		return token, false, nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", false, fmt.Errorf("--http %q: want HOST:PORT, e.g. 127.0.0.1:8000: %w", addr, err)
	}
	ip := net.ParseIP(host)
	if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return "", false, fmt.Errorf("--http %s listens beyond this machine: set --token (or ENCLAVE_TOKEN), or bind 127.0.0.1", addr)
	}
	var b [24]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:]), true, nil
}

// httpServer is the one listener that serves MCP (/mcp, /sse, /message) beside the REST API.
type httpServer struct {
	addr       string
	token      string
	generated  bool
	mcp        *mcp.Server
	rest       *httpapi.API // the REST manager API, /health included; it checks the token itself
	sessionTTL time.Duration
	log        *slog.Logger
}

// serve listens until ctx ends, then shuts the transports down (their sessions end, and
// with them the sessions' sandboxes).
func (h *httpServer) serve(ctx context.Context) error {
	transports := h.mcp.HTTPTransports(ctx, mcp.HTTPOptions{SessionIdleTTL: h.sessionTTL})
	mux := http.NewServeMux()
	transports.Mount(mux, func(next http.Handler) http.Handler { return httpapi.RequireToken(h.token, next) })
	mux.Handle("/", h.rest.Handler())

	ln, err := net.Listen("tcp", h.addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", h.addr, err)
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(h.log.Handler(), slog.LevelWarn),
	}
	base := "http://" + ln.Addr().String()
	h.log.Info("serving MCP and the REST API over HTTP", "mcp", base+"/mcp", "sse", base+"/sse", "rest", base+"/sandboxes")
	if h.generated {
		h.log.Info("no --token given: generated one for this run", "token", h.token)
	}

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
