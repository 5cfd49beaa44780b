// Package tools defines what enclave-mcp offers an agent: each tool is a Go parameter struct,
// a handler that runs it in a sandbox, and the metadata every export (MCP, OpenAI, REST) is
// generated from. All lists the tools in one order; nothing here knows about transports.
//
// # Tools of your own
//
// A Go program that embeds the server adds a tool with New: a parameter struct (its fields'
// json and jsonschema_description tags are the schema) and a handler that gets the decoded
// struct and a Call carrying the caller's sandbox. Append the Def to All and pass the list to
// session.New as session.Config.Tools: MCP's tools/list, the REST API's GET /v1/tools, the
// OpenAI and OpenAI strict exports, strict argument checking and tools_config all take their
// tools from that list, so there is nothing else to register and no package to edit.
//
// # Declared tools
//
// An operator who does not write Go declares a tool in the config file instead: a
// CommandTool is a name, a description, typed parameters and an argv template, run in the
// caller's sandbox with no shell. AddCommands checks declarations and appends them to the
// list. Such a tool's parameter schema is built from the declaration rather than reflected
// from a struct (schema.Tool.Params takes either), and its arguments are checked as strictly,
// with messages of the same shape.
package tools

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/enclave-mcp/enclave-mcp/api"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/schema"
)

// Def is one tool: what it is called, what it needs, and how to run it.
type Def struct {
	Name        string
	Description string
	// Sandbox is the type of sandbox the tool runs in.
	Sandbox sandbox.Type
	// Annotations, set explicitly on every tool: clients use them to decide what to confirm.
	ReadOnly    bool
	Destructive bool
	// Params is a pointer to the tool's zero parameter struct, whose schema is reflected from
	// it (New sets it), or for a declared tool its prebuilt *jsonschema.Schema.
	Params any

	bind func(raw json.RawMessage) (Run, error)
}

// Run is a tool call whose arguments have been checked, ready to run in a sandbox.
type Run func(ctx context.Context, call Call) (Result, error)

// Call is what a handler gets besides its parameters.
type Call struct {
	// Sandbox is the caller's sandbox of the tool's type.
	Sandbox sandbox.Sandbox
	// Options are the tool's options from the sandbox's tools_config.
	Options map[string]any
	// DefaultTimeout in seconds, used when a call passes none.
	DefaultTimeout float64
	// Progress, when set, receives output while a long call runs.
	Progress func(sandbox.Output)
}

// Schema returns the tool's canonical description for the schema exports.
func (d Def) Schema() schema.Tool {
	return schema.Tool{Name: d.Name, Description: d.Description, Params: d.Params}
}

// Bind decodes raw arguments strictly and returns the call ready to run. Bad arguments come
// back as an *ArgError naming the problem and what would be valid, before any sandbox is
// needed: a typo costs no container.
func (d Def) Bind(raw json.RawMessage) (Run, error) {
	if d.bind == nil {
		return nil, fmt.Errorf("binding tool %s: it has no handler; build the Def with tools.New", d.Name)
	}
	run, err := d.bind(raw)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, call Call) (Result, error) {
		start := time.Now()
		res, err := run(ctx, call)
		if err != nil {
			return Result{}, err
		}
		res.ToolName = d.Name
		if res.ExecutionTime == 0 {
			res.ExecutionTime = time.Since(start).Seconds()
		}
		if res.Metadata == nil {
			res.Metadata = map[string]any{}
		}
		res.Timestamp = time.Now().UTC()
		return res, nil
	}, nil
}

// Invoke binds raw and runs the call.
func (d Def) Invoke(ctx context.Context, call Call, raw json.RawMessage) (Result, error) {
	run, err := d.Bind(raw)
	if err != nil {
		return Result{}, err
	}
	return run(ctx, call)
}

// New builds a Def whose handler takes the decoded parameter struct P. It is how every
// built-in tool is made, and how a program embedding the server makes its own (see the
// package doc): d gives the name, description, sandbox type and annotations, P the schema.
func New[P any](d Def, handle func(context.Context, Call, P) (Result, error)) Def {
	d.Params = new(P)
	shape := sync.OnceValues(func() (paramShape, error) { return readShape(d.Params) })
	d.bind = func(raw json.RawMessage) (Run, error) {
		sh, err := shape()
		if err != nil {
			return nil, fmt.Errorf("reading %s's parameters: %w", d.Name, err)
		}
		var p P
		if err := decodeArgs(d.Name, raw, sh, &p); err != nil {
			return nil, err
		}
		return func(ctx context.Context, call Call) (Result, error) { return handle(ctx, call, p) }, nil
	}
	return d
}

