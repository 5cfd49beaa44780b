package mcp

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// HTTPOptions configures the HTTP transports.
type HTTPOptions struct {
	// SessionIdleTTL ends a streamable-HTTP session (and removes its sandboxes) after this long
	// without a request: many clients never send DELETE when they close. 0 means 30 minutes.
	SessionIdleTTL time.Duration
}

// Transports are the MCP HTTP endpoints: mount Streamable at /mcp, and SSE at /sse and
// /message. Shutdown ends their sessions' streams.
type Transports struct {
	Streamable *server.StreamableHTTPServer
	SSE        *server.SSEServer
}

// HTTPTransports builds the streamable HTTP and SSE transports over this server.
//
// Streamable HTTP is restricted to the protocol versions that have an initialize handshake.
// The newest version (2026-07-28) is stateless: it carries no session id, so every request
// would get a throwaway session and the agent's sandbox (its files, its state) would vanish
// between calls. Clients that default to it, such as go-sdk v1.8.0, negotiate down to
// 2025-11-25 and keep a session. Explicit sandbox handles would be the other way out, but
// they would put a secret in every tool call the model writes.
func (s *Server) HTTPTransports(opts HTTPOptions) Transports {
	if opts.SessionIdleTTL == 0 {
		opts.SessionIdleTTL = 30 * time.Minute
	}
	streamable := server.NewStreamableHTTPServer(s.mcp,
		server.WithEndpointPath("/mcp"),
		server.WithStreamableHTTPProtocolVersions(mcp.LegacyProtocolVersions()...),
		server.WithSessionIdManager(s.sessions),
		server.WithSessionIdleTTL(opts.SessionIdleTTL),
		server.WithStreamableHTTPLogger(s.log),
	)
	sse := server.NewSSEServer(s.mcp,
		server.WithSSEEndpoint("/sse"),
		server.WithMessageEndpoint("/message"),
		server.WithUseFullURLForMessageEndpoint(false),
		server.WithKeepAlive(true),
	)
	return Transports{Streamable: streamable, SSE: sse}
}

// Mount registers the transports on mux: /mcp, /sse and /message, each wrapped by guard
// (the token check; nil for none).
func (t Transports) Mount(mux *http.ServeMux, guard func(http.Handler) http.Handler) {
	if guard == nil {
		guard = func(h http.Handler) http.Handler { return h }
	}
	mux.Handle("/mcp", guard(t.Streamable))
	mux.Handle("/sse", guard(t.SSE.SSEHandler()))
	mux.Handle("/message", guard(t.SSE.MessageHandler()))
}

// sessionIDs mints streamable-HTTP session ids and remembers which have ended. mcp-go's
// default manager would accept any well-formed id, including one whose session was swept
// for idleness, and the client would then run without a registered session (so without
// the hook that removes its sandboxes). Here an ended id is refused, and the client starts
// a new session.
type sessionIDs struct {
	mu    sync.Mutex
	live  map[string]bool
	ended map[string]time.Time
}

// endedMemory is how long an ended id is remembered as ended (and answered 404, so the
// client re-initializes) before it is forgotten, to keep the map small on a long-lived server.
const endedMemory = time.Hour

var errUnknownSession = errors.New("unknown session id")

func newSessionIDs() *sessionIDs {
	return &sessionIDs{live: map[string]bool{}, ended: map[string]time.Time{}}
}

// Generate implements server.SessionIdManager.
func (m *sessionIDs) Generate() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	id := "mcp-" + hex.EncodeToString(b[:])
	m.mu.Lock()
	m.live[id] = true
	m.mu.Unlock()
	return id
}

// Validate implements server.SessionIdManager.
func (m *sessionIDs) Validate(id string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.live[id] {
		return false, nil
	}
	if _, ok := m.ended[id]; ok {
		return true, nil
	}
	return false, errUnknownSession
}

// Terminate implements server.SessionIdManager (a client's DELETE).
func (m *sessionIDs) Terminate(id string) (bool, error) {
	m.end(id)
	return false, nil
}

// end marks id as ended, whether by DELETE, idle sweep or disconnect.
func (m *sessionIDs) end(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if m.live[id] {
		delete(m.live, id)
		m.ended[id] = now
	}
	for old, at := range m.ended {
		if now.Sub(at) > endedMemory {
			delete(m.ended, old)
		}
	}
}
