package mcp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/enclave-mcp/enclave-mcp/api"
	"github.com/enclave-mcp/enclave-mcp/session"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// Tasks: the io.modelcontextprotocol/tasks extension of protocol 2026-07-28 (SEP-2663).
// A client that declares the extension (in a request's _meta clientCapabilities, or in a
// session's initialize capabilities) may get, instead of a tool call's result, a task:
// the call goes on in the sandbox, detached from the HTTP request, and the client polls
// tasks/get (status, the latest output while it runs, the result inlined once it ends),
// and may cancel it with tasks/cancel. The registry is the session core's (session.Tasks);
// this file only translates the wire format.
//
// The server decides, by the tool's TaskSupport (local.go): a call becomes a task when it
// has not ended after Config.TaskAfter, or at once when the request carries the legacy
// `task` hint or the tool requires a task (a client that did not declare the extension is
// then refused with -32021). Every sandbox tool supports tasks; sandbox_open and
// sandbox_close never become one. A task's call may ask its client for input
// (session.Ask): tasks/get shows it input_required with its inputRequests, and tasks/update
// brings the answers.
//
// mcp-go v1.2.1 implements only the 2025-11-25 tasks (a different wire shape, and no
// tasks/update); it gives a server no hook to add JSON-RPC methods or to answer a
// tools/call with anything but a CallToolResult. So the extension sits in an HTTP
// middleware in front of mcp-go's streamable transport: it answers tasks/get, tasks/update
// and tasks/cancel itself, and for a tools/call of a client that declared the extension
// it marks the request's context; the tool handler, seeing the mark, starts the call as a
// session.Tasks task, and when the call outlives the wait the middleware answers with the
// CreateTaskResult instead of the handler's placeholder. Such a call sends no progress
// notifications on its response (its output is read by tasks/get instead), so the
// response mcp-go writes is one JSON body the middleware can hold back. Over stdio and
// the old SSE transport calls stay synchronous (the extension's methods are answered
// "method not found" there by mcp-go).

const (
	// TasksExtension is the extension's identifier in capabilities.extensions.
	TasksExtension = "io.modelcontextprotocol/tasks"
	// DefaultTaskAfter is how long a tool call of a client that declared the extension
	// runs before it becomes a task, when Config.TaskAfter is 0.
	DefaultTaskAfter = 5 * time.Second
	// taskPollInterval is the polling interval suggested to clients.
	taskPollInterval = time.Second
	// outputMetaKey carries a running task's latest output in tasks/get's _meta.
	outputMetaKey = "io.github.enclave-mcp/output"
	// taskHintKey is the legacy (2025-11-25) task request in tools/call params.
	taskHintKey = "task"
)

// taskSlot marks a tools/call request that may become a task; the handler fills view
// when it does.
type taskSlot struct {
	now  bool // the client asked for a task (legacy hint): do not wait
	mu   sync.Mutex
	view *session.TaskView
}

type taskSlotKey struct{}

func (t *taskSlot) set(v session.TaskView) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.view = &v
}

func (t *taskSlot) get() *session.TaskView {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.view
}

// taskOwner is whose tasks a caller sees: its session's, or its principal's.
func taskOwner(c caller) string {
	if !c.stateless() {
		return "session:" + c.session
	}
	return "principal:" + c.principal
}

// runAsTask runs the call run of a tool with the task support support as a task of c's,
// in scope (the session, or the handle), when the request is one that may become a task
// and the tool allows it. It returns the result when the call ended in time (or ran
// synchronously), or a placeholder once the call became a task: the middleware answers
// with the task instead. A call of a tool that requires a task, on a request that cannot
// become one (stdio, SSE, or --task-after negative), is refused.
func (s *Server) runAsTask(ctx context.Context, c caller, scope, tool string, support TaskSupport, run session.TaskRun) taskOutcome {
	slot, _ := ctx.Value(taskSlotKey{}).(*taskSlot)
	if support == TasksRequired && (slot == nil || s.cfg.TaskAfter < 0) {
		return taskOutcome{err: errors.New("it runs only as a task (the MCP tasks extension), which needs streamable HTTP, " +
			"a client that declares the extension and a server whose --task-after is not negative")}
	}
	if slot == nil || s.cfg.TaskAfter < 0 || support == TasksForbidden {
		r, err := run(ctx, nil)
		return taskOutcome{res: r, err: err}
	}
	wait := s.cfg.TaskAfter
	if slot.now || support == TasksRequired {
		wait = 0
	}
	view, done, err := s.core.Tasks().Start(ctx, taskOwner(c), scope, tool, wait, run)
	if err != nil {
		return taskOutcome{err: err}
	}
	if done {
		if view.Status == session.TaskCancelled {
			return taskOutcome{err: fmt.Errorf("the call was cancelled: %w", view.Err)}
		}
		return taskOutcome{res: view.Result}
	}
	slot.set(view)
	return taskOutcome{task: true}
}

