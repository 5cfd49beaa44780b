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
// the fixtures of scenarios outside the tasks extension that need nothing but a
// tools.Result: test_simple_text, test_error_handling, test_image_content and
// json_schema_2020_12_tool (whose schema is the point); and those that ask their client
// (session.Ask: an InputRequiredResult for a 2026-07-28 call, server-initiated requests
// for a session client; package mcp's mrtr.go) or log to it:
//
//	test_input_required_result_*  the multi round-trip scenarios' tools (SEP-2322)
//	test_tool_with_task           gathers a name by MRTR (LocalTool.Gather), then a task
//	test_missing_capability       asks the client's LLM: -32021 without sampling
//	test_streaming_elicitation    asks a name (by MRTR, never on the response stream)
//	test_sampling                 2025-11-25: asks the client's LLM
//	test_elicitation              2025-11-25: asks a username and an email
//	test_logging_tool             logs three messages, sent only at a level asked for
//
// The 2025-11-25 scenario's test_tool_with_logging is left out: it counts three log
// messages on the call's response, and mcp-go v1.2.1 drops one now and then (its
// notification forwarder can take the last one off the channel and then find the request
// answered), so the scenario would pass or fail by chance.
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
	"github.com/mark3labs/mcp-go/server"

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
	return append([]enclave.LocalTool{
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
	}, mrtrTools()...)
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

// The fixtures of the multi round-trip scenarios (SEP-2322): each asks its client through
// session.Ask, which ends a call that is not a task's with an InputRequiredResult; the
// client's retry brings the answers.

// sample is an MCP sampling/createMessage request for prompt.
func sample(prompt string, maxTokens int) map[string]any {
	return map[string]any{"method": "sampling/createMessage", "params": map[string]any{
		"messages":  []any{map[string]any{"role": "user", "content": map[string]any{"type": "text", "text": prompt}}},
		"maxTokens": maxTokens,
	}}
}

// rootsList is an MCP roots/list request.
func rootsList() map[string]any {
	return map[string]any{"method": "roots/list", "params": map[string]any{}}
}

// sampledText is the text of a sampling result, or a tool error naming key.
func sampledText(tool, key string, raw json.RawMessage) (string, *tools.Result) {
	var r struct {
		Content struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
	}
	if err := json.Unmarshal(raw, &r); err != nil || r.Content.Type != "text" {
		return "", &tools.Result{Status: tools.StatusError,
			Error: fmt.Sprintf(`%s: the answer to %q is %s; want a sampling result with text content {"role": ..., "content": {"type": "text", "text": ...}}`, tool, key, raw)}
	}
	return r.Content.Text, nil
}

// rootURIs are the URIs of a roots/list result, or a tool error naming key.
func rootURIs(tool, key string, raw json.RawMessage) ([]string, *tools.Result) {
	var r struct {
		Roots *[]struct {
			URI string `json:"uri"`
		} `json:"roots"`
	}
	if err := json.Unmarshal(raw, &r); err != nil || r.Roots == nil {
		return nil, &tools.Result{Status: tools.StatusError,
			Error: fmt.Sprintf(`%s: the answer to %q is %s; want a roots/list result {"roots": [{"uri": ...}]}`, tool, key, raw)}
	}
	uris := []string{}
	for _, root := range *r.Roots {
		uris = append(uris, root.URI)
	}
	return uris, nil
}

// askFixture is a synchronous fixture that asks its client (it is never a task, so it
// asks by multi round-trip requests).
func askFixture(name, description string, fn run) enclave.LocalTool {
	return fixture(name, description, enclave.TasksForbidden, noArgs, func(ctx context.Context, args json.RawMessage, progress func(sandbox.Output)) (tools.Result, error) {
		if bad := decode(name, args, &struct{}{}); bad != nil {
			return *bad, nil
		}
		return fn(ctx, args, progress)
	})
}

var nameProp = map[string]any{"name": map[string]any{"type": "string"}}

