package schema

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Format names one way of exporting a tool's schema.
type Format string

// The export formats.
const (
	// FormatMCP is the MCP tool inputSchema, see MCP.
	FormatMCP Format = "mcp"
	// FormatOpenAI is an OpenAI function-calling tool, see OpenAI.
	FormatOpenAI Format = "openai"
	// FormatOpenAIStrict is an OpenAI strict function-calling tool, see
	// OpenAIStrict.
	FormatOpenAIStrict Format = "openai-strict"
)

// Formats returns every export format, in a fixed order.
func Formats() []Format {
	return []Format{FormatMCP, FormatOpenAI, FormatOpenAIStrict}
}

// Export returns the schema of t in format f. An unknown format is an
// error that lists the valid ones.
func Export(t Tool, f Format) (json.RawMessage, error) {
	switch f {
	case FormatMCP:
		return MCP(t)
	case FormatOpenAI:
		return OpenAI(t)
	case FormatOpenAIStrict:
		return OpenAIStrict(t)
	}
	names := make([]string, 0, len(Formats()))
	for _, v := range Formats() {
		names = append(names, string(v))
	}
	return nil, fmt.Errorf("exporting tool %q: unknown schema format %q; valid: %s", t.Name, f, strings.Join(names, ", "))
}

// MCP returns the inputSchema of t for an MCP tools/list answer: the
// canonical schema of t.Params, compact, with properties in declaration
// order.
func MCP(t Tool) (json.RawMessage, error) {
	raw, err := canonical(t)
	if err != nil {
		return nil, fmt.Errorf("exporting MCP schema of tool %q: %w", t.Name, err)
	}
	if err := ValidateMCP(raw); err != nil {
		return nil, fmt.Errorf("exporting MCP schema of tool %q: %w", t.Name, err)
	}
	return raw, nil
}

// OpenAI returns t as an OpenAI function-calling tool:
// {"type":"function","function":{"name","description","parameters"}}, with
// the canonical schema as parameters. The description is left out when
// empty.
func OpenAI(t Tool) (json.RawMessage, error) {
	if err := checkFunctionName(t.Name); err != nil {
		return nil, fmt.Errorf("exporting OpenAI function: %w", err)
	}
	params, err := canonical(t)
	if err != nil {
		return nil, fmt.Errorf("exporting OpenAI function %q: %w", t.Name, err)
	}
	return encodeFunction(t, params, false)
}

// OpenAIStrict returns t as an OpenAI strict function-calling tool: like
// OpenAI with "strict": true and parameters rewritten for strict mode.
// Every property is listed in required and optional ones also accept null
// (type ["T","null"], or a {"type":"null"} branch added to anyOf, and null
// added to an enum); every object gets additionalProperties false; a
// default moves into the description as " Default: <json>."; keywords
// strict mode does not support (minLength, pattern, format, minimum,
// title, examples, ...) are dropped. Maps, free-form values and keywords
// such as oneOf or $ref that cannot be expressed are an error naming the
// JSON path of the offending property. The result passes ValidateStrict.
func OpenAIStrict(t Tool) (json.RawMessage, error) {
	if err := checkFunctionName(t.Name); err != nil {
		return nil, fmt.Errorf("exporting OpenAI strict function: %w", err)
	}
	s, err := Reflect(t.Params)
	if err != nil {
		return nil, fmt.Errorf("exporting OpenAI strict function %q: %w", t.Name, err)
	}
	strict, err := toStrict(s)
	if err != nil {
		return nil, fmt.Errorf("converting parameters of %q to strict mode: %w", t.Name, err)
	}
	params, err := json.Marshal(strict)
	if err != nil {
		return nil, fmt.Errorf("encoding strict parameters of %q: %w", t.Name, err)
	}
	if err := ValidateStrict(params); err != nil {
		return nil, fmt.Errorf("validating strict parameters of %q: %w", t.Name, err)
	}
	return encodeFunction(t, params, true)
}

// openAITool is the envelope of an OpenAI function-calling tool; struct
// fields keep the key order fixed.
type openAITool struct {
	Type     string         `json:"type"`
	Function openAIFunction `json:"function"`
}

// openAIFunction is the function part of openAITool.
type openAIFunction struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters"`
	Strict      bool            `json:"strict,omitempty"`
}

// encodeFunction wraps params in the OpenAI tool envelope.
func encodeFunction(t Tool, params json.RawMessage, strict bool) (json.RawMessage, error) {
	b, err := json.Marshal(openAITool{
		Type: "function",
		Function: openAIFunction{
			Name:        t.Name,
			Description: t.Description,
			Parameters:  params,
			Strict:      strict,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("encoding OpenAI function %q: %w", t.Name, err)
	}
	return b, nil
}

// canonical returns the canonical schema of t.Params as compact JSON.
func canonical(t Tool) (json.RawMessage, error) {
	s, err := Reflect(t.Params)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encoding schema of %T: %w", t.Params, err)
	}
	return b, nil
}

// checkFunctionName enforces OpenAI's rule for function names: 1 to 64
// ASCII letters, digits, underscores or dashes.
func checkFunctionName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("checking function name %q: must be 1 to 64 characters", name)
	}
	for _, r := range name {
		switch {
		case r == '_', r == '-', 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		default:
			return fmt.Errorf("checking function name %q: character %q is not a letter, digit, '_' or '-'", name, r)
		}
	}
	return nil
}
