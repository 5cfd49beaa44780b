package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	mcpgo "github.com/mark3labs/mcp-go/mcp"

	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// Issue 9, finding 6 (the HTTP faces). Each test names the attack it performs.

// TestHTTPIdleKeepAliveClosed: idle keep-alive connections, with or without the token, are
// closed by the server after IdleTimeout instead of piling up.
func TestHTTPIdleKeepAliveClosed(t *testing.T) {
	t.Parallel()
	limits := testLimits()
	limits.IdleTimeout = 300 * time.Millisecond
	f := startHTTP(t, fixtureOptions{limits: limits})
	for _, tc := range []struct{ name, request string }{
		{"health without a token", "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"},
		{"wrong token", "GET /sandboxes HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer nope\r\n\r\n"},
		{"with the token", "GET /sandboxes HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + httpTestToken + "\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn := f.dial(t)
			if _, err := io.WriteString(conn, tc.request); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			if resp := readResponse(t, br); resp.Close {
				t.Fatalf("the server closed after the answer (%s): the connection was never idle", resp.Status)
			}
			took := awaitClosed(t, conn, br, time.Now(), 10*time.Second)
			if took < limits.IdleTimeout/2 || took > limits.IdleTimeout+2*time.Second {
				t.Errorf("closed after %s: not by the %s idle timeout", took, limits.IdleTimeout)
			}
		})
	}
}

// TestHTTPSlowClientsCut: a slowloris client (headers stalled or trickled a byte at a time)
// and a client that stalls its body are cut at the header and body deadlines.
func TestHTTPSlowClientsCut(t *testing.T) {
	t.Parallel()
	limits := testLimits()
	limits.ReadHeaderTimeout, limits.ReadTimeout = 300*time.Millisecond, 300*time.Millisecond
	f := startHTTP(t, fixtureOptions{limits: limits})
	auth := "Authorization: Bearer " + httpTestToken + "\r\n"
	stalledBody := func(path, auth string) string {
		return "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth +
			"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 1000\r\n\r\n{\"jsonrpc\""
	}
	for _, tc := range []struct {
		name, send string
		trickle    bool
	}{
		{"stalled header", "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", false},
		{"header trickled a byte at a time", "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + strings.Repeat("a", 200), true},
		{"stalled body on /mcp", stalledBody("/mcp", auth), false},
		{"stalled body on /message", stalledBody("/message?sessionId=x", auth), false},
		{"stalled body on REST", stalledBody("/sandbox/create", auth), false},
		{"stalled body without the token", stalledBody("/sandbox/create", ""), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn := f.dial(t)
			start := time.Now()
			if tc.trickle {
				go func() {
					for i := range len(tc.send) {
						if _, err := io.WriteString(conn, tc.send[i:i+1]); err != nil {
							return // cut: the point of the test
						}
						time.Sleep(50 * time.Millisecond) // the attacker's pace, not a wait
					}
				}()
			} else if _, err := io.WriteString(conn, tc.send); err != nil {
				t.Fatal(err)
			}
			// The trickle alone would last 10 s: the connection must end well before.
			if took := awaitClosed(t, conn, nil, start, 5*time.Second); took > 3*time.Second {
				t.Errorf("cut after %s; the deadline was %s", took, limits.ReadHeaderTimeout)
			}
		})
	}
}

