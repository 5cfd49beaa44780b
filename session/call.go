package session

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/enclave-mcp/enclave-mcp/api"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// Call is one tool call as a face received it, before anything is checked.
type Call struct {
	// Tool is the tool's name.
	Tool string
	// Args are the tool's arguments: a json.RawMessage, []byte, or any value that encodes
	// to a JSON object (a struct, a map); nil means none.
	Args any
	// Progress, when set, receives a long call's output while it runs.
	Progress func(sandbox.Output)
}

// Run runs call in the caller's own sandbox, started on its first call and kept until End:
// how an MCP session's calls run. Every tool runs in that one sandbox, of the Core's session
// type (see SessionType), so all of a session's tools see the same files and jobs.
func (l *Caller) Run(ctx context.Context, call Call) (tools.Result, error) {
	return l.call(ctx, call, target{
		tool: func(name string) (tools.Def, error) {
			if def, ok := l.byName[name]; ok {
				return def, nil
			}
			return tools.Def{}, fmt.Errorf("tool %q: %w", name, sandbox.ErrNotFound)
		},
		sandbox: func(ctx context.Context, def tools.Def) (sandbox.Sandbox, func(), error) {
			sb, err := l.m.Acquire(ctx, l.owner, l.sessionType)
			if err != nil {
				return nil, nil, fmt.Errorf("could not start the sandbox: %w", err)
			}
			return sb, func() {}, nil
		},
		stopped: "the next call starts a fresh sandbox (files in the old one are lost)",
	})
}

// ExecuteTool implements api.Manager: call runs in the caller's sandbox id.
func (l *Caller) ExecuteTool(ctx context.Context, id, tool string, params any) (tools.Result, error) {
	sb, err := l.m.GetOwned(l.owner, id)
	if err != nil {
		return tools.Result{}, err
	}
	return l.call(ctx, Call{Tool: tool, Args: params}, l.in(sb))
}

// in targets sb, a sandbox the caller already holds: the tool must be one sb offers.
func (l *Core) in(sb sandbox.Sandbox) target {
	return target{
		tool: func(name string) (tools.Def, error) { return l.offered(sb, name) },
		sandbox: func(context.Context, tools.Def) (sandbox.Sandbox, func(), error) {
			return sb, func() {}, nil
		},
		stopped: "create a new one",
	}
}

// target is where a call runs: how its tool is found (before anything else, so an unknown
// tool is not found whatever the arguments), and how its sandbox is picked once the
// arguments are known to be good. stopped is the advice for a sandbox that is not running.
type target struct {
	tool    func(name string) (tools.Def, error)
	sandbox func(ctx context.Context, def tools.Def) (sb sandbox.Sandbox, release func(), err error)
	stopped string
}

// call is the one tool-call path every face ends in: find the tool, decode its arguments,
// pick the sandbox, check it runs, build the call with the tool's options and timeouts, and
// run it. Arguments the tool refuses are a result with status error (metadata
// invalid_arguments), the same on every face, so a harness shows them to its model instead
// of failing; a typo costs no container. Other failures to run are Go errors, which each
// face translates to its wire format.
func (l *Caller) call(ctx context.Context, call Call, t target) (tools.Result, error) {
	start := time.Now()
	log := l.log.With("tool", call.Tool, "owner", l.owner)
	def, err := t.tool(call.Tool)
	if err != nil {
		return tools.Result{}, err
	}
	run, err := bind(def, call.Args)
	if errors.Is(err, tools.ErrInvalidArgs) {
		log.Info("tool call refused", "error", err)
		return argFailure(def.Name, err), nil
	}
	if err != nil {
		return tools.Result{}, err
	}
	sb, release, err := t.sandbox(ctx, def)
	if err != nil {
		log.Error("picking the sandbox", "error", err)
		return tools.Result{}, err
	}
	defer release()
	if err := runnable(sb.Info(), t.stopped); err != nil {
		return tools.Result{}, err
	}
	res, err := run(ctx, tools.Call{
		Sandbox:        sb,
		Options:        l.toolOptions(sb, def.Name),
		DefaultTimeout: l.defaultTimeout(sb),
		Progress:       call.Progress,
	})
	took := time.Since(start)
	if errors.Is(err, tools.ErrInvalidArgs) { // a check the handler makes (a timeout's range)
		log.Info("tool call refused", "error", err)
		return argFailure(def.Name, err), nil
	}
	if err != nil {
		log.Error("tool call failed", "sandbox", sb.ID(), "error", err, "took", took)
		return tools.Result{}, err
	}
	log.Info("tool call", "sandbox", sb.ID(), "status", res.Status, "took", took.Round(time.Microsecond))
	return res, nil
}

