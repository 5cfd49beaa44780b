package mcp_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	mcpgo "github.com/mark3labs/mcp-go/mcp"

	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/mcp"
	"github.com/enclave-mcp/enclave-mcp/mcp/conformance"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// newLocalToolsServer is a real server over real HTTP serving the conformance fixtures as
// local tools beside the sandbox tools (no engine: the fixtures run no sandbox).
func newLocalToolsServer(t *testing.T) string {
	t.Helper()
	return newLocalToolsServerWith(t, mcp.HTTPOptions{})
}

// newLocalToolsServerWith is newLocalToolsServer with opts for its HTTP transports.
func newLocalToolsServerWith(t *testing.T, opts mcp.HTTPOptions) string {
	t.Helper()
	manager := sandbox.NewManager(sandbox.ManagerOptions{})
	t.Cleanup(func() { _ = manager.Close(context.Background()) })
	srv, err := mcp.New(mcp.Config{Tools: tools.All(), Manager: manager, TaskAfter: 200 * time.Millisecond,
		LocalTools: conformance.Tools()})
	if err != nil {
		t.Fatal(err)
	}
	return serveStreamable(t, srv, opts, nil)
}

// TestLocalToolsTasks: the conformance fixtures' calls take the tasks path every tool
// takes, by their task support: greet never becomes a task (not even with the legacy hint),
// slow_compute does when it runs past the wait and can be cancelled, failing_job and
// protocol_error_job always do (and a client without the extension is refused -32021),
// and a panic fails its task, not the server. The conformance suite's tasks scenarios
// check the same through the suite (make conformance); this is the check without Node.
func TestLocalToolsTasks(t *testing.T) {
	t.Parallel()
	url := newLocalToolsServer(t)
	tasks := &rpcClient{url: url, http: freshHTTP(), tasks: true}
	plain := &rpcClient{url: url, http: freshHTTP()}

	t.Run("greet answers synchronously, even to the legacy task hint", func(t *testing.T) {
		for _, c := range []*rpcClient{tasks, plain} {
			res := c.must(t, "tools/call", map[string]any{"name": "greet", "arguments": map[string]any{"name": "World"},
				"task": map[string]any{"ttl": 60000}})
			if res["taskId"] != nil || res["resultType"] == "task" || resultText(res) != "Hello, World!" {
				t.Errorf("greet (tasks declared %v): %v; want the synchronous result Hello, World!", c.tasks, res)
			}
		}
	})

	t.Run("slow_compute past the wait is a task that completes with its result", func(t *testing.T) {
		id := tasks.startTask(t, "", "slow_compute", map[string]any{"seconds": 2, "label": "lifecycle"})
		task := tasks.awaitTask(t, id, 30*time.Second)
		res, _ := task["result"].(map[string]any)
		if task["status"] != "completed" || res["isError"] == true || !strings.Contains(resultText(res), `"lifecycle" done`) {
			t.Errorf("slow_compute's task: %v", task)
		}
	})

	t.Run("a cancelled slow_compute ends cancelled; cancelling it again is the same ack", func(t *testing.T) {
		id := tasks.startTask(t, "", "slow_compute", map[string]any{"seconds": 60, "label": "cancel"})
		for i := range 2 {
			ack := tasks.must(t, "tasks/cancel", map[string]any{"taskId": id})
			if len(ack) != 1 || ack["resultType"] != "complete" {
				t.Errorf("tasks/cancel #%d answered %v; want only resultType complete", i+1, ack)
			}
			if task := tasks.awaitTask(t, id, 30*time.Second); task["status"] != "cancelled" {
				t.Errorf("after tasks/cancel #%d the task is %v", i+1, task["status"])
			}
		}
	})

	t.Run("without the extension slow_compute answers synchronously", func(t *testing.T) {
		res := plain.must(t, "tools/call", map[string]any{"name": "slow_compute", "arguments": map[string]any{"seconds": 0, "label": "sync"}})
		if res["taskId"] != nil || !strings.Contains(resultText(res), `"sync" done`) {
			t.Errorf("slow_compute without the extension: %v", res)
		}
	})

	t.Run("failing_job is a task that completes with a tool error", func(t *testing.T) {
		id := tasks.startTask(t, "", "failing_job", map[string]any{})
		task := tasks.awaitTask(t, id, 30*time.Second)
		res, _ := task["result"].(map[string]any)
		if task["status"] != "completed" || res["isError"] != true {
			t.Errorf("failing_job's task: %v; want completed with result.isError", task)
		}
	})

	t.Run("a tool that requires a task refuses a client without the extension with -32021", func(t *testing.T) {
		a, err := plain.post("tools/call", map[string]any{"name": "failing_job", "arguments": map[string]any{}})
		if err != nil {
			t.Fatal(err)
		}
		if a.Error == nil || a.Error.Code != mcpgo.MISSING_REQUIRED_CLIENT_CAPABILITY {
			t.Fatalf("failing_job without the extension: %+v; want error -32021", a)
		}
		caps, _ := a.Error.Data["requiredCapabilities"].(map[string]any)
		ext, _ := caps["extensions"].(map[string]any)
		if _, ok := ext[mcp.TasksExtension]; !ok {
			t.Errorf("the -32021 error's data does not name the extension: %v", a.Error.Data)
		}
	})

	t.Run("confirm_delete asks for input; the answer completes it, other keys are ignored", func(t *testing.T) {
		id := tasks.startTask(t, "", "confirm_delete", map[string]any{"filename": "a.txt"})
		task := tasks.awaitStatus(t, id, "input_required")
		reqs, _ := task["inputRequests"].(map[string]any)
		req, _ := reqs["confirm"].(map[string]any)
		if len(reqs) != 1 || req["method"] != "elicitation/create" {
			t.Fatalf("inputRequests %v; want one elicitation/create, keyed confirm", task["inputRequests"])
		}
		for _, answers := range []map[string]any{
			{"unknown-key": map[string]any{"ignored": true}},
			{"confirm": map[string]any{"action": "accept", "content": map[string]any{"confirm": true}}},
		} {
			ack := tasks.must(t, "tasks/update", map[string]any{"taskId": id, "inputResponses": answers})
			if len(ack) != 1 || ack["resultType"] != "complete" {
				t.Errorf("tasks/update answered %v; want only resultType complete", ack)
			}
			if _, known := answers["confirm"]; !known {
				if got := tasks.getTask(t, id); got["status"] != "input_required" {
					t.Errorf("after an answer to a key it did not ask, the task is %v", got["status"])
				}
			}
		}
		task = tasks.awaitTask(t, id, 30*time.Second)
		if res, _ := task["result"].(map[string]any); task["status"] != "completed" || !strings.Contains(resultText(res), "confirmed: a.txt") {
			t.Errorf("confirm_delete after its answer: %v", task)
		}
	})

	t.Run("multi_input stays input_required until both answers came, one at a time", func(t *testing.T) {
		id := tasks.startTask(t, "", "multi_input", map[string]any{})
		task := tasks.awaitStatus(t, id, "input_required")
		if reqs, _ := task["inputRequests"].(map[string]any); len(reqs) != 2 {
			t.Fatalf("inputRequests %v; want two", task["inputRequests"])
		}
		answer := func(key, name string) {
			tasks.must(t, "tasks/update", map[string]any{"taskId": id, "inputResponses": map[string]any{
				key: map[string]any{"action": "accept", "content": map[string]any{"name": name, "confirm": true}}}})
		}
		answer("first", "one")
		task = tasks.getTask(t, id)
		reqs, _ := task["inputRequests"].(map[string]any)
		if _, left := reqs["second"]; task["status"] != "input_required" || len(reqs) != 1 || !left {
			t.Fatalf("after the first answer: %v; want input_required, asking only second", task)
		}
		answer("second", "two")
		task = tasks.awaitTask(t, id, 30*time.Second)
		if res, _ := task["result"].(map[string]any); task["status"] != "completed" || resultText(res) != "first: accept one; second: accept two" {
			t.Errorf("multi_input after both answers: %v", task)
		}
	})

	t.Run("tasks/update with inputResponses that are not an object is refused, saying so", func(t *testing.T) {
		id := tasks.startTask(t, "", "confirm_delete", map[string]any{"filename": "c.txt"})
		t.Cleanup(func() { _, _ = tasks.post("tasks/cancel", map[string]any{"taskId": id}) })
		a, err := tasks.post("tasks/update", map[string]any{"taskId": id, "inputResponses": "yes"})
		if err != nil {
			t.Fatal(err)
		}
		if a.Error == nil || a.Error.Code != mcpgo.INVALID_PARAMS || !strings.Contains(a.Error.Message, `"inputResponses": an object`) {
			t.Errorf("tasks/update with a string for inputResponses: %+v; want -32602 saying it must be an object", a)
		}
	})

	t.Run("a task waiting for input is cancelled", func(t *testing.T) {
		id := tasks.startTask(t, "", "confirm_delete", map[string]any{"filename": "b.txt"})
		tasks.awaitStatus(t, id, "input_required")
		tasks.must(t, "tasks/cancel", map[string]any{"taskId": id})
		if task := tasks.awaitTask(t, id, 30*time.Second); task["status"] != "cancelled" {
			t.Errorf("after tasks/cancel: %v", task)
		}
	})

	t.Run("a call that panics fails its task with a protocol error; the server goes on", func(t *testing.T) {
		id := tasks.startTask(t, "", "protocol_error_job", map[string]any{})
		task := tasks.awaitTask(t, id, 30*time.Second)
		e, _ := task["error"].(map[string]any)
		if task["status"] != "failed" || e["code"] != float64(mcpgo.INTERNAL_ERROR) || !strings.Contains(e["message"].(string), "panicked") {
			t.Errorf("protocol_error_job's task: %v; want failed with an internal error that says it panicked", task)
		}
		if res := tasks.callTool(t, "", "greet", map[string]any{"name": "after"}); resultText(res) != "Hello, after!" {
			t.Errorf("after the panic: %v", res)
		}
	})
}

