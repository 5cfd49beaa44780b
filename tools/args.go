package tools

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/invopop/jsonschema"
)

// decodeSchemaArgs checks raw against s, a prebuilt object schema (see schema.Tool.Params)
// whose shape is sh, as strictly as decodeArgs checks a parameter struct and with messages of
// the same shape, and returns the arguments given, by name: a string, an int64, a float64, a
// bool or a []string, as the parameter's type says. An optional parameter sent as null
// counts as left out, since OpenAI strict mode sends null for every optional parameter the
// model does not set.
//
// The property types it knows are string (with or without enum), integer, number, boolean
// and array of strings; any other is a Go error, not the model's to fix.
func decodeSchemaArgs(tool string, raw json.RawMessage, s *jsonschema.Schema, sh paramShape) (map[string]any, error) {
	_, fields, err := checkObject(tool, raw, sh)
	if err != nil {
		return nil, err
	}
	args := make(map[string]any, len(fields))
	for name, prop := range s.Properties.FromOldest() {
		v, ok := fields[name]
		if !ok || string(v) == "null" {
			continue
		}
		if args[name], err = checkValue(tool, name, prop, v); err != nil {
			return nil, err
		}
	}
	return args, nil
}

// checkValue checks the argument v of parameter name against its schema prop.
func checkValue(tool, name string, prop *jsonschema.Schema, v json.RawMessage) (any, error) {
	got := jsonType(v)
	switch prop.Type {
	case "string":
		var s string
		if got != "string" || json.Unmarshal(v, &s) != nil {
			return nil, argErrorf(tool, "parameter %q must be a string, got %s", name, got)
		}
		return s, checkString(tool, name, prop, s)
	case "boolean":
		var b bool
		if got != "bool" || json.Unmarshal(v, &b) != nil {
			return nil, argErrorf(tool, "parameter %q must be a boolean, got %s", name, got)
		}
		return b, nil
	case "number":
		if got != "number" {
			return nil, argErrorf(tool, "parameter %q must be a number, got %s", name, got)
		}
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil {
			return nil, argErrorf(tool, "parameter %q is out of range, got number %s", name, v)
		}
		return f, nil
	case "integer":
		if got != "number" {
			return nil, argErrorf(tool, "parameter %q must be an integer, got %s", name, got)
		}
		if n, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return n, nil
		}
		// 1.0 and 1e3 are integers too, as JSON Schema counts them.
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
			return nil, argErrorf(tool, "parameter %q must be an integer, got number %s", name, v)
		}
		return int64(f), nil
	case "array":
		if prop.Items == nil || prop.Items.Type != "string" {
			break
		}
		var items []json.RawMessage
		if got != "array" || json.Unmarshal(v, &items) != nil {
			return nil, argErrorf(tool, "parameter %q must be an array of strings, got %s", name, got)
		}
		out := make([]string, len(items))
		for i, item := range items {
			if t := jsonType(item); t != "string" || json.Unmarshal(item, &out[i]) != nil {
				return nil, argErrorf(tool, "parameter %q must be an array of strings, got %s in item %d", name, t, i)
			}
			if err := checkString(tool, fmt.Sprintf("%s[%d]", name, i), prop.Items, out[i]); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("checking parameter %q of %s: its schema (type %q) is not one a prebuilt schema may use: string, integer, number, boolean or array of strings", name, tool, prop.Type)
}

// checkString checks a string argument against its schema's enum and refuses NUL, which no
// argument of a process can hold.
func checkString(tool, name string, prop *jsonschema.Schema, s string) error {
	if strings.ContainsRune(s, 0) {
		return argErrorf(tool, "parameter %q must not contain a NUL character", name)
	}
	if len(prop.Enum) > 0 && !slices.Contains(prop.Enum, any(s)) {
		valid := make([]string, len(prop.Enum))
		for i, e := range prop.Enum {
			valid[i] = fmt.Sprint(e)
		}
		return argErrorf(tool, "parameter %q must be one of %s, got %q", name, strings.Join(valid, ", "), s)
	}
	return nil
}

// jsonType names the type of the JSON value raw with encoding/json's words (those of the
// built-in tools' messages): string, number, bool, array, object or null.
func jsonType(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "string"
	case '[':
		return "array"
	case '{':
		return "object"
	case 't', 'f':
		return "bool"
	case 'n':
		return "null"
	}
	return "number"
}