// taskOutcome is how runAsTask ended.
type taskOutcome struct {
	res  tools.Result
	err  error
	task bool
}

// result is the tools/call answer of tool's outcome: a placeholder when the call went on
// as a task (the middleware answers with the task instead), an error result when the call
// could not run, else the tool's result; ran reports the last.
func (o taskOutcome) result(tool string) (out *mcp.CallToolResult, ran bool) {
	switch {
	case o.task:
		return &mcp.CallToolResult{Content: []mcp.Content{mcp.NewTextContent("the call goes on as a task")}}, false
	case o.err != nil:
		return errorResult(tool + ": " + o.err.Error()), false
	}
	return toMCPResult(o.res), true
}

// tasksDeclared reports whether the request's client declared the tasks extension: in the
// request's own _meta (2026-07-28, or a per-request opt-in of a session client), or in
// its session's initialize.
func (s *Server) tasksDeclared(sid string, params json.RawMessage) bool {
	var p struct {
		Meta map[string]json.RawMessage `json:"_meta"`
	}
	if json.Unmarshal(params, &p) == nil {
		var caps struct {
			Extensions map[string]json.RawMessage `json:"extensions"`
		}
		if raw, ok := p.Meta[mcp.MetaKeyClientCapabilities]; ok && json.Unmarshal(raw, &caps) == nil {
			if _, ok := caps.Extensions[TasksExtension]; ok {
				return true
			}
		}
	}
	if sid == "" {
		return false
	}
	s.taskMu.Lock()
	defer s.taskMu.Unlock()
	return s.taskSessions[sid]
}

// recordSessionTasks remembers whether a session's client declared the extension in its
// initialize.
func (s *Server) recordSessionTasks(ctx context.Context, _ any, req *mcp.InitializeRequest, _ *mcp.InitializeResult) {
	cs := server.ClientSessionFromContext(ctx)
	if cs == nil || cs.SessionID() == "" {
		return
	}
	if _, ok := req.Params.Capabilities.Extensions[TasksExtension]; ok {
		s.taskMu.Lock()
		s.taskSessions[cs.SessionID()] = true
		s.taskMu.Unlock()
	}
}

func (s *Server) forgetSessionTasks(sid string) {
	s.taskMu.Lock()
	defer s.taskMu.Unlock()
	delete(s.taskSessions, sid)
}

// rpcMessage is the part of a JSON-RPC request the middleware reads.
type rpcMessage struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