// awaitStatus polls tasks/get until the task is status (or has ended), and returns it.
func (c *rpcClient) awaitStatus(t *testing.T, id, status string) map[string]any {
	t.Helper()
	var last map[string]any
	testwait.Until(t, 30*time.Second, "task "+id+" to be "+status, func() bool {
		last = c.getTask(t, id)
		return last["status"] == status || (last["status"] != "working" && last["status"] != "input_required") // or ended
	})
	if last["status"] != status {
		t.Fatalf("task %s is %v, not %s: %v", id, last["status"], status, last)
	}
	return last
}

// TestLocalToolsResults: the fixtures outside the tasks extension answer as the suite's
// scenarios describe, and bad arguments are a tool error that names the argument.
func TestLocalToolsResults(t *testing.T) {
	t.Parallel()
	c := &rpcClient{url: newLocalToolsServer(t), http: freshHTTP()}
	for _, tc := range []struct {
		tool    string
		args    map[string]any
		isError bool
		text    string // a part of the result's text
		image   bool   // the content has a PNG image
	}{
		{tool: "test_simple_text", text: "This is a simple text response for testing."},
		{tool: "test_error_handling", isError: true, text: "This tool intentionally returns an error for testing"},
		{tool: "test_image_content", image: true},
		{tool: "greet", args: map[string]any{}, isError: true, text: `"name"`},
		{tool: "greet", args: map[string]any{"name": "x", "nmae": "y"}, isError: true, text: "nmae"},
		{tool: "slow_compute", args: map[string]any{"seconds": 301}, isError: true, text: "from 0 to 300"},
	} {
		t.Run(tc.tool, func(t *testing.T) {
			params := map[string]any{"name": tc.tool}
			if tc.args != nil {
				params["arguments"] = tc.args
			}
			res := c.must(t, "tools/call", params)
			if (res["isError"] == true) != tc.isError || !strings.Contains(resultText(res), tc.text) {
				t.Errorf("%s: %v; want isError %v and a text with %q", tc.tool, res, tc.isError, tc.text)
			}
			var png bool
			content, _ := res["content"].([]any)
			for _, item := range content {
				m, _ := item.(map[string]any)
				png = png || (m["type"] == "image" && m["mimeType"] == "image/png" && m["data"] != "")
			}
			if png != tc.image {
				t.Errorf("%s: image content %v, want %v: %v", tc.tool, png, tc.image, content)
			}
		})
	}

	t.Run("tools/list shows json_schema_2020_12_tool's schema whole", func(t *testing.T) {
		res := c.must(t, "tools/list", nil)
		list, _ := json.Marshal(res["tools"])
		var tools []struct {
			Name        string         `json:"name"`
			InputSchema map[string]any `json:"inputSchema"`
		}
		if err := json.Unmarshal(list, &tools); err != nil {
			t.Fatal(err)
		}
		for _, tool := range tools {
			if tool.Name != "json_schema_2020_12_tool" {
				continue
			}
			s := tool.InputSchema
			defs, _ := s["$defs"].(map[string]any)
			addr, _ := defs["address"].(map[string]any)
			if s["$schema"] != "https://json-schema.org/draft/2020-12/schema" || addr["$anchor"] != "addressDef" ||
				s["allOf"] == nil || s["if"] == nil || s["then"] == nil || s["else"] == nil || s["additionalProperties"] != false {
				t.Errorf("json_schema_2020_12_tool's schema lost a keyword: %v", s)
			}
			return
		}
		t.Errorf("json_schema_2020_12_tool is not listed")
	})
}

