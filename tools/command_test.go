package tools

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/internal/fakesandbox"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/schema"
)

// declare decodes one declaration as the config file would and checks it against the
// built-ins.
func declare(t *testing.T, decl string) (Def, error) {
	t.Helper()
	var c CommandTool
	if err := json.Unmarshal([]byte(decl), &c); err != nil {
		return Def{}, err
	}
	all, err := AddCommands(All(), []CommandTool{c})
	if err != nil {
		return Def{}, err
	}
	return all[len(all)-1], nil
}

// sampleCommand is the declared tool of testdata/declared/run_tests.json.
func sampleCommand(t *testing.T) Def {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "declared", "run_tests.json"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := declare(t, string(data))
	if err != nil {
		t.Fatalf("declaring the sample: %v", err)
	}
	return d
}

// TestCommandSchemaSnapshots pins a declared tool's schema in every export format, next to
// its declaration, and holds it to the rules every built-in tool follows.
func TestCommandSchemaSnapshots(t *testing.T) {
	t.Parallel()
	d := sampleCommand(t)
	if d.Sandbox != sandbox.TypeDocker || d.ReadOnly || !d.Destructive {
		t.Errorf("sandbox %q read-only %v destructive %v; want docker, false, true (the default for a read_only false tool)", d.Sandbox, d.ReadOnly, d.Destructive)
	}
	for _, format := range schema.Formats() {
		t.Run(string(format), func(t *testing.T) {
			t.Parallel()
			raw, err := schema.Export(d.Schema(), format)
			if err != nil {
				t.Fatalf("exporting: %v", err)
			}
			checkSnapshot(t, filepath.Join("testdata", "declared", d.Name+"."+string(format)+".json"), raw)
			var fn struct {
				Function struct {
					Parameters json.RawMessage `json:"parameters"`
					Strict     bool            `json:"strict"`
				} `json:"function"`
			}
			switch format {
			case schema.FormatMCP:
				if err := schema.ValidateMCP(raw); err != nil {
					t.Errorf("MCP schema not portable: %v", err)
				}
			case schema.FormatOpenAIStrict:
				if err := json.Unmarshal(raw, &fn); err != nil {
					t.Fatal(err)
				}
				if !fn.Function.Strict {
					t.Error("strict export lacks strict: true")
				}
				if err := schema.ValidateStrict(fn.Function.Parameters); err != nil {
					t.Errorf("OpenAI strict rules: %v", err)
				}
			}
		})
	}
	props, err := schema.Properties(d.Params)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"paths", "keyword", "traceback", "max_failures", "slow_over", "strict_xfail"}
	if !slices.Equal(props, want) {
		t.Errorf("properties %v, want the declaration's order %v", props, want)
	}
	if req, _ := schema.Required(d.Params); !slices.Equal(req, []string{"paths"}) {
		t.Errorf("required %v, want [paths]", req)
	}
}