// tasksHTTP is the middleware in front of mcp-go's streamable transport (see the top of
// this file). limitBody has read the body already.
func (s *Server) tasksHTTP(principal func(*http.Request) string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Body == nil {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		var msg rpcMessage
		if err != nil || json.Unmarshal(body, &msg) != nil || len(msg.ID) == 0 || string(msg.ID) == "null" {
			next.ServeHTTP(w, r) // a batch, a notification, or not JSON: mcp-go answers
			return
		}
		sid := r.Header.Get(server.HeaderKeySessionID)
		switch msg.Method {
		case "tasks/get", "tasks/update", "tasks/cancel":
			s.serveTaskMethod(w, r, msg, sid, principal(r))
		case string(mcp.MethodToolsCall):
			// A handler may end the call with a JSON-RPC error of its own (mrtr.go).
			reply := &replySlot{}
			w = &replyWriter{ResponseWriter: w, id: msg.ID, slot: reply}
			r = r.WithContext(context.WithValue(r.Context(), replySlotKey{}, reply))
			declared := s.tasksDeclared(sid, msg.Params)
			if !declared && s.requiresTask(msg.Params) {
				writeMissingTasks(w, msg.ID, "tools/call of a tool that runs only as a task")
				return
			}
			if s.cfg.TaskAfter < 0 || !declared {
				next.ServeHTTP(w, r)
				return
			}
			slot := &taskSlot{now: hasTaskHint(msg.Params)}
			held := &heldResponse{header: http.Header{}}
			next.ServeHTTP(held, r.WithContext(context.WithValue(r.Context(), taskSlotKey{}, slot)))
			if v := slot.get(); v != nil {
				writeRPCResult(w, msg.ID, createTaskResult(*v))
				return
			}
			held.sendTo(w)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// requiresTask reports whether tools/call params name a tool that runs only as a task.
func (s *Server) requiresTask(params json.RawMessage) bool {
	var p struct {
		Name string `json:"name"`
	}
	return json.Unmarshal(params, &p) == nil && s.requiredTasks[p.Name]
}

// writeMissingTasks refuses what needs the tasks extension from a client that did not
// declare it: -32021, with the capability it needs in data.requiredCapabilities.
func writeMissingTasks(w http.ResponseWriter, id json.RawMessage, what string) {
	writeRPCErrorData(w, http.StatusBadRequest, id, mcp.MISSING_REQUIRED_CLIENT_CAPABILITY,
		what+" needs the client capability extensions[\""+TasksExtension+"\"]: declare it in the request's "+
			"_meta \""+mcp.MetaKeyClientCapabilities+"\" (or, with a session, in initialize)",
		map[string]any{"requiredCapabilities": map[string]any{"extensions": map[string]any{TasksExtension: map[string]any{}}}})
}

// hasTaskHint reports whether tools/call params carry the legacy task request.
func hasTaskHint(params json.RawMessage) bool {
	var p map[string]json.RawMessage
	if json.Unmarshal(params, &p) != nil {
		return false
	}
	raw, ok := p[taskHintKey]
	return ok && strings.HasPrefix(strings.TrimSpace(string(raw)), "{")
}

// serveTaskMethod answers tasks/get, tasks/update and tasks/cancel for the request's
// caller: its session's tasks, or its principal's.
func (s *Server) serveTaskMethod(w http.ResponseWriter, r *http.Request, msg rpcMessage, sid, principal string) {
	var p struct {
		TaskID         *string                    `json:"taskId"`
		InputResponses map[string]json.RawMessage `json:"inputResponses"`
	}
	badParams := json.Unmarshal(msg.Params, &p)
	if version := r.Header.Get(mcp.HeaderProtocolVersion); mcp.RequiresStandardHeaders(version) {
		if err := taskHeaders(r.Header, msg.Method, p.TaskID); err != nil {
			writeRPCErrorData(w, http.StatusBadRequest, msg.ID, mcp.HEADER_MISMATCH, err.Error(), nil)
			return
		}
	}
	if sid != "" && !s.sessions.isLive(sid) {
		writeRPCErrorData(w, http.StatusNotFound, msg.ID, mcp.INVALID_REQUEST,
			"the MCP session ended (or never existed), and its tasks with it: start a new session", nil)
		return
	}
	if !s.tasksDeclared(sid, msg.Params) {
		writeMissingTasks(w, msg.ID, msg.Method)
		return
	}
	if badParams != nil {
		writeRPCErrorData(w, http.StatusOK, msg.ID, mcp.INVALID_PARAMS,
			msg.Method+": params are not valid: "+badParams.Error()+"; want {\"taskId\": string} (and for tasks/update \"inputResponses\": an object)", nil)
		return
	}
	if p.TaskID == nil || *p.TaskID == "" {
		writeRPCErrorData(w, http.StatusOK, msg.ID, mcp.INVALID_PARAMS,
			msg.Method+": params.taskId is required: the taskId a tools/call answered with", nil)
		return
	}
	c := caller{session: sid, principal: principal}
	if c.stateless() && c.principal == "" {
		c.principal = session.DefaultOwner
	}
	owner, id, tasks := taskOwner(c), *p.TaskID, s.core.Tasks()
	var err error
	var result any = map[string]any{"resultType": mcp.ResultTypeComplete}
	switch msg.Method {
	case "tasks/get":
		var v session.TaskView
		if v, err = tasks.Get(owner, id); err == nil {
			result = detailedTask(v)
		}
	case "tasks/update": // answers to what the task asked (session.Ask); others are ignored
		err = tasks.Answer(owner, id, p.InputResponses)
	case "tasks/cancel":
		err = tasks.Cancel(owner, id)
	}
	if errors.Is(err, api.ErrNotFound) {
		writeRPCErrorData(w, http.StatusOK, msg.ID, mcp.INVALID_PARAMS, err.Error()+
			": a task is known only to the caller that started it (the same session, or the same token without one), "+
			"until a while after it ends", nil)
		return
	}
	if err != nil {
		writeRPCErrorData(w, http.StatusOK, msg.ID, mcp.INTERNAL_ERROR, err.Error(), nil)
		return
	}
	writeRPCResult(w, msg.ID, result)
}

// taskHeaders checks the routing headers of a tasks method (SEP-2243, extended by the
// tasks extension): Mcp-Method names the method, Mcp-Name the task.
func taskHeaders(h http.Header, method string, taskID *string) error {
	switch got := h.Get(mcp.HeaderMethod); {
	case got == "":
		return fmt.Errorf("the %s header is required and must be %q", mcp.HeaderMethod, method)
	case got != method:
		return fmt.Errorf("the %s header %q does not match the body's method %q", mcp.HeaderMethod, got, method)
	}
	raw := h.Get(mcp.HeaderName)
	if raw == "" {
		return fmt.Errorf("the %s header is required on %s and must be the taskId", mcp.HeaderName, method)
	}
	name, ok := mcp.DecodeHeaderValue(raw)
	if !ok {
		return fmt.Errorf("the %s header is not valid (bad Base64 encoding)", mcp.HeaderName)
	}
	if taskID == nil || name != *taskID {
		return fmt.Errorf("the %s header %q does not match the body's taskId", mcp.HeaderName, name)
	}
	return nil
}

// taskEnvelope is the part of the wire Task every answer about a task carries.
func taskEnvelope(v session.TaskView) map[string]any {
	out := map[string]any{
		"taskId":         v.ID,
		"status":         string(v.Status),
		"createdAt":      v.Created.UTC().Format(time.RFC3339Nano),
		"lastUpdatedAt":  v.Updated.UTC().Format(time.RFC3339Nano),
		"pollIntervalMs": taskPollInterval.Milliseconds(),
		"ttlMs":          nil, // kept until Keep after it ends: unknown while it runs
	}
	if !v.Ended.IsZero() {
		out["ttlMs"] = max(v.Ended.Add(v.Keep).Sub(v.Created).Milliseconds(), 1)
	}
	return out
}

// createTaskResult answers a tools/call that became a task.
func createTaskResult(v session.TaskView) map[string]any {
	out := taskEnvelope(v)
	out["resultType"] = "task"
	out["statusMessage"] = fmt.Sprintf("%s is running; poll tasks/get for its output and result", v.Tool)
	if v.Status == session.TaskInputRequired { // it asked before its wait was over
		out["statusMessage"] = fmt.Sprintf("%s waits for its client's answers: tasks/get shows its inputRequests", v.Tool)
	}
	return out
}

// detailedTask answers tasks/get: the status, the latest output while it runs, the
// result once completed, the error once failed.
func detailedTask(v session.TaskView) map[string]any {
	out := taskEnvelope(v)
	out["resultType"] = mcp.ResultTypeComplete
	switch v.Status {
	case session.TaskWorking:
		out["statusMessage"] = fmt.Sprintf("%s running for %s", v.Tool, time.Since(v.Created).Round(time.Second)) + lastLine(v.Stdout+v.Stderr)
		out["_meta"] = map[string]any{outputMetaKey: map[string]any{"stdout": v.Stdout, "stderr": v.Stderr, "droppedBytes": v.Dropped}}
	case session.TaskInputRequired:
		out["statusMessage"] = fmt.Sprintf("%s waits for its client's answers: reply to inputRequests with tasks/update", v.Tool)
		out["inputRequests"] = v.InputRequests
	case session.TaskCompleted:
		out["result"] = toMCPResult(v.Result)
	case session.TaskFailed:
		out["statusMessage"] = v.Tool + " could not run: " + v.Err.Error()
		out["error"] = map[string]any{"code": mcp.INTERNAL_ERROR, "message": v.Tool + ": " + v.Err.Error()}
	case session.TaskCancelled:
		out["statusMessage"] = v.Tool + " was cancelled: " + v.Err.Error() + "; its processes were killed"
	}
	return out
}

// lastLine is ": " and the last non-empty line of out (shortened), or "".
func lastLine(out string) string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	last := strings.TrimSpace(lines[len(lines)-1])
	if last == "" {
		return ""
	}
	if len(last) > 200 {
		last = last[:200] + "..."
	}
	return ": " + last
}

// writeRPCResult answers with a JSON-RPC result.
func writeRPCResult(w http.ResponseWriter, id json.RawMessage, result any) {
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "result": result})
	if err != nil {
		writeRPCErrorData(w, http.StatusOK, id, mcp.INTERNAL_ERROR, "encoding the answer: "+err.Error(), nil)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(body, '\n'))
}

