package tools

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/invopop/jsonschema"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// PythonParams are python_executor's parameters (ms-enclave's names).
type PythonParams struct {
	Code    string  `json:"code" jsonschema_description:"Python 3 source code, run as a script in the sandbox's workspace. Print what you want to see: stdout comes back as the output and stderr as the error."`
	Timeout float64 `json:"timeout,omitempty" jsonschema_description:"Seconds before the run, and every process it started, is killed. Fractions are allowed. Default 30."`
}

const pythonExecutorName = "python_executor"

func pythonExecutor() Def {
	return New(Def{
		Name: pythonExecutorName,
		Description: "Run Python 3 code in an isolated sandbox and return what it prints. Each call is a fresh " +
			"interpreter, but files in the workspace (the current directory) persist between calls in the " +
			"session. No network access; memory, CPU, processes and time are limited. Use print() for results.",
		Sandbox:     sandbox.TypeDocker,
		Destructive: true,
	}, runPython)
}

// pythonCandidates are tried in order: Debian-based images carry only python3, while some
// others carry only python.
var pythonCandidates = []string{"python3", "python"}

func runPython(ctx context.Context, call Call, p PythonParams) (Result, error) {
	if strings.TrimSpace(p.Code) == "" {
		return failure("No code provided"), nil
	}
	timeout, err := timeoutOf("python_executor", p.Timeout, call.DefaultTimeout)
	if err != nil {
		return Result{}, err
	}
	// The code goes in on stdin, not argv: argv caps one argument at 128 KiB. The agent
	// forks the process from the sandbox's resident interpreter, which has the heavy
	// modules imported, unless the tool's options say "fork": false.
	fork := forks(call.Options)
	for _, py := range pythonCandidates {
		res, err := runProcess(ctx, call, sandbox.ExecRequest{Argv: []string{py, "-"}, Stdin: []byte(p.Code), Fork: fork}, timeout)
		if !errors.Is(err, sandbox.ErrNotFound) {
			return res, err
		}
	}
	return failure("no Python interpreter (python3 or python) in this sandbox's image; use an image that has one, e.g. " + sandbox.DefaultImage), nil
}

// forks reads python_executor's "fork" option: calls are forked from the sandbox's
// resident interpreter unless it is false.
func forks(options map[string]any) bool { return options["fork"] != false }

// ForksPython reports whether sandboxes whose tools_config is cfg have python_executor
// among tools and run its calls forked from a resident interpreter, which a warm spare can
// then start ahead of its first call (sandbox.WarmPython).
func ForksPython(tools []Def, cfg sandbox.ToolsConfig) bool {
	enabled, err := Enabled(tools, cfg)
	if err != nil {
		return false
	}
	for _, d := range enabled {
		if d.Name == pythonExecutorName {
			return forks(cfg[d.Name])
		}
	}
	return false
}

// ShellParams are shell_executor's parameters (ms-enclave's names).
type ShellParams struct {
	Command Command `json:"command" jsonschema_description:"A command line run by /bin/sh -c (pipes, redirects and && work), or an array of strings run directly as program and arguments with no shell."`
	Timeout float64 `json:"timeout,omitempty" jsonschema_description:"Seconds before the command, and every process it started, is killed. Fractions are allowed. Default 30."`
	// Background keeps a server or watcher alive past the call; timeout does not apply to it.
	Background bool `json:"background,omitempty" jsonschema_description:"Start the command as a background job and return at once with its job id, instead of waiting for it. The job keeps running (a server, a watcher) until it exits, is stopped with background_jobs, or the session ends. Its output is discarded: redirect it to a file to keep it."`
}

// Command is a shell command line or an argv array.
type Command struct {
	Line string
	Argv []string
}

// UnmarshalJSON accepts a string or an array of strings.
func (c *Command) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '[' {
		if err := json.Unmarshal(b, &c.Argv); err != nil {
			return errors.New(`parameter "command" must be a string or an array of strings`)
		}
		return nil
	}
	if err := json.Unmarshal(b, &c.Line); err != nil {
		return errors.New(`parameter "command" must be a string or an array of strings`)
	}
	return nil
}

// MarshalJSON writes the form it was given.
func (c Command) MarshalJSON() ([]byte, error) {
	if c.Argv != nil {
		return json.Marshal(c.Argv)
	}
	return json.Marshal(c.Line)
}

