package mcp_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	mcpgo "github.com/mark3labs/mcp-go/mcp"

	"github.com/enclave-mcp/enclave-mcp/mcp"
)

// newMRTRServer serves the conformance fixtures over real HTTP, each bearer token its own
// principal.
func newMRTRServer(t *testing.T) string {
	t.Helper()
	return newLocalToolsServerWith(t, mcp.HTTPOptions{Principal: func(r *http.Request) string {
		return strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	}})
}

var askCaps = map[string]any{"elicitation": map[string]any{}, "sampling": map[string]any{}, "roots": map[string]any{}}

func accept(content map[string]any) map[string]any {
	return map[string]any{"action": "accept", "content": content}
}

// inputRequired checks that res asks for input, and returns its requests and state.
func inputRequired(t *testing.T, what string, res map[string]any) (map[string]any, string) {
	t.Helper()
	reqs, _ := res["inputRequests"].(map[string]any)
	state, _ := res["requestState"].(string)
	if res["resultType"] != "input_required" || len(reqs) == 0 || state == "" || res["taskId"] != nil {
		t.Fatalf("%s: %v; want resultType input_required with inputRequests and a requestState, and no taskId", what, res)
	}
	return reqs, state
}

// TestMultiRoundTrip: a stateless (2026-07-28) call that asks its client ends with an
// InputRequiredResult; the retry with the answers and the requestState completes it; the
// state carries earlier rounds' answers; a state altered, issued for another tool or to
// another token, and an answer that is not an object, are refused -32602 (HTTP 400); a
// question of a kind the client did not declare is -32021; and a tool may gather its
// input this way and then go on as a task.
func TestMultiRoundTrip(t *testing.T) {
	t.Parallel()
	url := newMRTRServer(t)
	alice := &rpcClient{url: url, token: "alice", http: freshHTTP(), caps: askCaps}
	bob := &rpcClient{url: url, token: "bob", http: freshHTTP(), caps: askCaps}

	call := func(c *rpcClient, tool string, extra map[string]any) rpcAnswer {
		t.Helper()
		params := map[string]any{"name": tool, "arguments": map[string]any{}}
		for k, v := range extra {
			params[k] = v
		}
		a, err := c.post("tools/call", params)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}

	first := call(alice, "test_input_required_result_elicitation", nil)
	reqs, state := inputRequired(t, "round 1", first.Result)

	t.Run("the answer and the state complete the call", func(t *testing.T) {
		req, _ := reqs["user_name"].(map[string]any)
		if req["method"] != "elicitation/create" {
			t.Fatalf("inputRequests %v; want user_name: elicitation/create", reqs)
		}
		a := call(alice, "test_input_required_result_elicitation", map[string]any{
			"inputResponses": map[string]any{"user_name": accept(map[string]any{"name": "Alice"})}, "requestState": state})
		if a.Error != nil || a.Result["resultType"] != "complete" || resultText(a.Result) != "Hello, Alice!" {
			t.Errorf("round 2: %+v %v; want the complete result Hello, Alice!", a.Error, a.Result)
		}
	})

	t.Run("the state carries the first round's answer into the third", func(t *testing.T) {
		_, s1 := inputRequired(t, "round 1", call(alice, "test_input_required_result_multi_round", nil).Result)
		r2 := call(alice, "test_input_required_result_multi_round", map[string]any{
			"inputResponses": map[string]any{"step1": accept(map[string]any{"name": "Alice"})}, "requestState": s1})
		reqs2, s2 := inputRequired(t, "round 2", r2.Result)
		if _, ok := reqs2["step2"]; !ok || len(reqs2) != 1 || s2 == s1 {
			t.Fatalf("round 2 asks %v with state changed %v; want only step2 and a new state", reqs2, s2 != s1)
		}
		r3 := call(alice, "test_input_required_result_multi_round", map[string]any{
			"inputResponses": map[string]any{"step2": accept(map[string]any{"color": "blue"})}, "requestState": s2})
		if r3.Error != nil || resultText(r3.Result) != "Alice likes blue" {
			t.Errorf("round 3 (answering only step2): %+v %v; want Alice likes blue", r3.Error, r3.Result)
		}
	})

	answer := map[string]any{"user_name": accept(map[string]any{"name": "Mallory"})}
	for _, tc := range []struct {
		name   string
		c      *rpcClient
		tool   string
		params map[string]any
		want   string
	}{
		{"an altered state", alice, "test_input_required_result_elicitation",
			map[string]any{"inputResponses": answer, "requestState": state + "-TAMPERED"}, "integrity check failed"},
		{"a state issued for another tool", alice, "test_input_required_result_tampered_state",
			map[string]any{"inputResponses": answer, "requestState": state}, `issued for the tool "test_input_required_result_elicitation"`},
		{"a state issued to another token", bob, "test_input_required_result_elicitation",
			map[string]any{"inputResponses": answer, "requestState": state}, "another caller"},
		{"an answer that is not an object", alice, "test_input_required_result_elicitation",
			map[string]any{"inputResponses": map[string]any{"user_name": 12345}}, `inputResponses["user_name"] is 12345; want an object`},
	} {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			a := call(tc.c, tc.tool, tc.params)
			if a.Error == nil || a.Error.Code != mcpgo.INVALID_PARAMS || a.status != http.StatusBadRequest || !strings.Contains(a.Error.Message, tc.want) {
				t.Errorf("HTTP %d %+v %v; want HTTP 400, -32602 saying %q", a.status, a.Error, a.Result, tc.want)
			}
		})
	}

	t.Run("a question the client cannot answer is -32021 naming the capability", func(t *testing.T) {
		noCaps := &rpcClient{url: url, token: "alice", http: freshHTTP()}
		a := call(noCaps, "test_missing_capability", nil)
		caps, _ := a.Error.Data["requiredCapabilities"].(map[string]any)
		if _, ok := caps["sampling"]; a.Error == nil || a.Error.Code != mcpgo.MISSING_REQUIRED_CLIENT_CAPABILITY || a.status != http.StatusBadRequest || !ok {
			t.Errorf("HTTP %d %+v; want HTTP 400, -32021 with data.requiredCapabilities.sampling", a.status, a.Error)
		}
	})

	t.Run("a tool gathers its input by MRTR, then goes on as a task", func(t *testing.T) {
		tasks := &rpcClient{url: url, token: "alice", http: freshHTTP(), tasks: true, caps: askCaps}
		_, s := inputRequired(t, "round 1", call(tasks, "test_tool_with_task", nil).Result)
		created := call(tasks, "test_tool_with_task", map[string]any{
			"inputResponses": map[string]any{"user_name": accept(map[string]any{"name": "Alice"})}, "requestState": s}).Result
		id, _ := created["taskId"].(string)
		if created["resultType"] != "task" || id == "" || created["requestState"] != nil || created["inputRequests"] != nil {
			t.Fatalf("round 2: %v; want a CreateTaskResult without requestState or inputRequests", created)
		}
		task := tasks.awaitTask(t, id, 30*time.Second)
		if res, _ := task["result"].(map[string]any); task["status"] != "completed" || !strings.Contains(resultText(res), "Hello, Alice!") {
			t.Errorf("the task: %v; want completed, greeting Alice", task)
		}
	})
}

