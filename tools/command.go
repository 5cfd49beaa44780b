package tools

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/invopop/jsonschema"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// CommandTool is a tool an operator declares in the config file ("tools": [...]) instead of
// writing Go: a name, a description, typed parameters and an argv template. It gets what a
// built-in tool gets (a schema in every export, strict argument checking with the same
// messages, tools_config options such as max_output_bytes) and runs its argv in the caller's
// docker sandbox, in the workspace, with no shell: an argument is always one argv item, or
// part of one, and nothing in it (; | $(...) quotes) is ever read as shell syntax.
//
// In JSON:
//
//	{"name": "run_tests", "description": "Run the test suite with pytest.",
//	 "parameters": {"path": {"type": "string", "description": "Test file or directory.", "required": true},
//	                "k": {"type": "string", "description": "Only tests matching this expression."}},
//	 "argv": ["pytest", "-q", "-k={k}", "--", "{path}"], "timeout": 120, "read_only": true}
//
// Placeholders in argv items: {name} is replaced by the argument's value (an item may mix
// text and placeholders: "--path={path}"); {name...}, alone in an item, passes each element of
// an array parameter as an item of its own; {{ and }} are literal braces. An item that refers
// to an optional parameter the call left out is removed whole, so "-k={k}" disappears without
// k. Numbers are written in plain decimal, booleans as true or false. Until a literal "--"
// item, a free-text argument (a string without enum, an array element) may not start an item
// with "-", where the program would read it as an option. argv[0], the program, is fixed text.
type CommandTool struct {
	// Name is the tool's name, matching ^[a-zA-Z0-9_-]{1,64}$, different from every other
	// tool's.
	Name string `json:"name"`
	// Description tells a model what the tool does and when to use it; required.
	Description string `json:"description"`
	// Parameters are the tool's parameters, in the order the schema lists them. In JSON, an
	// object from parameter name to its CommandParam.
	Parameters CommandParams `json:"parameters,omitempty"`
	// Argv is the program and its arguments, with placeholders (see CommandTool).
	Argv []string `json:"argv"`
	// Timeout is how many seconds a call may run (fractions allowed, at most 3600); zero
	// means the sandbox's default timeout. The model cannot change it.
	Timeout float64 `json:"timeout,omitempty"`
	// ReadOnly says the command changes nothing: the MCP annotation clients use to run a
	// tool without asking for confirmation.
	ReadOnly bool `json:"read_only,omitempty"`
	// Destructive says the command may delete or overwrite data; unset, it is the opposite
	// of ReadOnly.
	Destructive *bool `json:"destructive,omitempty"`
}

// CommandParam is one parameter of a CommandTool.
type CommandParam struct {
	// Name is the parameter's name, matching ^[a-zA-Z0-9_-]{1,64}$; in JSON, the key.
	Name string `json:"-"`
	// Type is string, integer, number, boolean or array (an array of strings).
	Type string `json:"type"`
	// Description tells a model what to pass.
	Description string `json:"description,omitempty"`
	// Required parameters must be given; an optional one left out removes the argv items
	// that refer to it.
	Required bool `json:"required,omitempty"`
	// Enum lists the values a string parameter (or an array parameter's elements) may take.
	Enum []string `json:"enum,omitempty"`
}

// CommandParams are a CommandTool's parameters in declaration order. In JSON they are an
// object (whose key order is kept) from name to declaration.
type CommandParams []CommandParam

// The parameter types a CommandTool may declare.
const (
	typeString  = "string"
	typeInteger = "integer"
	typeNumber  = "number"
	typeBoolean = "boolean"
	typeArray   = "array"
)

// paramNamePattern is what a parameter (and so a placeholder) may be called; tool names
// follow the same rule, OpenAI's for function names.
var paramNamePattern = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// reservedParams may not be declared: the REST API fills a tool's "timeout" parameter from a
// request's top-level timeout, while a declared tool's timeout is the operator's.
var reservedParams = []string{"timeout"}

// UnmarshalJSON decodes a declaration strictly: a key it does not know is an error that lists
// the valid ones, since a misspelt "required" or "read_only" would otherwise be lost quietly.
func (c *CommandTool) UnmarshalJSON(b []byte) error {
	var name struct {
		Name string `json:"name"`
	}
	_ = json.Unmarshal(b, &name) // only for the messages; the decoding below reports errors
	what := "declared tool"
	if name.Name != "" {
		what = fmt.Sprintf("declared tool %q", name.Name)
	}
	type plain CommandTool // without this method
	var p plain
	if err := decodeStrict(b, &p); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	*c = CommandTool(p)
	return nil
}

