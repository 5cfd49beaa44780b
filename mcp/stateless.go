package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/enclave-mcp/enclave-mcp/api"
	"github.com/enclave-mcp/enclave-mcp/session"
)

// Stateless clients. A client of protocol 2026-07-28 over streamable HTTP has no MCP
// session: each request stands alone, without an Mcp-Session-Id. Its sandbox is named by a
// handle instead (session.Handles): sandbox_open creates one for the request's credential
// (the token's principal, as on the REST API) and returns its id, every tool takes it as
// the argument "sandbox", and sandbox_close ends it. A client with a session (the
// initialize handshake of 2025-11-25 and earlier, stdio, SSE) keeps its one sandbox per
// session and never sees any of this.
//
// tools/list differs by caller, not by registration: the tools are registered once, with
// the schemas session clients have always seen, and a tool filter (the one hook mcp-go runs
// on both tools/list and tools/call) shows a stateless caller each tool with "sandbox"
// added to its schema, plus the two handle tools, and hides the handle tools from session
// callers (a call to one is then "tool not found", as for any tool not listed). One
// registration keeps one handler per tool and one place where a call is run; the two
// schemas of a tool are computed once, in New.

const (
	// HandleArg is the argument that names a stateless caller's sandbox.
	HandleArg   = "sandbox"
	openTool    = "sandbox_open"
	closeTool   = "sandbox_close"
	handleUsage = "call sandbox_open first and pass the handle it returns as the argument \"sandbox\" of every tool call"
)

// principalKey carries the request's principal (HTTPOptions.Principal) into tool handlers.
type principalKey struct{}

// caller is who a request acts for: an MCP session, whose one sandbox every tool runs in;
// or, without a session, a principal whose sandboxes are named by handles.
type caller struct {
	session   string
	principal string
}

func (c caller) stateless() bool { return c.session == "" }

// callerOf names the caller of a request. A request without a session (a stateless
// 2026-07-28 request over streamable HTTP) acts for its principal; when the transport
// names none (an embedder's server without a token check), for session.DefaultOwner.
func callerOf(ctx context.Context) caller {
	if cs := server.ClientSessionFromContext(ctx); cs != nil && cs.SessionID() != "" {
		return caller{session: cs.SessionID()}
	}
	p, _ := ctx.Value(principalKey{}).(string)
	if p == "" {
		p = session.DefaultOwner
	}
	return caller{principal: p}
}

// statelessSchema is a tool's schema with the handle argument added, required: without
// it a stateless call cannot name a sandbox. A tool that already has a parameter of that
// name cannot be served to stateless clients; New refuses it.
func statelessSchema(name string, raw json.RawMessage) (json.RawMessage, error) {
	var s map[string]any
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("reading the schema of %s: %w", name, err)
	}
	props, _ := s["properties"].(map[string]any)
	if props == nil {
		props = map[string]any{}
	}
	if _, ok := props[HandleArg]; ok {
		return nil, fmt.Errorf("tool %s has a parameter %q, the name stateless MCP clients pass their sandbox handle as", name, HandleArg)
	}
	props[HandleArg] = handleProperty()
	s["properties"] = props
	required, _ := s["required"].([]any)
	s["required"] = append(required, HandleArg)
	return json.Marshal(s)
}

func handleProperty() map[string]any {
	return map[string]any{
		"type":        "string",
		"minLength":   1,
		"description": "The sandbox to run in: the handle sandbox_open returned.",
	}
}

// filterTools is the tool filter: session callers see the tools as registered, without
// the handle tools; stateless callers see every tool with its stateless schema.
func (s *Server) filterTools(ctx context.Context, list []mcp.Tool) []mcp.Tool {
	stateless := callerOf(ctx).stateless()
	out := make([]mcp.Tool, 0, len(list))
	for _, tool := range list {
		handleTool := tool.Name == openTool || tool.Name == closeTool
		switch {
		case !stateless && handleTool:
			continue
		case stateless && !handleTool:
			if raw, ok := s.statelessSchemas[tool.Name]; ok {
				tool.RawInputSchema = raw
			}
		}
		out = append(out, tool)
	}
	return out
}

