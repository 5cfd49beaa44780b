package mcp

import (
	"context"
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
	sessions   *sessionIDs
}

// HTTPTransports builds the streamable HTTP and SSE transports over this server; idle
// streamable sessions are swept until ctx ends.
//
// Streamable HTTP is restricted to the protocol versions that have an initialize handshake.
// The newest version (2026-07-28) is stateless: it carries no session id, so every request
// would get a throwaway session and the agent's sandbox (its files, its state) would vanish
// between calls. Clients that default to it, such as go-sdk v1.8.0, negotiate down to
// 2025-11-25 and keep a session. Explicit sandbox handles would be the other way out, but
// they would put a secret in every tool call the model writes.
func (s *Server) HTTPTransports(ctx context.Context, opts HTTPOptions) Transports {
	if opts.SessionIdleTTL == 0 {
		opts.SessionIdleTTL = 30 * time.Minute
	}
	// Not server.WithSessionIdleTTL: mcp-go's sweeper counts from the start of a session's
	// last request, so it ends a session whose call is still running (and with it the call's
	// sandbox) once the call outlasts the TTL. Ours counts a request in flight as activity.
	streamable := server.NewStreamableHTTPServer(s.mcp,
		server.WithEndpointPath("/mcp"),
		server.WithStreamableHTTPProtocolVersions(mcp.LegacyProtocolVersions()...),
		server.WithSessionIdManager(s.sessions),
		server.WithStreamableHTTPLogger(s.log),
	)
	go s.sessions.sweep(ctx, opts.SessionIdleTTL, streamable)
	sse := server.NewSSEServer(s.mcp,
		server.WithSSEEndpoint("/sse"),
		server.WithMessageEndpoint("/message"),
		server.WithUseFullURLForMessageEndpoint(false),
		server.WithKeepAlive(true),
	)
	return Transports{Streamable: streamable, SSE: sse, sessions: s.sessions}
}

// Mount registers the transports on mux: /mcp, /sse and /message, each wrapped by guard
// (the token check; nil for none).
func (t Transports) Mount(mux *http.ServeMux, guard func(http.Handler) http.Handler) {
	if guard == nil {
		guard = func(h http.Handler) http.Handler { return h }
	}
	mux.Handle("/mcp", endWithoutToken(guard(t.sessions.track(t.Streamable)), t.Streamable))
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
	live  map[string]*activity
	ended map[string]time.Time
}

// activity is what idleness is judged by: requests in flight, and when the last one began
// or ended.
type activity struct {
	inflight int
	last     time.Time
}

// endedMemory is how long an ended id is remembered as ended (and answered 404, so the
// client re-initializes) before it is forgotten, to keep the map small on a long-lived server.
const endedMemory = time.Hour

var errUnknownSession = errors.New("unknown session id")

func newSessionIDs() *sessionIDs {
	return &sessionIDs{live: map[string]*activity{}, ended: map[string]time.Time{}}
}

// Generate implements server.SessionIdManager.
func (m *sessionIDs) Generate() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	id := "mcp-" + hex.EncodeToString(b[:])
	m.mu.Lock()
	m.live[id] = &activity{last: time.Now()}
	m.mu.Unlock()
	return id
}

// Validate implements server.SessionIdManager.
func (m *sessionIDs) Validate(id string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.live[id] != nil {
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
	if m.live[id] != nil {
		delete(m.live, id)
		m.ended[id] = now
	}
	for old, at := range m.ended {
		if now.Sub(at) > endedMemory {
			delete(m.ended, old)
		}
	}
}

// endWithoutToken lets a DELETE that names a session end it without the token: the id is
// an unguessable secret only the authenticated client was given, and some clients (mcp-go
// v1.2.1) send their DELETE without the headers they were configured with. Refused, the
// DELETE would leave the session, and its sandboxes, to the idle TTL.
func endWithoutToken(guarded, end http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodDelete && r.Header.Get(server.HeaderKeySessionID) != "" {
			end.ServeHTTP(w, r)
			return
		}
		guarded.ServeHTTP(w, r)
	})
}

// track counts every request of a live session as activity for as long as it runs.
func (m *sessionIDs) track(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(server.HeaderKeySessionID)
		m.touch(id, +1)
		defer m.touch(id, -1)
		next.ServeHTTP(w, r)
	})
}

func (m *sessionIDs) touch(id string, delta int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a := m.live[id]; a != nil {
		a.inflight += delta
		a.last = time.Now()
	}
}

// idle lists the live sessions with nothing in flight and no request for ttl.
func (m *sessionIDs) idle(now time.Time, ttl time.Duration) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []string
	for id, a := range m.live {
		if a.inflight == 0 && now.Sub(a.last) > ttl {
			ids = append(ids, id)
		}
	}
	return ids
}

// sweep ends idle sessions until ctx ends. A session is ended the way a client's DELETE
// ends it, through the transport, so that mcp-go drops its per-session state and the
// unregister hook removes the session's sandboxes.
func (m *sessionIDs) sweep(ctx context.Context, ttl time.Duration, end http.Handler) {
	tick := time.NewTicker(max(ttl/4, 250*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			for _, id := range m.idle(now, ttl) {
				req, err := http.NewRequestWithContext(ctx, http.MethodDelete, "/mcp", nil)
				if err != nil {
					continue
				}
				req.Header.Set(server.HeaderKeySessionID, id)
				end.ServeHTTP(discardResponse{}, req)
			}
		}
	}
}

// discardResponse is the ResponseWriter of the sweeper's own DELETE requests.
type discardResponse struct{}

func (discardResponse) Header() http.Header         { return http.Header{} }
func (discardResponse) Write(p []byte) (int, error) { return len(p), nil }
func (discardResponse) WriteHeader(int)             {}
