package mcp_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/mcp"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// No MCP client library speaks the 2026-07-28 tasks extension yet (go-sdk v1.8.0 and
// mcp-go v1.2.1 know only 2025-11-25's tasks), so these tests speak raw JSON-RPC over
// net/http, as a client of the extension would.

// rpcClient is a raw JSON-RPC client of /mcp: stateless (2026-07-28, every request on its
// own with _meta) unless sid names a session.
type rpcClient struct {
	url, token string
	http       *http.Client
	sid        string
	tasks      bool           // declare the tasks extension
	caps       map[string]any // other client capabilities to declare (stateless)
}

var rpcIDs atomic.Int64

// rpcAnswer is one JSON-RPC answer.
type rpcAnswer struct {
	status int
	Result map[string]any `json:"result"`
	Error  *struct {
		Code    int            `json:"code"`
		Message string         `json:"message"`
		Data    map[string]any `json:"data"`
	} `json:"error"`
}

func (c *rpcClient) post(method string, params map[string]any) (rpcAnswer, error) {
	status, contentType, raw, err := c.send(method, params)
	if err != nil {
		return rpcAnswer{}, err
	}
	if strings.HasPrefix(contentType, "text/event-stream") {
		raw = lastSSEAnswer(raw)
	}
	var a rpcAnswer
	if err := json.Unmarshal(raw, &a); err != nil {
		return rpcAnswer{}, fmt.Errorf("%s: HTTP %d, body %q: %w", method, status, raw, err)
	}
	a.status = status
	return a, nil
}

// send posts one request and returns the response's status, content type and body (read
// whole, up to 16 MiB).
func (c *rpcClient) send(method string, params map[string]any) (status int, contentType string, body []byte, err error) {
	if params == nil {
		params = map[string]any{}
	}
	caps := maps.Clone(c.caps)
	if caps == nil {
		caps = map[string]any{}
	}
	if c.tasks {
		caps["extensions"] = map[string]any{mcp.TasksExtension: map[string]any{}}
	}
	version := "2026-07-28"
	if c.sid == "" && method != "initialize" {
		meta := map[string]any{}
		if own, ok := params["_meta"].(map[string]any); ok {
			maps.Copy(meta, own) // the caller's own (a progress token), kept
		}
		meta["io.modelcontextprotocol/protocolVersion"] = version
		meta["io.modelcontextprotocol/clientCapabilities"] = caps
		params["_meta"] = meta
	} else {
		version = "2025-11-25"
	}
	id := rpcIDs.Add(1)
	payload, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "method": method, "params": params})
	req, err := http.NewRequest(http.MethodPost, c.url+"/mcp", bytes.NewReader(payload))
	if err != nil {
		return 0, "", nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if method != "initialize" {
		req.Header.Set("MCP-Protocol-Version", version)
	}
	req.Header.Set("Mcp-Method", method)
	for _, key := range []string{"name", "taskId"} {
		if v, ok := params[key].(string); ok {
			req.Header.Set("Mcp-Name", v)
		}
	}
	if c.sid != "" {
		req.Header.Set("Mcp-Session-Id", c.sid)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	if sid := resp.Header.Get("Mcp-Session-Id"); sid != "" && method == "initialize" {
		c.sid = sid
	}
	body, err = io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return resp.StatusCode, resp.Header.Get("Content-Type"), body, err
}

// lastSSEAnswer is the data of the last event of an SSE body that is a JSON-RPC answer.
func lastSSEAnswer(body []byte) []byte {
	var last []byte
	for _, data := range sseData(body) {
		if bytes.Contains(data, []byte(`"result"`)) || bytes.Contains(data, []byte(`"error"`)) {
			last = data
		}
	}
	return last
}

// sseData is the data of each event of an SSE body, in order.
func sseData(body []byte) [][]byte {
	var events [][]byte
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		if data, ok := bytes.CutPrefix(sc.Bytes(), []byte("data:")); ok {
			events = append(events, append([]byte(nil), bytes.TrimSpace(data)...))
		}
	}
	return events
}

