package mcp

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// DefaultMaxBodyBytes is the body limit of an MCP request when HTTPOptions names none: room
// for a tool call carrying a few MiB of file content, small next to the server's memory.
const DefaultMaxBodyBytes = 8 << 20

// HTTPOptions configures the HTTP transports.
type HTTPOptions struct {
	// SessionIdleTTL ends a streamable-HTTP session (and removes its sandbox) after this long
	// without a request: many clients never send DELETE when they close. A stateless caller's
	// sandbox handle ends after this long without a call. 0 means 30 minutes.
	SessionIdleTTL time.Duration
	// MaxBodyBytes caps the body of a request to /mcp or /message; a larger one is answered
	// 413 before the transport reads it. 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxSessions caps the live MCP sessions: streamable-HTTP sessions plus open SSE streams.
	// A request that would start one more gets a JSON-RPC error (or 429) naming the limit.
	// 0 means no cap.
	MaxSessions int
	// MaxSessionsPerPrincipal caps the live sessions of one principal (see Principal) the same
	// way. 0 means no cap.
	MaxSessionsPerPrincipal int
	// Principal names who a request acts for, e.g. the token it authenticated with; sessions
	// are counted per principal, and a stateless caller's sandbox handles are its
	// principal's (another principal's request finds them not found). It runs after the guard given to Mount. nil counts every
	// request as one principal.
	Principal func(*http.Request) string
	// HostsCheckedOutside turns off mcp-go's own DNS-rebinding check (loopback connections
	// must name a loopback Host), for servers whose outer layer checks Host with an
	// allow-list of its own (httpapi.Perimeter): mcp-go's would refuse the allowed names.
	HostsCheckedOutside bool
}

// Transports are the MCP HTTP endpoints: mount Streamable at /mcp, and SSE at /sse and
// /message. Shutdown ends their sessions' streams.
type Transports struct {
	Streamable *server.StreamableHTTPServer
	SSE        *server.SSEServer
	sessions   *sessionIDs
	opts       HTTPOptions
	// tasks is the tasks extension's middleware (tasks.go).
	tasks func(http.Handler) http.Handler
}