// TestHTTPBodyLimits: an oversized body gets 413 on every endpoint that takes one, whether
// its length is declared or it is sent chunked; uploads have their own, larger limit.
func TestHTTPBodyLimits(t *testing.T) {
	t.Parallel()
	limits := testLimits()
	limits.MaxBodyBytes = 64 << 10
	const maxArchive = 256 << 10
	f := startHTTP(t, fixtureOptions{limits: limits, maxArchive: maxArchive})
	over := int(limits.MaxBodyBytes) + 1
	jsonBody := func(n int) string { // a JSON-RPC message of n bytes
		head, tail := `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"`, `"}}`
		return head + strings.Repeat("x", n-len(head)-len(tail)) + tail
	}
	for _, tc := range []struct {
		name, path string
		size       int
		chunked    bool
		want413    bool
	}{
		{"mcp declared", "/mcp", over, false, true},
		{"mcp chunked", "/mcp", over, true, true},
		{"mcp just under the limit", "/mcp", over - 1, false, false},
		{"message declared", "/message?sessionId=x", over, false, true},
		{"message chunked", "/message?sessionId=x", over, true, true},
		{"create declared", "/sandbox/create", over, false, true},
		{"create chunked", "/sandbox/create", over, true, true},
		{"execute declared", "/sandbox/tool/execute", over, false, true},
		{"execute chunked", "/sandbox/tool/execute", over, true, true},
		{"pool execute chunked", "/pool/execute?tool_name=shell_executor", over, true, true},
		{"archive over the upload limit", "/sandbox/nope/archive", maxArchive + 1, false, true},
		{"archive over the JSON limit only", "/sandbox/nope/archive", over, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var body io.Reader = strings.NewReader(jsonBody(tc.size))
			if tc.chunked {
				body = io.MultiReader(body) // hides the length: sent chunked
			}
			a := f.do(t, http.MethodPost, tc.path, body, "Authorization", "Bearer "+httpTestToken,
				"Content-Type", "application/json", "Accept", "application/json, text/event-stream")
			if got := a.status == http.StatusRequestEntityTooLarge; got != tc.want413 {
				t.Fatalf("%d bytes to %s: %d %s; want 413: %v", tc.size, tc.path, a.status, a.body, tc.want413)
			}
			if tc.want413 && !strings.Contains(a.body, "limit") {
				t.Errorf("413 without the limit named: %s", a.body)
			}
		})
	}
}

// TestHTTPSessionLimits: one token, or all clients together, cannot hold more live MCP
// sessions than the limits; the refusal names the limit; DELETE, a closed SSE stream and the
// idle sweep each free a slot, so the cap cannot be exhausted for good.
func TestHTTPSessionLimits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name              string
		total, perToken   int
		want              string
		sessionTTL        time.Duration
		freedByIdleExpiry bool
	}{
		{name: "per token", total: 10, perToken: 2, want: "per-token limit"},
		{name: "total", total: 2, perToken: 10, want: "the server's limit"},
		{name: "freed by the idle sweep", total: 2, perToken: 10, want: "the server's limit", sessionTTL: 500 * time.Millisecond, freedByIdleExpiry: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			limits := testLimits()
			limits.MaxSessions, limits.MaxSessionsPerToken = tc.total, tc.perToken
			f := startHTTP(t, fixtureOptions{limits: limits, sessionTTL: tc.sessionTTL})
			ctx := t.Context()
			first, second := f.newMCPClient(t), f.newMCPClient(t)
			for _, c := range []*mcpclient.Client{first, second} {
				if err := initialize(ctx, c); err != nil {
					t.Fatalf("a session under the limit: %v", err)
				}
			}
			err := initialize(ctx, f.newMCPClient(t))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("a third session: %v; want an error naming the %s", err, tc.want)
			}
			sse, err := mcpclient.NewSSEMCPClient(f.url+"/sse", transport.WithHeaders(map[string]string{"Authorization": "Bearer " + httpTestToken}))
			if err != nil {
				t.Fatal(err)
			}
			if err := sse.Start(ctx); err == nil || !strings.Contains(err.Error(), "429") {
				t.Fatalf("an SSE stream over the limit: %v; want 429", err)
			}
			if tc.freedByIdleExpiry {
				// No DELETE: the clients just go quiet.
				testwait.Until(t, 10*time.Second, "a new session once idle ones expired", func() bool {
					return initialize(ctx, f.newMCPClient(t)) == nil
				})
				return
			}
			_ = first.Close() // DELETE
			if err := initialize(ctx, f.newMCPClient(t)); err != nil {
				t.Fatalf("a session after a DELETE freed a slot: %v", err)
			}
			_ = second.Close()
			stream, err := mcpclient.NewSSEMCPClient(f.url+"/sse", transport.WithHeaders(map[string]string{"Authorization": "Bearer " + httpTestToken}))
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.Start(ctx); err != nil {
				t.Fatalf("an SSE stream after a DELETE freed a slot: %v", err)
			}
			if err := initialize(ctx, f.newMCPClient(t)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("an open SSE stream must count as a session: %v", err)
			}
			_ = stream.Close()
			testwait.Until(t, 10*time.Second, "a new session once the SSE stream closed", func() bool {
				return initialize(ctx, f.newMCPClient(t)) == nil
			})
		})
	}
}

