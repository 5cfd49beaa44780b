package mcp

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// TestStatelessSchema: the handle is added as a required string property, beside the
// tool's own; a tool with a parameter of that name is refused.
func TestStatelessSchema(t *testing.T) {
	t.Parallel()
	raw, err := statelessSchema("t", json.RawMessage(`{"type":"object","properties":{"code":{"type":"string"}},"required":["code"],"additionalProperties":false}`))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Properties map[string]map[string]any `json:"properties"`
		Required   []string                  `json:"required"`
		Additional bool                      `json:"additionalProperties"`
	}
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if got.Properties["code"]["type"] != "string" || got.Properties[HandleArg]["type"] != "string" ||
		!reflect.DeepEqual(got.Required, []string{"code", HandleArg}) || got.Additional {
		t.Errorf("stateless schema %s", raw)
	}
	if raw, err := statelessSchema("none", json.RawMessage(`{"type":"object"}`)); err != nil || !strings.Contains(string(raw), `"required":["sandbox"]`) {
		t.Errorf("a tool without parameters: %s, %v", raw, err)
	}
	if _, err := statelessSchema("clash", json.RawMessage(`{"type":"object","properties":{"sandbox":{"type":"string"}}}`)); err == nil || !strings.Contains(err.Error(), `"sandbox"`) {
		t.Errorf("a tool with its own sandbox parameter: %v, want a refusal naming it", err)
	}
}

// TestSplitHandle: the handle comes out of the arguments, which go on without it; a handle
// that is not a non-empty string is refused, naming the argument.
func TestSplitHandle(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		args    any
		handle  string
		present bool
		rest    any
		refusal string
	}{
		{name: "none", args: map[string]any{"code": "x"}, rest: map[string]any{"code": "x"}},
		{name: "nil", args: nil, rest: nil},
		{name: "given", args: map[string]any{"code": "x", "sandbox": "h1"}, handle: "h1", present: true, rest: map[string]any{"code": "x"}},
		{name: "raw JSON", args: json.RawMessage(`{"sandbox":"h2"}`), handle: "h2", present: true, rest: map[string]any{}},
		{name: "number", args: map[string]any{"sandbox": 3}, present: true, rest: map[string]any{}, refusal: "got 3"},
		{name: "blank", args: map[string]any{"sandbox": " "}, present: true, rest: map[string]any{}, refusal: "non-empty string"},
		{name: "not an object", args: json.RawMessage(`[1]`), rest: json.RawMessage(`[1]`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			handle, present, rest, err := splitHandle(tc.args)
			if handle != tc.handle || present != tc.present || !reflect.DeepEqual(rest, tc.rest) {
				t.Errorf("got %q %v %v, want %q %v %v", handle, present, rest, tc.handle, tc.present, tc.rest)
			}
			if (tc.refusal == "") != (err == nil) || (err != nil && (!strings.Contains(err.Error(), tc.refusal) || !strings.Contains(err.Error(), `"sandbox"`))) {
				t.Errorf("error %v, want one with %q", err, tc.refusal)
			}
		})
	}
}
