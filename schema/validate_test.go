package schema

import (
	"errors"
	"strings"
	"testing"
)

// goodStrict is a minimal valid strict schema.
const goodStrict = `{"type":"object","properties":{"a":{"type":["string","null"]}},"required":["a"],"additionalProperties":false}`

func TestValidateStrict(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		raw      string
		wantPath string // empty when the schema is valid
		wantText string
	}{
		{name: "valid", raw: goodStrict},
		{name: "valid empty object", raw: `{"type":"object","properties":{},"required":[],"additionalProperties":false}`},
		{name: "valid anyOf property", raw: `{"type":"object","properties":{"c":{"anyOf":[{"type":"string"},{"type":"array","items":{"type":"string"}},{"type":"null"}]}},"required":["c"],"additionalProperties":false}`},
		{name: "valid enum with null", raw: `{"type":"object","properties":{"e":{"type":["string","null"],"enum":["x",null]}},"required":["e"],"additionalProperties":false}`},

		{name: "not JSON", raw: `{"type":`, wantText: "decoding schema"},
		{name: "trailing data", raw: goodStrict + ` {}`, wantText: "after the top-level value"},
		{name: "top not object", raw: `[]`, wantPath: "$", wantText: "must be a JSON object"},
		{name: "top type not object", raw: `{"type":"string"}`, wantPath: "$.type", wantText: `type "object"`},
		{name: "top anyOf", raw: `{"type":"object","anyOf":[{"type":"object"}],"properties":{},"additionalProperties":false}`, wantPath: "$.anyOf", wantText: "top level"},
		{name: "top oneOf", raw: `{"type":"object","oneOf":[],"additionalProperties":false}`, wantPath: "$.oneOf", wantText: "top level"},
		{name: "top allOf", raw: `{"type":"object","allOf":[],"additionalProperties":false}`, wantPath: "$.allOf", wantText: "top level"},
		{name: "top additionalProperties missing", raw: `{"type":"object","properties":{},"required":[]}`, wantPath: "$", wantText: "additionalProperties to false"},
		{name: "top additionalProperties true", raw: `{"type":"object","properties":{},"additionalProperties":true}`, wantPath: "$.additionalProperties", wantText: "must be false"},
		{name: "nested additionalProperties missing", raw: `{"type":"object","properties":{"o":{"type":"object","properties":{},"required":[]}},"required":["o"],"additionalProperties":false}`, wantPath: "$.properties.o", wantText: "additionalProperties to false"},
		{name: "map as additionalProperties schema", raw: `{"type":"object","properties":{"env":{"type":"object","additionalProperties":{"type":"string"}}},"required":["env"],"additionalProperties":false}`, wantPath: "$.properties.env.additionalProperties", wantText: "must be false"},
		{name: "array items object without additionalProperties", raw: `{"type":"object","properties":{"l":{"type":"array","items":{"type":"object","properties":{"x":{"type":"string"}},"required":["x"]}}},"required":["l"],"additionalProperties":false}`, wantPath: "$.properties.l.items", wantText: "additionalProperties to false"},
		{name: "property not required", raw: `{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"string"}},"required":["a"],"additionalProperties":false}`, wantPath: "$.properties.b", wantText: "not listed in required"},
		{name: "no required at all", raw: `{"type":"object","properties":{"a":{"type":"string"}},"additionalProperties":false}`, wantPath: "$.properties.a", wantText: "not listed in required"},
		{name: "nested property not required", raw: `{"type":"object","properties":{"o":{"type":"object","properties":{"x":{"type":"string"}},"required":[],"additionalProperties":false}},"required":["o"],"additionalProperties":false}`, wantPath: "$.properties.o.properties.x", wantText: "not listed in required"},
		{name: "required names unknown property", raw: `{"type":"object","properties":{},"required":["ghost"],"additionalProperties":false}`, wantPath: "$.required[0]", wantText: `"ghost" is not a property`},
		{name: "required not an array", raw: `{"type":"object","properties":{},"required":"a","additionalProperties":false}`, wantPath: "$.required", wantText: "array of property names"},
		{name: "default", raw: `{"type":"object","properties":{"a":{"type":"number","default":30}},"required":["a"],"additionalProperties":false}`, wantPath: "$.properties.a.default", wantText: `"default" is not allowed`},
		{name: "minLength", raw: `{"type":"object","properties":{"a":{"type":"string","minLength":1}},"required":["a"],"additionalProperties":false}`, wantPath: "$.properties.a.minLength", wantText: "not allowed"},
		{name: "maxLength", raw: `{"type":"object","properties":{"a":{"type":"string","maxLength":9}},"required":["a"],"additionalProperties":false}`, wantPath: "$.properties.a.maxLength", wantText: "not allowed"},
		{name: "pattern", raw: `{"type":"object","properties":{"a":{"type":"string","pattern":"^x$"}},"required":["a"],"additionalProperties":false}`, wantPath: "$.properties.a.pattern", wantText: "not allowed"},
		{name: "format", raw: `{"type":"object","properties":{"a":{"type":"string","format":"uri"}},"required":["a"],"additionalProperties":false}`, wantPath: "$.properties.a.format", wantText: "not allowed"},
		{name: "minimum", raw: `{"type":"object","properties":{"a":{"type":"integer","minimum":0}},"required":["a"],"additionalProperties":false}`, wantPath: "$.properties.a.minimum", wantText: "not allowed"},
		{name: "maximum", raw: `{"type":"object","properties":{"a":{"type":"integer","maximum":9}},"required":["a"],"additionalProperties":false}`, wantPath: "$.properties.a.maximum", wantText: "not allowed"},
		{name: "exclusiveMinimum", raw: `{"type":"object","properties":{"a":{"type":"integer","exclusiveMinimum":0}},"required":["a"],"additionalProperties":false}`, wantPath: "$.properties.a.exclusiveMinimum", wantText: "not allowed"},
		{name: "exclusiveMaximum", raw: `{"type":"object","properties":{"a":{"type":"integer","exclusiveMaximum":9}},"required":["a"],"additionalProperties":false}`, wantPath: "$.properties.a.exclusiveMaximum", wantText: "not allowed"},
		{name: "minItems", raw: `{"type":"object","properties":{"a":{"type":"array","items":{"type":"string"},"minItems":1}},"required":["a"],"additionalProperties":false}`, wantPath: "$.properties.a.minItems", wantText: "not allowed"},
		{name: "maxItems", raw: `{"type":"object","properties":{"a":{"type":"array","items":{"type":"string"},"maxItems":2}},"required":["a"],"additionalProperties":false}`, wantPath: "$.properties.a.maxItems", wantText: "not allowed"},
		{name: "examples", raw: `{"type":"object","properties":{"a":{"type":"string","examples":["x"]}},"required":["a"],"additionalProperties":false}`, wantPath: "$.properties.a.examples", wantText: "not allowed"},
		{name: "$schema", raw: `{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","properties":{},"additionalProperties":false}`, wantPath: `$["$schema"]`, wantText: "not allowed"},
		{name: "$id", raw: `{"$id":"x","type":"object","properties":{},"additionalProperties":false}`, wantPath: `$["$id"]`, wantText: "not allowed"},
		{name: "$ref", raw: `{"type":"object","properties":{"a":{"$ref":"#/$defs/a"}},"required":["a"],"additionalProperties":false}`, wantPath: `$.properties.a["$ref"]`, wantText: "not allowed"},
		{name: "oneOf inside", raw: `{"type":"object","properties":{"a":{"oneOf":[{"type":"string"}]}},"required":["a"],"additionalProperties":false}`, wantPath: "$.properties.a.oneOf", wantText: "not allowed"},
		{name: "no type", raw: `{"type":"object","properties":{"a":{"description":"anything"}},"required":["a"],"additionalProperties":false}`, wantPath: "$.properties.a", wantText: "neither type nor anyOf"},
		{name: "bad type value", raw: `{"type":"object","properties":{"a":{"type":7}},"required":["a"],"additionalProperties":false}`, wantPath: "$.properties.a.type", wantText: "type name"},
		{name: "boolean schema", raw: `{"type":"object","properties":{"a":true},"required":["a"],"additionalProperties":false}`, wantPath: "$.properties.a", wantText: "boolean schemas"},
		{name: "empty anyOf", raw: `{"type":"object","properties":{"a":{"anyOf":[]}},"required":["a"],"additionalProperties":false}`, wantPath: "$.properties.a.anyOf", wantText: "non-empty"},
		{name: "bad anyOf branch", raw: `{"type":"object","properties":{"a":{"anyOf":[{"type":"string"},{"type":"string","pattern":"x"}]}},"required":["a"],"additionalProperties":false}`, wantPath: "$.properties.a.anyOf[1].pattern", wantText: "not allowed"},
		{name: "array without items", raw: `{"type":"object","properties":{"a":{"type":"array"}},"required":["a"],"additionalProperties":false}`, wantPath: "$.properties.a", wantText: "items schema"},
		{name: "odd property name", raw: `{"type":"object","properties":{"a-b":{"type":"string"}},"required":[],"additionalProperties":false}`, wantPath: `$.properties["a-b"]`, wantText: "not listed in required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := ValidateStrict([]byte(tt.raw))
			checkValidation(t, err, tt.wantPath, tt.wantText)
		})
	}
}

