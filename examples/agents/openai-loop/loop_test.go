package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// fakeModel stands in for an LLM: no model provider is reachable from this machine, so a
// scripted chat-completions server plays the model's part. Each turn checks the request the
// loop sent and answers what a model would. Everything else is real: the loop talks to the
// real REST handler, which runs the tool calls in a real sandbox.
type fakeModel struct {
	t     *testing.T
	mu    sync.Mutex
	turns []func(req chatRequest) any
	seen  int
}

type chatRequest struct {
	Model    string            `json:"model"`
	Messages []message         `json:"messages"`
	Tools    []json.RawMessage `json:"tools"`
}

func (f *fakeModel) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.URL.Path != "/v1/chat/completions" || r.Header.Get("Authorization") != "Bearer sk-test" {
		f.t.Errorf("model called at %s with Authorization %q", r.URL.Path, r.Header.Get("Authorization"))
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	var req chatRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		f.t.Errorf("decoding the chat request: %v", err)
	}
	if f.seen >= len(f.turns) {
		f.t.Errorf("the loop called the model %d times; the script has %d turns", f.seen+1, len(f.turns))
		http.Error(w, "script exhausted", http.StatusInternalServerError)
		return
	}
	reply := f.turns[f.seen](req)
	f.seen++
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"id": fmt.Sprintf("chatcmpl-%d", f.seen), "object": "chat.completion", "model": req.Model,
		"choices": []any{map[string]any{"index": 0, "message": reply, "finish_reason": "stop"}},
	})
}

func callsTo(calls ...[3]string) map[string]any {
	var list []any
	for _, c := range calls {
		list = append(list, map[string]any{"id": c[0], "type": "function", "function": map[string]string{"name": c[1], "arguments": c[2]}})
	}
	return map[string]any{"role": "assistant", "content": nil, "tool_calls": list}
}

// lastTool returns the content of the tool message answering call id.
func lastTool(t *testing.T, req chatRequest, id string) string {
	t.Helper()
	for _, m := range req.Messages {
		if m.Role == "tool" && m.ToolCallID == id && m.Content != nil {
			return *m.Content
		}
	}
	t.Errorf("no tool message answers call %s in %d messages", id, len(req.Messages))
	return ""
}

func TestIntegrationLoopWithScriptedModel(t *testing.T) {
	e := testenv.Engine(t)
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Defaults: map[sandbox.Type]sandbox.Config{sandbox.TypeDocker: {}},
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: sandbox.NewCreator(e, sandbox.TypeDocker)},
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = m.Close(ctx)
	})
	api, err := httpapi.New(httpapi.Config{Manager: m, Token: "enclave-token", Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	enclave := httptest.NewServer(api.Handler())
	t.Cleanup(enclave.Close)

	model := &fakeModel{t: t}
	model.turns = []func(chatRequest) any{
		func(req chatRequest) any {
			if req.Model != "test-model" || len(req.Messages) != 2 || *req.Messages[1].Content != "What is 6 times 7?" {
				t.Errorf("first request: model %q, messages %+v", req.Model, req.Messages)
			}
			names := toolNames(t, req.Tools)
			if !strings.Contains(names, "python_executor") || !strings.Contains(names, "shell_executor") || strings.Contains(names, "notebook_") {
				t.Errorf("tools sent to the model: %s", names)
			}
			// Two calls at once, as models do; the second leaves a file for a later turn.
			return callsTo(
				[3]string{"call_py", "python_executor", `{"code": "print(6 * 7)"}`},
				[3]string{"call_sh", "shell_executor", `{"command": "echo $((6 * 7)) > answer.txt && cat answer.txt"}`},
			)
		},
		func(req chatRequest) any {
			for _, id := range []string{"call_py", "call_sh"} {
				if got := lastTool(t, req, id); got != "42\n" {
					t.Errorf("result of %s fed back as %q, want 42", id, got)
				}
			}
			// A mistake: the model misspells a parameter and must see why it failed.
			return callsTo([3]string{"call_bad", "file_operation", `{"operation": "read", "path": "answer.txt"}`})
		},
		func(req chatRequest) any {
			if got := lastTool(t, req, "call_bad"); !strings.Contains(got, `unknown parameter "path"`) {
				t.Errorf("the model was not told what was wrong: %q", got)
			}
			return callsTo([3]string{"call_read", "file_operation", `{"operation": "read", "file_path": "answer.txt"}`})
		},
		func(req chatRequest) any {
			if got := lastTool(t, req, "call_read"); got != "42\n" {
				t.Errorf("the file written two turns ago reads %q: the sandbox must persist across turns", got)
			}
			return map[string]any{"role": "assistant", "content": "6 times 7 is 42."}
		},
	}
	provider := httptest.NewServer(model)
	t.Cleanup(provider.Close)

	var stdout, stderr bytes.Buffer
	err = run(t.Context(), []string{
		"-server", enclave.URL, "-token", "enclave-token",
		"-base-url", provider.URL + "/v1", "-model", "test-model", "-api-key", "sk-test", "-v",
		"What is 6 times 7?",
	}, strings.NewReader(""), &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	if got := stdout.String(); got != "6 times 7 is 42.\n" {
		t.Errorf("answer %q", got)
	}
	if model.seen != len(model.turns) {
		t.Errorf("the model was called %d times, want %d", model.seen, len(model.turns))
	}
	if n := len(m.List()); n != 0 {
		t.Errorf("%d sandboxes left after the loop; it removes its own", n)
	}
}

func TestRunNeedsAPrompt(t *testing.T) {
	err := run(t.Context(), []string{"-server", "http://127.0.0.1:1"}, strings.NewReader("  "), &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "prompt") {
		t.Errorf("run without a prompt = %v", err)
	}
}

func toolNames(t *testing.T, tools []json.RawMessage) string {
	t.Helper()
	var names []string
	for _, raw := range tools {
		var tool struct {
			Type     string `json:"type"`
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		if err := json.Unmarshal(raw, &tool); err != nil || tool.Type != "function" {
			t.Errorf("not an OpenAI tool: %s", raw)
		}
		names = append(names, tool.Function.Name)
	}
	return strings.Join(names, ",")
}
