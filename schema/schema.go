// Package schema turns a tool's Go parameter struct into the JSON Schemas
// that clients see. That is its one job: it reflects the struct with
// invopop/jsonschema (or takes a prebuilt object schema, for tools whose
// parameters are only known at run time) into one canonical schema and
// exports it as an MCP tool inputSchema, as an OpenAI function-calling
// definition, or as an OpenAI strict function-calling definition. It also
// offers validators that check an exported schema against the rules of each
// format.
//
// The package knows nothing about MCP libraries or about particular tools;
// it imports only the standard library and invopop/jsonschema. Every
// function is pure: it reflects afresh on each call and never mutates its
// inputs, so callers that need speed should cache the results.
//
// Struct authors must keep in mind how invopop/jsonschema reads tags:
//   - a property is required unless its json tag has omitempty;
//   - a comma inside jsonschema:"description=..." silently cuts the text,
//     so descriptions go in the jsonschema_description tag;
//   - enums are written jsonschema:"enum=a,enum=b";
//   - a type can supply its own schema with a value-receiver method
//     JSONSchema() *jsonschema.Schema (for instance a string-or-array anyOf);
//     invopop drops any description that method sets (the field's
//     jsonschema_description tag, even when absent, wins), so describe such
//     fields with the tag;
//   - the jsonschema:"nullable" tag reflects to oneOf, which OpenAI strict
//     mode rejects; make optional fields omitempty instead.
package schema

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/invopop/jsonschema"
)

// Tool is what this package needs to know of a tool.
type Tool struct {
	// Name is the tool name, e.g. "python_executor".
	Name string
	// Description tells a model what the tool does.
	Description string
	// Params is a pointer to the zero value of the tool's parameter struct
	// (a struct value works too), or a prebuilt *jsonschema.Schema of type
	// object with additionalProperties false, for parameters that are not a
	// Go type (a tool declared in a config file).
	Params any
}

// customSchema is the interface invopop/jsonschema uses for types that
// provide their own schema.
type customSchema interface {
	JSONSchema() *jsonschema.Schema
}

// Reflect returns the canonical JSON Schema of params: an inline object
// with additionalProperties false and no $schema, $id, $defs or $ref.
// params must be a struct or a pointer to one, or a prebuilt
// *jsonschema.Schema (see Tool.Params), which is checked and copied;
// anything else, a recursive type or a field type that cannot be reflected
// is reported as an error. Each call returns a new schema that the caller
// may modify.
func Reflect(params any) (*jsonschema.Schema, error) {
	if s, ok := params.(*jsonschema.Schema); ok {
		return prebuilt(s)
	}
	t, err := structType(params)
	if err != nil {
		return nil, err
	}
	if err := checkRecursion(t, nil); err != nil {
		return nil, fmt.Errorf("reflecting %s: %w", t, err)
	}
	s, err := reflectType(t)
	if err != nil {
		return nil, fmt.Errorf("reflecting %s: %w", t, err)
	}
	if s.Type != "object" {
		return nil, fmt.Errorf("reflecting %s: schema has type %q, want \"object\"", t, s.Type)
	}
	return s, nil
}

// prebuilt checks that s can stand for a parameter struct (an inline object
// that refuses unknown keys, as a reflected struct does) and returns a deep
// copy of it.
func prebuilt(s *jsonschema.Schema) (*jsonschema.Schema, error) {
	if s == nil {
		return nil, errors.New("reading prebuilt parameter schema: got nil")
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encoding prebuilt parameter schema: %w", err)
	}
	if err := ValidateMCP(b); err != nil {
		return nil, fmt.Errorf("checking prebuilt parameter schema: %w", err)
	}
	if !isFalse(s.AdditionalProperties) {
		return nil, errors.New("checking prebuilt parameter schema: additionalProperties must be false, as for a parameter struct")
	}
	out := new(jsonschema.Schema)
	if err := json.Unmarshal(b, out); err != nil {
		return nil, fmt.Errorf("copying prebuilt parameter schema: %w", err)
	}
	if out.Properties == nil {
		out.Properties = jsonschema.NewProperties()
	}
	return out, nil
}

// Properties returns the top-level property names of params in
// declaration order, for messages such as "unknown parameter x; valid: a, b".
func Properties(params any) ([]string, error) {
	s, err := Reflect(params)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, s.Properties.Len())
	for name := range s.Properties.KeysFromOldest() {
		names = append(names, name)
	}
	return names, nil
}

// Required returns the names of the required top-level properties of
// params in declaration order, for messages such as
// "missing required parameter x".
func Required(params any) ([]string, error) {
	s, err := Reflect(params)
	if err != nil {
		return nil, err
	}
	return slices.Clone(s.Required), nil
}

// structType returns the struct type of params, which must be a struct or
// a pointer to a struct.
func structType(params any) (reflect.Type, error) {
	if params == nil {
		return nil, errors.New("reflecting parameters: got nil, want a struct or a pointer to one")
	}
	t := reflect.TypeOf(params)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil, fmt.Errorf("reflecting %T: parameters must be a struct or a pointer to one", params)
	}
	return t, nil
}

// reflectType runs invopop/jsonschema on t with the settings that give an
// inline schema, turning a panic of the reflector (for example on a chan or
// func field) into an error.
func reflectType(t reflect.Type) (s *jsonschema.Schema, err error) {
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("invopop/jsonschema panicked: %v", r)
		}
	}()
	r := &jsonschema.Reflector{
		DoNotReference: true,
		ExpandedStruct: true,
		Anonymous:      true,
	}
	s = r.ReflectFromType(t)
	s.Version = ""
	s.ID = jsonschema.EmptyID
	s.Definitions = nil
	return s, nil
}

// checkRecursion reports a struct type that contains itself, which the
// reflector would otherwise expand forever because references are off.
// Types with their own JSONSchema method are not descended into, nor are
// fields that encoding/json or jsonschema ignore.
func checkRecursion(t reflect.Type, path []reflect.Type) error {
	if t.Implements(reflect.TypeFor[customSchema]()) {
		return nil
	}
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Map:
		return checkRecursion(t.Elem(), path)
	case reflect.Struct:
	default:
		return nil
	}
	if slices.Contains(path, t) {
		names := make([]string, 0, len(path)+1)
		for _, p := range path {
			names = append(names, p.String())
		}
		names = append(names, t.String())
		return fmt.Errorf("recursive type %s is not supported: %s", t, strings.Join(names, " -> "))
	}
	path = append(path, t)
	for f := range t.Fields() {
		if !f.IsExported() && !f.Anonymous {
			continue
		}
		if f.Tag.Get("json") == "-" || f.Tag.Get("jsonschema") == "-" {
			continue
		}
		if err := checkRecursion(f.Type, path); err != nil {
			return err
		}
	}
	return nil
}
