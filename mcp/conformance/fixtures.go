// Package conformance holds the fixture tools of the MCP conformance suite
// (@modelcontextprotocol/conformance): tools of the suite's own, which its scenarios call by
// name and check for the exact behaviour its scenario descriptions give. They exist only for
// the conformance suite (`serve --conformance-fixtures`, set by scripts/conformance.sh) and
// are no part of what the server offers an agent: they run no sandbox and do nothing useful.
//
// They are mcp.LocalTools, so each call goes through the server's own path: the tasks
// extension decides by a fixture's task support whether the call goes on as a task
// (session.Tasks), tasks/get and tasks/cancel act on it as on a sandbox tool's task, and the
// result is mapped to MCP as every tool's is. The tasks scenarios thereby test the server's
// tasks, with fixtures whose timing and outcome are known (a sandbox tool's are not):
//
//	greet               task support forbidden: "Hello, {name}!"
//	slow_compute        optional: sleeps `seconds`, then a result; cancellable
//	failing_job         required: a tool error (isError) after about a second
//	protocol_error_job  required: panics, so its task fails with a protocol error
//	confirm_delete      required: asks its client to confirm (input_required, one
//	                    elicitation), then says what it would have done (it deletes nothing)
//	multi_input         required: asks two questions at once, then reports both answers
//
// and the fixtures of scenarios outside the tasks extension that need nothing but a
// tools.Result: test_simple_text, test_error_handling, test_image_content and
// json_schema_2020_12_tool (whose schema is the point).
package conformance

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	enclave "github.com/enclave-mcp/enclave-mcp/mcp"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/session"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// MaxSeconds is the longest slow_compute sleeps: the suite asks for at most 60.
const MaxSeconds = 300

// FailAfter is how long failing_job runs before it reports its error.
const FailAfter = time.Second

// redPixel is a 1x1 red PNG, test_image_content's image.
const redPixel = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="