// must is post that fails the test on a transport error or a JSON-RPC error.
func (c *rpcClient) must(t *testing.T, method string, params map[string]any) map[string]any {
	t.Helper()
	a, err := c.post(method, params)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	if a.Error != nil {
		t.Fatalf("%s: error %d %s", method, a.Error.Code, a.Error.Message)
	}
	return a.Result
}

// callTool calls a tool; handle, when not empty, is the stateless sandbox argument.
func (c *rpcClient) callTool(t *testing.T, handle, name string, args map[string]any) map[string]any {
	t.Helper()
	if handle != "" {
		args[mcp.HandleArg] = handle
	}
	return c.must(t, "tools/call", map[string]any{"name": name, "arguments": args})
}

// startTask calls a tool that must become a task, and returns its task id.
func (c *rpcClient) startTask(t *testing.T, handle, name string, args map[string]any) string {
	t.Helper()
	res := c.callTool(t, handle, name, args)
	id, _ := res["taskId"].(string)
	if res["resultType"] != "task" || id == "" || res["status"] != "working" {
		t.Fatalf("%s did not become a task: %v", name, res)
	}
	assertTaskWire(t, res, "task")
	return id
}

// getTask is tasks/get.
func (c *rpcClient) getTask(t *testing.T, id string) map[string]any {
	t.Helper()
	task := c.must(t, "tasks/get", map[string]any{"taskId": id})
	assertTaskWire(t, task, "complete")
	if task["taskId"] != id {
		t.Errorf("tasks/get %s answered for %v", id, task["taskId"])
	}
	return task
}

// assertTaskWire checks a task on the wire the way the extension (and the conformance
// suite's tasks scenarios) shape it: flat, with the 2026-07-28 field names, and a result
// or an error only where its status has one.
func assertTaskWire(t *testing.T, task map[string]any, resultType string) {
	t.Helper()
	if task["resultType"] != resultType {
		t.Errorf("resultType %v, want %s: %v", task["resultType"], resultType, task)
	}
	for _, key := range []string{"task", "ttl", "pollInterval", "requestState", "inputRequests"} {
		if _, ok := task[key]; ok && (key != "inputRequests" || task["status"] != "input_required") {
			t.Errorf("a task carries %q, which the extension does not define (inputRequests: only while input_required): %v", key, task)
		}
	}
	for _, key := range []string{"createdAt", "lastUpdatedAt"} {
		if s, _ := task[key].(string); s == "" {
			t.Errorf("%s %v, want an ISO 8601 time", key, task[key])
		} else if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			t.Errorf("%s: %v", key, err)
		}
	}
	ttl, present := task["ttlMs"]
	if n, isNum := ttl.(float64); !present || (ttl != nil && (!isNum || n <= 0 || n != float64(int64(n)))) {
		t.Errorf("ttlMs %v (present %v), want null or a positive integer", ttl, present)
	}
	if n, _ := task["pollIntervalMs"].(float64); n <= 0 || n != float64(int64(n)) {
		t.Errorf("pollIntervalMs %v, want a positive integer", task["pollIntervalMs"])
	}
	_, hasResult := task["result"]
	_, hasError := task["error"]
	switch task["status"] {
	case "completed":
		res, _ := task["result"].(map[string]any)
		content, _ := res["content"].([]any)
		meta, _ := res["_meta"].(map[string]any)
		if len(content) == 0 || hasError || meta["io.modelcontextprotocol/related-task"] != nil {
			t.Errorf("a completed task must inline its result (content, no related-task _meta) and no error: %v", task)
		}
	case "failed":
		e, _ := task["error"].(map[string]any)
		if _, ok := e["code"].(float64); !ok || hasResult {
			t.Errorf("a failed task must carry error{code,message} and no result: %v", task)
		}
	default:
		if hasResult || hasError {
			t.Errorf("a %v task carries a result or an error: %v", task["status"], task)
		}
	}
}

// awaitTask polls tasks/get until the task has ended, and returns it.
func (c *rpcClient) awaitTask(t *testing.T, id string, timeout time.Duration) map[string]any {
	t.Helper()
	var last map[string]any
	testwait.Until(t, timeout, "task "+id+" to end", func() bool {
		last = c.getTask(t, id)
		return last["status"] != "working" && last["status"] != "input_required"
	})
	return last
}