// addHandleTools registers sandbox_open and sandbox_close (listed to stateless callers only).
func (s *Server) addHandleTools() error {
	open := mcp.NewToolWithRawSchema(openTool,
		"Open a sandbox (an isolated container with no network, a workspace directory, and every tool of this "+
			"server) and return its handle. Pass the handle as \"sandbox\" to every other tool: files and "+
			"background jobs persist between calls in the same sandbox. Close it with sandbox_close when done; "+
			"an unused one also ends by itself after an idle timeout. Only the credential that opened a sandbox "+
			"can use it.",
		json.RawMessage(`{"type":"object","properties":{},"additionalProperties":false}`))
	closeSchema, err := json.Marshal(map[string]any{
		"type": "object", "properties": map[string]any{HandleArg: handleProperty()},
		"required": []string{HandleArg}, "additionalProperties": false,
	})
	if err != nil {
		return err
	}
	closing := mcp.NewToolWithRawSchema(closeTool,
		"Close a sandbox sandbox_open opened: the container and every file in it are removed, and its "+
			"running processes killed.", closeSchema)
	for _, t := range []*mcp.Tool{&open, &closing} {
		t.Annotations = mcp.ToolAnnotation{
			ReadOnlyHint: mcp.ToBoolPtr(false), DestructiveHint: mcp.ToBoolPtr(t.Name == closeTool),
			IdempotentHint: mcp.ToBoolPtr(false), OpenWorldHint: mcp.ToBoolPtr(false),
		}
	}
	s.mcp.AddTool(open, s.openHandle)
	s.mcp.AddTool(closing, s.closeHandle)
	return nil
}

func (s *Server) openHandle(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	c := callerOf(ctx)
	if !c.stateless() {
		return errorResult(openTool + ": this MCP session already has its sandbox; every tool runs in it without a handle"), nil
	}
	if args, ok := req.GetRawArguments().(map[string]any); ok && len(args) > 0 {
		return errorResult(fmt.Sprintf("%s takes no arguments; got %s", openTool, jsonText(args))), nil
	}
	id, err := s.handles.Open(ctx, c.principal)
	if err != nil {
		return errorResult(openTool + ": " + limitAdvice(err)), nil
	}
	text := fmt.Sprintf("Opened sandbox %s. Pass \"sandbox\": %q to every tool call; close it with sandbox_close when done.", id, id)
	return &mcp.CallToolResult{
		Content:           []mcp.Content{mcp.NewTextContent(text)},
		StructuredContent: map[string]any{HandleArg: id},
	}, nil
}

func (s *Server) closeHandle(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	c := callerOf(ctx)
	if !c.stateless() {
		return errorResult(closeTool + ": this MCP session's sandbox ends with the session"), nil
	}
	id, present, rest, err := splitHandle(req.GetRawArguments())
	if err == nil && !present {
		err = fmt.Errorf("the argument %q is required: the handle sandbox_open returned", HandleArg)
	}
	if other, ok := rest.(map[string]any); err == nil && ok && len(other) > 0 {
		err = fmt.Errorf("the only argument is %q; got also %s", HandleArg, jsonText(other))
	}
	if err != nil {
		return errorResult(closeTool + ": " + err.Error()), nil
	}
	if err := s.handles.Close(ctx, c.principal, id); err != nil {
		return errorResult(closeTool + ": " + handleAdvice(err)), nil
	}
	return &mcp.CallToolResult{
		Content:           []mcp.Content{mcp.NewTextContent(fmt.Sprintf("Closed sandbox %s: its container and files are gone.", id))},
		StructuredContent: map[string]any{HandleArg: id, "closed": true},
	}, nil
}

// splitHandle takes the handle argument out of a tool call's arguments: the handle, whether
// one was given, and the arguments without it (so the tool, whose own parameters are
// checked strictly, never sees it).
func splitHandle(args any) (handle string, present bool, rest any, err error) {
	var m map[string]any
	switch a := args.(type) {
	case nil:
		return "", false, args, nil
	case map[string]any:
		m = a
	default:
		raw, err := json.Marshal(a)
		if err != nil || json.Unmarshal(raw, &m) != nil {
			return "", false, args, nil // not an object: the tool's own check says so
		}
	}
	v, ok := m[HandleArg]
	if !ok {
		return "", false, args, nil
	}
	rest = func() map[string]any {
		out := make(map[string]any, len(m)-1)
		for k, val := range m {
			if k != HandleArg {
				out[k] = val
			}
		}
		return out
	}()
	id, isString := v.(string)
	if !isString || strings.TrimSpace(id) == "" {
		return "", true, rest, fmt.Errorf("the argument %q must be a sandbox handle, a non-empty string that sandbox_open returned; got %s", HandleArg, jsonText(v))
	}
	return id, true, rest, nil
}

// jsonText is v as JSON, shortened, for an error message.
func jsonText(v any) string {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	if len(raw) > 80 {
		return string(raw[:80]) + "..."
	}
	return string(raw)
}

// handleAdvice is a failure to find a handle, with what to do.
func handleAdvice(err error) string {
	if errors.Is(err, session.ErrNoHandle) {
		return err.Error() + ": a handle is valid only for the token that opened it, until sandbox_close or its idle timeout; " +
			"sandbox_open opens a new one"
	}
	return err.Error()
}

// limitAdvice is a refused sandbox, with what to do when a limit refused it.
func limitAdvice(err error) string {
	if errors.Is(err, api.ErrLimit) {
		return err.Error() + " (close one of this token's sandboxes with sandbox_close)"
	}
	return err.Error()
}
