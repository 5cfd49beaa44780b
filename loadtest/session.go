package loadtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// quiet silences the client library's own logging (it would go to the default logger):
// failures reach the caller as errors, and a session closed after its server has gone is
// not news in a fault test.
var quiet = slog.New(slog.DiscardHandler)

// Transport is an MCP HTTP transport.
type Transport string

// The transports enclave-mcp serves over HTTP.
const (
	Streamable Transport = "streamable" // streamable HTTP at /mcp
	SSE        Transport = "sse"        // SSE at /sse, messages at /message
)

// SessionOptions says where a Session connects.
type SessionOptions struct {
	// URL is the server's base URL, without /mcp or /sse.
	URL   string
	Token string
	// Transport defaults to Streamable.
	Transport Transport
}

// Session is one MCP client session (mark3labs/mcp-go) over its own HTTP connections, as a
// separate agent process would have: the server gives it its own sandbox.
type Session struct {
	c      *mcpclient.Client
	conns  *connTracker
	cancel context.CancelFunc // ends the SSE stream's context
}

// Connect opens a session and performs the initialize handshake; ctx bounds the handshake,
// not the session.
func Connect(ctx context.Context, opts SessionOptions) (*Session, error) {
	conns := &connTracker{open: map[net.Conn]bool{}}
	// The token goes on at the HTTP layer, not through the client's header options:
	// mcp-go v1.2.1 leaves those off the DELETE that ends a streamable session, which a
	// token-protected server then refuses (see TestIntegrationMCPGoDeleteCarriesNoToken).
	hc := &http.Client{Transport: &bearer{
		token: opts.Token,
		next:  &http.Transport{DialContext: conns.dial, MaxIdleConnsPerHost: 4},
	}}
	var (
		c   *mcpclient.Client
		err error
	)
	switch opts.Transport {
	case Streamable, "":
		c, err = mcpclient.NewStreamableHttpClient(opts.URL+"/mcp", transport.WithHTTPBasicClient(hc), transport.WithHTTPLogger(quiet))
	case SSE:
		c, err = mcpclient.NewSSEMCPClient(opts.URL+"/sse", mcpclient.WithHTTPClient(hc), transport.WithSSELogger(quiet))
	default:
		return nil, fmt.Errorf("unknown transport %q (want %s or %s)", opts.Transport, Streamable, SSE)
	}
	if err != nil {
		return nil, fmt.Errorf("creating %s client: %w", opts.Transport, err)
	}
	// The SSE stream lives as long as the context Start gets: the session's, not the
	// handshake's.
	life, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &Session{c: c, conns: conns, cancel: cancel}
	if err := c.Start(life); err != nil {
		s.Abort()
		return nil, fmt.Errorf("starting %s session: %w", opts.Transport, err)
	}
	init := mcp.InitializeRequest{}
	// The session protocol (initialize, Mcp-Session-Id): one sandbox per session, no handles.
	init.Params.ProtocolVersion = mcp.LATEST_LEGACY_PROTOCOL_VERSION
	init.Params.ClientInfo = mcp.Implementation{Name: "enclave-load", Version: "1"}
	if _, err := c.Initialize(ctx, init); err != nil {
		s.Abort()
		return nil, fmt.Errorf("initializing %s session: %w", opts.Transport, err)
	}
	return s, nil
}

// CallResult is a tool call's outcome as the model would see it.
type CallResult struct {
	Text    string // the text content, concatenated
	IsError bool
}

// Call calls a tool. A tool that failed is a result with IsError set; an error means the
// call itself did not complete (transport, protocol, ctx).
func (s *Session) Call(ctx context.Context, tool string, args map[string]any) (CallResult, error) {
	req := mcp.CallToolRequest{}
	req.Params.Name, req.Params.Arguments = tool, args
	res, err := s.c.CallTool(ctx, req)
	if err != nil {
		return CallResult{}, fmt.Errorf("calling %s: %w", tool, err)
	}
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return CallResult{Text: b.String(), IsError: res.IsError}, nil
}

// Close ends the session politely: streamable HTTP sends DELETE, SSE closes its stream.
func (s *Session) Close() error {
	err := s.c.Close()
	s.cancel()
	return err
}

// Abort ends the session the way a crashed client does: every TCP connection closes at
// once, nothing more is sent (no DELETE, no cancellation), and no new connection is made.
func (s *Session) Abort() {
	s.conns.kill()
	s.cancel()
	_ = s.c.Close() // only frees the client's goroutines: its DELETE cannot dial any more
}

// bearer adds the token to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b *bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context()) // a RoundTripper must not change the caller's request
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// connTracker remembers a session's open connections so that Abort can cut them.
type connTracker struct {
	mu     sync.Mutex
	open   map[net.Conn]bool
	killed bool
}

var errAborted = errors.New("session aborted: no new connections")

func (t *connTracker) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	t.mu.Lock()
	killed := t.killed
	t.mu.Unlock()
	if killed {
		return nil, errAborted
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.killed {
		_ = c.Close()
		return nil, errAborted
	}
	tc := &trackedConn{Conn: c, t: t}
	t.open[tc] = true
	return tc, nil
}

func (t *connTracker) kill() {
	t.mu.Lock()
	t.killed = true
	conns := make([]net.Conn, 0, len(t.open))
	for c := range t.open {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

type trackedConn struct {
	net.Conn
	t    *connTracker
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.t.mu.Lock()
		delete(c.t.open, c)
		c.t.mu.Unlock()
	})
	return c.Conn.Close()
}