// TestHTTPOriginAndHostChecks: a web page's request (a foreign Origin) and a DNS-rebinding
// request (a foreign Host on the loopback listener) get 403 on every face: MCP (/mcp, /sse,
// /message), REST and /health; allowed origins and hosts pass, with CORS for the origins.
func TestHTTPOriginAndHostChecks(t *testing.T) {
	t.Parallel()
	f := startHTTP(t, fixtureOptions{perimeter: httpapi.PerimeterConfig{
		AllowedOrigins: []string{"https://app.example.com"}, AllowedHosts: []string{"enclave.test"},
	}})
	port := f.addr[strings.LastIndex(f.addr, ":")+1:]
	initBody := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	endpoints := []struct {
		method, path, body string
		stream             bool // answers with an endless stream when let through
	}{
		{"GET", "/health", "", false},
		{"GET", "/sandboxes", "", false},
		{"POST", "/mcp", initBody, false},
		{"GET", "/sse", "", true},
		{"POST", "/message?sessionId=x", `{"jsonrpc":"2.0","id":1,"method":"ping"}`, false},
	}
	for _, tc := range []struct {
		name    string
		header  []string
		refused string // a text the 403 must carry; "" when the request must pass
	}{
		{"foreign origin", []string{"Origin", "https://evil.example"}, "--allowed-origins"},
		{"null origin", []string{"Origin", "null"}, "--allowed-origins"},
		{"rebinding host", []string{"Host", "evil.example:" + port}, "DNS rebinding"},
		{"rebinding host without port", []string{"Host", "attacker.test"}, "DNS rebinding"},
		{"rebinding host with allowed origin", []string{"Host", "evil.example:" + port, "Origin", "https://app.example.com"}, "DNS rebinding"},
		{"no origin, loopback host", nil, ""},
		{"localhost host", []string{"Host", "localhost:" + port}, ""},
		{"allowed host", []string{"Host", "enclave.test:" + port}, ""},
		{"allowed origin", []string{"Origin", "https://app.example.com"}, ""},
		{"allowed origin with its default port", []string{"Origin", "https://APP.example.com:443"}, ""},
	} {
		for _, ep := range endpoints {
			if ep.stream && tc.refused == "" {
				continue // a stream let through never ends; the refusals are what matter here
			}
			t.Run(tc.name+" "+ep.method+" "+ep.path, func(t *testing.T) {
				t.Parallel()
				header := append([]string{"Authorization", "Bearer " + httpTestToken, "Content-Type", "application/json",
					"Accept", "application/json, text/event-stream"}, tc.header...)
				a := f.do(t, ep.method, ep.path, strings.NewReader(ep.body), header...)
				if tc.refused != "" {
					if a.status != http.StatusForbidden || !strings.Contains(a.body, tc.refused) {
						t.Fatalf("= %d %s; want 403 naming %q", a.status, a.body, tc.refused)
					}
					return
				}
				if a.status == http.StatusForbidden {
					t.Fatalf("= 403 %s; want it let through", a.body)
				}
				if origin := headerValue(tc.header, "Origin"); origin != "" && a.header.Get("Access-Control-Allow-Origin") != origin {
					t.Errorf("Access-Control-Allow-Origin = %q, want %q", a.header.Get("Access-Control-Allow-Origin"), origin)
				}
			})
		}
	}
	t.Run("preflight", func(t *testing.T) {
		t.Parallel()
		ok := f.do(t, http.MethodOptions, "/mcp", nil, "Origin", "https://app.example.com", "Access-Control-Request-Method", "POST")
		if ok.status != http.StatusNoContent || !strings.Contains(ok.header.Get("Access-Control-Allow-Headers"), "Mcp-Session-Id") {
			t.Errorf("preflight from an allowed origin = %d %v", ok.status, ok.header)
		}
		bad := f.do(t, http.MethodOptions, "/mcp", nil, "Origin", "https://evil.example", "Access-Control-Request-Method", "POST")
		if bad.status != http.StatusForbidden || bad.header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("preflight from a foreign origin = %d %v", bad.status, bad.header)
		}
	})
}

func headerValue(pairs []string, key string) string {
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i] == key {
			return pairs[i+1]
		}
	}
	return ""
}

