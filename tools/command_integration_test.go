package tools_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// TestIntegrationDeclaredToolsRunWithoutShell runs declared tools in a real sandbox: their
// argv runs in the workspace, and shell syntax in an argument is one literal argument.
func TestIntegrationDeclaredToolsRunWithoutShell(t *testing.T) {
	e := testenv.Engine(t)
	sb := testenv.Sandbox(t, e, sandbox.Config{})
	var decls []tools.CommandTool
	err := json.Unmarshal([]byte(`[
		{"name": "say", "description": "Print a text.", "argv": ["printf", "%s\n", "{text}"],
		 "parameters": {"text": {"type": "string", "required": true}}, "read_only": true},
		{"name": "make_files", "description": "Create empty files in the workspace.", "argv": ["touch", "--", "{names...}"],
		 "parameters": {"names": {"type": "array", "required": true}}},
		{"name": "list", "description": "List files.", "argv": ["ls", "-1", "--sort={sort}", "{{literal}}"],
		 "parameters": {"sort": {"type": "string", "enum": ["name", "size"]}}},
		{"name": "missing", "description": "A program the image lacks.", "argv": ["no-such-program-here"]}
	]`), &decls)
	if err != nil {
		t.Fatal(err)
	}
	all, err := tools.AddCommands(tools.All(), decls)
	if err != nil {
		t.Fatal(err)
	}
	call := func(t *testing.T, name, args string) tools.Result {
		t.Helper()
		for _, d := range all {
			if d.Name == name {
				res, err := d.Invoke(t.Context(), tools.Call{Sandbox: sb, DefaultTimeout: 30}, json.RawMessage(args))
				if err != nil {
					t.Fatalf("%s %s: %v", name, args, err)
				}
				return res
			}
		}
		t.Fatalf("no tool %s", name)
		return tools.Result{}
	}
	exists := func(t *testing.T, path string) bool {
		t.Helper()
		res := invoke(t, sb, nil, "file_operation", `{"operation":"exists","file_path":"`+path+`"}`)
		return !strings.Contains(res.Output, "does not exist")
	}

	t.Run("shell syntax stays literal", func(t *testing.T) {
		text := `a; touch /sandbox/pwned && touch pwned2 | sh $(touch pwned3) ` + "`touch pwned4`" + ` > pwned5 'q' "$HOME"`
		args, _ := json.Marshal(map[string]string{"text": text})
		res := call(t, "say", string(args))
		if res.Status != tools.StatusSuccess || res.Output != text+"\n" {
			t.Fatalf("status %s, output %q; want success and the text verbatim (error %q)", res.Status, res.Output, res.Error)
		}
		for _, f := range []string{"/sandbox/pwned", "pwned2", "pwned3", "pwned4", "pwned5"} {
			if exists(t, f) {
				t.Errorf("%s exists: an argument was run by a shell", f)
			}
		}
	})
	t.Run("argv runs in the workspace", func(t *testing.T) {
		res := call(t, "make_files", `{"names": ["one.txt", "two words.txt", ";x", "-starts-with-dash"]}`)
		if res.Status != tools.StatusSuccess {
			t.Fatalf("make_files: %+v", res)
		}
		for _, f := range []string{"/sandbox/one.txt", "/sandbox/two words.txt", "/sandbox/;x", "/sandbox/-starts-with-dash"} {
			if !exists(t, f) {
				t.Errorf("%s missing: the argv did not run in the workspace", f)
			}
		}
	})
	t.Run("an absent optional removes its item", func(t *testing.T) {
		res := call(t, "list", `{}`)
		// ls gets "{literal}" (an escaped brace) and no --sort: the file is missing, so exit 2.
		if res.Status != tools.StatusError || !strings.Contains(res.Error, "{literal}") || strings.Contains(res.Error, "sort") {
			t.Fatalf("list: %+v", res)
		}
		if *res.ExitCode != 2 {
			t.Errorf("exit code %d, want ls's 2", *res.ExitCode)
		}
	})
	t.Run("a missing program is a result", func(t *testing.T) {
		res := call(t, "missing", `{}`)
		if res.Status != tools.StatusError || !strings.Contains(res.Error, "no-such-program-here") {
			t.Fatalf("missing: %+v", res)
		}
	})
}