// HTTPTransports builds the streamable HTTP and SSE transports over this server; idle
// streamable sessions, and stateless callers' idle sandbox handles, are swept until ctx
// ends.
//
// Streamable HTTP serves both protocol eras on one endpoint, decided per request by
// mcp-go: clients of 2025-11-25 and earlier initialize a session (Mcp-Session-Id) that owns
// one sandbox; clients of 2026-07-28 send each request on its own, without a session, and
// name their sandbox by a handle (stateless.go) that only their credential can use.
// server/discover advertises every version, so a client that asks for 2026-07-28 (go-sdk
// v1.8.0's and mcp-go's default) uses it; a client that pins an older version, or whose
// initialize asks for 2026-07-28, gets a session at 2025-11-25.
//
// In front of mcp-go, /mcp serves the tasks extension (tasks.go): tasks/get, tasks/update
// and tasks/cancel, and tool calls of declaring clients that outlive Config.TaskAfter.
func (s *Server) HTTPTransports(ctx context.Context, opts HTTPOptions) Transports {
	if opts.SessionIdleTTL == 0 {
		opts.SessionIdleTTL = 30 * time.Minute
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.Principal == nil {
		opts.Principal = func(*http.Request) string { return "" }
	}
	s.sessions.setLimits(opts.MaxSessions, opts.MaxSessionsPerPrincipal)
	// Not server.WithSessionIdleTTL: mcp-go's sweeper counts from the start of a session's
	// last request, so it ends a session whose call is still running (and with it the call's
	// sandbox) once the call outlasts the TTL. Ours counts a request in flight as activity.
	// The resolver (rather than a plain manager) lets a minted id take over the admission
	// ticket of the request that minted it, so the session counts against its principal.
	principal := opts.Principal
	streamable := server.NewStreamableHTTPServer(s.mcp,
		server.WithEndpointPath("/mcp"),
		server.WithSessionIdManagerResolver(s.sessions),
		server.WithStreamableHTTPLogger(s.log),
		server.WithDisableLocalhostProtection(opts.HostsCheckedOutside),
		server.WithHTTPContextFunc(func(ctx context.Context, r *http.Request) context.Context {
			return context.WithValue(ctx, principalKey{}, principal(r))
		}),
	)
	go s.handles.Sweep(ctx, opts.SessionIdleTTL)
	go s.sessions.sweep(ctx, opts.SessionIdleTTL, streamable, s.core.Tasks().Running)
	sse := server.NewSSEServer(s.mcp,
		server.WithSSEEndpoint("/sse"),
		server.WithMessageEndpoint("/message"),
		server.WithUseFullURLForMessageEndpoint(false),
		server.WithKeepAlive(true),
		server.WithSSEDisableLocalhostProtection(opts.HostsCheckedOutside),
	)
	tasks := func(next http.Handler) http.Handler { return s.tasksHTTP(principal, next) }
	return Transports{Streamable: streamable, SSE: sse, sessions: s.sessions, opts: opts, tasks: tasks}
}

// Mount registers the transports on mux: /mcp, /sse and /message, each wrapped by guard
// (the token check; nil for none). Behind the guard, bodies are capped and new sessions are
// admitted against the session limits.
func (t Transports) Mount(mux *http.ServeMux, guard func(http.Handler) http.Handler) {
	if guard == nil {
		guard = func(h http.Handler) http.Handler { return h }
	}
	limit := func(h http.Handler) http.Handler { return limitBody(t.opts.MaxBodyBytes, h) }
	mux.Handle("/mcp", endWithoutToken(guard(limit(t.sessions.admit(t.opts.Principal, t.sessions.track(t.tasks(countFlushes(t.Streamable)))))), t.Streamable))
	mux.Handle("/sse", guard(t.sessions.admit(t.opts.Principal, t.SSE.SSEHandler())))
	mux.Handle("/message", guard(limit(t.SSE.MessageHandler())))
}

// limitBody reads a request's body whole, up to max bytes, before next sees it: a larger
// body is answered 413 with a JSON-RPC error that names the limit. Both transports read a
// body whole anyway (mcp-go's streamable server with io.ReadAll, unbounded), so this costs
// no memory they would not spend, and bounds it.
func limitBody(max int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tooLarge := func() {
			w.Header().Set("Connection", "close") // do not drain the rest of the body
			writeRPCError(w, http.StatusRequestEntityTooLarge, nil, mcp.INVALID_REQUEST, fmt.Sprintf(
				"the request body is larger than the %s limit of MCP requests on this server; send less at once, "+
					"e.g. split file content across several files", formatBytes(max)))
		}
		if r.ContentLength > max {
			tooLarge()
			return
		}
		if r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			tooLarge()
			return
		}
		if err != nil {
			writeRPCError(w, http.StatusBadRequest, nil, mcp.PARSE_ERROR, "reading the request body: "+err.Error())
			return
		}
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(data)), int64(len(data))
		next.ServeHTTP(w, r)
	})
}

// formatBytes writes n in MiB when it is a whole number of them, else in bytes.
func formatBytes(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d-byte", n)
}

// writeRPCError answers with a JSON-RPC error response.
func writeRPCError(w http.ResponseWriter, status int, id any, code int, message string) {
	writeRPCErrorData(w, status, id, code, message, nil)
}

// sessionIDs mints streamable-HTTP session ids, remembers which have ended, and counts the
// live sessions (with open SSE streams) against the session limits. mcp-go's default manager
// would accept any well-formed id, including one whose session was swept for idleness, and
// the client would then run without a registered session (so without the hook that removes
// its sandbox). Here an ended id is refused, and the client starts a new session.
//
// Counting: a request that may start a session (an initialize, a GET /mcp without a session
// id, a GET /sse) takes a ticket first, and is refused when the principal or the server is
// at its limit. The ticket counts until the request ends, unless the request mints a
// streamable session id: then the session takes the ticket over and counts until it ends
// (DELETE, idle sweep or shutdown). An SSE stream's session is its request, so its ticket
// counts exactly as long as the stream is open.
type sessionIDs struct {
	mu    sync.Mutex
	live  map[string]*activity
	ended map[string]time.Time
	// held counts each principal's tickets and live sessions; total is their sum.
	held     map[string]int
	total    int
	max      int // 0: no cap
	perOwner int // 0: no cap
}