// jsonSchema2020 is json_schema_2020_12_tool's input schema: the suite checks that
// tools/list shows it whole ($schema, $defs with an $anchor, allOf/anyOf, if/then/else,
// additionalProperties).
const jsonSchema2020 = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "$defs": {
    "address": {
      "$anchor": "addressDef",
      "type": "object",
      "properties": {"street": {"type": "string"}, "city": {"type": "string"}}
    }
  },
  "properties": {
    "name": {"type": "string"},
    "address": {"$ref": "#/$defs/address"},
    "contactMethod": {"type": "string", "enum": ["phone", "email"]},
    "phone": {"type": "string"},
    "email": {"type": "string"}
  },
  "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
  "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
  "then": {"required": ["phone"]},
  "else": {"required": ["email"]},
  "additionalProperties": false
}`

const noArgs = `{"type":"object","properties":{},"additionalProperties":false}`

// Tools are the fixtures, for mcp.Config.LocalTools.
func Tools() []enclave.LocalTool {
	return []enclave.LocalTool{
		fixture("greet", "Conformance fixture: greets name, synchronously (never a task).", enclave.TasksForbidden,
			`{"type":"object","properties":{"name":{"type":"string"}},"required":["name"],"additionalProperties":false}`, greet),
		fixture("slow_compute", "Conformance fixture: waits `seconds` (0 to 300), then reports the label; a task when it runs long.",
			enclave.TasksOptional,
			`{"type":"object","properties":{"seconds":{"type":"number","minimum":0,"maximum":300},"label":{"type":"string"}},"required":["seconds"],"additionalProperties":false}`,
			slowCompute),
		fixture("failing_job", "Conformance fixture: always a task, which ends in a tool error after about a second.",
			enclave.TasksRequired, noArgs, failingJob),
		fixture("protocol_error_job", "Conformance fixture: always a task, which fails with a protocol error (the call panics).",
			enclave.TasksRequired, noArgs, protocolErrorJob),
		fixture("confirm_delete", "Conformance fixture: always a task, which asks its client to confirm deleting `filename` (nothing is deleted).",
			enclave.TasksRequired,
			`{"type":"object","properties":{"filename":{"type":"string"}},"required":["filename"],"additionalProperties":false}`,
			confirmDelete),
		fixture("multi_input", "Conformance fixture: always a task, which asks its client two questions at once.",
			enclave.TasksRequired, noArgs, multiInput),
		fixture("test_simple_text", "Conformance fixture: a simple text result.", enclave.TasksForbidden, noArgs,
			constant(tools.Result{Status: tools.StatusSuccess, Output: "This is a simple text response for testing."})),
		fixture("test_error_handling", "Conformance fixture: always a tool error.", enclave.TasksForbidden, noArgs,
			constant(tools.Result{Status: tools.StatusError, Error: "This tool intentionally returns an error for testing"})),
		fixture("test_image_content", "Conformance fixture: a 1x1 red PNG.", enclave.TasksForbidden, noArgs, imageContent),
		fixture("json_schema_2020_12_tool", "Tool with JSON Schema 2020-12 features", enclave.TasksForbidden, jsonSchema2020,
			echo),
	}
}

// run is a fixture's call on its decoded arguments (a JSON object).
type run func(ctx context.Context, args json.RawMessage, progress func(sandbox.Output)) (tools.Result, error)

func fixture(name, description string, support enclave.TaskSupport, schema string, fn run) enclave.LocalTool {
	tool := mcp.NewToolWithRawSchema(name, description, json.RawMessage(schema))
	tool.Annotations = mcp.ToolAnnotation{
		ReadOnlyHint: mcp.ToBoolPtr(true), DestructiveHint: mcp.ToBoolPtr(false),
		IdempotentHint: mcp.ToBoolPtr(true), OpenWorldHint: mcp.ToBoolPtr(false),
	}
	return enclave.LocalTool{Tool: tool, Tasks: support, Run: fn}
}

// decode reads a fixture's arguments strictly into p: "null" is no arguments; an unknown
// or mistyped one is a tool error that names it.
func decode(tool string, args json.RawMessage, p any) *tools.Result {
	if len(args) == 0 || string(args) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(args))
	dec.DisallowUnknownFields()
	if err := dec.Decode(p); err != nil {
		return &tools.Result{Status: tools.StatusError, Error: fmt.Sprintf("%s: bad arguments %s: %v", tool, args, err)}
	}
	return nil
}

func greet(_ context.Context, args json.RawMessage, _ func(sandbox.Output)) (tools.Result, error) {
	var p struct {
		Name *string `json:"name"`
	}
	if bad := decode("greet", args, &p); bad != nil {
		return *bad, nil
	}
	if p.Name == nil {
		return tools.Result{Status: tools.StatusError, Error: `greet: the argument "name" (a string) is required`}, nil
	}
	return tools.Result{Status: tools.StatusSuccess, Output: "Hello, " + *p.Name + "!"}, nil
}

// slowCompute sleeps, telling progress each second, until its time is up (a result) or ctx
// ends (an error: a task's call whose task was cancelled ends cancelled whatever it
// returns).
func slowCompute(ctx context.Context, args json.RawMessage, progress func(sandbox.Output)) (tools.Result, error) {
	var p struct {
		Seconds *float64 `json:"seconds"`
		Label   string   `json:"label"`
	}
	if bad := decode("slow_compute", args, &p); bad != nil {
		return *bad, nil
	}
	if p.Seconds == nil || *p.Seconds < 0 || *p.Seconds > MaxSeconds || math.IsNaN(*p.Seconds) {
		return tools.Result{Status: tools.StatusError,
			Error: fmt.Sprintf(`slow_compute: the argument "seconds" is required, from 0 to %d`, MaxSeconds)}, nil
	}
	total := time.Duration(*p.Seconds * float64(time.Second))
	done := time.NewTimer(total)
	defer done.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	start := time.Now()
	for {
		select {
		case <-ctx.Done():
			return tools.Result{}, fmt.Errorf("slow_compute %q stopped after %s: %w", p.Label, time.Since(start).Round(time.Millisecond), ctx.Err())
		case <-tick.C:
			if progress != nil {
				progress(sandbox.Output{Stdout: fmt.Sprintf("%s: %s of %s\n", p.Label, time.Since(start).Round(time.Second), total)})
			}
		case <-done.C:
			return tools.Result{Status: tools.StatusSuccess, Output: fmt.Sprintf("slow_compute %q done after %gs", p.Label, *p.Seconds)}, nil
		}
	}
}

func failingJob(ctx context.Context, args json.RawMessage, _ func(sandbox.Output)) (tools.Result, error) {
	if bad := decode("failing_job", args, &struct{}{}); bad != nil {
		return *bad, nil
	}
	t := time.NewTimer(FailAfter)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return tools.Result{}, ctx.Err()
	case <-t.C:
	}
	return tools.Result{Status: tools.StatusError, Error: "failing_job failed, as it always does: a tool execution error"}, nil
}

// errProtocol is what protocol_error_job panics with.
var errProtocol = errors.New("protocol_error_job: a failure inside the server, on purpose")

func protocolErrorJob(context.Context, json.RawMessage, func(sandbox.Output)) (tools.Result, error) {
	panic(errProtocol)
}

// elicit is an MCP elicitation/create request (form mode) for the properties props, all
// required.
func elicit(message string, props map[string]any) map[string]any {
	required := make([]string, 0, len(props))
	for name := range props {
		required = append(required, name)
	}
	slices.Sort(required)
	return map[string]any{"method": "elicitation/create", "params": map[string]any{
		"mode": "form", "message": message,
		"requestedSchema": map[string]any{"type": "object", "properties": props, "required": required},
	}}
}

// elicitResult is the part of an elicitation's answer the fixtures read.
type elicitResult struct {
	Action  string         `json:"action"`
	Content map[string]any `json:"content"`
}

// answersOf decodes the answers to keys; a key whose answer is not an elicitation result
// is a tool error naming it.
func answersOf(tool string, raw map[string]json.RawMessage, keys ...string) (map[string]elicitResult, *tools.Result) {
	out := map[string]elicitResult{}
	for _, key := range keys {
		var r elicitResult
		if err := json.Unmarshal(raw[key], &r); err != nil || r.Action == "" {
			return nil, &tools.Result{Status: tools.StatusError,
				Error: fmt.Sprintf(`%s: the answer to %q is %s; want an elicitation result {"action": "accept"|"decline"|"cancel", "content": {...}}`, tool, key, raw[key])}
		}
		out[key] = r
	}
	return out, nil
}

func confirmDelete(ctx context.Context, args json.RawMessage, _ func(sandbox.Output)) (tools.Result, error) {
	var p struct {
		Filename string `json:"filename"`
	}
	if bad := decode("confirm_delete", args, &p); bad != nil {
		return *bad, nil
	}
	raw, err := session.Ask(ctx, map[string]any{"confirm": elicit(fmt.Sprintf("Delete %s?", p.Filename),
		map[string]any{"confirm": map[string]any{"type": "boolean", "description": "true to delete it"}})})
	if err != nil {
		return tools.Result{}, err
	}
	answers, bad := answersOf("confirm_delete", raw, "confirm")
	if bad != nil {
		return *bad, nil
	}
	if a := answers["confirm"]; a.Action == "accept" && a.Content["confirm"] == true {
		return tools.Result{Status: tools.StatusSuccess, Output: fmt.Sprintf("confirmed: %s would be deleted (a fixture deletes nothing)", p.Filename)}, nil
	}
	return tools.Result{Status: tools.StatusSuccess, Output: fmt.Sprintf("not confirmed: %s is kept", p.Filename)}, nil
}

func multiInput(ctx context.Context, args json.RawMessage, _ func(sandbox.Output)) (tools.Result, error) {
	if bad := decode("multi_input", args, &struct{}{}); bad != nil {
		return *bad, nil
	}
	props := map[string]any{"name": map[string]any{"type": "string"}, "confirm": map[string]any{"type": "boolean"}}
	raw, err := session.Ask(ctx, map[string]any{
		"first": elicit("First question: a name, and confirm", props), "second": elicit("Second question: a name, and confirm", props),
	})
	if err != nil {
		return tools.Result{}, err
	}
	answers, bad := answersOf("multi_input", raw, "first", "second")
	if bad != nil {
		return *bad, nil
	}
	return tools.Result{Status: tools.StatusSuccess, Output: fmt.Sprintf("first: %s %v; second: %s %v",
		answers["first"].Action, answers["first"].Content["name"], answers["second"].Action, answers["second"].Content["name"])}, nil
}

func constant(res tools.Result) run {
	return func(context.Context, json.RawMessage, func(sandbox.Output)) (tools.Result, error) { return res, nil }
}

func imageContent(context.Context, json.RawMessage, func(sandbox.Output)) (tools.Result, error) {
	png, err := base64.StdEncoding.DecodeString(redPixel)
	if err != nil {
		return tools.Result{}, fmt.Errorf("decoding the fixture image: %w", err)
	}
	return tools.Result{Status: tools.StatusSuccess, Output: "a 1x1 red PNG",
		Images: []tools.Image{{MIMEType: "image/png", Data: png}}}, nil
}

// echo answers with the arguments it got.
func echo(_ context.Context, args json.RawMessage, _ func(sandbox.Output)) (tools.Result, error) {
	return tools.Result{Status: tools.StatusSuccess, Output: string(args)}, nil
}