// UnmarshalJSON reads an object from parameter name to declaration, keeping its order.
func (ps *CommandParams) UnmarshalJSON(b []byte) error {
	if string(bytes.TrimSpace(b)) == "null" {
		*ps = nil
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return errors.New(`"parameters" must be an object from parameter name to its declaration`)
	}
	var out CommandParams
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("reading parameters: %w", err)
		}
		name, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fmt.Errorf("reading parameter %q: %w", name, err)
		}
		if _, dup := out.byName(name); dup {
			return fmt.Errorf("parameter %q is declared twice", name)
		}
		type plain CommandParam
		var p plain
		if err := decodeStrict(raw, &p); err != nil {
			return fmt.Errorf("parameter %q: %w", name, err)
		}
		p.Name = name
		out = append(out, CommandParam(p))
	}
	*ps = out
	return nil
}

// MarshalJSON writes the parameters as an object in declaration order.
func (ps CommandParams) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		key, err := json.Marshal(p.Name)
		if err != nil {
			return nil, err
		}
		val, err := json.Marshal(p)
		if err != nil {
			return nil, fmt.Errorf("encoding parameter %q: %w", p.Name, err)
		}
		b.Write(key)
		b.WriteByte(':')
		b.Write(val)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// decodeStrict decodes the JSON object b into the struct into, refusing keys it has no field
// for with a message listing the valid ones, and naming a key whose value has the wrong type.
func decodeStrict(b []byte, into any) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return fmt.Errorf("must be a JSON object, got %s", jsonType(bytes.TrimSpace(b)))
	}
	keys := jsonKeys(reflect.TypeOf(into).Elem())
	for key := range fields {
		if !slices.Contains(keys, key) {
			return fmt.Errorf("unknown key %q; valid keys: %s", key, strings.Join(keys, ", "))
		}
	}
	if err := json.Unmarshal(b, into); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return fmt.Errorf("key %q must be %s, got %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
		}
		return err
	}
	return nil
}

// jsonKeys lists the JSON keys of struct type t's fields, in order.
func jsonKeys(t reflect.Type) []string {
	var keys []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "-" && f.IsExported() {
			keys = append(keys, name)
		}
	}
	return keys
}

// byName returns the parameter called name.
func (ps CommandParams) byName(name string) (CommandParam, bool) {
	i := slices.IndexFunc(ps, func(p CommandParam) bool { return p.Name == name })
	if i < 0 {
		return CommandParam{}, false
	}
	return ps[i], true
}

// names lists the parameters' names in order.
func (ps CommandParams) names() []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Name
	}
	return out
}

// freeText reports whether the model chooses the parameter's text freely.
func (p CommandParam) freeText() bool {
	return (p.Type == typeString || p.Type == typeArray) && len(p.Enum) == 0
}

// check validates one parameter's declaration.
func (p CommandParam) check() error {
	if !paramNamePattern.MatchString(p.Name) {
		return fmt.Errorf("parameter name %q must match %s", p.Name, paramNamePattern)
	}
	if slices.Contains(reservedParams, p.Name) {
		return fmt.Errorf("parameter name %q is reserved: a declared tool's timeout is the declaration's \"timeout\" key", p.Name)
	}
	types := []string{typeString, typeInteger, typeNumber, typeBoolean, typeArray}
	if !slices.Contains(types, p.Type) {
		return fmt.Errorf("parameter %q: type %q is not one of %s", p.Name, p.Type, strings.Join(types, ", "))
	}
	if p.Enum == nil {
		return nil
	}
	if p.Type != typeString && p.Type != typeArray {
		return fmt.Errorf("parameter %q: enum is only for strings (type string, or array of strings), not %s", p.Name, p.Type)
	}
	if len(p.Enum) == 0 {
		return fmt.Errorf("parameter %q: enum is empty; list the values it may take", p.Name)
	}
	for i, v := range p.Enum {
		if slices.Contains(p.Enum[:i], v) {
			return fmt.Errorf("parameter %q: enum value %q is listed twice", p.Name, v)
		}
		if strings.ContainsRune(v, 0) {
			return fmt.Errorf("parameter %q: enum value %q contains a NUL character", p.Name, v)
		}
	}
	return nil
}