// activity is what idleness is judged by: requests in flight, and when the last one began
// or ended; and the principal the session counts against.
type activity struct {
	inflight int
	last     time.Time
	owner    string
}

// ticket is one admitted request's claim on a session slot.
type ticket struct {
	owner string
	taken bool // a minted session took it over
}

type ticketKey struct{}

const (
	// endedMemory is how long an ended id is remembered as ended (and answered 404, so the
	// client re-initializes) before it is forgotten, to keep the map small on a long-lived
	// server.
	endedMemory = time.Hour
	// maxEnded bounds that memory however fast sessions come and go. A forgotten id is
	// answered 404 all the same ("Invalid session ID" instead of "Session terminated").
	maxEnded = 10000
	// sessionLimitCode is the JSON-RPC error code of a refused session (the implementation-
	// defined server-error range).
	sessionLimitCode = -32001
)

var errUnknownSession = errors.New("unknown session id")

func newSessionIDs() *sessionIDs {
	return &sessionIDs{live: map[string]*activity{}, ended: map[string]time.Time{}, held: map[string]int{}}
}

func (m *sessionIDs) setLimits(total, perOwner int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.max, m.perOwner = max(total, 0), max(perOwner, 0)
}

// ResolveSessionIdManager implements server.SessionIdManagerResolver: the manager a request
// sees mints ids that take over the request's ticket. r is nil outside requests (shutdown).
func (m *sessionIDs) ResolveSessionIdManager(r *http.Request) server.SessionIdManager {
	var t *ticket
	if r != nil {
		t, _ = r.Context().Value(ticketKey{}).(*ticket)
	}
	return ticketedIDs{sessionIDs: m, ticket: t}
}

// ticketedIDs is the session id manager of one request.
type ticketedIDs struct {
	*sessionIDs
	ticket *ticket
}

// Generate implements server.SessionIdManager.
func (v ticketedIDs) Generate() string { return v.mint(v.ticket) }

// Generate implements server.SessionIdManager for a session minted outside an admitted
// request; it counts against the principal "".
func (m *sessionIDs) Generate() string { return m.mint(nil) }

func (m *sessionIDs) mint(t *ticket) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	id := "mcp-" + hex.EncodeToString(b[:])
	m.mu.Lock()
	defer m.mu.Unlock()
	a := &activity{last: time.Now()}
	if t != nil && !t.taken {
		t.taken, a.owner = true, t.owner // the ticket's count moves to the session
	} else {
		m.held[""]++
		m.total++
	}
	m.live[id] = a
	return id
}

// isLive reports whether id is a live session.
func (m *sessionIDs) isLive(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.live[id] != nil
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

// end marks id as ended, whether by DELETE, idle sweep or disconnect, and frees its slot.
func (m *sessionIDs) end(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if a := m.live[id]; a != nil {
		delete(m.live, id)
		m.release(a.owner)
		m.ended[id] = now
	}
	for old, at := range m.ended {
		if now.Sub(at) > endedMemory || len(m.ended) > maxEnded {
			delete(m.ended, old)
		}
	}
}

// release frees one slot of owner; m.mu is held.
func (m *sessionIDs) release(owner string) {
	m.total--
	if m.held[owner]--; m.held[owner] <= 0 {
		delete(m.held, owner)
	}
}

// errSessionLimit says which limit refused a new session.
type errSessionLimit struct {
	perOwner bool
	limit    int
}

func (e errSessionLimit) Error() string {
	if e.perOwner {
		return fmt.Sprintf("too many MCP sessions for this token: it holds %d, the per-token limit; "+
			"end one (DELETE /mcp with its Mcp-Session-Id, or close an SSE stream) or wait for idle ones to expire", e.limit)
	}
	return fmt.Sprintf("too many MCP sessions on this server: %d are live, the server's limit; "+
		"end one (DELETE /mcp with its Mcp-Session-Id, or close an SSE stream) or wait for idle ones to expire", e.limit)
}

// take gives owner a ticket, or says which limit is reached.
func (m *sessionIDs) take(owner string) (*ticket, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.perOwner > 0 && m.held[owner] >= m.perOwner {
		return nil, errSessionLimit{perOwner: true, limit: m.perOwner}
	}
	if m.max > 0 && m.total >= m.max {
		return nil, errSessionLimit{limit: m.max}
	}
	m.held[owner]++
	m.total++
	return &ticket{owner: owner}, nil
}

// drop returns a ticket that no session took over.
func (m *sessionIDs) drop(t *ticket) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !t.taken {
		t.taken = true
		m.release(t.owner)
	}
}