func TestCommandDeclarationErrors(t *testing.T) {
	t.Parallel()
	const desc = `"description": "A declared tool for the tests."`
	tests := []struct {
		name, decl, wantErr string
	}{
		{"unknown key lists valid ones", `{"name": "t", ` + desc + `, "argv": ["true"], "argvv": []}`,
			`declared tool "t": unknown key "argvv"; valid keys: name, description, parameters, argv, timeout, read_only, destructive`},
		{"unknown parameter key", `{"name": "t", ` + desc + `, "argv": ["true"], "parameters": {"p": {"type": "string", "requird": true}}}`,
			`parameter "p": unknown key "requird"; valid keys: type, description, required, enum`},
		{"wrong key type", `{"name": "t", ` + desc + `, "argv": "pytest -q"}`, `key "argv" must be an array, got string`},
		{"parameters not an object", `{"name": "t", ` + desc + `, "argv": ["true"], "parameters": ["p"]}`, `"parameters" must be an object`},
		{"parameter declared twice", `{"name": "t", ` + desc + `, "argv": ["true"], "parameters": {"p": {"type": "string"}, "p": {"type": "integer"}}}`,
			`parameter "p" is declared twice`},
		{"bad name", `{"name": "run tests", ` + desc + `, "argv": ["true"]}`, `declared tool "run tests": name must match ^[a-zA-Z0-9_-]{1,64}$`},
		{"empty name", `{` + desc + `, "argv": ["true"]}`, `declared tool "": name must match`},
		{"name too long", `{"name": "` + strings.Repeat("a", 65) + `", ` + desc + `, "argv": ["true"]}`, `name must match`},
		{"clashes with a built-in", `{"name": "shell_executor", ` + desc + `, "argv": ["true"]}`,
			`declared tool "shell_executor": the server already has a tool of this name`},
		{"no description", `{"name": "t", "argv": ["true"]}`, `declared tool "t": description is empty`},
		{"empty argv", `{"name": "t", ` + desc + `, "argv": []}`, `argv is empty`},
		{"no argv", `{"name": "t", ` + desc + `}`, `argv is empty`},
		{"empty program", `{"name": "t", ` + desc + `, "argv": [""]}`, `argv[0], the program to run, is empty`},
		{"placeholder in the program", `{"name": "t", ` + desc + `, "argv": ["{p}"], "parameters": {"p": {"type": "string"}}}`,
			`argv[0] "{p}": the program to run must be fixed text`},
		{"placeholder names no parameter", `{"name": "t", ` + desc + `, "argv": ["pytest", "{pth}"], "parameters": {"path": {"type": "string"}, "k": {"type": "string"}}}`,
			`argv[1] "{pth}": placeholder {pth} names no parameter; parameters: path, k`},
		{"placeholder without parameters", `{"name": "t", ` + desc + `, "argv": ["ls", "--color={c}"]}`,
			`argv[1] "--color={c}": placeholder {c} names no parameter; the tool declares none`},
		{"unclosed brace", `{"name": "t", ` + desc + `, "argv": ["echo", "{p"], "parameters": {"p": {"type": "string"}}}`, `unclosed "{"; write {{ for a literal brace`},
		{"lone closing brace", `{"name": "t", ` + desc + `, "argv": ["echo", "a}b"]}`, `unmatched "}"; write }} for a literal brace`},
		{"placeholder not a name", `{"name": "t", ` + desc + `, "argv": ["echo", "{a b}"]}`, `placeholder {a b} is not a parameter name`},
		{"empty placeholder", `{"name": "t", ` + desc + `, "argv": ["echo", "{}"]}`, `placeholder {} is not a parameter name`},
		{"array used as one item", `{"name": "t", ` + desc + `, "argv": ["ls", "{files}"], "parameters": {"files": {"type": "array"}}}`,
			`parameter "files" is an array; write {files...} alone in an item`},
		{"spread of a string", `{"name": "t", ` + desc + `, "argv": ["ls", "{f...}"], "parameters": {"f": {"type": "string"}}}`,
			`{f...} passes an array's elements as items, but parameter "f" is of type string`},
		{"spread mixed with text", `{"name": "t", ` + desc + `, "argv": ["ls", "--f={f...}"], "parameters": {"f": {"type": "array"}}}`,
			`{f...} must be the whole item`},
		{"bad parameter name", `{"name": "t", ` + desc + `, "argv": ["true"], "parameters": {"a.b": {"type": "string"}}}`, `parameter name "a.b" must match`},
		{"reserved parameter", `{"name": "t", ` + desc + `, "argv": ["sleep", "{timeout}"], "parameters": {"timeout": {"type": "number"}}}`,
			`parameter name "timeout" is reserved`},
		{"unknown type", `{"name": "t", ` + desc + `, "argv": ["true"], "parameters": {"p": {"type": "path"}}}`,
			`parameter "p": type "path" is not one of string, integer, number, boolean, array`},
		{"missing type", `{"name": "t", ` + desc + `, "argv": ["true"], "parameters": {"p": {}}}`, `parameter "p": type "" is not one of`},
		{"enum on a number", `{"name": "t", ` + desc + `, "argv": ["true"], "parameters": {"p": {"type": "integer", "enum": ["1"]}}}`,
			`enum is only for strings`},
		{"empty enum", `{"name": "t", ` + desc + `, "argv": ["true"], "parameters": {"p": {"type": "string", "enum": []}}}`, `enum is empty`},
		{"duplicate enum value", `{"name": "t", ` + desc + `, "argv": ["true"], "parameters": {"p": {"type": "string", "enum": ["a", "a"]}}}`,
			`enum value "a" is listed twice`},
		{"negative timeout", `{"name": "t", ` + desc + `, "argv": ["true"], "timeout": -1}`, `timeout -1: want seconds from 0`},
		{"timeout over the maximum", `{"name": "t", ` + desc + `, "argv": ["true"], "timeout": 3601}`, `timeout 3601: want seconds from 0`},
		{"read-only and destructive", `{"name": "t", ` + desc + `, "argv": ["true"], "read_only": true, "destructive": true}`,
			`read_only and destructive are both set`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := declare(t, tc.decl)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestAddCommands(t *testing.T) {
	t.Parallel()
	a := CommandTool{Name: "a", Description: "Tool a.", Argv: []string{"true"}}
	b := CommandTool{Name: "b", Description: "Tool b.", Argv: []string{"true"}, ReadOnly: true}
	builtins := make([]Def, len(All()), len(All())+4) // room to append into by mistake
	copy(builtins, All())
	all, err := AddCommands(builtins, []CommandTool{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(all); !slices.Equal(got[len(builtins):], []string{"a", "b"}) || len(got) != len(builtins)+2 {
		t.Errorf("tools %v: want the built-ins, then a and b", got)
	}
	if builtins[:len(builtins)+1][len(builtins)].Name != "" {
		t.Error("AddCommands wrote into its argument's spare capacity")
	}
	if last := all[len(all)-1]; !last.ReadOnly || last.Destructive {
		t.Errorf("read_only without destructive: read-only %v destructive %v, want true, false", last.ReadOnly, last.Destructive)
	}
	if _, err := AddCommands(builtins, []CommandTool{a, a}); err == nil || !strings.Contains(err.Error(), `declared tool "a": declared twice`) {
		t.Errorf("a name declared twice must be refused, got %v", err)
	}
	// tools_config names declared tools like built-ins.
	got, err := Enabled(all, sandbox.ToolsConfig{"b": {}, "python_executor": {}})
	if err != nil || !slices.Equal(names(got), []string{"python_executor", "b"}) {
		t.Errorf("Enabled = %v, %v; want python_executor, b", names(got), err)
	}
}

// TestCommandArgs checks arguments the way a built-in tool's are: before any sandbox, as
// ErrInvalidArgs, with messages of the same shape.
func TestCommandArgs(t *testing.T) {
	t.Parallel()
	d, err := declare(t, `{"name": "check", "description": "Checks arguments.", "argv": ["echo", "{path}", "-n{n}", "-x{x}", "{on}", "--level={level}", "--", "{files...}"],
		"parameters": {"path": {"type": "string", "required": true}, "n": {"type": "integer"}, "x": {"type": "number"},
		"on": {"type": "boolean"}, "level": {"type": "string", "enum": ["debug", "info"]}, "files": {"type": "array"}}}`)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, args, wantErr string // wantErr empty: valid
	}{
		{"valid", `{"path": "a", "n": 3, "x": 0.5, "on": true, "level": "info", "files": ["b", "c"]}`, ""},
		{"optional as null", `{"path": "a", "n": null, "files": null}`, ""},
		{"whole float as integer", `{"path": "a", "n": 3.0}`, ""},
		{"null arguments", `null`, `missing required parameter "path"`},
		{"missing required", `{"n": 1}`, `missing required parameter "path"`},
		{"required as null", `{"path": null}`, `missing required parameter "path"`},
		{"unknown parameter lists valid ones", `{"path": "a", "verbose": true}`, `unknown parameter "verbose"; valid parameters: path, n, x, on, level, files`},
		{"string as number", `{"path": 1}`, `parameter "path" must be a string, got number`},
		{"string as array", `{"path": ["a"]}`, `parameter "path" must be a string, got array`},
		{"integer as string", `{"path": "a", "n": "3"}`, `parameter "n" must be an integer, got string`},
		{"integer with a fraction", `{"path": "a", "n": 1.5}`, `parameter "n" must be an integer, got number 1.5`},
		{"number as bool", `{"path": "a", "x": true}`, `parameter "x" must be a number, got bool`},
		{"boolean as string", `{"path": "a", "on": "yes"}`, `parameter "on" must be a boolean, got string`},
		{"enum", `{"path": "a", "level": "trace"}`, `parameter "level" must be one of debug, info, got "trace"`},
		{"array as string", `{"path": "a", "files": "b c"}`, `parameter "files" must be an array of strings, got string`},
		{"array of numbers", `{"path": "a", "files": ["b", 2]}`, `parameter "files" must be an array of strings, got number in item 1`},
		{"NUL", `{"path": "a\u0000b"}`, `parameter "path" must not contain a NUL character`},
		{"not an object", `["a"]`, `arguments must be a JSON object, got an array`},
		{"option from a string", `{"path": "--rootdir=/"}`, `parameter "path" must not start with "-" here: the command would read "--rootdir=/" as an option`},
		{"negative numbers are not options", `{"path": "a", "n": -1, "x": -0.5}`, ""},
		{"dash after -- is fine", `{"path": "a", "files": ["-b"]}`, ""},
		{"dash inside an item is fine", `{"path": "a-b"}`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := d.Bind(json.RawMessage(tc.args))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
			if !errors.Is(err, ErrInvalidArgs) || !strings.HasPrefix(err.Error(), "check: ") {
				t.Errorf("err must be the tool's ErrInvalidArgs, got %T %v", err, err)
			}
		})
	}
}

// TestCommandArgv checks the argv a call runs, through a fake sandbox that records it.
func TestCommandArgv(t *testing.T) {
	t.Parallel()
	const params = `"parameters": {"path": {"type": "string"}, "k": {"type": "string"}, "n": {"type": "integer"},
		"x": {"type": "number"}, "on": {"type": "boolean"}, "files": {"type": "array"}, "mode": {"type": "string", "enum": ["-fast", "full"]}}`
	tests := []struct {
		name, argv, args string
		want             []string
	}{
		{"whole item", `["cat", "{path}"]`, `{"path": "a b.txt"}`, []string{"cat", "a b.txt"}},
		{"shell syntax stays literal", `["echo", "{path}"]`, `{"path": "a; rm -rf / $(id) | x && y > z"}`, []string{"echo", "a; rm -rf / $(id) | x && y > z"}},
		{"text around a placeholder", `["pytest", "--path={path}", "x{path}y"]`, `{"path": "t"}`, []string{"pytest", "--path=t", "xty"}},
		{"two placeholders in one item", `["echo", "{path}:{n}"]`, `{"path": "a", "n": 7}`, []string{"echo", "a:7"}},
		{"absent optional removes its item", `["pytest", "-q", "-k{k}", "{path}"]`, `{"path": "t"}`, []string{"pytest", "-q", "t"}},
		{"null is absent", `["pytest", "-k{k}"]`, `{"k": null}`, []string{"pytest"}},
		{"an item with two placeholders goes when one is absent", `["echo", "{path}:{n}", "end"]`, `{"path": "a"}`, []string{"echo", "end"}},
		{"empty string is kept", `["echo", "{path}", "end"]`, `{"path": ""}`, []string{"echo", "", "end"}},
		{"numbers and booleans", `["echo", "{n}", "{x}", "{on}", "--on={on}"]`, `{"n": 1e3, "x": 0.25, "on": false}`, []string{"echo", "1000", "0.25", "false", "--on=false"}},
		{"big and small numbers in plain notation", `["echo", "{x}", "{n}"]`, `{"x": 1e-7, "n": -9007199254740993}`, []string{"echo", "0.0000001", "-9007199254740993"}},
		{"spread", `["ls", "-l", "{files...}", "end"]`, `{"files": ["a", "b c", ";"]}`, []string{"ls", "-l", "a", "b c", ";", "end"}},
		{"empty spread", `["ls", "{files...}"]`, `{"files": []}`, []string{"ls"}},
		{"absent spread", `["ls", "{files...}"]`, `{}`, []string{"ls"}},
		{"escaped braces", `["echo", "{{path}}", "{{{path}}}", "}}{{"]`, `{"path": "p"}`, []string{"echo", "{path}", "{p}", "}{"}},
		{"a literal item with an escaped brace is never removed", `["echo", "{{k}}"]`, `{}`, []string{"echo", "{k}"}},
		{"enum values may start with a dash", `["run", "{mode}"]`, `{"mode": "-fast"}`, []string{"run", "-fast"}},
		{"after -- a dash is an operand", `["rm", "--", "{path}"]`, `{"path": "-rf"}`, []string{"rm", "--", "-rf"}},
		{"unicode", `["echo", "é{path}ü"]`, `{"path": "漢字"}`, []string{"echo", "é漢字ü"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, err := declare(t, `{"name": "t", "description": "d", "argv": `+tc.argv+`, `+params+`}`)
			if err != nil {
				t.Fatal(err)
			}
			sb := fakeSandbox(t)
			res, err := d.Invoke(t.Context(), Call{Sandbox: sb, DefaultTimeout: 12}, json.RawMessage(tc.args))
			if err != nil {
				t.Fatal(err)
			}
			execs := sb.Execs()
			if len(execs) != 1 {
				t.Fatalf("%d processes run, want 1", len(execs))
			}
			if got := execs[0].Argv; !slices.Equal(got, tc.want) {
				t.Errorf("argv %q, want %q", got, tc.want)
			}
			if res.Status != StatusSuccess || res.ToolName != "t" || res.ExitCode == nil {
				t.Errorf("result %+v: want shell_executor's shape, status success", res)
			}
			if got, _ := res.Metadata["argv"].([]string); !slices.Equal(got, tc.want) {
				t.Errorf("metadata argv %q, want %q", got, tc.want)
			}
		})
	}
}

// TestCommandRunOptions checks what the call passes besides the argv: no shell, no stdin,
// the workspace, the declaration's timeout or else the call's default, the output cap of
// tools_config.
func TestCommandRunOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, timeout string
		call          Call
		wantMS        int64
		wantCap       int
	}{
		{"the sandbox's default timeout", `0`, Call{DefaultTimeout: 12}, 12000, 0},
		{"the declaration's timeout wins", `2.5`, Call{DefaultTimeout: 12}, 2500, 0},
		{"no default at all", `0`, Call{}, sandbox.DefaultTimeout * 1000, 0},
		{"max_output_bytes option", `0`, Call{DefaultTimeout: 1, Options: map[string]any{"max_output_bytes": float64(1000)}}, 1000, 1000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, err := declare(t, `{"name": "t", "description": "d", "argv": ["true"], "timeout": `+tc.timeout+`}`)
			if err != nil {
				t.Fatal(err)
			}
			sb := fakeSandbox(t)
			tc.call.Sandbox = sb
			if _, err := d.Invoke(t.Context(), tc.call, nil); err != nil {
				t.Fatal(err)
			}
			req := sb.Execs()[0]
			if req.TimeoutMS != tc.wantMS || req.MaxOutputBytes != tc.wantCap {
				t.Errorf("timeout %d ms, cap %d; want %d ms, cap %d", req.TimeoutMS, req.MaxOutputBytes, tc.wantMS, tc.wantCap)
			}
			if req.Dir != "" || req.Stdin != nil || req.Background || len(req.Env) > 0 {
				t.Errorf("request %+v: want the workspace, no stdin, foreground, no env", req)
			}
		})
	}
}

