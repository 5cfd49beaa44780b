package session_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/session"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// TestBehaviourOnEveryBackend is the behaviour table every backend must pass, run through
// the one call path as an MCP session's calls are: processes, files, background jobs,
// timeouts that kill the whole process tree, output caps and bad input. The process backend
// runs it under -short; Docker runs it with the integration tests.
func TestBehaviourOnEveryBackend(t *testing.T) {
	for _, backend := range testenv.Backends() {
		t.Run(backend.Name, func(t *testing.T) {
			b := backend.New(t)
			m := sandbox.NewManager(sandbox.ManagerOptions{
				Defaults: map[sandbox.Type]sandbox.Config{sandbox.TypeDocker: {Runtime: testenv.Runtime()}},
				Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: sandbox.NewCreator(b, sandbox.TypeDocker)},
			})
			defs, err := tools.Enabled(tools.All(), sandbox.ToolsConfig{
				"python_executor": nil, "shell_executor": nil, "file_operation": nil, "background_jobs": nil,
			})
			if err != nil {
				t.Fatal(err)
			}
			core, err := session.New(session.Config{Manager: m, Tools: defs,
				ToolOptions: sandbox.ToolsConfig{"shell_executor": {"max_output_bytes": 4096.0}}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				_ = core.Close(ctx)
				_ = m.Close(ctx)
			})
			caller := core.Caller("behaviour")
			run := func(t *testing.T, tool, args string) tools.Result {
				t.Helper()
				res, err := caller.Run(t.Context(), session.Call{Tool: tool, Args: []byte(args)})
				if err != nil {
					t.Fatalf("%s %s: %v", tool, args, err)
				}
				return res
			}
			for _, c := range behaviourTable {
				t.Run(c.name, func(t *testing.T) { c.check(t, run) })
			}
		})
	}
}

type runFunc func(t *testing.T, tool, args string) tools.Result