// TestHTTPHealthHidesEngineWithoutToken: /health without the token (or with a wrong one)
// says only ok or unhealthy; the engine's error, which carries DOCKER_HOST, and the version
// and host details are for token holders.
func TestHTTPHealthHidesEngineWithoutToken(t *testing.T) {
	t.Parallel()
	const engineErr = "engine: the Docker engine does not answer: Cannot connect to the Docker daemon at tcp://10.9.8.7:2376 (DOCKER_HOST). Is the docker daemon running?"
	sick := startHTTP(t, fixtureOptions{check: func(context.Context) error { return fmt.Errorf("%s", engineErr) }})
	well := startHTTP(t, fixtureOptions{check: func(context.Context) error { return nil }})
	for _, tc := range []struct {
		name     string
		f        *httpFixture
		header   []string
		status   int
		exact    string   // the whole body, when only the status may be told
		contains []string // texts the body must carry otherwise
	}{
		{"unhealthy, no token", sick, nil, 503, `{"status":"unhealthy","healthy":false}`, nil},
		{"unhealthy, wrong token", sick, []string{"Authorization", "Bearer nope"}, 503, `{"status":"unhealthy","healthy":false}`, nil},
		{"unhealthy, wrong X-API-Key", sick, []string{"X-API-Key", "nope"}, 503, `{"status":"unhealthy","healthy":false}`, nil},
		{"healthy, no token", well, nil, 200, `{"status":"ok","healthy":true}`, nil},
		{"unhealthy, token", sick, []string{"Authorization", "Bearer " + httpTestToken}, 503, "", []string{"DOCKER_HOST", "tcp://10.9.8.7:2376", `"version":"test"`}},
		{"unhealthy, X-API-Key", sick, []string{"X-API-Key", httpTestToken}, 503, "", []string{"DOCKER_HOST"}},
		{"healthy, token", well, []string{"Authorization", "Bearer " + httpTestToken}, 200, "", []string{`"version":"test"`, "system_info"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := tc.f.do(t, http.MethodGet, "/health", nil, tc.header...)
			if a.status != tc.status {
				t.Fatalf("= %d %s, want %d", a.status, a.body, tc.status)
			}
			if tc.exact != "" && strings.TrimSpace(a.body) != tc.exact {
				t.Errorf("= %s, want exactly %s", a.body, tc.exact)
			}
			for _, want := range tc.contains {
				if !strings.Contains(a.body, want) {
					t.Errorf("= %s, want it to carry %q", a.body, want)
				}
			}
		})
	}
}

