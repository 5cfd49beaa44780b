package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/enclave-mcp/enclave-mcp/client"
)

// Chat is the OpenAI chat-completions endpoint of any compatible provider.
type Chat struct {
	// BaseURL ends before /chat/completions, e.g. https://api.openai.com/v1.
	BaseURL string
	Model   string
	APIKey  string
	HTTP    *http.Client
}

// message is one chat message, in the shape the chat-completions API takes and returns.
type message struct {
	Role       string     `json:"role"`
	Content    *string    `json:"content"` // null on an assistant message that only calls tools
	ToolCalls  []toolCall `json:"tool_calls,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
}

type toolCall struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name string `json:"name"`
		// Arguments is a JSON object encoded as a string, as the API sends it.
		Arguments string `json:"arguments"`
	} `json:"function"`
}

func text(s string) *string { return &s }

// complete sends the conversation and the tools, and returns the model's next message.
func (c Chat) complete(ctx context.Context, msgs []message, tools []json.RawMessage) (message, error) {
	body, err := json.Marshal(map[string]any{"model": c.Model, "messages": msgs, "tools": tools, "tool_choice": "auto"})
	if err != nil {
		return message{}, fmt.Errorf("encoding the chat request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(c.BaseURL, "/")+"/chat/completions", bytes.NewReader(body))
	if err != nil {
		return message{}, fmt.Errorf("building the chat request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.APIKey)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return message{}, fmt.Errorf("calling the model: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		detail, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return message{}, fmt.Errorf("calling the model: %s: %s", resp.Status, bytes.TrimSpace(detail))
	}
	var out struct {
		Choices []struct {
			Message message `json:"message"`
		} `json:"choices"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return message{}, fmt.Errorf("decoding the model's answer: %w", err)
	}
	if len(out.Choices) == 0 {
		return message{}, errors.New("the model answered with no choices")
	}
	return out.Choices[0].Message, nil
}

// Agent is a function-calling loop whose tools run in one enclave-mcp sandbox.
type Agent struct {
	Chat    Chat
	Enclave *client.Remote
	// Format is the tool schema format: "openai" or "openai-strict".
	Format   string
	MaxTurns int
	System   string
	Log      *slog.Logger
}

// Run creates a sandbox, loops until the model answers without calling a tool (or MaxTurns
// pass), removes the sandbox, and returns the answer.
func (a Agent) Run(ctx context.Context, prompt string) (string, error) {
	id, err := a.Enclave.Create(ctx, client.TypeDocker, client.Config{})
	if err != nil {
		return "", fmt.Errorf("creating a sandbox: %w", err)
	}
	defer func() {
		if err := a.Enclave.Delete(context.WithoutCancel(ctx), id); err != nil {
			a.Log.Warn("removing the sandbox", "sandbox", id, "error", err)
		}
	}()
	tools, err := a.tools(ctx, id)
	if err != nil {
		return "", err
	}
	a.Log.Info("sandbox ready", "sandbox", id, "tools", len(tools))

	var msgs []message
	if a.System != "" {
		msgs = append(msgs, message{Role: "system", Content: text(a.System)})
	}
	msgs = append(msgs, message{Role: "user", Content: text(prompt)})
	for turn := 1; turn <= a.MaxTurns; turn++ {
		reply, err := a.Chat.complete(ctx, msgs, tools)
		if err != nil {
			return "", err
		}
		reply.Role = "assistant"
		msgs = append(msgs, reply)
		if len(reply.ToolCalls) == 0 {
			if reply.Content == nil {
				return "", nil
			}
			return *reply.Content, nil
		}
		for _, call := range reply.ToolCalls {
			out := a.call(ctx, id, call)
			msgs = append(msgs, message{Role: "tool", ToolCallID: call.ID, Content: text(out)})
		}
	}
	return "", fmt.Errorf("no final answer after %d turns", a.MaxTurns)
}

// tools fetches the server's tool list in the chosen format and keeps those this sandbox
// offers (the list also holds notebook tools, which a docker sandbox does not run).
func (a Agent) tools(ctx context.Context, id string) ([]json.RawMessage, error) {
	all, err := a.Enclave.ExportTools(ctx, a.Format)
	if err != nil {
		return nil, fmt.Errorf("fetching the tool list: %w", err)
	}
	offered, err := a.Enclave.Tools(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("listing the sandbox's tools: %w", err)
	}
	var out []json.RawMessage
	for _, raw := range all {
		var t struct {
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		if json.Unmarshal(raw, &t) == nil && offered[t.Function.Name] != nil {
			out = append(out, raw)
		}
	}
	return out, nil
}

// call runs one tool call and returns what the model reads: the output and errors as text,
// or why the call could not run. Failures go back to the model, which can correct itself.
func (a Agent) call(ctx context.Context, id string, call toolCall) string {
	args := json.RawMessage(call.Function.Arguments)
	if !json.Valid(args) {
		return fmt.Sprintf("error: the arguments of %s are not valid JSON: %s", call.Function.Name, call.Function.Arguments)
	}
	res, err := a.Enclave.ExecuteTool(ctx, id, call.Function.Name, args)
	if err != nil {
		a.Log.Warn("tool call failed", "tool", call.Function.Name, "error", err)
		return "error: " + err.Error()
	}
	a.Log.Info("tool call", "tool", call.Function.Name, "status", res.Status, "seconds", res.ExecutionTime)
	if res.OK() {
		return res.Text()
	}
	return fmt.Sprintf("[%s] %s", res.Status, res.Text())
}