// TestLocalToolsRefused: New refuses a local tool it could not serve, saying why.
func TestLocalToolsRefused(t *testing.T) {
	t.Parallel()
	run := func(context.Context, json.RawMessage, func(sandbox.Output)) (tools.Result, error) {
		return tools.Result{}, nil
	}
	tool := func(name string) mcpgo.Tool {
		return mcpgo.NewToolWithRawSchema(name, "", json.RawMessage(`{"type":"object"}`))
	}
	withExecution := tool("x")
	withExecution.Execution = &mcpgo.ToolExecution{TaskSupport: mcpgo.TaskSupportOptional}
	for _, tc := range []struct {
		name string
		lt   mcp.LocalTool
		want string
	}{
		{"no name", mcp.LocalTool{Tool: tool(""), Tasks: mcp.TasksOptional, Run: run}, "no name"},
		{"a sandbox tool's name", mcp.LocalTool{Tool: tool("python_executor"), Tasks: mcp.TasksOptional, Run: run}, "already served"},
		{"the handle tool's name", mcp.LocalTool{Tool: tool("sandbox_open"), Tasks: mcp.TasksOptional, Run: run}, "already served"},
		{"no Run", mcp.LocalTool{Tool: tool("x"), Tasks: mcp.TasksOptional}, "Run is nil"},
		{"no task support", mcp.LocalTool{Tool: tool("x"), Run: run}, `want "forbidden", "optional" or "required"`},
		{"Execution set", mcp.LocalTool{Tool: withExecution, Tasks: mcp.TasksOptional, Run: run}, "leave Tool.Execution unset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			manager := sandbox.NewManager(sandbox.ManagerOptions{})
			t.Cleanup(func() { _ = manager.Close(context.Background()) })
			_, err := mcp.New(mcp.Config{Tools: tools.All(), Manager: manager, LocalTools: []mcp.LocalTool{tc.lt}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v; want an error with %q", err, tc.want)
			}
		})
	}
}