// admit gives every request that may start a session a ticket for as long as it runs, and
// refuses it when a limit is reached. A stateless request (its Mcp-Protocol-Version header
// names 2026-07-28 or later; mcp-go refuses one whose body disagrees) starts none: an initialize gets a JSON-RPC error response naming
// the limit (HTTP 200, because mcp-go's client reads any 4xx answer to initialize as "this
// server only speaks the old SSE transport" and drops the message), a stream request 429.
func (m *sessionIDs) admit(principal func(*http.Request) string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		opens := r.Header.Get(server.HeaderKeySessionID) == "" &&
			(r.Method == http.MethodGet || r.Method == http.MethodPost) &&
			!mcp.IsModernProtocol(r.Header.Get(mcp.HeaderProtocolVersion))
		if !opens {
			next.ServeHTTP(w, r)
			return
		}
		t, err := m.take(principal(r))
		if err != nil {
			if r.Method == http.MethodPost {
				writeRPCError(w, http.StatusOK, requestID(r), sessionLimitCode, err.Error())
				return
			}
			w.Header().Set("Retry-After", "60")
			writeRPCError(w, http.StatusTooManyRequests, nil, sessionLimitCode, err.Error())
			return
		}
		defer m.drop(t)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ticketKey{}, t)))
	})
}

// requestID is the JSON-RPC id of a request whose body limitBody has already read, or nil.
func requestID(r *http.Request) any {
	if r.Body == nil {
		return nil
	}
	data, err := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(data))
	var msg struct {
		ID any `json:"id"`
	}
	if err != nil || json.Unmarshal(data, &msg) != nil {
		return nil
	}
	return msg.ID
}

// endWithoutToken lets a DELETE that names a session end it without the token: the id is
// an unguessable secret only the authenticated client was given, and some clients (mcp-go
// v1.2.1) send their DELETE without the headers they were configured with. Refused, the
// DELETE would leave the session, and its sandbox, to the idle TTL.
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
// unregister hook removes the session's sandbox. A session with a task still running
// (working) is not idle: the task is its client's work under way.
func (m *sessionIDs) sweep(ctx context.Context, ttl time.Duration, end http.Handler, working func(sid string) bool) {
	tick := time.NewTicker(max(ttl/4, 250*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			for _, id := range m.idle(now, ttl) {
				if working(id) {
					m.touch(id, 0) // its idle time starts when its last task ends
					continue
				}
				req, err := http.NewRequestWithContext(ctx, http.MethodDelete, "/mcp", nil)
				if err != nil {
					continue
				}
				req.Header.Set(server.HeaderKeySessionID, id)
				end.ServeHTTP(discardResponse{}, req) // its Terminate frees the session's slot
			}
		}
	}
}

// discardResponse is the ResponseWriter of the sweeper's own DELETE requests.
type discardResponse struct{}

func (discardResponse) Header() http.Header         { return http.Header{} }
func (discardResponse) Write(p []byte) (int, error) { return len(p), nil }
func (discardResponse) WriteHeader(int)             {}