// writeRPCErrorData answers with a JSON-RPC error, with data when not nil.
func writeRPCErrorData(w http.ResponseWriter, status int, id any, code int, message string, data any) {
	e := map[string]any{"code": code, "message": message}
	if data != nil {
		e["data"] = data
	}
	if raw, ok := id.(json.RawMessage); ok && len(raw) == 0 {
		id = nil
	}
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "error": e})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// heldResponse holds what mcp-go writes for a tools/call that may become a task, until it
// is known whether it did. Such a call sends no notifications, so what is held is one
// JSON-RPC response.
type heldResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (h *heldResponse) Header() http.Header { return h.header }
func (h *heldResponse) Write(p []byte) (int, error) {
	if h.status == 0 {
		h.status = http.StatusOK
	}
	return h.body.Write(p)
}
func (h *heldResponse) WriteHeader(status int) {
	if h.status == 0 {
		h.status = status
	}
}
func (h *heldResponse) Flush() {}

// sendTo writes the held response to w.
func (h *heldResponse) sendTo(w http.ResponseWriter) {
	for k, v := range h.header {
		w.Header()[k] = v
	}
	if h.status == 0 {
		h.status = http.StatusOK
	}
	w.WriteHeader(h.status)
	_, _ = w.Write(h.body.Bytes())
}