// schema is the parameter's property schema.
func (p CommandParam) schema() *jsonschema.Schema {
	var enum []any
	for _, v := range p.Enum {
		enum = append(enum, v)
	}
	if p.Type == typeArray {
		return &jsonschema.Schema{Type: typeArray, Description: p.Description, Items: &jsonschema.Schema{Type: typeString, Enum: enum}}
	}
	return &jsonschema.Schema{Type: p.Type, Description: p.Description, Enum: enum}
}

// paramSchema is the tool's parameter schema: what a parameter struct would reflect to.
func (c CommandTool) paramSchema() *jsonschema.Schema {
	s := &jsonschema.Schema{Type: "object", Properties: jsonschema.NewProperties(), AdditionalProperties: jsonschema.FalseSchema}
	for _, p := range c.Parameters {
		s.Properties.Set(p.Name, p.schema())
		if p.Required {
			s.Required = append(s.Required, p.Name)
		}
	}
	return s
}

// Def checks the declaration and returns the tool it declares. Its errors say what to fix.
// Whether the name is free is for AddCommands to check, which knows the other tools.
func (c CommandTool) Def() (Def, error) {
	if !paramNamePattern.MatchString(c.Name) {
		return Def{}, fmt.Errorf("declared tool %q: name must match %s", c.Name, paramNamePattern)
	}
	fail := func(err error) (Def, error) { return Def{}, fmt.Errorf("declared tool %q: %w", c.Name, err) }
	if strings.TrimSpace(c.Description) == "" {
		return fail(errors.New("description is empty; it is what tells a model when and how to use the tool"))
	}
	for _, p := range c.Parameters {
		if err := p.check(); err != nil {
			return fail(err)
		}
	}
	if math.IsNaN(c.Timeout) || c.Timeout < 0 || c.Timeout > maxTimeout {
		return fail(fmt.Errorf("timeout %v: want seconds from 0 (the sandbox's default) to %d", c.Timeout, maxTimeout))
	}
	destructive := !c.ReadOnly
	if c.Destructive != nil {
		destructive = *c.Destructive
	}
	if c.ReadOnly && destructive {
		return fail(errors.New("read_only and destructive are both set; a read-only command destroys nothing"))
	}
	tmpl, err := parseArgv(c.Argv, c.Parameters)
	if err != nil {
		return fail(err)
	}
	params := c.paramSchema()
	shape, err := readShape(params)
	if err != nil {
		return fail(err)
	}
	d := Def{
		Name:        c.Name,
		Description: c.Description,
		Sandbox:     sandbox.TypeDocker,
		ReadOnly:    c.ReadOnly,
		Destructive: destructive,
		Params:      params,
	}
	c.Parameters = slices.Clone(c.Parameters)
	timeout := c.Timeout
	d.bind = func(raw json.RawMessage) (Run, error) {
		args, err := decodeSchemaArgs(d.Name, raw, params, shape)
		if err != nil {
			return nil, err
		}
		argv, err := tmpl.expand(d.Name, c.Parameters, args)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context, call Call) (Result, error) {
			t, err := timeoutOf(d.Name, timeout, call.DefaultTimeout)
			if err != nil {
				return Result{}, err
			}
			res, err := runArgv(ctx, call, argv, t)
			if err != nil {
				return Result{}, err
			}
			if res.Metadata == nil {
				res.Metadata = map[string]any{}
			}
			res.Metadata["argv"] = argv
			return res, nil
		}, nil
	}
	return d, nil
}

// AddCommands checks the declared tools and returns all followed by them, in declaration
// order. A declaration that is not valid, or a name that all or an earlier declaration
// already uses, is an error naming the tool and what to fix.
func AddCommands(all []Def, cmds []CommandTool) ([]Def, error) {
	out := slices.Clip(all)
	for _, c := range cmds {
		d, err := c.Def()
		if err != nil {
			return nil, err
		}
		named := func(o Def) bool { return o.Name == d.Name }
		switch {
		case slices.ContainsFunc(all, named):
			return nil, fmt.Errorf("declared tool %q: the server already has a tool of this name (built in, or added in Go); choose another", d.Name)
		case slices.ContainsFunc(out, named):
			return nil, fmt.Errorf("declared tool %q: declared twice", d.Name)
		}
		out = append(out, d)
	}
	return out, nil
}