// greetByElicitation asks for a name under key with message, and greets it.
func greetByElicitation(tool, key, message string) run {
	return func(ctx context.Context, _ json.RawMessage, _ func(sandbox.Output)) (tools.Result, error) {
		raw, err := session.Ask(ctx, map[string]any{key: elicit(message, nameProp)})
		if err != nil {
			return tools.Result{}, err
		}
		answers, bad := answersOf(tool, raw, key)
		if bad != nil {
			return *bad, nil
		}
		return tools.Result{Status: tools.StatusSuccess, Output: fmt.Sprintf("Hello, %v!", answers[key].Content["name"])}, nil
	}
}

// confirmed asks for a confirmation ({"ok": boolean}), and reports its action as say
// puts it.
func confirmed(tool string, say func(ctx context.Context, action string) string) run {
	return func(ctx context.Context, _ json.RawMessage, _ func(sandbox.Output)) (tools.Result, error) {
		raw, err := session.Ask(ctx, map[string]any{"confirm": elicit("Please confirm", map[string]any{"ok": map[string]any{"type": "boolean"}})})
		if err != nil {
			return tools.Result{}, err
		}
		answers, bad := answersOf(tool, raw, "confirm")
		if bad != nil {
			return *bad, nil
		}
		return tools.Result{Status: tools.StatusSuccess, Output: say(ctx, answers["confirm"].Action)}, nil
	}
}