// nameAnswer answers every elicitation with a name.
type nameAnswer struct{ name string }

func (n nameAnswer) Elicit(context.Context, mcpgo.ElicitationRequest) (*mcpgo.ElicitationResult, error) {
	return &mcpgo.ElicitationResult{ElicitationResponse: mcpgo.ElicitationResponse{
		Action: mcpgo.ElicitationResponseActionAccept, Content: map[string]any{"name": n.name}}}, nil
}

// TestMultiRoundTripMCPGoClients: one tool that asks, both protocol eras, through mcp-go
// v1.2.1's client with an elicitation handler: a stateless client answers the
// InputRequiredResult and retries; a session client (2025-11-25) is asked by a
// server-initiated elicitation/create, which mcp-go's server sends for the older
// protocol, and the call completes the same.
func TestMultiRoundTripMCPGoClients(t *testing.T) {
	t.Parallel()
	url := newMRTRServer(t)
	for _, tc := range []struct {
		name    string
		version string
		wantVer string
	}{
		{"stateless 2026-07-28", "", "2026-07-28"},
		{"session 2025-11-25", "2025-11-25", "2025-11-25"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			trans, err := transport.NewStreamableHTTP(url+"/mcp", transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer alice"}))
			if err != nil {
				t.Fatal(err)
			}
			c := mcpclient.NewClient(trans, mcpclient.WithElicitationHandler(nameAnswer{"Ada"}))
			t.Cleanup(func() { _ = c.Close() })
			startMCPGoAt(t, c, tc.version)
			if v := c.ProtocolVersion(); v != tc.wantVer {
				t.Fatalf("negotiated %q, want %q", v, tc.wantVer)
			}
			req := mcpgo.CallToolRequest{}
			req.Params.Name = "test_input_required_result_elicitation"
			req.Params.Arguments = map[string]any{}
			res, err := c.CallTool(t.Context(), req)
			if err != nil {
				t.Fatal(err)
			}
			if text := textOf(res); res.IsError || text != "Hello, Ada!" {
				t.Errorf("result %q (isError %v); want Hello, Ada!", text, res.IsError)
			}
		})
	}
}

// TestToolCallStreamsThroughReplyWriter: a tools/call's response still streams (progress
// notifications on an SSE response, then the result) now that every call's response on
// /mcp passes through the writer that can replace it with a JSON-RPC error.
func TestToolCallStreamsThroughReplyWriter(t *testing.T) {
	t.Parallel()
	url := newLocalToolsServer(t)
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow_compute","arguments":{"seconds":1.2,"label":"p"},` +
		`"_meta":{"progressToken":"tok","io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url+"/mcp", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
		"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "slow_compute"} {
		req.Header.Set(k, v)
	}
	resp, err := freshHTTP().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") ||
		!strings.Contains(string(raw), `"notifications/progress"`) || !strings.Contains(string(raw), `\"p\" done`) {
		t.Errorf("HTTP %d %s, body %s; want an SSE stream with a progress notification, then the result", resp.StatusCode, resp.Header.Get("Content-Type"), raw)
	}
}