// TestBindWithoutHandler: a Def built by hand, not with New, is an error rather than a panic.
func TestBindWithoutHandler(t *testing.T) {
	t.Parallel()
	_, err := Def{Name: "bare"}.Bind(nil)
	if err == nil || !strings.Contains(err.Error(), "build the Def with tools.New") {
		t.Errorf("err = %v", err)
	}
}

func TestCommandParamsJSONKeepsOrder(t *testing.T) {
	t.Parallel()
	in := `{"z":{"type":"string","required":true},"a":{"type":"array","enum":["x"]},"m":{"type":"boolean","description":"M."}}`
	var ps CommandParams
	if err := json.Unmarshal([]byte(in), &ps); err != nil {
		t.Fatal(err)
	}
	if got := ps.names(); !slices.Equal(got, []string{"z", "a", "m"}) {
		t.Errorf("order %v, want z, a, m", got)
	}
	out, err := json.Marshal(ps)
	if err != nil || string(out) != in {
		t.Errorf("round trip: %s, %v; want %s", out, err, in)
	}
}

func fakeSandbox(t *testing.T) *fakesandbox.Sandbox {
	t.Helper()
	var f fakesandbox.Factory
	sb, err := f.Creator(sandbox.TypeDocker)(context.Background(), "owner", sandbox.Resolved{})
	if err != nil {
		t.Fatal(err)
	}
	return sb.(*fakesandbox.Sandbox)
}