// resultText is the text of an inlined tool result.
func resultText(res map[string]any) string {
	var b strings.Builder
	content, _ := res["content"].([]any)
	for _, c := range content {
		if m, ok := c.(map[string]any); ok {
			s, _ := m["text"].(string)
			b.WriteString(s)
		}
	}
	return b.String()
}

// taskOutput is the latest output of a running task, from tasks/get's _meta.
func taskOutput(task map[string]any) string {
	meta, _ := task["_meta"].(map[string]any)
	out, _ := meta["io.github.enclave-mcp/output"].(map[string]any)
	s, _ := out["stdout"].(string)
	return s
}

// freshHTTP is a client on a connection of its own: the reconnect after a drop.
func freshHTTP() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{}).DialContext}}
}

func (c *rpcClient) openHandle(t *testing.T) string {
	t.Helper()
	res := c.callTool(t, "", "sandbox_open", map[string]any{})
	sc, _ := res["structuredContent"].(map[string]any)
	h, _ := sc[mcp.HandleArg].(string)
	if h == "" {
		t.Fatalf("sandbox_open: %v", res)
	}
	return h
}

// psHas reports whether the process list of the sandbox (handle's, or the session's)
// has a line containing what.
func (c *rpcClient) psHas(t *testing.T, handle, what string) bool {
	t.Helper()
	res := c.callTool(t, handle, "shell_executor", map[string]any{"command": "ps -eo args"})
	return strings.Contains(resultText(res), what)
}

