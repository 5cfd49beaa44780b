package schema

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/invopop/jsonschema"
)

// PathError reports a problem at one place in a schema, named by a JSON
// path such as $.properties.env.additionalProperties.
type PathError struct {
	// Path locates the offending schema or keyword, starting at "$".
	Path string
	// Problem says what is wrong there.
	Problem string
}

// Error implements error.
func (e *PathError) Error() string {
	return e.Path + ": " + e.Problem
}

// toStrict returns a strict-mode copy of the canonical object schema s,
// which it does not modify.
func toStrict(s *jsonschema.Schema) (*jsonschema.Schema, error) {
	return strictNode(s, "$", false)
}

// strictNode converts the schema s found at path. optional marks a property
// left out of its parent's required list, whose value must then also
// accept null.
func strictNode(s *jsonschema.Schema, path string, optional bool) (*jsonschema.Schema, error) {
	if s == nil {
		return nil, &PathError{path, "schema is missing"}
	}
	if err := rejectUnsupported(s, path); err != nil {
		return nil, err
	}
	if s.Type == "" && len(s.AnyOf) == 0 {
		return nil, &PathError{path, "value has no type; free-form values are not allowed in strict mode"}
	}
	out := &jsonschema.Schema{
		Type:        s.Type,
		Description: s.Description,
		Enum:        slices.Clone(s.Enum),
		Const:       s.Const,
	}
	if s.Default != nil {
		d, err := json.Marshal(s.Default)
		if err != nil {
			return nil, &PathError{path, fmt.Sprintf("encoding default: %v", err)}
		}
		out.Description = appendSentence(out.Description, "Default: "+string(d)+".")
	}
	for i, branch := range s.AnyOf {
		b, err := strictNode(branch, indexPath(path+".anyOf", i), false)
		if err != nil {
			return nil, err
		}
		out.AnyOf = append(out.AnyOf, b)
	}
	switch s.Type {
	case "object":
		if err := strictObject(s, out, path); err != nil {
			return nil, err
		}
	case "array":
		if s.Items == nil {
			return nil, &PathError{path, "array has no items schema"}
		}
		items, err := strictNode(s.Items, path+".items", false)
		if err != nil {
			return nil, err
		}
		out.Items = items
	}
	if optional {
		out = nullable(out)
	}
	return out, nil
}

// strictObject fills out with the strict form of the object schema s:
// every property required, additionalProperties false.
func strictObject(s, out *jsonschema.Schema, path string) error {
	if !isFalse(s.AdditionalProperties) {
		return &PathError{path, "object allows arbitrary keys (a map or free-form object); strict mode needs fixed properties"}
	}
	out.AdditionalProperties = jsonschema.FalseSchema
	out.Properties = jsonschema.NewProperties()
	out.Required = []string{}
	for name, prop := range s.Properties.FromOldest() {
		p, err := strictNode(prop, propertyPath(path, name), !slices.Contains(s.Required, name))
		if err != nil {
			return err
		}
		out.Properties.Set(name, p)
		out.Required = append(out.Required, name)
	}
	return nil
}

// nullable returns s changed so that it also accepts null, as strict mode
// expresses an optional property.
func nullable(s *jsonschema.Schema) *jsonschema.Schema {
	switch {
	case s.Type == "null":
		return s
	case len(s.AnyOf) > 0:
		for _, b := range s.AnyOf {
			if b.Type == "null" {
				return s
			}
		}
		s.AnyOf = append(s.AnyOf, &jsonschema.Schema{Type: "null"})
		return s
	case s.Const != nil:
		// A const cannot be widened by its type; offer null as an alternative.
		desc := s.Description
		s.Description = ""
		return &jsonschema.Schema{
			Description: desc,
			AnyOf:       []*jsonschema.Schema{s, {Type: "null"}},
		}
	}
	// jsonschema.Schema.Type is a string, so the ["T","null"] union is
	// written through Extras, which are marshalled with the other keys.
	s.Extras = map[string]any{"type": []string{s.Type, "null"}}
	s.Type = ""
	if len(s.Enum) > 0 && !slices.Contains(s.Enum, any(nil)) {
		s.Enum = append(s.Enum, nil)
	}
	return s
}

// rejectUnsupported reports keywords that change what a schema accepts and
// that strict mode cannot express. Keywords that only narrow values (such
// as minLength or format) and pure annotations are dropped instead.
func rejectUnsupported(s *jsonschema.Schema, path string) error {
	checks := []struct {
		keyword string
		present bool
	}{
		{"$ref", s.Ref != ""},
		{"$dynamicRef", s.DynamicRef != ""},
		{"$defs", len(s.Definitions) > 0},
		{"allOf", len(s.AllOf) > 0},
		{"oneOf", len(s.OneOf) > 0},
		{"not", s.Not != nil},
		{"if", s.If != nil},
		{"then", s.Then != nil},
		{"else", s.Else != nil},
		{"dependentSchemas", len(s.DependentSchemas) > 0},
		{"dependentRequired", len(s.DependentRequired) > 0},
		{"prefixItems", len(s.PrefixItems) > 0},
		{"contains", s.Contains != nil},
		{"patternProperties", len(s.PatternProperties) > 0},
		{"propertyNames", s.PropertyNames != nil},
		{"contentSchema", s.ContentSchema != nil},
	}
	for _, c := range checks {
		if c.present {
			return &PathError{path, fmt.Sprintf("keyword %q cannot be expressed in strict mode", c.keyword)}
		}
	}
	return nil
}

// isFalse reports whether s is the boolean schema false.
func isFalse(s *jsonschema.Schema) bool {
	if s == nil {
		return false
	}
	if s == jsonschema.FalseSchema {
		return true
	}
	b, err := json.Marshal(s)
	return err == nil && string(b) == "false"
}

// appendSentence joins a description and one more sentence.
func appendSentence(desc, sentence string) string {
	if desc == "" {
		return sentence
	}
	return desc + " " + sentence
}

// propertyPath returns the JSON path of property name under the schema at
// path.
func propertyPath(path, name string) string {
	return keyPath(path+".properties", name)
}

// keyPath appends an object key to a JSON path, in dot form when the key
// is a plain identifier and in bracket form otherwise.
func keyPath(path, key string) string {
	if isIdentifier(key) {
		return path + "." + key
	}
	return path + "[" + strconv.Quote(key) + "]"
}

// indexPath appends an array index to a JSON path.
func indexPath(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

// isIdentifier reports whether s is a non-empty run of ASCII letters,
// digits and underscores not starting with a digit.
func isIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_', 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z':
		case '0' <= r && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