// behaviourTable runs in order in one session: later rows may use what earlier ones left.
var behaviourTable = []struct {
	name  string
	check func(t *testing.T, run runFunc)
}{
	{"python calls are forked from the resident interpreter once it is up", func(t *testing.T, run runFunc) {
		testwait.Until(t, 60*time.Second, "a python_executor call forked from the resident interpreter", func() bool {
			return run(t, "python_executor", `{"code": "pass"}`).Metadata["forked"] == true
		})
	}},
	{"python runs and its exit code is kept", func(t *testing.T, run runFunc) {
		res := run(t, "python_executor", `{"code": "import sys; print(6*7); sys.exit(3)"}`)
		if res.Output != "42\n" || res.Metadata["exit_code"] != 3 || res.Status != tools.StatusError {
			t.Errorf("got %+v, want output 42, exit code 3, status error", res)
		}
	}},
	{"shell argv stays literal", func(t *testing.T, run runFunc) {
		res := run(t, "shell_executor", `{"command": ["printf", "%s", "a; touch pwned"]}`)
		if res.Output != "a; touch pwned" {
			t.Errorf("output %q: want the argument printed as is", res.Output)
		}
		if res := run(t, "file_operation", `{"operation": "exists", "file_path": "pwned"}`); res.Output != "does not exist" {
			t.Errorf("exists(pwned) = %q: the argument ran as a command", res.Output)
		}
	}},
	{"files: write, read, list in the workspace", func(t *testing.T, run runFunc) {
		if res := run(t, "file_operation", `{"operation": "write", "file_path": "data.csv", "content": "a,b\n1,2\n"}`); !res.OK() {
			t.Fatalf("write: %+v", res)
		}
		if res := run(t, "shell_executor", `{"command": "cat data.csv"}`); res.Output != "a,b\n1,2\n" {
			t.Errorf("the shell read %q, want what file_operation wrote", res.Output)
		}
		if res := run(t, "file_operation", `{"operation": "list", "file_path": "."}`); !strings.Contains(res.Output, "data.csv") {
			t.Errorf("list: %q lacks data.csv", res.Output)
		}
	}},
	{"reading a missing file names it", func(t *testing.T, run runFunc) {
		res := run(t, "file_operation", `{"operation": "read", "file_path": "nope.txt"}`)
		if res.OK() || !strings.Contains(res.Error, "nope.txt") {
			t.Errorf("got %+v, want an error naming nope.txt", res)
		}
	}},
	{"background jobs are listed and killed", func(t *testing.T, run runFunc) {
		res := run(t, "shell_executor", `{"command": "sleep 300", "background": true}`)
		job, _ := res.Metadata["job_id"].(string)
		if job == "" {
			t.Fatalf("no job id in %+v", res)
		}
		if res := run(t, "background_jobs", `{"action": "list"}`); !strings.Contains(res.Output, job) {
			t.Errorf("list: %q lacks %s", res.Output, job)
		}
		if res := run(t, "background_jobs", `{"action": "stop", "job_id": "`+job+`"}`); !res.OK() {
			t.Errorf("stop: %+v", res)
		}
	}},
	{"a timeout kills the whole tree", func(t *testing.T, run runFunc) {
		res := run(t, "shell_executor", `{"command": "setsid sh -c 'echo $$ > grandchild.pid; exec sleep 300' & sleep 300", "timeout": 1}`)
		if res.Status != tools.StatusTimeout {
			t.Fatalf("status %s, want timeout: %+v", res.Status, res)
		}
		res = run(t, "shell_executor", `{"command": "kill -0 $(cat grandchild.pid) && echo alive || echo gone"}`)
		if strings.TrimSpace(res.Output) != "gone" {
			t.Errorf("the grandchild that called setsid survived the timeout: %q", res.Output)
		}
	}},
	{"a timeout kills a python call's whole tree", func(t *testing.T, run runFunc) {
		res := run(t, "python_executor", `{"code": "import subprocess, time\nsubprocess.Popen(['setsid', 'sh', '-c', 'echo $$ > py-grandchild.pid; exec sleep 300'])\ntime.sleep(300)", "timeout": 1}`)
		if res.Status != tools.StatusTimeout || res.Metadata["forked"] != true {
			t.Fatalf("got %+v, want a timeout of a forked call", res)
		}
		res = run(t, "shell_executor", `{"command": "kill -0 $(cat py-grandchild.pid) && echo alive || echo gone"}`)
		if !strings.HasPrefix(res.Output, "gone") {
			t.Errorf("the setsid grandchild survived the timeout: %q", res.Output)
		}
	}},
	{"python tracebacks and stdin at EOF", func(t *testing.T, run runFunc) {
		res := run(t, "python_executor", `{"code": "print('before')\ninput()"}`)
		if res.Output != "before\n" || !strings.Contains(res.Error, "EOFError: EOF when reading a line") ||
			!strings.Contains(res.Error, `File "<stdin>", line 2, in <module>`) || res.Metadata["exit_code"] != 1 {
			t.Errorf("got %+v, want the output, a traceback of the script's own line, exit code 1", res)
		}
	}},
	{"output is capped, head and tail kept", func(t *testing.T, run runFunc) {
		res := run(t, "shell_executor", `{"command": "echo HEAD; head -c 100000 /dev/zero | tr '\\0' x; echo; echo TAIL"}`)
		if !res.Truncated || !strings.HasPrefix(res.Output, "HEAD") || !strings.HasSuffix(strings.TrimSpace(res.Output), "TAIL") || len(res.Output) > 8192 {
			t.Errorf("truncated=%v len=%d: want a capped output with head and tail", res.Truncated, len(res.Output))
		}
	}},
	{"bad input is a result naming the problem", func(t *testing.T, run runFunc) {
		res := run(t, "shell_executor", `{"comand": "ls"}`)
		if res.Status != tools.StatusError || res.Metadata["invalid_arguments"] != true || !strings.Contains(res.Error, `unknown parameter "comand"`) {
			t.Errorf("got %+v, want an invalid_arguments result naming the parameter", res)
		}
	}},
}