// TestIntegrationHTTPTasksStateless: a stateless client of the tasks extension, on a real
// server over real HTTP, in real Docker sandboxes.
func TestIntegrationHTTPTasksStateless(t *testing.T) {
	f := newStatelessFixtureConfig(t, time.Minute, mcp.Config{TaskAfter: time.Second})
	alice := &rpcClient{url: f.url, token: httpTestToken, http: freshHTTP(), tasks: true}
	handle := alice.openHandle(t)

	t.Run("a call past the wait becomes a task that outlives the client's connection", func(t *testing.T) {
		// The client's request timeout is shorter than the call: synchronously it would
		// lose the result. It gets the task handle at TaskAfter, drops its connection,
		// reconnects and polls: the latest output while it runs, then the result.
		short := &rpcClient{url: f.url, token: httpTestToken, http: &http.Client{Timeout: 4 * time.Second, Transport: &http.Transport{}}, tasks: true}
		id := short.startTask(t, handle, "python_executor", map[string]any{
			"code": "import time\nprint('started', flush=True)\ntime.sleep(6)\nprint('finished')",
		})
		short.http.CloseIdleConnections()
		again := &rpcClient{url: f.url, token: httpTestToken, http: freshHTTP(), tasks: true}
		var sawOutput bool
		testwait.Until(t, 30*time.Second, "the task's output or its end", func() bool {
			task := again.getTask(t, id)
			sawOutput = task["status"] == "working" && strings.Contains(taskOutput(task), "started")
			return sawOutput || task["status"] != "working"
		})
		if !sawOutput {
			t.Errorf("tasks/get never showed the running task's output")
		}
		task := again.awaitTask(t, id, time.Minute)
		res, _ := task["result"].(map[string]any)
		if task["status"] != "completed" || !strings.Contains(resultText(res), "finished") || res["isError"] == true {
			t.Fatalf("completed task: %v", task)
		}
		if ttl, ok := task["ttlMs"].(float64); !ok || ttl <= 0 || task["resultType"] != "complete" {
			t.Errorf("ttlMs %v, resultType %v", task["ttlMs"], task["resultType"])
		}
	})

	t.Run("a call goes on when the client drops the request before the task handle", func(t *testing.T) {
		drop := &rpcClient{url: f.url, token: httpTestToken, http: &http.Client{Timeout: 300 * time.Millisecond, Transport: &http.Transport{}}, tasks: true}
		_, err := drop.post("tools/call", map[string]any{"name": "python_executor", "arguments": map[string]any{
			"code": "import time, pathlib\ntime.sleep(2)\npathlib.Path('survived.txt').write_text('yes')", mcp.HandleArg: handle,
		}})
		var netErr net.Error
		if !errors.As(err, &netErr) || !netErr.Timeout() {
			t.Fatalf("the short request: %v, want a client timeout", err)
		}
		testwait.Until(t, 30*time.Second, "the dropped call to finish its work", func() bool {
			res := alice.callTool(t, handle, "shell_executor", map[string]any{"command": "cat survived.txt 2>/dev/null || true"})
			return resultText(res) == "yes"
		})
	})

	t.Run("cancel kills the call's process tree", func(t *testing.T) {
		id := alice.startTask(t, handle, "python_executor", map[string]any{
			"code": "import subprocess\nsubprocess.Popen(['sleep', '3001'])\nsubprocess.run(['sleep', '3002'])",
		})
		testwait.Until(t, 30*time.Second, "the task's processes to start", func() bool {
			return alice.psHas(t, handle, "sleep 3001") && alice.psHas(t, handle, "sleep 3002")
		})
		ack := alice.must(t, "tasks/cancel", map[string]any{"taskId": id})
		if len(ack) != 1 || ack["resultType"] != "complete" {
			t.Errorf("cancel ack: %v, want only resultType complete", ack)
		}
		task := alice.awaitTask(t, id, 30*time.Second)
		if task["status"] != "cancelled" {
			t.Fatalf("cancelled task: %v", task)
		}
		if alice.psHas(t, handle, "sleep 300") {
			t.Fatalf("a process of the cancelled task is still running")
		}
		if again := alice.must(t, "tasks/cancel", map[string]any{"taskId": id}); again["resultType"] != "complete" {
			t.Errorf("cancelling an ended task: %v", again)
		}
	})

	t.Run("another token, or a client without the extension, cannot see a task", func(t *testing.T) {
		id := alice.startTask(t, handle, "shell_executor", map[string]any{"command": "sleep 20"})
		defer alice.must(t, "tasks/cancel", map[string]any{"taskId": id})
		bob := &rpcClient{url: f.url, token: bobToken, http: freshHTTP(), tasks: true}
		for _, method := range []string{"tasks/get", "tasks/update", "tasks/cancel"} {
			a, err := bob.post(method, map[string]any{"taskId": id, "inputResponses": map[string]any{}})
			if err != nil || a.Error == nil || a.Error.Code != -32602 || !strings.Contains(a.Error.Message, "not found") {
				t.Errorf("bob's %s: %+v, %v; want -32602 not found", method, a.Error, err)
			}
		}
		plain := &rpcClient{url: f.url, token: httpTestToken, http: freshHTTP()}
		a, err := plain.post("tasks/get", map[string]any{"taskId": id})
		if err != nil || a.Error == nil || a.Error.Code != -32021 || a.Error.Data["requiredCapabilities"] == nil {
			t.Errorf("tasks/get without the extension: %+v, %v; want -32021 with requiredCapabilities", a.Error, err)
		}
		if got := alice.getTask(t, id); got["status"] != "working" {
			t.Errorf("the task after the others' attempts: %v", got["status"])
		}
		wrong := &rpcClient{url: f.url, token: httpTestToken, http: freshHTTP(), tasks: true}
		a, err = wrong.post("tasks/get", map[string]any{"taskId": id + "-other"})
		if err != nil || a.Error == nil || a.Error.Code != -32602 {
			t.Errorf("an unknown task id: %+v, %v", a.Error, err)
		}
	})

	t.Run("a legacy task hint makes a task at once", func(t *testing.T) {
		res := alice.must(t, "tools/call", map[string]any{
			"name": "python_executor", "arguments": map[string]any{"code": "print('hinted')", mcp.HandleArg: handle},
			"task": map[string]any{"ttl": 60000},
		})
		id, _ := res["taskId"].(string)
		if res["resultType"] != "task" || id == "" {
			t.Fatalf("a hinted call: %v, want a task", res)
		}
		assertTaskWire(t, res, "task")
		task := alice.awaitTask(t, id, 30*time.Second)
		if out, _ := task["result"].(map[string]any); !strings.Contains(resultText(out), "hinted") {
			t.Fatalf("hinted task: %v", task)
		}
	})

	t.Run("without the extension a long call stays synchronous", func(t *testing.T) {
		plain := &rpcClient{url: f.url, token: httpTestToken, http: freshHTTP()}
		res := plain.callTool(t, handle, "python_executor", map[string]any{"code": "import time\ntime.sleep(1.5)\nprint('sync')"})
		if res["taskId"] != nil || !strings.Contains(resultText(res), "sync") {
			t.Fatalf("call of a client without the extension: %v", res)
		}
	})

	t.Run("closing the handle ends its tasks", func(t *testing.T) {
		h := alice.openHandle(t)
		id := alice.startTask(t, h, "shell_executor", map[string]any{"command": "sleep 3003"})
		alice.callTool(t, "", "sandbox_close", map[string]any{mcp.HandleArg: h})
		task := alice.awaitTask(t, id, 30*time.Second)
		if task["status"] != "cancelled" || !strings.Contains(fmt.Sprint(task["statusMessage"]), "ended") {
			t.Fatalf("a task of a closed handle: %v", task)
		}
	})
}

