package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	mcpgo "github.com/mark3labs/mcp-go/mcp"

	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/internal/syncbuf"
	"github.com/enclave-mcp/enclave-mcp/mcp"
	"github.com/enclave-mcp/enclave-mcp/runtimeapi"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/session"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// The HTTP tests run the production stack (perimeter, token check, MCP transports, REST API,
// http.Server) on a real loopback listener, with limits made short or small for the test,
// and talk to it with real clients: net/http, raw TCP and mcp-go's MCP clients.

const httpTestToken = "hardening-test-token-5b1e0c"

// fixtureOptions shape a test server; zero fields take testLimits' values.
type fixtureOptions struct {
	limits     httpLimits
	perimeter  httpapi.PerimeterConfig
	check      func(context.Context) error // /health's engine check
	creator    sandbox.Creator             // docker sandboxes; nil refuses
	sessionTTL time.Duration
	maxArchive int64
	// sessions, when set, serves the session API with this config; tokens are more
	// principals beside httpTestToken's.
	sessions *session.NamedConfig
	tokens   []httpapi.Credential
}

// testLimits are generous limits for tests that do not probe them.
func testLimits() httpLimits {
	return httpLimits{
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second, IdleTimeout: 30 * time.Second,
		MaxHeaderBytes: defaultMaxHeaderBytes, MaxBodyBytes: 256 << 10,
	}
}

// httpFixture is a running server.
type httpFixture struct {
	url     string // http://127.0.0.1:PORT
	addr    string // 127.0.0.1:PORT
	logs    *syncbuf.Buffer
	manager *sandbox.Manager
}

func refuseCreate(context.Context, string, sandbox.Resolved) (sandbox.Sandbox, error) {
	return nil, errors.New("test: this server creates no sandboxes")
}

// startHTTP serves the whole stack on 127.0.0.1 until the test ends, logging at debug level
// into the fixture's buffer.
func startHTTP(t *testing.T, o fixtureOptions) *httpFixture {
	t.Helper()
	if o.limits == (httpLimits{}) {
		o.limits = testLimits()
	}
	if o.creator == nil {
		o.creator = refuseCreate
	}
	if o.sessionTTL == 0 {
		o.sessionTTL = time.Minute
	}
	logs := &syncbuf.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	manager := sandbox.NewManager(sandbox.ManagerOptions{
		Defaults: map[sandbox.Type]sandbox.Config{sandbox.TypeDocker: {}},
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: o.creator},
		Logger:   log,
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = manager.Close(ctx)
	})
	core, err := session.New(session.Config{
		Manager: manager, Tools: tools.All(), DefaultTimeout: 30, Version: "test", Logger: log, Check: o.check,
		Limits: session.Limits{MaxArchiveBytes: o.maxArchive},
	})
	if err != nil {
		t.Fatal(err)
	}
	api, err := httpapi.New(httpapi.Config{
		Core: core, Manager: manager, Token: httpTestToken, Tokens: o.tokens, Logger: log, MaxJSONBytes: o.limits.MaxBodyBytes,
	})
	if err != nil {
		t.Fatal(err)
	}
	var sessionsAPI *runtimeapi.API
	if o.sessions != nil {
		named, err := session.NewNamed(core, *o.sessions)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := named.Close(ctx); err != nil {
				t.Errorf("closing the named sessions: %v", err)
			}
		})
		sessionsAPI, err = runtimeapi.New(runtimeapi.Config{
			Sessions: named, Principal: httpapi.PrincipalOf, Check: o.check, MaxJSONBytes: o.limits.MaxBodyBytes,
			MaxUploadBytes: core.Limits().MaxArchiveBytes, Logger: log,
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	srv, err := mcp.New(mcp.Config{Core: core, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	o.perimeter.Logger = log
	perimeter, err := httpapi.NewPerimeter(o.perimeter)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &httpServer{mcp: srv, rest: api, sessions: sessionsAPI, perimeter: perimeter,
		sessionTTL: o.sessionTTL, limits: o.limits, log: log}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.serveOn(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serveOn: %v", err)
		}
	})
	return &httpFixture{url: "http://" + ln.Addr().String(), addr: ln.Addr().String(), logs: logs, manager: manager}
}

// answer is a response read whole.
type answer struct {
	status int
	header http.Header
	body   string
}

// do sends one request with net/http; header pairs set headers ("Host" sets the Host).
func (f *httpFixture) do(t *testing.T, method, path string, body io.Reader, header ...string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, f.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1]
			continue
		}
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: string(data)}
}

// dial opens a raw TCP connection to the server.
func (f *httpFixture) dial(t *testing.T) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// awaitClosed blocks on reading conn until the server closes it and returns how long that
// took from start. Anything the server still sends (a 408, a 400) is read past. It fails
// when the connection is still open after within.
func awaitClosed(t *testing.T, conn net.Conn, r io.Reader, start time.Time, within time.Duration) time.Duration {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(within))
	if r == nil {
		r = conn
	}
	_, err := io.Copy(io.Discard, r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the connection is still open %s later", within)
	}
	if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("reading until the server closes: %v", err)
	}
	return time.Since(start)
}

// readResponse reads one HTTP response from br.
func readResponse(t *testing.T, br *bufio.Reader) *http.Response {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading a response: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp
}

// newMCPClient is an mcp-go streamable-HTTP client of f carrying the token.
func (f *httpFixture) newMCPClient(t *testing.T) *mcpclient.Client {
	t.Helper()
	c, err := mcpclient.NewStreamableHttpClient(f.url+"/mcp",
		transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + httpTestToken}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// initialize starts c and runs the initialize handshake.
func initialize(ctx context.Context, c *mcpclient.Client) error {
	if err := c.Start(ctx); err != nil {
		return err
	}
	req := mcpgo.InitializeRequest{}
	// The session protocol (initialize, Mcp-Session-Id): one sandbox per session, no handles.
	req.Params.ProtocolVersion = mcpgo.LATEST_LEGACY_PROTOCOL_VERSION
	req.Params.ClientInfo = mcpgo.Implementation{Name: "hardening-test", Version: "1"}
	_, err := c.Initialize(ctx, req)
	return err
}

// startLogged starts cmd, a server logging JSON lines to stderr, and returns its parsed log
// lines (dropped when nobody reads them fast enough), all of stderr, and its exit. The
// process is killed when the test ends.
func startLogged(t *testing.T, cmd *exec.Cmd) (lines chan map[string]any, stderr *syncbuf.Buffer, exited chan error) {
	t.Helper()
	stderr = &syncbuf.Buffer{}
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited = make(chan error, 1)
	lines = make(chan map[string]any, 100)
	go func() {
		sc := bufio.NewScanner(io.TeeReader(pipe, stderr))
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil {
				select {
				case lines <- line:
				default:
				}
			}
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return lines, stderr, exited
}
