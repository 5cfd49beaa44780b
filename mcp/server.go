// Package mcp serves enclave-mcp's tools over the Model Context Protocol. It adapts each
// tools.Def to an MCP tool, runs every call through the session core (package session) as
// the MCP session's caller, whose one sandbox (for every tool) is created on its first tool
// call and removed when the session ends, and is the one place where tool outcomes and
// errors are mapped to MCP results. Clients without a session (the stateless protocol,
// 2026-07-28) name their sandbox by a handle instead (stateless.go). The workspace of that sandbox is served as MCP resources
// (resources.go).
package mcp

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/schema"
	"github.com/enclave-mcp/enclave-mcp/session"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// Config is everything a Server needs; it knows nothing about flags or files.
type Config struct {
	Name    string
	Version string
	// Core runs the tool calls, shared with the other faces. When nil, New builds one from
	// Manager, Tools, ToolOptions, DefaultTimeout and Logger.
	Core *session.Core
	// Tools are the tools to serve, in order.
	Tools []tools.Def
	// ToolOptions are per-tool options (a sandbox config's tools_config).
	ToolOptions sandbox.ToolsConfig
	// DefaultTimeout in seconds for tool calls that pass none.
	DefaultTimeout float64
	Manager        *sandbox.Manager
	Logger         *slog.Logger
	// OnToolCall, when set, is told of every finished tool call (metrics).
	OnToolCall func(tool string, res tools.Result, took time.Duration)
	// MaxResourceBytes caps a workspace file read as an MCP resource; 0 means
	// DefaultMaxResourceBytes.
	MaxResourceBytes int64
	// TaskAfter is how long a tool call of a client that declared the tasks extension
	// runs before it goes on as a task (tasks.go); 0 means DefaultTaskAfter, and a
	// negative value keeps every call synchronous.
	TaskAfter time.Duration
	// LocalTools are served beside the sandbox tools and run in the server's process
	// (local.go).
	LocalTools []LocalTool
}

// Server is an MCP server over enclave-mcp's tools.
type Server struct {
	cfg      Config
	core     *session.Core
	log      *slog.Logger
	mcp      *server.MCPServer
	sessions *sessionIDs
	// handles are stateless callers' sandboxes (stateless.go); statelessSchemas the tools'
	// schemas as stateless callers see them, by tool name.
	handles          *session.Handles
	statelessSchemas map[string]json.RawMessage
	// taskSessions are the sessions whose client declared the tasks extension in
	// initialize.
	taskMu       sync.Mutex
	taskSessions map[string]bool
	// requiredTasks are the tools whose calls run only as tasks, by name; set in New.
	requiredTasks map[string]bool
	// states seals and opens the requestState of multi round-trip calls (mrtr.go).
	states *stateCodec
}

const instructions = "Each session gets its own isolated sandbox (a container with no network), created on the " +
	"first tool call and removed when the session ends. Every tool of the session runs in that one sandbox and " +
	"sees the same workspace: files persist between calls and tools, and background jobs started with " +
	"shell_executor are listed by background_jobs. Use file_operation to move text in and out, python_executor " +
	"and shell_executor to run code. notebook_executor runs code in a Jupyter kernel inside the same sandbox, " +
	"started on its first call, with the workspace as its working directory: variables persist between calls, " +
	"files it writes are seen by the other tools, and plots come back as images. The workspace's files are also " +
	"MCP resources (sandbox://workspace/<path>), listed by resources/list once the first tool call has started the sandbox. " +
	"Clients without a session (protocol 2026-07-28, stateless) call sandbox_open first and pass the handle it returns " +
	"as \"sandbox\" to every tool; sandbox_close removes that sandbox, and its files are sandbox://sandboxes/<handle>/<path>."