// TestIntegrationHTTPTasksSession: a session-bearing client (initialize, 2025-11-25) that
// declared the extension in initialize gets tasks too; they are its session's, and end
// with the session; a session with a task running is not idle.
func TestIntegrationHTTPTasksSession(t *testing.T) {
	f := newStatelessFixtureConfig(t, time.Second, mcp.Config{TaskAfter: time.Second})
	c := &rpcClient{url: f.url, token: httpTestToken, http: freshHTTP()}
	c.must(t, "initialize", map[string]any{
		"protocolVersion": "2025-11-25",
		"capabilities":    map[string]any{"extensions": map[string]any{mcp.TasksExtension: map[string]any{}}},
		"clientInfo":      map[string]any{"name": "tasks-test", "version": "1"},
	})
	if c.sid == "" {
		t.Fatal("initialize gave no session id")
	}

	// The session's idle TTL (1 s) passes while the task runs and the client sends nothing:
	// a running task is work under way, so the session stays, and the result is read after.
	c.callTool(t, "", "shell_executor", map[string]any{"command": "true"}) // the sandbox starts
	id := c.startTask(t, "", "shell_executor", map[string]any{"command": "sleep 4; echo from the session"})
	testwait.Until(t, 30*time.Second, "the task's call to end, without a request of the client's", func() bool {
		list := f.manager.ListOwned(c.sid)
		for _, sb := range list {
			if sb.Info().Status == sandbox.StatusBusy {
				return false
			}
		}
		return len(list) == 1
	})
	task := c.getTask(t, id)
	if res, _ := task["result"].(map[string]any); task["status"] != "completed" || !strings.Contains(resultText(res), "from the session") {
		t.Fatalf("session task: %v", task)
	}

	stateless := &rpcClient{url: f.url, token: httpTestToken, http: freshHTTP(), tasks: true}
	if a, err := stateless.post("tasks/get", map[string]any{"taskId": id}); err != nil || a.Error == nil || a.Error.Code != -32602 {
		t.Errorf("the same token without the session: %+v, %v; want not found", a.Error, err)
	}

	running := c.startTask(t, "", "shell_executor", map[string]any{"command": "sleep 3004"})
	req, _ := http.NewRequest(http.MethodDelete, f.url+"/mcp", nil)
	req.Header.Set("Mcp-Session-Id", c.sid)
	req.Header.Set("Authorization", "Bearer "+httpTestToken)
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	a, err := c.post("tasks/get", map[string]any{"taskId": running})
	if err != nil || a.status != http.StatusNotFound || a.Error == nil {
		t.Errorf("tasks/get of an ended session: HTTP %d %+v, %v; want 404 (its tasks ended with it)", a.status, a.Error, err)
	}
	_ = running
	f.waitNoSandboxes(t, "after the session ended")
}