// ErrInvalidArgs marks arguments a tool cannot take; the message says which and why.
var ErrInvalidArgs = api.ErrInvalidArgs

// ArgError is a bad argument. Its text is meant for the model that sent it.
type ArgError struct {
	Tool string
	Msg  string
}

func (e *ArgError) Error() string        { return e.Tool + ": " + e.Msg }
func (e *ArgError) Is(target error) bool { return target == ErrInvalidArgs }

func argErrorf(tool, format string, a ...any) error {
	return &ArgError{Tool: tool, Msg: fmt.Sprintf(format, a...)}
}

// decodeArgs is strict on purpose: an unknown or misspelt parameter is an error that lists
// the valid ones, so a model corrects itself instead of having its argument silently
// ignored. Numbers sent as strings are refused for the same reason.
func decodeArgs(tool string, raw json.RawMessage, sh paramShape, into any) error {
	raw, _, err := checkObject(tool, raw, sh)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, into); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return argErrorf(tool, "parameter %q must be %s, got %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
		}
		return argErrorf(tool, "%s", strings.TrimPrefix(err.Error(), "json: "))
	}
	return nil
}

// paramShape is what checkObject needs of a tool's parameters: their names, in declaration
// order, and the required ones. Reading it reflects the parameter struct or copies the
// prebuilt schema (about a hundred microseconds, with a call's CPU cold), so each Def reads
// it once, not once per call.
type paramShape struct {
	props, required []string
}

// readShape reads the shape of params, a parameter struct or a prebuilt object schema.
func readShape(params any) (paramShape, error) {
	props, err := schema.Properties(params)
	if err != nil {
		return paramShape{}, err
	}
	required, err := schema.Required(params)
	if err != nil {
		return paramShape{}, err
	}
	return paramShape{props: props, required: required}, nil
}

// checkObject checks what every tool's arguments must be, whatever their schema: a JSON
// object (null or nothing counts as {}) naming only parameters of sh, with every required
// one present and not null. It returns the arguments and their fields.
func checkObject(tool string, raw json.RawMessage, sh paramShape) (json.RawMessage, map[string]json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		raw = []byte("{}")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, nil, argErrorf(tool, "arguments must be a JSON object, got %s", describeJSON(raw))
	}
	for name := range fields {
		if !slices.Contains(sh.props, name) {
			return nil, nil, argErrorf(tool, "unknown parameter %q; valid parameters: %s", name, strings.Join(sh.props, ", "))
		}
	}
	for _, name := range sh.required {
		if v, ok := fields[name]; !ok || string(v) == "null" {
			return nil, nil, argErrorf(tool, "missing required parameter %q", name)
		}
	}
	return raw, fields, nil
}

func describeJSON(raw []byte) string {
	switch raw[0] {
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	default:
		if raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9') {
			return "a number"
		}
		return "invalid JSON"
	}
}

// jsonKind names a Go kind the way a JSON schema would.
func jsonKind(kind string) string {
	switch kind {
	case "float64", "float32", "int", "int64", "int32", "uint", "uint64":
		return "a number"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "slice", "array":
		return "an array"
	case "struct", "map":
		return "an object"
	}
	return "a " + kind
}

// All lists every built-in tool, in the order every export uses.
func All() []Def {
	return []Def{
		pythonExecutor(),
		shellExecutor(),
		multiCodeExecutor(),
		fileOperation(),
		backgroundJobs(),
		notebookExecutor(),
		notebookRestart(),
		notebookInterrupt(),
	}
}

// Enabled returns the tools named in cfg, in All's order; an empty cfg enables every tool.
// A name that is not a tool is an error listing the valid ones.
func Enabled(all []Def, cfg sandbox.ToolsConfig) ([]Def, error) {
	if len(cfg) == 0 {
		return all, nil
	}
	names := make([]string, len(all))
	for i, d := range all {
		names[i] = d.Name
	}
	for _, n := range cfg.Names() {
		if !slices.Contains(names, n) {
			return nil, fmt.Errorf("tools_config names unknown tool %q; available tools: %s", n, strings.Join(names, ", "))
		}
	}
	var out []Def
	for _, d := range all {
		if _, ok := cfg[d.Name]; ok {
			out = append(out, d)
		}
	}
	return out, nil
}