// New builds the server and registers every tool.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Name == "" {
		cfg.Name = "enclave-mcp"
	}
	core := cfg.Core
	if core == nil {
		if cfg.Manager == nil {
			return nil, errors.New("mcp.New: a session core or a sandbox manager is required")
		}
		if cfg.Tools == nil {
			cfg.Tools = []tools.Def{}
		}
		var err error
		core, err = session.New(session.Config{
			Manager: cfg.Manager, Tools: cfg.Tools, ToolOptions: cfg.ToolOptions,
			DefaultTimeout: cfg.DefaultTimeout, Version: cfg.Version, Logger: cfg.Logger,
		})
		if err != nil {
			return nil, err
		}
	}
	cfg.Tools = core.ToolDefs()
	if cfg.MaxResourceBytes <= 0 {
		cfg.MaxResourceBytes = DefaultMaxResourceBytes
	}
	if cfg.TaskAfter == 0 {
		cfg.TaskAfter = DefaultTaskAfter
	}
	states, err := newStateCodec()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, core: core, log: cfg.Logger, sessions: newSessionIDs(),
		handles: session.NewHandles(core), statelessSchemas: map[string]json.RawMessage{},
		taskSessions: map[string]bool{}, requiredTasks: map[string]bool{}, states: states}
	hooks := &server.Hooks{}
	hooks.AddOnUnregisterSession(func(ctx context.Context, session server.ClientSession) {
		s.endSession(ctx, session.SessionID())
	})
	hooks.AddAfterInitialize(func(ctx context.Context, id any, req *mcp.InitializeRequest, res *mcp.InitializeResult) {
		s.recordSessionTasks(ctx, id, req, res)
	})
	hooks.AddAfterSubscriptionsListen(listenAcknowledged)
	hooks.AddAfterCallTool(callToolFlushed)
	s.registerResources(hooks)
	s.mcp = server.NewMCPServer(cfg.Name, cfg.Version,
		server.WithToolCapabilities(false),
		server.WithResourceCapabilities(false, false),
		server.WithRecovery(),
		server.WithLogging(),
		server.WithHooks(hooks),
		server.WithInstructions(instructions),
		server.WithLogger(cfg.Logger),
		server.WithToolFilter(s.filterTools),
		server.WithExtensions(map[string]any{TasksExtension: map[string]any{}}),
	)
	for _, def := range cfg.Tools {
		tool, err := mcpTool(def)
		if err != nil {
			return nil, err
		}
		if def.Name == openTool || def.Name == closeTool {
			return nil, fmt.Errorf("tool %s: the name is taken by the stateless clients' handle tool", def.Name)
		}
		if s.statelessSchemas[def.Name], err = statelessSchema(def.Name, tool.RawInputSchema); err != nil {
			return nil, err
		}
		s.mcp.AddTool(tool, s.handler(def))
	}
	if err := s.addHandleTools(); err != nil {
		return nil, err
	}
	for _, lt := range cfg.LocalTools {
		if err := s.addLocalTool(lt); err != nil {
			return nil, err
		}
	}
	s.addResourceTemplate()
	return s, nil
}

// MCPServer is the underlying mcp-go server, for transports.
func (s *Server) MCPServer() *server.MCPServer { return s.mcp }

// mcpTool is def as an MCP tool, with its schema generated from its parameter struct.
func mcpTool(def tools.Def) (mcp.Tool, error) {
	raw, err := schema.MCP(def.Schema())
	if err != nil {
		return mcp.Tool{}, fmt.Errorf("generating schema of %s: %w", def.Name, err)
	}
	tool := mcp.NewToolWithRawSchema(def.Name, def.Description, raw)
	tool.Annotations = mcp.ToolAnnotation{
		ReadOnlyHint:    mcp.ToBoolPtr(def.ReadOnly),
		DestructiveHint: mcp.ToBoolPtr(def.Destructive),
		IdempotentHint:  mcp.ToBoolPtr(false),
		OpenWorldHint:   mcp.ToBoolPtr(false),
	}
	return tool, nil
}

// ServeStdio serves one client on in/out until in ends or ctx is done, then removes the
// session's sandbox.
func (s *Server) ServeStdio(ctx context.Context, in io.Reader, out io.Writer) error {
	stdio := server.NewStdioServer(s.mcp)
	stdio.SetErrorLogger(slog.NewLogLogger(s.log.Handler(), slog.LevelWarn))
	err := stdio.Listen(ctx, in, out)
	if errors.Is(err, context.Canceled) || errors.Is(err, io.EOF) {
		err = nil
	}
	return err
}

