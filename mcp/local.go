package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/session"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// Local tools run in the server's own process, with no sandbox, beside the sandbox tools:
// Config.LocalTools (the conformance suite's fixtures, package mcp/conformance, are such
// tools). Past the sandbox, a local tool's call takes the path of a sandbox tool's: the
// tasks extension (runAsTask, session.Tasks) decides by its TaskSupport whether it goes on
// as a task, and its result is a tools.Result that toMCPResult maps to MCP, in a tools/call
// answer or inlined in tasks/get.

// TaskSupport says whether a tool's calls may go on as tasks (tasks.go). The values are
// the protocol's.
type TaskSupport string

// The kinds of task support. Every sandbox tool is TasksOptional; sandbox_open and
// sandbox_close are TasksForbidden.
const (
	// TasksForbidden: a call always answers synchronously, even when its client asks for a
	// task (the legacy hint is ignored).
	TasksForbidden TaskSupport = "forbidden"
	// TasksOptional: a call of a client that declared the extension becomes a task when it
	// runs past Config.TaskAfter, or at once when the client asks for one.
	TasksOptional TaskSupport = "optional"
	// TasksRequired: a call is a task from the start; a client that did not declare the
	// extension is refused with -32021 (missing required client capability).
	TasksRequired TaskSupport = "required"
)

// LocalTool is a tool that runs in the server's process.
type LocalTool struct {
	// Tool is the tool as tools/list shows it: name, description, input schema,
	// annotations. Its Execution must be unset: Tasks says how it runs.
	Tool  mcp.Tool
	Tasks TaskSupport
	// Run runs one call. args are the call's arguments as sent (JSON, "null" when none);
	// progress, when not nil, is sent the call's output while it runs (as progress
	// notifications, or a task's output read by tasks/get). ctx ends when the task is
	// cancelled or its session ends. A Go error is a failure of the server, not of the
	// tool: a task with one fails (tool errors are a Result with an error status).
	Run func(ctx context.Context, args json.RawMessage, progress func(sandbox.Output)) (tools.Result, error)
	// Gather, when set, runs first, on the request, before the call may go on as a task,
	// and returns the arguments Run gets: it gathers what the call needs from its client
	// (session.Ask, answered by multi round-trip requests, mrtr.go) and then the call
	// escalates to a task, as a tool that requires one does (SEP-2663's MRTR-then-task
	// composition). Run's own questions are asked through its task when it is one.
	Gather func(ctx context.Context, args json.RawMessage) (json.RawMessage, error)
}

// addLocalTool registers lt, refusing a name already taken or a declaration that is not
// complete.
func (s *Server) addLocalTool(lt LocalTool) error {
	name := lt.Tool.Name
	switch {
	case name == "":
		return errors.New("a local tool has no name")
	case s.mcp.GetTool(name) != nil:
		return fmt.Errorf("local tool %s: a tool of that name is already served", name)
	case lt.Run == nil:
		return fmt.Errorf("local tool %s: Run is nil", name)
	case lt.Tool.Execution != nil:
		return fmt.Errorf("local tool %s: leave Tool.Execution unset and say in Tasks how its calls run", name)
	}
	switch lt.Tasks {
	case TasksForbidden, TasksOptional:
	case TasksRequired:
		s.requiredTasks[name] = true
	default:
		return fmt.Errorf("local tool %s: Tasks is %q; want %q, %q or %q", name, lt.Tasks, TasksForbidden, TasksOptional, TasksRequired)
	}
	s.mcp.AddTool(lt.Tool, s.localHandler(lt))
	return nil
}

// localHandler adapts a local tool: its call runs, and may become a task, as a sandbox
// tool's does (handler), in the scope of the caller's session (a stateless caller's
// tasks have no scope: they end by themselves, or by tasks/cancel).
func (s *Server) localHandler(lt LocalTool) server.ToolHandlerFunc {
	return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		args, err := json.Marshal(req.GetRawArguments())
		if err != nil {
			return errorResult(fmt.Sprintf("%s: reading the arguments: %v", lt.Tool.Name, err)), nil
		}
		c := callerOf(ctx)
		round, refused := s.roundOf(ctx, c, lt.Tool.Name, args, req.Params.MultiRoundTripParams)
		if refused != nil {
			return failCall(ctx, refused)
		}
		ctx = session.WithRound(ctx, round)
		callArgs := args
		if lt.Gather != nil {
			if callArgs, err = lt.Gather(ctx, args); err != nil {
				if out, rerr, ok := s.askOutcome(ctx, c, lt.Tool.Name, args, round, err); ok {
					return out, rerr
				}
				return errorResult(lt.Tool.Name + ": " + err.Error()), nil
			}
		}
		run := func(ctx context.Context, progress func(sandbox.Output)) (tools.Result, error) {
			if progress == nil {
				progress = progressSender(ctx, req)
			}
			start := time.Now()
			res, err := lt.Run(ctx, callArgs, progress)
			if err != nil {
				return tools.Result{}, err
			}
			res.ToolName = lt.Tool.Name
			if res.ExecutionTime == 0 {
				res.ExecutionTime = time.Since(start).Seconds()
			}
			res.Timestamp = time.Now().UTC()
			return res, nil
		}
		outcome := s.runAsTask(ctx, c, c.session, lt.Tool.Name, lt.Tasks, run)
		if out, rerr, ok := s.askOutcome(ctx, c, lt.Tool.Name, args, round, outcome.err); ok {
			return out, rerr
		}
		out, _ := outcome.result(lt.Tool.Name)
		return out, nil
	}
}