// TestHTTPTokenNeverLogged: every kind of request (MCP sessions over both transports,
// refusals of every kind, the token sent right and wrong, in headers and in a query string)
// leaves no trace of the token in the debug-level log.
func TestHTTPTokenNeverLogged(t *testing.T) {
	t.Parallel()
	limits := testLimits()
	limits.MaxSessions = 1
	f := startHTTP(t, fixtureOptions{limits: limits, check: func(context.Context) error { return fmt.Errorf("engine down") }})
	ctx := t.Context()
	bearer := "Bearer " + httpTestToken
	requests := []struct {
		method, path string
		header       []string
	}{
		{"GET", "/health", []string{"Authorization", bearer}},
		{"GET", "/health", nil},
		{"GET", "/sandboxes", []string{"X-API-Key", httpTestToken}},
		{"GET", "/sandboxes?api_key=" + httpTestToken, nil},
		{"GET", "/sandboxes", []string{"Authorization", bearer + "x"}},
		{"GET", "/sandbox/nope", []string{"Authorization", bearer}},
		{"POST", "/sandbox/create", []string{"Authorization", bearer}},
		{"GET", "/nope", []string{"Authorization", bearer}},
		{"GET", "/sandboxes", []string{"Authorization", bearer, "Origin", "https://evil.example"}},
		{"GET", "/sandboxes", []string{"Authorization", bearer, "Host", "evil.example"}},
		{"POST", "/mcp", []string{"Authorization", bearer}},
		{"DELETE", "/mcp", []string{"Authorization", bearer, "Mcp-Session-Id", httpTestToken}},
	}
	for _, r := range requests {
		body := io.Reader(nil)
		if r.method == "POST" {
			body = strings.NewReader(`{"image": "` + httpTestToken + `"}`)
		}
		f.do(t, r.method, r.path, body, r.header...)
	}
	c := f.newMCPClient(t)
	if err := initialize(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListTools(ctx, mcpgo.ListToolsRequest{}); err != nil {
		t.Fatal(err)
	}
	_ = initialize(ctx, f.newMCPClient(t)) // refused: over the session limit
	_ = c.Close()
	sse, err := mcpclient.NewSSEMCPClient(f.url+"/sse", transport.WithHeaders(map[string]string{"Authorization": bearer}))
	if err != nil {
		t.Fatal(err)
	}
	if err := initialize(ctx, sse); err != nil {
		t.Fatal(err)
	}
	_ = sse.Close()

	logs := f.logs.String()
	if !strings.Contains(logs, `"msg":"http request"`) {
		t.Fatalf("the log capture saw no access log lines: %q", logs)
	}
	if strings.Contains(logs, httpTestToken) {
		for line := range strings.SplitSeq(logs, "\n") {
			if strings.Contains(line, httpTestToken) {
				t.Errorf("the token is in the log: %s", line)
			}
		}
	}
}

// TestHTTPLongStreamsOutliveTimeouts: with every timeout set to 200 ms, an SSE stream and a
// streamable-HTTP GET stream stay open, and usable, for many times that: the timeouts bound
// slow and idle clients, never live streams.
func TestHTTPLongStreamsOutliveTimeouts(t *testing.T) {
	t.Parallel()
	limits := testLimits()
	limits.ReadHeaderTimeout, limits.ReadTimeout, limits.IdleTimeout = 200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond
	const outlive = 1500 * time.Millisecond
	f := startHTTP(t, fixtureOptions{limits: limits})
	ctx := t.Context()

	t.Run("sse", func(t *testing.T) {
		t.Parallel()
		c, err := mcpclient.NewSSEMCPClient(f.url+"/sse", transport.WithHeaders(map[string]string{"Authorization": "Bearer " + httpTestToken}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		if err := initialize(ctx, c); err != nil {
			t.Fatal(err)
		}
		<-time.After(outlive) // the duration under test: the stream must outlive every timeout
		// The answer travels over the SSE stream: it arrives only if the stream is still open.
		if _, err := c.ListTools(ctx, mcpgo.ListToolsRequest{}); err != nil {
			t.Fatalf("tools/list over the stream after %s: %v", outlive, err)
		}
	})

	t.Run("streamable GET", func(t *testing.T) {
		t.Parallel()
		session := rawInitialize(t, f)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url+"/mcp", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+httpTestToken)
		req.Header.Set("Accept", "text/event-stream")
		req.Header.Set("Mcp-Session-Id", session)
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /mcp stream = %s", resp.Status)
		}
		ended := make(chan error, 1)
		go func() {
			_, err := io.Copy(io.Discard, resp.Body)
			ended <- err
		}()
		select {
		case err := <-ended:
			t.Fatalf("the GET stream ended before %s: %v", outlive, err)
		case <-time.After(outlive): // the duration under test
		}
		a := f.do(t, http.MethodPost, "/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`),
			"Authorization", "Bearer "+httpTestToken, "Content-Type", "application/json",
			"Accept", "application/json, text/event-stream", "Mcp-Session-Id", session, "Mcp-Protocol-Version", "2025-06-18")
		if a.status != http.StatusOK || !strings.Contains(a.body, "python_executor") {
			t.Fatalf("tools/list in the streaming session = %d %s", a.status, a.body)
		}
		select {
		case err := <-ended:
			t.Fatalf("the GET stream ended: %v", err)
		default:
		}
	})
}

// rawInitialize opens a streamable-HTTP session by hand and returns its id.
func rawInitialize(t *testing.T, f *httpFixture) string {
	t.Helper()
	hdr := []string{"Authorization", "Bearer " + httpTestToken, "Content-Type", "application/json",
		"Accept", "application/json, text/event-stream"}
	a := f.do(t, http.MethodPost, "/mcp", strings.NewReader(
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`), hdr...)
	session := a.header.Get("Mcp-Session-Id")
	if a.status != http.StatusOK || session == "" {
		t.Fatalf("initialize = %d %s (session %q)", a.status, a.body, session)
	}
	hdr = append(hdr, "Mcp-Session-Id", session, "Mcp-Protocol-Version", "2025-06-18")
	if a := f.do(t, http.MethodPost, "/mcp", strings.NewReader(`{"jsonrpc":"2.0","method":"notifications/initialized"}`), hdr...); a.status != http.StatusAccepted {
		t.Fatalf("notifications/initialized = %d %s", a.status, a.body)
	}
	return session
}

// decodeJSON is a test's json.Unmarshal that fails the test.
func decodeJSON(t *testing.T, data string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(data), v); err != nil {
		t.Fatalf("not JSON (%v): %s", err, data)
	}
}

// TestIntegrationHTTPLongCallsOutliveTimeouts: with every timeout set to 200 ms, a tool call
// that runs for 1.5 s in a real sandbox still answers, over MCP and over REST: the request
// body was read long before, and nothing cuts the response that follows.
func TestIntegrationHTTPLongCallsOutliveTimeouts(t *testing.T) {
	t.Parallel()
	engine := testenv.Engine(t)
	limits := testLimits()
	limits.ReadHeaderTimeout, limits.ReadTimeout, limits.IdleTimeout = 200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond
	f := startHTTP(t, fixtureOptions{limits: limits, creator: sandbox.NewCreator(engine, sandbox.TypeDocker)})
	const code = "import time; time.sleep(1.5); print('still here')"

	t.Run("mcp", func(t *testing.T) {
		c := f.newMCPClient(t)
		if err := initialize(t.Context(), c); err != nil {
			t.Fatal(err)
		}
		req := mcpgo.CallToolRequest{}
		req.Params.Name, req.Params.Arguments = "python_executor", map[string]any{"code": code}
		res, err := c.CallTool(t.Context(), req)
		if err != nil {
			t.Fatalf("a 1.5 s call behind 200 ms timeouts: %v", err)
		}
		if res.IsError || len(res.Content) == 0 || !strings.Contains(res.Content[0].(mcpgo.TextContent).Text, "still here") {
			t.Fatalf("result = %+v", res)
		}
		_ = c.Close()
	})

	t.Run("rest", func(t *testing.T) {
		auth := []string{"Authorization", "Bearer " + httpTestToken, "Content-Type", "application/json"}
		created := f.do(t, http.MethodPost, "/sandbox/create", strings.NewReader(`{}`), auth...)
		var sb struct {
			ID string `json:"sandbox_id"`
		}
		decodeJSON(t, created.body, &sb)
		if created.status != http.StatusOK || sb.ID == "" {
			t.Fatalf("create = %d %s", created.status, created.body)
		}
		t.Cleanup(func() {
			req, _ := http.NewRequest(http.MethodDelete, f.url+"/sandbox/"+sb.ID, nil)
			req.Header.Set("Authorization", "Bearer "+httpTestToken)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				_ = resp.Body.Close()
			}
		})
		body, _ := json.Marshal(map[string]any{"sandbox_id": sb.ID, "tool_name": "python_executor", "parameters": map[string]any{"code": code}})
		a := f.do(t, http.MethodPost, "/sandbox/tool/execute", strings.NewReader(string(body)), auth...)
		if a.status != http.StatusOK || !strings.Contains(a.body, "still here") {
			t.Fatalf("a 1.5 s call behind 200 ms timeouts = %d %s", a.status, a.body)
		}
	})
}

// TestHTTPConnectionCap: past --max-conns, a new connection is not served until an open one
// closes; then it is.
func TestHTTPConnectionCap(t *testing.T) {
	t.Parallel()
	limits := testLimits()
	limits.MaxConns = 2
	f := startHTTP(t, fixtureOptions{limits: limits})
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	// Each held connection is served: a request on it is answered.
	for _, c := range held {
		if _, err := io.WriteString(c, "GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
			t.Fatalf("a connection under the cap: %q, %v", line, err)
		}
	}
	third, err := net.Dial("tcp", f.addr) // the kernel accepts it; the server does not yet
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	if _, err := io.WriteString(third, "GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(third)
	_ = third.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if line, err := r.ReadString('\n'); err == nil {
		t.Fatalf("a connection past the cap was served: %q", line)
	}
	held[0].Close()
	_ = third.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("once a connection closed, the waiting one: %q, %v", line, err)
	}
}
