package tools

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/schema"
)

// TestSchemaSnapshots pins every tool's schema in every export format. A change shows up as a
// diff here; accept it with `make snapshots` (UPDATE_SNAPSHOTS=1). A missing snapshot is
// written locally and fails under CI, so a new tool cannot land without one.
func TestSchemaSnapshots(t *testing.T) {
	t.Parallel()
	for _, def := range All() {
		for _, format := range schema.Formats() {
			t.Run(def.Name+"/"+string(format), func(t *testing.T) {
				t.Parallel()
				raw, err := schema.Export(def.Schema(), format)
				if err != nil {
					t.Fatalf("exporting: %v", err)
				}
				checkSnapshot(t, filepath.Join("testdata", "schemas", def.Name+"."+string(format)+".json"), raw)
			})
		}
	}
}

// checkSnapshot compares raw, indented, with the snapshot at path; UPDATE_SNAPSHOTS=1
// rewrites it, and a missing one is written unless CI is set.
func checkSnapshot(t *testing.T, path string, raw json.RawMessage) {
	t.Helper()
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, raw, "", "  "); err != nil {
		t.Fatal(err)
	}
	pretty.WriteByte('\n')
	want, err := os.ReadFile(path)
	switch {
	case os.Getenv("UPDATE_SNAPSHOTS") != "" || (errors.Is(err, os.ErrNotExist) && os.Getenv("CI") == ""):
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, pretty.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	case err != nil:
		t.Fatalf("snapshot %s missing (run make snapshots and commit it): %v", path, err)
	}
	if !bytes.Equal(want, pretty.Bytes()) {
		t.Errorf("%s changed; if intended, run make snapshots.\n--- snapshot\n%s\n--- now\n%s", path, want, pretty.Bytes())
	}
}

// TestInventoryRules checks, over every tool, the rules that keep all three exports valid
// and the tools understandable to a model.
func TestInventoryRules(t *testing.T) {
	t.Parallel()
	name := regexp.MustCompile(`^[a-z0-9_]{1,64}$`)
	seen := map[string]bool{}
	for _, def := range All() {
		t.Run(def.Name, func(t *testing.T) {
			if !name.MatchString(def.Name) {
				t.Errorf("name %q must match %s", def.Name, name)
			}
			if seen[def.Name] {
				t.Errorf("duplicate tool name %q", def.Name)
			}
			seen[def.Name] = true
			if len(def.Description) < 40 {
				t.Errorf("description too short to guide a model: %q", def.Description)
			}
			if def.Sandbox == "" {
				t.Error("tool must say which sandbox type it runs in")
			}
			raw, err := schema.MCP(def.Schema())
			if err != nil {
				t.Fatalf("MCP schema: %v", err)
			}
			if err := schema.ValidateMCP(raw); err != nil {
				t.Errorf("MCP schema not portable: %v", err)
			}
			strict, err := schema.OpenAIStrict(def.Schema())
			if err != nil {
				t.Fatalf("strict schema: %v", err)
			}
			var fn struct {
				Function struct {
					Parameters json.RawMessage `json:"parameters"`
				} `json:"function"`
			}
			if err := json.Unmarshal(strict, &fn); err != nil {
				t.Fatal(err)
			}
			if err := schema.ValidateStrict(fn.Function.Parameters); err != nil {
				t.Errorf("OpenAI strict rules: %v", err)
			}
		})
	}
}