// JSONSchema describes the two accepted forms.
func (Command) JSONSchema() *jsonschema.Schema {
	return &jsonschema.Schema{AnyOf: []*jsonschema.Schema{
		{Type: "string"},
		{Type: "array", Items: &jsonschema.Schema{Type: "string"}},
	}}
}

func shellExecutor() Def {
	return New(Def{
		Name: "shell_executor",
		Description: "Run a shell command in an isolated sandbox and return its output. The working directory is " +
			"the workspace, whose files persist between calls in the session. Anything the command leaves " +
			"running in the background is killed when it returns. No network access; memory, CPU, " +
			"processes and time are limited.",
		Sandbox:     sandbox.TypeDocker,
		Destructive: true,
	}, runShell)
}

func runShell(ctx context.Context, call Call, p ShellParams) (Result, error) {
	argv := p.Command.Argv
	if argv == nil {
		if strings.TrimSpace(p.Command.Line) == "" {
			return failure("No command provided"), nil
		}
		shell := "/bin/sh"
		if s, ok := call.Options["shell"].(string); ok && s != "" {
			shell = s
		}
		argv = []string{shell, "-c", p.Command.Line}
	}
	if len(argv) == 0 || argv[0] == "" {
		return failure("No command provided: the array needs at least the program name"), nil
	}
	if p.Background {
		return startJob(ctx, call, argv)
	}
	timeout, err := timeoutOf("shell_executor", p.Timeout, call.DefaultTimeout)
	if err != nil {
		return Result{}, err
	}
	return runArgv(ctx, call, argv, timeout)
}

// runArgv runs argv, with no shell and no stdin, in the call's sandbox. A program that does
// not exist is a result saying so, not a Go error: the model (or the operator, for a declared
// tool) has to fix the command.
func runArgv(ctx context.Context, call Call, argv []string, timeout float64) (Result, error) {
	res, err := runProcess(ctx, call, sandbox.ExecRequest{Argv: argv}, timeout)
	if errors.Is(err, sandbox.ErrNotFound) {
		return fromSandboxError(err)
	}
	return res, err
}

// runProcess runs req in the call's sandbox with timeout and turns the outcome into a
// result. A program that does not exist comes back as an error wrapping sandbox.ErrNotFound,
// so callers can try another.
func runProcess(ctx context.Context, call Call, req sandbox.ExecRequest, timeout float64) (Result, error) {
	req.TimeoutMS = int64(timeout * 1000)
	res, err := runRequest(ctx, call, req, timeout)
	if err != nil {
		if errors.Is(err, sandbox.ErrNotFound) {
			return Result{}, err
		}
		return fromSandboxError(err)
	}
	return res, nil
}

// runRequest runs req in the call's sandbox with the call's output cap and progress, and
// turns the finished process into a result. An error is the sandbox's, as Exec returned it.
func runRequest(ctx context.Context, call Call, req sandbox.ExecRequest, timeout float64) (Result, error) {
	req.MaxOutputBytes = sandbox.MaxOutputBytes(call.Options)
	var onOutput func(sandbox.Output)
	if call.Progress != nil {
		req.StreamIntervalMS = 500
		onOutput = call.Progress
	}
	start := time.Now()
	r, err := call.Sandbox.Exec(ctx, req, onOutput)
	if err != nil {
		return Result{}, err
	}
	memory := ""
	if r.OOMKilled { // the result names the limit
		memory = memoryLimitOf(call.Sandbox)
	}
	res := fromExec(r, timeout, memory)
	addEgressRefusals(&res, call.Sandbox, start)
	return res, nil
}

// addEgressRefusals names, in the result, the destinations the sandbox's egress policy
// refused during the call: some clients show only "403" for a refused CONNECT.
func addEgressRefusals(res *Result, sb sandbox.Sandbox, since time.Time) {
	eg, ok := sb.(interface{ EgressRefusalsSince(time.Time) []string })
	if !ok {
		return
	}
	refused := eg.EgressRefusalsSince(since)
	if len(refused) == 0 {
		return
	}
	res.Metadata["egress_refused"] = refused
	res.Error = withNotes(res.Error, []string{"the sandbox's egress policy refused: " + strings.Join(refused, "; ")})
}