func (s *Server) endSession(ctx context.Context, sid string) {
	s.sessions.end(sid)
	s.forgetSessionTasks(sid)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := s.core.Caller(sid).End(ctx); err != nil {
		s.log.Error("removing the session's sandbox", "session", sid, "error", err)
		return
	}
	s.log.Debug("session ended", "session", sid)
}

// handler adapts one tool: the session core runs the call as the MCP session's caller, or,
// for a caller without a session, in the sandbox its handle names; and this is the only
// place that maps its outcome to MCP. A session's call ignores a handle argument. A tool that ran, and arguments the
// tool refused, are the core's result (text, structuredContent, isError for non-success),
// the same result the REST API returns; any other failure (the sandbox could not start) is
// a result with isError set and a message that says what happened. The Go error return is
// reserved for the SDK's own.
func (s *Server) handler(def tools.Def) server.ToolHandlerFunc {
	return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		handle, present, args, err := splitHandle(req.GetRawArguments())
		c := callerOf(ctx)
		scope := c.session
		switch {
		case !c.stateless():
			err = nil // a session's call ignores a handle argument, whatever it is
		case err != nil:
		case !present:
			err = errors.New("this request has no MCP session, so no sandbox of its own: " + handleUsage)
		default:
			scope = handle
		}
		if err != nil {
			return errorResult(def.Name + ": " + err.Error()), nil
		}
		run := func(ctx context.Context, progress func(sandbox.Output)) (tools.Result, error) {
			start := time.Now()
			if progress == nil {
				progress = progressSender(ctx, req)
			}
			call := session.Call{Tool: def.Name, Args: args, Progress: progress}
			var res tools.Result
			var err error
			if c.stateless() {
				if res, err = s.handles.Run(ctx, c.principal, handle, call); err != nil {
					err = errors.New(handleAdvice(err))
				}
			} else {
				res, err = s.core.Caller(c.session).Run(ctx, call)
			}
			if err == nil && s.cfg.OnToolCall != nil {
				s.cfg.OnToolCall(def.Name, res, time.Since(start))
			}
			return res, err
		}
		outcome := s.runAsTask(ctx, c, scope, def.Name, TasksOptional, run)
		out, ran := outcome.result(def.Name)
		if ran {
			out.Content = append(out.Content, s.writtenLinks(c, handle, def.Name, outcome.res)...)
		}
		return out, nil
	}
}

// toMCPResult maps a tool result to MCP: text for people, images as image content, the whole
// result (without image bytes) as structured content for programs, isError for failures.
func toMCPResult(res tools.Result) *mcp.CallToolResult {
	content := []mcp.Content{mcp.NewTextContent(res.Text())}
	for _, img := range res.Images {
		content = append(content, mcp.NewImageContent(base64.StdEncoding.EncodeToString(img.Data), img.MIMEType))
	}
	return &mcp.CallToolResult{Content: content, StructuredContent: res, IsError: !res.OK()}
}

func errorResult(msg string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{mcp.NewTextContent(msg)}, IsError: true}
}

// progressSender returns a function that forwards a running process's output to the client
// as progress notifications, or nil when the client asked for none.
func progressSender(ctx context.Context, req mcp.CallToolRequest) func(sandbox.Output) {
	if req.Params.Meta == nil || req.Params.Meta.ProgressToken == nil {
		return nil
	}
	token := req.Params.Meta.ProgressToken
	srv := server.ServerFromContext(ctx)
	if srv == nil {
		return nil
	}
	var n atomic.Int64
	return func(out sandbox.Output) {
		text := strings.TrimRight(out.Stdout+out.Stderr, "\n")
		if text == "" {
			return
		}
		if srv.SendNotificationToClient(ctx, "notifications/progress", map[string]any{
			"progressToken": token,
			"progress":      n.Add(1),
			"message":       text,
		}) == nil {
			queued(ctx)
		}
	}
}

// callWorkspace is the workspace a call of c's ran in: its session's, or its handle's.
func (s *Server) callWorkspace(c caller, handle string) workspace {
	if !c.stateless() {
		sb, _ := s.core.Caller(c.session).Current()
		return workspace{sb: sb, prefix: WorkspaceURIPrefix}
	}
	sb, _ := s.handles.Sandbox(c.principal, handle)
	return workspace{sb: sb, prefix: HandleURIPrefix + handle + "/"}
}
