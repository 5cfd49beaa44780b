package schema

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/invopop/jsonschema"
)

// prebuiltParams is a parameter schema built in code, as a tool declared in a config file
// has; it reads like execParams' first fields.
func prebuiltParams() *jsonschema.Schema {
	s := &jsonschema.Schema{Type: "object", Properties: jsonschema.NewProperties(), AdditionalProperties: jsonschema.FalseSchema}
	s.Properties.Set("code", &jsonschema.Schema{Type: "string", Description: "Source code to run."})
	s.Properties.Set("language", &jsonschema.Schema{Type: "string", Enum: []any{"python", "bash"}})
	s.Properties.Set("files", &jsonschema.Schema{Type: "array", Items: &jsonschema.Schema{Type: "string"}})
	s.Required = []string{"code"}
	return s
}

func TestReflectPrebuilt(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		params  *jsonschema.Schema
		wantErr string // empty for success
	}{
		{name: "object", params: prebuiltParams()},
		{name: "no properties", params: &jsonschema.Schema{Type: "object", AdditionalProperties: jsonschema.FalseSchema}},
		{name: "nil", params: nil, wantErr: "got nil"},
		{name: "not an object", params: &jsonschema.Schema{Type: "string"}, wantErr: `top-level schema must have type "object"`},
		{name: "open object", params: &jsonschema.Schema{Type: "object"}, wantErr: "additionalProperties must be false"},
		{name: "reference", params: &jsonschema.Schema{Type: "object", AdditionalProperties: jsonschema.FalseSchema, Ref: "#/$defs/x"}, wantErr: "references are not allowed"},
		{name: "top-level anyOf", params: &jsonschema.Schema{Type: "object", AdditionalProperties: jsonschema.FalseSchema, AnyOf: []*jsonschema.Schema{{Type: "object"}}}, wantErr: "not allowed at the top level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := Reflect(tt.params)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Reflect() error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Reflect() error = %v", err)
			}
			if s == tt.params {
				t.Fatal("Reflect returned its input, not a copy")
			}
			raw, err := json.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			if err := ValidateMCP(raw); err != nil {
				t.Errorf("ValidateMCP = %v; schema %s", err, raw)
			}
		})
	}
}

// TestPrebuiltExports: a prebuilt schema goes through every export like a reflected one,
// keeps its property order, and the copy Reflect returns is the caller's to change.
func TestPrebuiltExports(t *testing.T) {
	t.Parallel()
	params := prebuiltParams()
	tool := Tool{Name: "run_code", Description: "Runs code.", Params: params}
	props, err := Properties(params)
	if err != nil || strings.Join(props, ",") != "code,language,files" {
		t.Fatalf("Properties = %v, %v; want code, language, files in order", props, err)
	}
	if req, err := Required(params); err != nil || strings.Join(req, ",") != "code" {
		t.Fatalf("Required = %v, %v; want code", req, err)
	}
	mcp, err := MCP(tool)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"properties":{"code":{"type":"string","description":"Source code to run."},"language":{"type":"string","enum":["python","bash"]},` +
		`"files":{"items":{"type":"string"},"type":"array"}},"additionalProperties":false,"type":"object","required":["code"]}`
	if string(mcp) != want {
		t.Errorf("MCP schema\n%s\nwant\n%s", mcp, want)
	}
	if _, err := OpenAI(tool); err != nil {
		t.Errorf("OpenAI: %v", err)
	}
	strict, err := OpenAIStrict(tool)
	if err != nil {
		t.Fatalf("OpenAIStrict: %v", err)
	}
	if !strings.Contains(string(strict), `"required":["code","language","files"]`) || !strings.Contains(string(strict), `"enum":["python","bash",null]`) {
		t.Errorf("strict export lacks every property as required or the nullable enum: %s", strict)
	}
	s, err := Reflect(params)
	if err != nil {
		t.Fatal(err)
	}
	s.Properties.Delete("code")
	s.Required = nil
	if again, _ := MCP(tool); string(again) != want {
		t.Errorf("changing Reflect's result changed the tool's schema: %s", again)
	}
}
