package schema

import (
	"encoding/json"

	"github.com/invopop/jsonschema"
)

// command is a string or an argv array, with its own schema.
type command []string

// JSONSchema implements the invopop/jsonschema custom schema hook.
func (command) JSONSchema() *jsonschema.Schema {
	return &jsonschema.Schema{
		AnyOf: []*jsonschema.Schema{
			{Type: "string"},
			{Type: "array", Items: &jsonschema.Schema{Type: "string"}},
		},
	}
}

// limits is a nested parameter struct.
type limits struct {
	MemoryMB int  `json:"memory_mb" jsonschema_description:"Memory cap in MiB."`
	Network  bool `json:"network,omitempty" jsonschema:"default=false"`
}

// execParams covers every supported field shape.
type execParams struct {
	Code     string   `json:"code" jsonschema:"minLength=1" jsonschema_description:"Source code to run."`
	Timeout  float64  `json:"timeout,omitempty" jsonschema:"default=30,minimum=1,maximum=300" jsonschema_description:"Seconds before the run is killed, from 1 to 300, inclusive."`
	Language string   `json:"language,omitempty" jsonschema:"enum=python,enum=bash"`
	Limits   *limits  `json:"limits,omitempty"`
	Files    []string `json:"files,omitempty" jsonschema_description:"Paths to copy in."`
	Command  command  `json:"command" jsonschema_description:"Command line, as a string or an argv array."`
}

// emptyParams has no parameters at all.
type emptyParams struct{}

// mapParams has a free-form map, which strict mode cannot express.
type mapParams struct {
	Code string            `json:"code"`
	Env  map[string]string `json:"env,omitempty"`
}

// anyParams has a value of any type.
type anyParams struct {
	Value any `json:"value"`
}

// rawParams has a raw JSON value.
type rawParams struct {
	Data json.RawMessage `json:"data"`
}

// nullableParams uses the jsonschema nullable tag, which reflects to oneOf.
type nullableParams struct {
	Name string `json:"name" jsonschema:"nullable"`
}

// constParams has an optional property with a const value.
type constParams struct {
	Kind string `json:"kind,omitempty" jsonschema_extras:"x-note=kept out"`
}

// JSONSchemaExtend gives kind a const value.
func (constParams) JSONSchemaExtend(s *jsonschema.Schema) {
	if p, ok := s.Properties.Get("kind"); ok {
		p.Const = "file"
	}
}

// node is a recursive type.
type node struct {
	Name     string  `json:"name"`
	Children []*node `json:"children,omitempty"`
}

// skippedRecursion only refers to itself through an ignored field.
type skippedRecursion struct {
	Name   string            `json:"name"`
	Parent *skippedRecursion `json:"-"`
}

// chanParams has a field type the reflector cannot handle.
type chanParams struct {
	Events chan int `json:"events"`
}

// stringSchema is a struct whose own schema is not an object.
type stringSchema struct{}

// JSONSchema implements the invopop/jsonschema custom schema hook.
func (stringSchema) JSONSchema() *jsonschema.Schema {
	return &jsonschema.Schema{Type: "string"}
}
