package schema

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// strictParameters exports params in strict mode and returns the
// parameters schema.
func strictParameters(t *testing.T, params any) (json.RawMessage, error) {
	t.Helper()
	raw, err := OpenAIStrict(Tool{Name: "t", Params: params})
	if err != nil {
		return nil, err
	}
	return decodeEnvelope(t, raw).Function.Parameters, nil
}

func TestOpenAIStrictPassesValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		params any
	}{
		{name: "exec", params: &execParams{}},
		{name: "empty", params: &emptyParams{}},
		{name: "nested", params: &limits{}},
		{name: "const", params: &constParams{}},
		{name: "ignored self reference", params: &skippedRecursion{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			params, err := strictParameters(t, tt.params)
			if err != nil {
				t.Fatalf("OpenAIStrict() error = %v", err)
			}
			if err := ValidateStrict(params); err != nil {
				t.Errorf("ValidateStrict() = %v\n%s", err, params)
			}
			mcp, err := MCP(Tool{Name: "t", Params: tt.params})
			if err != nil {
				t.Fatalf("MCP() error = %v", err)
			}
			if err := ValidateMCP(mcp); err != nil {
				t.Errorf("ValidateMCP() = %v\n%s", err, mcp)
			}
		})
	}
}

// property decodes params and returns one top-level property.
func property(t *testing.T, params json.RawMessage, name string) map[string]any {
	t.Helper()
	var s struct {
		Properties map[string]map[string]any `json:"properties"`
	}
	if err := json.Unmarshal(params, &s); err != nil {
		t.Fatal(err)
	}
	p, ok := s.Properties[name]
	if !ok {
		t.Fatalf("no property %q in %s", name, params)
	}
	return p
}

func TestOpenAIStrictTransform(t *testing.T) {
	t.Parallel()
	params, err := strictParameters(t, &execParams{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		property string
		want     string // the property schema, compact JSON with sorted keys
	}{
		{"code", `{"description":"Source code to run.","type":"string"}`},
		{"timeout", `{"description":"Seconds before the run is killed, from 1 to 300, inclusive. Default: 30.","type":["number","null"]}`},
		{"language", `{"enum":["python","bash",null],"type":["string","null"]}`},
		{"limits", `{"additionalProperties":false,"properties":{"memory_mb":{"description":"Memory cap in MiB.","type":"integer"},"network":{"description":"Default: false.","type":["boolean","null"]}},"required":["memory_mb","network"],"type":["object","null"]}`},
		{"files", `{"description":"Paths to copy in.","items":{"type":"string"},"type":["array","null"]}`},
		{"command", `{"anyOf":[{"type":"string"},{"items":{"type":"string"},"type":"array"}],"description":"Command line, as a string or an argv array."}`},
	}
	for _, tt := range tests {
		t.Run(tt.property, func(t *testing.T) {
			t.Parallel()
			got, err := json.Marshal(property(t, params, tt.property))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("property %s =\n%s\nwant\n%s", tt.property, got, tt.want)
			}
		})
	}
}

func TestOpenAIStrictOptionalAnyOfGetsNull(t *testing.T) {
	t.Parallel()
	type optionalCommand struct {
		Command command `json:"command,omitempty"`
	}
	params, err := strictParameters(t, &optionalCommand{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(property(t, params, "command"))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"anyOf":[{"type":"string"},{"items":{"type":"string"},"type":"array"},{"type":"null"}]}`
	if string(got) != want {
		t.Errorf("command = %s, want %s", got, want)
	}
}

func TestOpenAIStrictOptionalConst(t *testing.T) {
	t.Parallel()
	params, err := strictParameters(t, &constParams{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(property(t, params, "kind"))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"anyOf":[{"const":"file","type":"string"},{"type":"null"}]}`
	if string(got) != want {
		t.Errorf("kind = %s, want %s", got, want)
	}
}

func TestOpenAIStrictRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		params   any
		wantPath string
		wantText string
	}{
		{name: "map", params: &mapParams{}, wantPath: "$.properties.env", wantText: "arbitrary keys"},
		{name: "any", params: &anyParams{}, wantPath: "$.properties.value", wantText: "free-form values"},
		{name: "raw message", params: &rawParams{}, wantPath: "$.properties.data", wantText: "free-form values"},
		{name: "oneOf from nullable tag", params: &nullableParams{}, wantPath: "$.properties.name", wantText: `"oneOf"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := Reflect(tt.params); err != nil {
				t.Fatalf("Reflect() error = %v; only strict mode should reject", err)
			}
			_, err := OpenAIStrict(Tool{Name: "t", Params: tt.params})
			var pe *PathError
			if !errors.As(err, &pe) {
				t.Fatalf("OpenAIStrict() error = %v, want a *PathError", err)
			}
			if pe.Path != tt.wantPath || !strings.Contains(pe.Problem, tt.wantText) {
				t.Errorf("error = %v, want path %s and text %q", err, tt.wantPath, tt.wantText)
			}
			if !strings.Contains(err.Error(), `converting parameters of "t" to strict mode`) {
				t.Errorf("error %q does not say what was being done", err)
			}
		})
	}
}

func TestOpenAIStrictLeavesCanonicalAlone(t *testing.T) {
	t.Parallel()
	s, err := Reflect(&execParams{})
	if err != nil {
		t.Fatal(err)
	}
	before, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := toStrict(s); err != nil {
		t.Fatal(err)
	}
	after, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if string(before) != string(after) {
		t.Errorf("toStrict modified its input:\nbefore %s\nafter  %s", before, after)
	}
}
