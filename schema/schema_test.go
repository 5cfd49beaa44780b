package schema

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestReflect(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		params  any
		wantErr string // empty for success
	}{
		{name: "pointer to struct", params: &execParams{}},
		{name: "struct value", params: execParams{}},
		{name: "empty struct", params: &emptyParams{}},
		{name: "map field reflects", params: &mapParams{}},
		{name: "ignored self reference", params: &skippedRecursion{}},
		{name: "nil", params: nil, wantErr: "got nil, want a struct"},
		{name: "int", params: 3, wantErr: "reflecting int: parameters must be a struct or a pointer to one"},
		{name: "pointer to string", params: new(string), wantErr: "reflecting *string: parameters must be a struct"},
		{name: "slice of structs", params: []execParams{}, wantErr: "parameters must be a struct"},
		{name: "pointer to pointer", params: new(*execParams), wantErr: "parameters must be a struct"},
		{name: "recursive type", params: &node{}, wantErr: "recursive type schema.node is not supported: schema.node -> schema.node"},
		{name: "chan field", params: &chanParams{}, wantErr: "reflecting schema.chanParams: invopop/jsonschema panicked"},
		{name: "non-object own schema", params: &stringSchema{}, wantErr: `schema has type "string", want "object"`},
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
			raw, err := json.Marshal(s)
			if err != nil {
				t.Fatalf("marshalling: %v", err)
			}
			if err := ValidateMCP(raw); err != nil {
				t.Errorf("ValidateMCP(Reflect()) = %v; schema %s", err, raw)
			}
		})
	}
}

func TestReflectShape(t *testing.T) {
	t.Parallel()
	s, err := Reflect(&execParams{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Version != "" || s.ID != "" || s.Definitions != nil || s.Ref != "" {
		t.Errorf("schema keeps $schema/$id/$defs/$ref: %q %q %v %q", s.Version, s.ID, s.Definitions, s.Ref)
	}
	if s.Type != "object" || !isFalse(s.AdditionalProperties) {
		t.Errorf("type = %q, additionalProperties = %v; want object, false", s.Type, s.AdditionalProperties)
	}
	timeout, _ := s.Properties.Get("timeout")
	if want := "Seconds before the run is killed, from 1 to 300, inclusive."; timeout == nil || timeout.Description != want {
		t.Errorf("timeout description lost its commas: %+v", timeout)
	}
	language, _ := s.Properties.Get("language")
	if language == nil || !reflect.DeepEqual(language.Enum, []any{"python", "bash"}) {
		t.Errorf("language enum = %+v", language)
	}
	command, _ := s.Properties.Get("command")
	if command == nil || len(command.AnyOf) != 2 {
		t.Errorf("command is not an anyOf of two branches: %+v", command)
	}
}

func TestReflectFresh(t *testing.T) {
	t.Parallel()
	a, err := Reflect(&execParams{})
	if err != nil {
		t.Fatal(err)
	}
	a.Required = append(a.Required, "mutated")
	a.Properties.Delete("code")
	b, err := Reflect(&execParams{})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(b.Required, "mutated") || b.Properties.Len() != 6 {
		t.Errorf("a second Reflect sees the caller's changes: required %v, %d properties", b.Required, b.Properties.Len())
	}
}

func TestPropertiesAndRequired(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		params       any
		wantProps    []string
		wantRequired []string
	}{
		{
			name:         "exec",
			params:       &execParams{},
			wantProps:    []string{"code", "timeout", "language", "limits", "files", "command"},
			wantRequired: []string{"code", "command"},
		},
		{name: "empty", params: emptyParams{}, wantProps: []string{}, wantRequired: nil},
		{name: "map", params: &mapParams{}, wantProps: []string{"code", "env"}, wantRequired: []string{"code"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			props, err := Properties(tt.params)
			if err != nil {
				t.Fatalf("Properties() error = %v", err)
			}
			if !slices.Equal(props, tt.wantProps) {
				t.Errorf("Properties() = %q, want %q", props, tt.wantProps)
			}
			req, err := Required(tt.params)
			if err != nil {
				t.Fatalf("Required() error = %v", err)
			}
			if !slices.Equal(req, tt.wantRequired) {
				t.Errorf("Required() = %q, want %q", req, tt.wantRequired)
			}
		})
	}
}

func TestPropertiesAndRequiredErrors(t *testing.T) {
	t.Parallel()
	for _, params := range []any{nil, 42, &node{}} {
		if _, err := Properties(params); err == nil {
			t.Errorf("Properties(%T) succeeded, want an error", params)
		}
		if _, err := Required(params); err == nil {
			t.Errorf("Required(%T) succeeded, want an error", params)
		}
	}
}

func TestPathErrorIsReturned(t *testing.T) {
	t.Parallel()
	_, err := OpenAIStrict(Tool{Name: "t", Params: &mapParams{}})
	var pe *PathError
	if !errors.As(err, &pe) {
		t.Fatalf("OpenAIStrict() error = %v, want a *PathError inside", err)
	}
	if pe.Path != "$.properties.env" {
		t.Errorf("Path = %q, want $.properties.env", pe.Path)
	}
}