// Check decodes a tool's arguments the way every call does, without running anything: the
// part of a call's cost that needs no sandbox (the benchmark measures it).
func (l *Core) Check(tool string, args any) error {
	def, ok := l.byName[tool]
	if !ok {
		return fmt.Errorf("tool %q: %w", tool, sandbox.ErrNotFound)
	}
	_, err := bind(def, args)
	return err
}

// bind encodes args and decodes them strictly into def's parameters: bad arguments are an
// error that is tools.ErrInvalidArgs, before any sandbox is needed.
func bind(def tools.Def, args any) (tools.Run, error) {
	raw, err := api.EncodeParams(args)
	if err != nil {
		return nil, err
	}
	return def.Bind(raw)
}

// RunIn runs call in sb, a sandbox that no owner's bookkeeping holds (one a benchmark
// started on the engine itself), through the same path as every other call. The tool must
// be one sb offers.
func (l *Core) RunIn(ctx context.Context, sb sandbox.Sandbox, call Call) (tools.Result, error) {
	return (&Caller{Core: l, owner: DefaultOwner}).call(ctx, call, l.in(sb))
}

// toolsFor lists the tools sb offers (offers says which).
func (l *Core) toolsFor(sb sandbox.Sandbox, typ sandbox.Type) []tools.Def {
	enabled := enabledTools(sb)
	var out []tools.Def
	for _, def := range l.tools {
		if offers(def, typ, enabled) {
			out = append(out, def)
		}
	}
	return out
}

// enabledTools is the tool list of sb's tools_config: nil when it names none.
func enabledTools(sb sandbox.Sandbox) sandbox.ToolsConfig {
	if rc, ok := sb.(configured); ok {
		return rc.Config().ToolsConfig
	}
	return nil
}

// offers reports whether a sandbox of type typ whose tools_config lists enabled offers def.
// Tools made for plain docker sandboxes need only processes and files, which every sandbox
// type has, so they run in any type (a notebook sandbox also runs python_executor, as in
// ms-enclave); other tools only in their own type, except that an MCP session's sandbox
// (SessionType) runs every tool. A sandbox whose tools_config names tools offers only those.
func offers(def tools.Def, typ sandbox.Type, enabled sandbox.ToolsConfig) bool {
	if typ != SessionType && def.Sandbox != typ && def.Sandbox != sandbox.TypeDocker {
		return false
	}
	_, ok := enabled[def.Name]
	return len(enabled) == 0 || ok
}

// offered finds name among the tools sb offers; another name is not found, with the list
// of those it offers.
func (l *Core) offered(sb sandbox.Sandbox, name string) (tools.Def, error) {
	info := sb.Info()
	if def, ok := l.byName[name]; ok && offers(def, info.Type, enabledTools(sb)) {
		return def, nil
	}
	var names []string
	for _, def := range l.toolsFor(sb, info.Type) {
		names = append(names, def.Name)
	}
	return tools.Def{}, fmt.Errorf("tool %q is not available in sandbox %s (available: %s): %w",
		name, info.ID, strings.Join(names, ", "), sandbox.ErrNotFound)
}

// toolOptions are a tool's options in sb: the sandbox's own tools_config, overridden by the
// operator's, so a client cannot lift an operator's limit such as max_output_bytes.
func (l *Core) toolOptions(sb sandbox.Sandbox, name string) map[string]any {
	opts := map[string]any{}
	if rc, ok := sb.(configured); ok {
		maps.Copy(opts, rc.Config().ToolsConfig[name])
	}
	maps.Copy(opts, l.options[name])
	return opts
}

// defaultTimeout is the timeout of a call that names none: sb's config's, else the Core's.
func (l *Core) defaultTimeout(sb sandbox.Sandbox) float64 {
	if rc, ok := sb.(configured); ok && rc.Config().Timeout > 0 {
		return rc.Config().Timeout
	}
	if l.timeout > 0 {
		return l.timeout
	}
	return sandbox.DefaultTimeout
}

// runnable refuses a sandbox that was stopped or failed, with advice that fits how it was
// picked: an MCP session's next call starts a fresh one; an explicit id needs a new create.
func runnable(info sandbox.Info, advice string) error {
	switch info.Status {
	case sandbox.StatusRunning, sandbox.StatusIdle, sandbox.StatusBusy:
		return nil
	}
	return fmt.Errorf("sandbox %s is %s; %s: %w", info.ID, info.Status, advice, sandbox.ErrClosed)
}

// argFailure is the result of arguments a tool refused: status error, the refusal as the
// error text, and metadata.invalid_arguments for programs.
func argFailure(tool string, err error) tools.Result {
	return tools.Result{
		Status: tools.StatusError, ToolName: tool, Error: err.Error(),
		Metadata: map[string]any{"invalid_arguments": true}, Timestamp: time.Now().UTC(),
	}
}