func mrtrTools() []enclave.LocalTool {
	return []enclave.LocalTool{
		askFixture("test_input_required_result_elicitation", "Conformance fixture: asks the client's name (elicitation), then greets it.",
			greetByElicitation("test_input_required_result_elicitation", "user_name", "What is your name?")),
		askFixture("test_streaming_elicitation", "Conformance fixture: asks the client's name (elicitation) by a multi round-trip request, never by a request on the response stream.",
			greetByElicitation("test_streaming_elicitation", "user_name", "What is your name?")),
		askFixture("test_input_required_result_sampling", "Conformance fixture: asks the client's LLM a question (sampling), then reports the answer.",
			func(ctx context.Context, _ json.RawMessage, _ func(sandbox.Output)) (tools.Result, error) {
				return askLLM(ctx, "test_input_required_result_sampling", "capital_question", "What is the capital of France?", 100, "The model said: ")
			}),
		askFixture("test_missing_capability", "Conformance fixture: needs the client's sampling capability (it asks the client's LLM).",
			func(ctx context.Context, _ json.RawMessage, _ func(sandbox.Output)) (tools.Result, error) {
				return askLLM(ctx, "test_missing_capability", "question", "Say hello.", 20, "The model said: ")
			}),
		askFixture("test_input_required_result_list_roots", "Conformance fixture: asks the client's roots, then lists them.",
			func(ctx context.Context, _ json.RawMessage, _ func(sandbox.Output)) (tools.Result, error) {
				raw, err := session.Ask(ctx, map[string]any{"client_roots": rootsList()})
				if err != nil {
					return tools.Result{}, err
				}
				uris, bad := rootURIs("test_input_required_result_list_roots", "client_roots", raw["client_roots"])
				if bad != nil {
					return *bad, nil
				}
				return tools.Result{Status: tools.StatusSuccess, Output: fmt.Sprintf("The client's roots: %v", uris)}, nil
			}),
		askFixture("test_input_required_result_request_state", "Conformance fixture: asks for a confirmation; says state-ok when the retry brought back a requestState the server verified.",
			confirmed("test_input_required_result_request_state", func(ctx context.Context, action string) string {
				if r := session.RoundFrom(ctx); r == nil || !r.Resumed() {
					return "answered without a requestState: " + action
				}
				return "state-ok: the requestState was verified; " + action
			})),
		askFixture("test_input_required_result_tampered_state", "Conformance fixture: asks for a confirmation; a retry with an altered requestState is refused.",
			confirmed("test_input_required_result_tampered_state", func(_ context.Context, action string) string { return "confirmed: " + action })),
		askFixture("test_input_required_result_multiple_inputs", "Conformance fixture: asks a name (elicitation), a greeting (sampling) and the roots at once.",
			func(ctx context.Context, _ json.RawMessage, _ func(sandbox.Output)) (tools.Result, error) {
				const tool = "test_input_required_result_multiple_inputs"
				raw, err := session.Ask(ctx, map[string]any{
					"user_name":    elicit("What is your name?", nameProp),
					"greeting":     sample("Generate a greeting", 50),
					"client_roots": rootsList(),
				})
				if err != nil {
					return tools.Result{}, err
				}
				answers, bad := answersOf(tool, raw, "user_name")
				if bad == nil {
					var greeting string
					if greeting, bad = sampledText(tool, "greeting", raw["greeting"]); bad == nil {
						var uris []string
						if uris, bad = rootURIs(tool, "client_roots", raw["client_roots"]); bad == nil {
							return tools.Result{Status: tools.StatusSuccess, Output: fmt.Sprintf("%s %v; roots %v", greeting, answers["user_name"].Content["name"], uris)}, nil
						}
					}
				}
				return *bad, nil
			}),
		askFixture("test_input_required_result_multi_round", "Conformance fixture: asks a name, then (a second round) a favourite colour.",
			func(ctx context.Context, _ json.RawMessage, _ func(sandbox.Output)) (tools.Result, error) {
				const tool = "test_input_required_result_multi_round"
				raw, err := session.Ask(ctx, map[string]any{"step1": elicit("Step 1: What is your name?", nameProp)})
				if err != nil {
					return tools.Result{}, err
				}
				first, bad := answersOf(tool, raw, "step1")
				if bad != nil {
					return *bad, nil
				}
				raw, err = session.Ask(ctx, map[string]any{"step2": elicit("Step 2: What is your favorite color?",
					map[string]any{"color": map[string]any{"type": "string"}})})
				if err != nil {
					return tools.Result{}, err
				}
				second, bad := answersOf(tool, raw, "step2")
				if bad != nil {
					return *bad, nil
				}
				return tools.Result{Status: tools.StatusSuccess, Output: fmt.Sprintf("%v likes %v", first["step1"].Content["name"], second["step2"].Content["color"])}, nil
			}),
		askFixture("test_input_required_result_capabilities", "Conformance fixture: asks only what the client declared it can answer (sampling, elicitation).",
			func(ctx context.Context, _ json.RawMessage, _ func(sandbox.Output)) (tools.Result, error) {
				requests := map[string]any{}
				if r := session.RoundFrom(ctx); r != nil && r.Declared("sampling") {
					requests["question"] = sample("Say hello.", 20)
				}
				if r := session.RoundFrom(ctx); r != nil && r.Declared("elicitation") {
					requests["user_name"] = elicit("What is your name?", nameProp)
				}
				if len(requests) == 0 {
					return tools.Result{Status: tools.StatusSuccess, Output: "the client can answer nothing this tool asks: nothing asked"}, nil
				}
				raw, err := session.Ask(ctx, requests)
				if err != nil {
					return tools.Result{}, err
				}
				return tools.Result{Status: tools.StatusSuccess, Output: fmt.Sprintf("%d answers", len(raw))}, nil
			}),
		{
			Tool: mcp.NewToolWithRawSchema("test_tool_with_task",
				"Conformance fixture: asks the client's name (multi round-trip), then goes on as a task that greets it.",
				json.RawMessage(noArgs)),
			Tasks:  enclave.TasksRequired,
			Gather: gatherName,
			Run: func(_ context.Context, args json.RawMessage, _ func(sandbox.Output)) (tools.Result, error) {
				var p struct {
					UserName string `json:"user_name"`
				}
				if err := json.Unmarshal(args, &p); err != nil {
					return tools.Result{}, fmt.Errorf("test_tool_with_task: the gathered arguments %s: %w", args, err)
				}
				return tools.Result{Status: tools.StatusSuccess, Output: fmt.Sprintf("Hello, %s! (gathered by a multi round-trip request, run as a task)", p.UserName)}, nil
			},
		},
		fixture("test_sampling", "Conformance fixture: asks the client's LLM `prompt` (sampling), then reports its answer.", enclave.TasksForbidden,
			`{"type":"object","properties":{"prompt":{"type":"string"}},"required":["prompt"],"additionalProperties":false}`, askSampling),
		fixture("test_elicitation", "Conformance fixture: asks the user for a username and an email with `message` (elicitation), then reports the answer.",
			enclave.TasksForbidden,
			`{"type":"object","properties":{"message":{"type":"string"}},"required":["message"],"additionalProperties":false}`, askUser),
		logFixture("test_logging_tool", "Conformance fixture: logs three messages (notifications/message, at info), only to a client that asked for a log level."),
	}
}

