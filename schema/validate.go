package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
)

// ValidateMCP checks that raw is usable as an MCP tool inputSchema: a JSON
// object of type "object", without anyOf, oneOf or allOf at the top, and
// without $ref, $defs or definitions anywhere. A violation is returned as
// a *PathError naming where it is.
func ValidateMCP(raw json.RawMessage) error {
	root, err := decode(raw)
	if err != nil {
		return err
	}
	if err := checkTop(root); err != nil {
		return err
	}
	return walk(root, "$", func(path string, node any) error {
		m, ok := node.(map[string]any)
		if !ok {
			return nil // true and false are valid schemas
		}
		for _, k := range []string{"$ref", "$defs", "definitions"} {
			if _, ok := m[k]; ok {
				return &PathError{keyPath(path, k), "references are not allowed; schemas must be inline"}
			}
		}
		return nil
	})
}

// strictKeywords are the only keywords ValidateStrict accepts.
func strictKeywords() []string {
	return []string{"type", "description", "properties", "required", "additionalProperties", "items", "enum", "anyOf", "const"}
}

// ValidateStrict checks that raw, the parameters of an OpenAI strict
// function, follows the strict-mode rules: the top is an object schema
// without anyOf, oneOf or allOf; every schema has a type (or anyOf) and
// uses only type, description, properties, required,
// additionalProperties, items, enum, anyOf and const; every object has
// additionalProperties false and lists each of its properties in required.
// The first violation, in a fixed order, is returned as a *PathError
// naming its JSON path.
func ValidateStrict(raw json.RawMessage) error {
	root, err := decode(raw)
	if err != nil {
		return err
	}
	if err := checkTop(root); err != nil {
		return err
	}
	allowed := strictKeywords()
	return walk(root, "$", func(path string, node any) error {
		m, ok := node.(map[string]any)
		if !ok {
			return &PathError{path, "boolean schemas are not allowed in strict mode"}
		}
		return checkStrictNode(m, path, allowed)
	})
}

// checkStrictNode checks one schema object of a strict schema.
func checkStrictNode(m map[string]any, path string, allowed []string) error {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(allowed, k) {
			return &PathError{keyPath(path, k), fmt.Sprintf("keyword %q is not allowed in strict mode", k)}
		}
	}
	types, err := typeList(m, path)
	if err != nil {
		return err
	}
	if len(types) == 0 {
		if _, ok := m["anyOf"]; !ok {
			return &PathError{path, "schema has neither type nor anyOf; free-form values are not allowed in strict mode"}
		}
	}
	if v, ok := m["anyOf"]; ok {
		if branches, ok := v.([]any); !ok || len(branches) == 0 {
			return &PathError{path + ".anyOf", "must be a non-empty array of schemas"}
		}
	}
	if v, ok := m["additionalProperties"]; ok && v != false {
		return &PathError{path + ".additionalProperties", "must be false"}
	}
	if slices.Contains(types, "array") {
		if _, ok := m["items"].(map[string]any); !ok {
			return &PathError{path, "array schema needs an items schema"}
		}
	}
	if slices.Contains(types, "object") {
		return checkStrictObject(m, path)
	}
	return nil
}

// checkStrictObject checks the object rules of strict mode on m.
func checkStrictObject(m map[string]any, path string) error {
	if m["additionalProperties"] != false {
		return &PathError{path, "object must set additionalProperties to false"}
	}
	var props map[string]any
	if v, ok := m["properties"]; ok {
		if props, ok = v.(map[string]any); !ok {
			return &PathError{path + ".properties", "must be an object"}
		}
	}
	var required []string
	if v, ok := m["required"]; ok {
		list, ok := v.([]any)
		if !ok {
			return &PathError{path + ".required", "must be an array of property names"}
		}
		for i, item := range list {
			name, ok := item.(string)
			if !ok {
				return &PathError{indexPath(path+".required", i), "must be a property name"}
			}
			if _, ok := props[name]; !ok {
				return &PathError{indexPath(path+".required", i), fmt.Sprintf("%q is not a property", name)}
			}
			required = append(required, name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(props)) {
		if !slices.Contains(required, name) {
			return &PathError{propertyPath(path, name), "property is not listed in required; strict mode needs every property required (make optional ones nullable)"}
		}
	}
	return nil
}

// typeList returns the type keyword of m as a list: empty when absent, one
// name for a string, the names of an array.
func typeList(m map[string]any, path string) ([]string, error) {
	v, ok := m["type"]
	if !ok {
		return nil, nil
	}
	bad := &PathError{path + ".type", "must be a type name or an array of type names"}
	switch t := v.(type) {
	case string:
		return []string{t}, nil
	case []any:
		if len(t) == 0 {
			return nil, bad
		}
		names := make([]string, 0, len(t))
		for _, item := range t {
			name, ok := item.(string)
			if !ok {
				return nil, bad
			}
			names = append(names, name)
		}
		return names, nil
	}
	return nil, bad
}

// checkTop checks the rules shared by every format for the root schema.
func checkTop(root any) error {
	m, ok := root.(map[string]any)
	if !ok {
		return &PathError{"$", "schema must be a JSON object"}
	}
	if m["type"] != "object" {
		return &PathError{"$.type", `top-level schema must have type "object"`}
	}
	for _, k := range []string{"anyOf", "oneOf", "allOf"} {
		if _, ok := m[k]; ok {
			return &PathError{"$." + k, "not allowed at the top level"}
		}
	}
	return nil
}

// decode parses raw as a single JSON value, keeping numbers exact.
func decode(raw json.RawMessage) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("decoding schema: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("decoding schema: unexpected data after the top-level value")
	}
	return v, nil
}

// Kinds of keyword, by what their value holds.
const (
	notSchema  = iota // a value that is not a subschema
	schemaOne         // one subschema
	schemaList        // an array of subschemas
	schemaMap         // an object whose values are subschemas
)

// keywordKind tells where subschemas sit under keyword k.
func keywordKind(k string) int {
	switch k {
	case "additionalProperties", "contains", "contentSchema", "else", "if", "items", "not", "propertyNames", "then":
		return schemaOne
	case "allOf", "anyOf", "oneOf", "prefixItems":
		return schemaList
	case "$defs", "definitions", "dependentSchemas", "patternProperties", "properties":
		return schemaMap
	}
	return notSchema
}

// walk calls visit on the schema node at path and then on each of its
// subschemas, depth first in a fixed order, stopping at the first error.
func walk(node any, path string, visit func(path string, node any) error) error {
	if err := visit(path, node); err != nil {
		return err
	}
	m, ok := node.(map[string]any)
	if !ok {
		return nil
	}
	// Keyword groups are walked in sorted key order so that the first
	// violation is the same on every run.
	for _, k := range slices.Sorted(maps.Keys(m)) {
		switch keywordKind(k) {
		case schemaOne:
			if _, isBool := m[k].(bool); isBool && k == "additionalProperties" {
				continue // checked by the visitor of m itself
			}
			if err := walk(m[k], keyPath(path, k), visit); err != nil {
				return err
			}
		case schemaList:
			list, ok := m[k].([]any)
			if !ok {
				return &PathError{keyPath(path, k), "must be an array of schemas"}
			}
			for i, sub := range list {
				if err := walk(sub, indexPath(keyPath(path, k), i), visit); err != nil {
					return err
				}
			}
		case schemaMap:
			subs, ok := m[k].(map[string]any)
			if !ok {
				return &PathError{keyPath(path, k), "must be an object of schemas"}
			}
			for _, name := range slices.Sorted(maps.Keys(subs)) {
				if err := walk(subs[name], keyPath(keyPath(path, k), name), visit); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