func TestValidateMCP(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		raw      string
		wantPath string
		wantText string
	}{
		{name: "valid", raw: `{"type":"object","properties":{"a":{"type":"string","minLength":1,"default":"x"}},"required":["a"],"additionalProperties":false}`},
		{name: "valid with map and anyOf", raw: `{"type":"object","properties":{"env":{"type":"object","additionalProperties":{"type":"string"}},"c":{"anyOf":[{"type":"string"},{"type":"array"}]}}}`},
		{name: "valid boolean subschema", raw: `{"type":"object","properties":{"v":true}}`},
		{name: "not JSON", raw: `nope`, wantText: "decoding schema"},
		{name: "top array", raw: `[{"type":"object"}]`, wantPath: "$", wantText: "JSON object"},
		{name: "top not object", raw: `{"type":"array","items":{"type":"string"}}`, wantPath: "$.type", wantText: `type "object"`},
		{name: "top without type", raw: `{"properties":{}}`, wantPath: "$.type", wantText: `type "object"`},
		{name: "top anyOf", raw: `{"type":"object","anyOf":[{"required":["a"]}]}`, wantPath: "$.anyOf", wantText: "top level"},
		{name: "top oneOf", raw: `{"type":"object","oneOf":[{"required":["a"]}]}`, wantPath: "$.oneOf", wantText: "top level"},
		{name: "top allOf", raw: `{"type":"object","allOf":[{"required":["a"]}]}`, wantPath: "$.allOf", wantText: "top level"},
		{name: "top $defs", raw: `{"type":"object","$defs":{"a":{"type":"string"}}}`, wantPath: `$["$defs"]`, wantText: "inline"},
		{name: "nested $ref", raw: `{"type":"object","properties":{"a":{"type":"array","items":{"$ref":"#/$defs/a"}}}}`, wantPath: `$.properties.a.items["$ref"]`, wantText: "inline"},
		{name: "definitions", raw: `{"type":"object","properties":{"a":{"definitions":{}}}}`, wantPath: "$.properties.a.definitions", wantText: "inline"},
		{name: "properties not an object", raw: `{"type":"object","properties":[]}`, wantPath: "$.properties", wantText: "object of schemas"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := ValidateMCP([]byte(tt.raw))
			checkValidation(t, err, tt.wantPath, tt.wantText)
		})
	}
}

// checkValidation compares a validator's error with the wanted path and
// text; both empty means the schema must be valid, an empty path alone
// means the error need not be a *PathError.
func checkValidation(t *testing.T, err error, wantPath, wantText string) {
	t.Helper()
	if wantPath == "" && wantText == "" {
		if err != nil {
			t.Errorf("error = %v, want none", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("no error, want %s: %s", wantPath, wantText)
	}
	if !strings.Contains(err.Error(), wantText) {
		t.Errorf("error = %q, want it to contain %q", err, wantText)
	}
	if wantPath == "" {
		return
	}
	var pe *PathError
	if !errors.As(err, &pe) {
		t.Fatalf("error = %v (%T), want a *PathError", err, err)
	}
	if pe.Path != wantPath {
		t.Errorf("path = %s, want %s (error %q)", pe.Path, wantPath, err)
	}
}