func TestDecodeArgs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		tool    Def
		args    string
		wantErr string // empty: must succeed
	}{
		{"valid python", pythonExecutor(), `{"code":"print(1)","timeout":0.3}`, ""},
		{"null arguments are an empty object", fileOperation(), `null`, `missing required parameter "operation"`},
		{"missing required", pythonExecutor(), `{}`, `missing required parameter "code"`},
		{"required given as null", pythonExecutor(), `{"code":null}`, `missing required parameter "code"`},
		{"unknown parameter lists valid ones", pythonExecutor(), `{"code":"1","cmd":"x"}`, `unknown parameter "cmd"; valid parameters: code, timeout`},
		{"number as string is refused", pythonExecutor(), `{"code":"1","timeout":"30"}`, `parameter "timeout" must be a number, got string`},
		{"code as number", pythonExecutor(), `{"code":1}`, `parameter "code" must be a string, got number`},
		{"arguments not an object", pythonExecutor(), `["print(1)"]`, "arguments must be a JSON object, got an array"},
		{"garbage", pythonExecutor(), `{"code":`, "arguments must be a JSON object, got invalid JSON"},
		{"command as string", shellExecutor(), `{"command":"echo hi"}`, ""},
		{"command as argv", shellExecutor(), `{"command":["echo","hi"]}`, ""},
		{"command as number", shellExecutor(), `{"command":5}`, `"command" must be a string or an array of strings`},
		{"command array of numbers", shellExecutor(), `{"command":[1,2]}`, `"command" must be a string or an array of strings`},
		{"file op needs path", fileOperation(), `{"operation":"read"}`, `missing required parameter "file_path"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := tc.tool.Bind(json.RawMessage(tc.args))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
			if !errors.Is(err, ErrInvalidArgs) {
				t.Errorf("err must be an ErrInvalidArgs, got %T", err)
			}
		})
	}
}

func TestEnabled(t *testing.T) {
	t.Parallel()
	all := All()
	got, err := Enabled(all, sandbox.ToolsConfig{"shell_executor": {}, "python_executor": nil})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "python_executor" || got[1].Name != "shell_executor" {
		t.Errorf("Enabled kept the wrong tools or order: %v", names(got))
	}
	if got, _ := Enabled(all, nil); len(got) != len(all) {
		t.Errorf("an empty tools_config must enable every tool, got %v", names(got))
	}
	_, err = Enabled(all, sandbox.ToolsConfig{"pyton_executor": {}})
	if err == nil || !strings.Contains(err.Error(), `unknown tool "pyton_executor"`) || !strings.Contains(err.Error(), "python_executor") {
		t.Errorf("unknown tool must be an error listing the valid ones, got %v", err)
	}
}

func names(defs []Def) []string {
	out := make([]string, len(defs))
	for i, d := range defs {
		out[i] = d.Name
	}
	return out
}

func TestFromExec(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		in         sandbox.ExecResult
		wantStatus Status
		errHas     string
	}{
		{"success", sandbox.ExecResult{Stdout: "hi\n"}, StatusSuccess, ""},
		{"exit 124 is an error, not a timeout", sandbox.ExecResult{ExitCode: 124}, StatusError, "exit code 124"},
		{"SIGKILL without our timer is an error", sandbox.ExecResult{ExitCode: -1, Signal: "SIGKILL"}, StatusError, "killed by SIGKILL"},
		{"timeout", sandbox.ExecResult{ExitCode: -1, Signal: "SIGKILL", TimedOut: true}, StatusTimeout, "timed out after 0.3s"},
		{"cancelled", sandbox.ExecResult{ExitCode: -1, Signal: "SIGKILL", Cancelled: true}, StatusCancelled, "cancelled"},
		{"sandbox stopped under the call", sandbox.ExecResult{ExitCode: -1, Signal: "SIGKILL", Cancelled: true, Stopped: true}, StatusError, "the sandbox stopped during the call"},
		{"oom", sandbox.ExecResult{ExitCode: -1, Signal: "SIGKILL", OOMKilled: true}, StatusError, "out of memory (the sandbox's memory limit is 1g)"},
		{"stderr kept before the note", sandbox.ExecResult{ExitCode: 1, Stderr: "Traceback"}, StatusError, "Traceback\n[exit code 1]"},
		{"truncation is said", sandbox.ExecResult{Truncated: true, OmittedBytes: 99}, StatusSuccess, "99 bytes omitted"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := fromExec(tc.in, 0.3, "1g")
			if r.Status != tc.wantStatus {
				t.Errorf("status = %s, want %s", r.Status, tc.wantStatus)
			}
			if tc.errHas == "" && r.Error != "" {
				t.Errorf("error = %q, want none", r.Error)
			}
			if !strings.Contains(r.Error, tc.errHas) {
				t.Errorf("error = %q, want it to contain %q", r.Error, tc.errHas)
			}
			if r.ExitCode == nil || *r.ExitCode != tc.in.ExitCode {
				t.Errorf("exit code not reported: %v", r.ExitCode)
			}
		})
	}
}

func TestTimeoutOf(t *testing.T) {
	t.Parallel()
	if got, err := timeoutOf("t", 0, 12); err != nil || got != 12 {
		t.Errorf("default: %v %v", got, err)
	}
	if got, err := timeoutOf("t", 0.3, 12); err != nil || got != 0.3 {
		t.Errorf("fraction: %v %v", got, err)
	}
	for _, bad := range []float64{-1, 3601} {
		if _, err := timeoutOf("t", bad, 30); !errors.Is(err, ErrInvalidArgs) {
			t.Errorf("timeout %v must be refused, got %v", bad, err)
		}
	}
}

// TestHandlersRefuseBeforeTouchingTheSandbox: checks that need no sandbox fail first.
func TestHandlersRefuseBeforeTouchingTheSandbox(t *testing.T) {
	t.Parallel()
	tests := []struct {
		tool Def
		args string
		want string
	}{
		{pythonExecutor(), `{"code":"   "}`, "No code provided"},
		{shellExecutor(), `{"command":""}`, "No command provided"},
		{shellExecutor(), `{"command":[]}`, "No command provided"},
		{fileOperation(), `{"operation":"write","file_path":"x"}`, "operation write needs content"},
		{fileOperation(), `{"operation":"chmod","file_path":"x"}`, `operation "chmod" is not one of`},
		{fileOperation(), `{"operation":"read","file_path":"x","encoding":"latin-1"}`, `encoding "latin-1" is not supported`},
		{fileOperation(), `{"operation":"write","file_path":"x","content":"!!","encoding":"base64"}`, "not valid base64"},
		{fileOperation(), `{"operation":"read","file_path":""}`, "file_path must not be empty"},
	}
	for _, tc := range tests {
		t.Run(tc.tool.Name+" "+tc.args, func(t *testing.T) {
			t.Parallel()
			res, err := tc.tool.Invoke(context.Background(), Call{Sandbox: nil}, json.RawMessage(tc.args))
			got := res.Error
			if err != nil {
				got = err.Error()
			}
			if !strings.Contains(got, tc.want) {
				t.Errorf("got %q (err %v), want %q", got, err, tc.want)
			}
		})
	}
}

// TestForksPython: a warm spare starts a resident interpreter only when its sandbox's
// tools_config enables python_executor with forking on.
func TestForksPython(t *testing.T) {
	tests := []struct {
		name string
		cfg  sandbox.ToolsConfig
		want bool
	}{
		{"every tool (empty config)", nil, true},
		{"python_executor enabled", sandbox.ToolsConfig{"python_executor": {}}, true},
		{"fork true", sandbox.ToolsConfig{"python_executor": {"fork": true}}, true},
		{"fork false", sandbox.ToolsConfig{"python_executor": {"fork": false}}, false},
		{"python_executor not enabled", sandbox.ToolsConfig{"shell_executor": {}}, false},
		{"unknown tool", sandbox.ToolsConfig{"no_such_tool": {}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ForksPython(All(), tc.cfg); got != tc.want {
				t.Errorf("ForksPython(%v) = %v, want %v", tc.cfg, got, tc.want)
			}
		})
	}
}