// gatherName is test_tool_with_task's input phase: the client's name, as Run's arguments.
func gatherName(ctx context.Context, args json.RawMessage) (json.RawMessage, error) {
	if bad := decode("test_tool_with_task", args, &struct{}{}); bad != nil {
		return nil, errors.New(bad.Error)
	}
	raw, err := session.Ask(ctx, map[string]any{"user_name": elicit("What is your name?", nameProp)})
	if err != nil {
		return nil, err
	}
	answers, bad := answersOf("test_tool_with_task", raw, "user_name")
	if bad != nil {
		return nil, errors.New(bad.Error)
	}
	name, _ := answers["user_name"].Content["name"].(string)
	return json.Marshal(map[string]string{"user_name": name})
}

// logFixture logs three messages to its client: mcp-go sends them to a session at the
// level it set (logging/setLevel), and to a 2026-07-28 request only when its _meta asks
// for a level.
func logFixture(name, description string) enclave.LocalTool {
	return fixture(name, description, enclave.TasksForbidden, noArgs, func(ctx context.Context, args json.RawMessage, _ func(sandbox.Output)) (tools.Result, error) {
		if bad := decode(name, args, &struct{}{}); bad != nil {
			return *bad, nil
		}
		srv := server.ServerFromContext(ctx)
		if srv == nil {
			return tools.Result{}, errors.New(name + ": no MCP server in the call's context")
		}
		for _, msg := range []string{"Tool execution started", "Tool processing data", "Tool execution completed"} {
			if err := srv.SendLogMessageToClient(ctx, mcp.NewLoggingMessageNotification(mcp.LoggingLevelInfo, name, msg)); err != nil {
				return tools.Result{}, fmt.Errorf("%s: sending a log message: %w", name, err)
			}
		}
		return tools.Result{Status: tools.StatusSuccess, Output: "logged three messages (sent only at a log level the client asked for)"}, nil
	})
}

// askSampling is test_sampling: the question of the 2025 scenario, which a session client
// gets as a server-initiated sampling/createMessage (mcp-go's bridge of the same Ask).
func askSampling(ctx context.Context, args json.RawMessage, _ func(sandbox.Output)) (tools.Result, error) {
	var p struct {
		Prompt string `json:"prompt"`
	}
	if bad := decode("test_sampling", args, &p); bad != nil {
		return *bad, nil
	}
	return askLLM(ctx, "test_sampling", "sample", p.Prompt, 100, "LLM response: ")
}

// askLLM asks the client's LLM prompt under key, and reports its text after prefix.
func askLLM(ctx context.Context, tool, key, prompt string, maxTokens int, prefix string) (tools.Result, error) {
	raw, err := session.Ask(ctx, map[string]any{key: sample(prompt, maxTokens)})
	if err != nil {
		return tools.Result{}, err
	}
	text, bad := sampledText(tool, key, raw[key])
	if bad != nil {
		return *bad, nil
	}
	return tools.Result{Status: tools.StatusSuccess, Output: prefix + text}, nil
}

// askUser is test_elicitation: a form asking a username and an email.
func askUser(ctx context.Context, args json.RawMessage, _ func(sandbox.Output)) (tools.Result, error) {
	var p struct {
		Message string `json:"message"`
	}
	if bad := decode("test_elicitation", args, &p); bad != nil {
		return *bad, nil
	}
	raw, err := session.Ask(ctx, map[string]any{"user": elicit(p.Message, map[string]any{
		"username": map[string]any{"type": "string", "description": "User's response"},
		"email":    map[string]any{"type": "string", "description": "User's email address"},
	})})
	if err != nil {
		return tools.Result{}, err
	}
	answers, bad := answersOf("test_elicitation", raw, "user")
	if bad != nil {
		return *bad, nil
	}
	content, _ := json.Marshal(answers["user"].Content)
	return tools.Result{Status: tools.StatusSuccess, Output: fmt.Sprintf("User response: action %s, content %s", answers["user"].Action, content)}, nil
}
